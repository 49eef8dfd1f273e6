//! The generic path: a stream that is not a raw socket (TLS over one),
//! read and written through its `AsyncRead` and `AsyncWrite`.
//!
//! The guest's non-blocking calls poll the stream once with a waker that
//! does nothing (what comes is kept, what would wait is left for later);
//! its waits poll it with the task's own waker. Each half of the stream is
//! behind a lock held only for one poll, never across a wait.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use wasmtime_wasi::p2::{StreamError, StreamResult};

use super::{CHUNK, Counters, Outgoing, stream_error};
use crate::transport::AsyncStream;

type Boxed = Box<dyn AsyncStream>;

/// The two halves of a wrapped stream.
pub(super) struct Generic {
    read: Mutex<Reading>,
    write: Mutex<WriteHalf<Boxed>>,
}

impl std::fmt::Debug for Generic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generic").finish_non_exhaustive()
    }
}

/// The read half and what it gave that the guest has not taken yet.
struct Reading {
    half: ReadHalf<Boxed>,
    /// Read while waiting for readability, not yet taken.
    buffered: BytesMut,
    /// The end of the stream, or its error, once seen.
    ended: Option<io::ErrorKind>,
}

/// How the end of the stream is kept in [`Reading::ended`].
const EOF: io::ErrorKind = io::ErrorKind::UnexpectedEof;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each field is consistent between statements: a panic elsewhere
    // cannot leave it half-updated.
    mutex.lock().unwrap_or_else(|poison| poison.into_inner())
}

impl Generic {
    pub(super) fn new(stream: Boxed) -> Self {
        let (read, write) = tokio::io::split(stream);
        Self {
            read: Mutex::new(Reading {
                half: read,
                buffered: BytesMut::new(),
                ended: None,
            }),
            write: Mutex::new(write),
        }
    }

    pub(super) fn read(&self, size: usize, counters: &Counters) -> StreamResult<Bytes> {
        let mut reading = lock(&self.read);
        if reading.buffered.is_empty() && reading.ended.is_none() {
            // One try, without waiting.
            let mut cx = Context::from_waker(Waker::noop());
            let _ = reading.fill(&mut cx, size.min(CHUNK), counters);
        }
        if !reading.buffered.is_empty() {
            let n = size.min(reading.buffered.len());
            return Ok(reading.buffered.split_to(n).freeze());
        }
        match reading.ended {
            None => Ok(Bytes::new()),
            Some(EOF) => Err(StreamError::Closed),
            Some(kind) => Err(stream_error(kind.into())),
        }
    }

    pub(super) async fn readable(&self, counters: &Counters) -> io::Result<()> {
        poll_fn(|cx| {
            let mut reading = lock(&self.read);
            if !reading.buffered.is_empty() || reading.ended.is_some() {
                return Poll::Ready(Ok(()));
            }
            reading.fill(cx, CHUNK, counters)
        })
        .await
    }

    /// Writes as much of the pending bytes as the stream takes now.
    pub(super) fn push(&self, out: &mut Outgoing, counters: &Counters) {
        let mut cx = Context::from_waker(Waker::noop());
        let mut half = lock(&self.write);
        let _ = out.send_with(counters, |bytes| {
            Pin::new(&mut *half).poll_write(&mut cx, bytes)
        });
    }

    pub(super) fn poll_drained(
        &self,
        cx: &mut Context<'_>,
        out: &mut Outgoing,
        counters: &Counters,
    ) -> Poll<io::Result<()>> {
        let mut half = lock(&self.write);
        std::task::ready!(
            out.send_with(counters, |bytes| Pin::new(&mut *half).poll_write(cx, bytes))
        );
        if let Some(kind) = out.failed {
            return Poll::Ready(Err(kind.into()));
        }
        // A wrapped stream may hold what it took (TLS records).
        match Pin::new(&mut *half).poll_flush(cx) {
            Poll::Ready(Err(e)) => {
                out.failed = Some(e.kind());
                Poll::Ready(Err(e))
            }
            other => other,
        }
    }

    pub(super) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        counters: &Counters,
    ) -> Poll<io::Result<()>> {
        let mut reading = lock(&self.read);
        if !reading.buffered.is_empty() {
            let n = buf.remaining().min(reading.buffered.len());
            buf.put_slice(&reading.buffered.split_to(n));
            counters.received(n);
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut reading.half).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            counters.received(buf.filled().len() - before);
        }
        polled
    }

    /// Sends the end of the stream (for TLS, its close_notify), then
    /// half-closes the socket under it.
    pub(super) async fn shutdown(&self) -> io::Result<()> {
        poll_fn(|cx| Pin::new(&mut *lock(&self.write)).poll_shutdown(cx)).await
    }
}

impl Reading {
    /// Polls one read of at most `want` bytes into `buffered`; ready once
    /// bytes came, the stream ended or failed (kept in `ended`).
    fn fill(
        &mut self,
        cx: &mut Context<'_>,
        want: usize,
        counters: &Counters,
    ) -> Poll<io::Result<()>> {
        self.buffered.reserve(want);
        let spare = &mut self.buffered.spare_capacity_mut()[..want];
        let mut buf = ReadBuf::uninit(spare);
        match Pin::new(&mut self.half).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len();
                // SAFETY: the read initialised the first `n` bytes of the
                // spare capacity (a `ReadBuf`'s filled part is initialised),
                // which directly follows the bytes already in the buffer.
                unsafe { self.buffered.set_len(self.buffered.len() + n) };
                if n == 0 {
                    self.ended = Some(EOF);
                } else {
                    counters.received(n);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => {
                self.ended = Some(e.kind());
                Poll::Ready(Ok(()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}
