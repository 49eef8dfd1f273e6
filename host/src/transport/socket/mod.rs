//! A client's stream as its guest's stdin and stdout use it: reads without
//! an extra task or pipe, writes queued and sent as the socket takes them,
//! the bytes each way and the time of the last one counted for the log and
//! the idle timeout, and a close that sends what is left, then the end of
//! the stream. What the guest may write in all is capped
//! (`max_bytes_written`): past it, nothing more is taken, and the
//! connection's owner hears it must end ([`ClientSocket::limit_reached`]).
//!
//! A raw socket is read and written with system calls straight into the
//! guest's buffers (`raw`); a wrapped stream through its `AsyncRead` and
//! `AsyncWrite` (`generic`). What the guest sees is the same. A datagram
//! request is read from memory and its reply sent as datagrams (`dgram`).

mod dgram;
mod generic;
mod raw;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::ReadBuf;
use tokio::sync::Notify;
use wasmtime_wasi::p2::{StreamError, StreamResult};

use super::stream::Stream;

/// The most a guest reads or has buffered for writing in one go.
pub const CHUNK: usize = 64 * 1024;

/// How the guest waits for its client.
#[derive(Clone, Debug)]
pub enum Wait {
    /// Through the runtime: other connections share the thread
    /// (`multiplex`).
    Runtime,
    /// In the socket itself: the thread serves this connection alone (one
    /// connection at a time per process). A read sleeps in `recv` until
    /// data, the idle timeout, the `deadline` or a signal (`stop` says
    /// whether one asked the process to end); only a raw socket can, a
    /// wrapped stream waits through the runtime.
    InSocket {
        /// The idle timeout.
        idle: Duration,
        /// When the connection's `connection_timeout` ends it.
        deadline: Option<Instant>,
        /// Raised by the signals the runtime must see to (INT, TERM, QUIT).
        stop: Arc<AtomicBool>,
    },
}

/// One client connection, as the guest's stdin and stdout use it.
#[derive(Debug)]
pub struct ClientSocket {
    io: Io,
    out: Mutex<Outgoing>,
    counters: Counters,
    limit: WriteLimit,
}

/// The bytes the guest may write in all (`max_bytes_written`), what it
/// wrote, and whether it reached them.
#[derive(Debug, Default)]
struct WriteLimit {
    /// 0: no limit.
    limit: u64,
    written: AtomicU64,
    reached: AtomicBool,
    /// Told once the limit is reached.
    notify: Notify,
}

impl WriteLimit {
    /// What of `bytes` the guest may still write — all of it, or the part
    /// up to the limit — and whether some was cut. Reaching the limit
    /// raises it; once reached, writes are a closed stream.
    fn admit(&self, bytes: Bytes) -> StreamResult<(Bytes, bool)> {
        if self.limit == 0 {
            return Ok((bytes, false));
        }
        if self.reached.load(Ordering::Acquire) {
            return Err(StreamError::Closed);
        }
        let before = self.written.load(Ordering::Relaxed);
        let len = bytes.len() as u64;
        let taken = len.min(self.limit.saturating_sub(before));
        self.written.store(before + taken, Ordering::Relaxed);
        if before + taken >= self.limit {
            self.reached.store(true, Ordering::Release);
            self.notify.notify_one();
        }
        Ok((bytes.slice(..taken as usize), taken < len))
    }

    fn reached(&self) -> bool {
        self.reached.load(Ordering::Acquire)
    }
}

#[derive(Debug)]
enum Io {
    Raw(raw::Raw),
    Generic(generic::Generic),
    Datagram(Box<dgram::Dgram>),
}

/// Bytes the guest wrote that the stream did not take yet, the error
/// that ended writing, and the writes refused since.
#[derive(Debug, Default)]
struct Outgoing {
    pending: BytesMut,
    failed: Option<io::ErrorKind>,
    /// Writes (and checks for room) refused since writing failed.
    refused: u32,
}

/// The writes a guest may still try once writing to its client failed
/// (the client reset or went away): each is refused with the error, as
/// WASI says; the next one traps with [`KeptWriting`]. A guest that
/// ignores the error and writes in a loop would otherwise compute for
/// nothing until its `cpu_limit`, a neighbour's CPU, long after its
/// client left; one that tries a few more times, or flushes at its end,
/// is never near this.
pub const WRITES_AFTER_FAILURE: u32 = 1024;

/// The trap of a guest that kept writing to a client that had gone (see
/// [`WRITES_AFTER_FAILURE`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeptWriting;

impl std::fmt::Display for KeptWriting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the handler kept writing to a client that had gone ({WRITES_AFTER_FAILURE} writes refused)"
        )
    }
}

impl std::error::Error for KeptWriting {}

impl Outgoing {
    /// The error for a write (or a check for room) once writing failed
    /// with `kind`: the error itself, or past [`WRITES_AFTER_FAILURE`] a
    /// trap.
    fn refuse(&mut self, kind: io::ErrorKind) -> StreamError {
        self.refused = self.refused.saturating_add(1);
        if self.refused > WRITES_AFTER_FAILURE {
            return StreamError::Trap(wasmtime::Error::new(KeptWriting));
        }
        stream_error(kind.into())
    }

    /// Hands the pending bytes to `write` until none are left, writing
    /// failed (then `failed` says why) or `write` would wait (pending).
    fn send_with(
        &mut self,
        counters: &Counters,
        mut write: impl FnMut(&[u8]) -> Poll<io::Result<usize>>,
    ) -> Poll<()> {
        while !self.pending.is_empty() && self.failed.is_none() {
            match write(&self.pending) {
                Poll::Ready(Ok(0)) => self.failed = Some(io::ErrorKind::WriteZero),
                Poll::Ready(Ok(n)) => {
                    self.pending.advance(n);
                    counters.sent(n);
                }
                Poll::Ready(Err(e)) => {
                    self.failed = Some(e.kind());
                    self.pending.clear();
                }
                Poll::Pending => return Poll::Pending,
            }
        }
        Poll::Ready(())
    }
}

/// What moved, and when.
#[derive(Debug)]
struct Counters {
    started: Instant,
    /// Milliseconds from `started` to the last byte moved.
    last_io: AtomicU64,
    /// Bytes read from the client.
    bytes_in: AtomicU64,
    /// Bytes written to the client.
    bytes_out: AtomicU64,
}

impl Counters {
    fn new(started: Instant) -> Self {
        Self {
            started,
            last_io: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }

    fn last_io(&self) -> Duration {
        Duration::from_millis(self.last_io.load(Ordering::Relaxed))
    }

    fn touch(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last_io.store(now, Ordering::Relaxed);
    }

    /// Records `n` bytes received from the client.
    fn received(&self, n: usize) {
        self.touch();
        self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Records `n` bytes sent to the client.
    fn sent(&self, n: usize) {
        self.touch();
        self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl ClientSocket {
    /// Wraps an accepted client stream; its guest waits as `wait` says.
    pub fn new(stream: Stream, wait: Wait) -> io::Result<Arc<Self>> {
        Self::limited(stream, wait, 0)
    }

    /// [`ClientSocket::new`], whose guest may write `max_written` bytes
    /// in all (0: no limit).
    pub fn limited(stream: Stream, wait: Wait, max_written: u64) -> io::Result<Arc<Self>> {
        let started = Instant::now();
        let io = match stream {
            Stream::Raw(stream) => Io::Raw(raw::Raw::new(stream, wait, started)?),
            Stream::Wrapped { stream, .. } => Io::Generic(generic::Generic::new(stream)),
            Stream::Datagram(received, cap) => {
                Io::Datagram(Box::new(dgram::Dgram::new(*received, cap)))
            }
        };
        Ok(Arc::new(Self {
            io,
            out: Mutex::default(),
            counters: Counters::new(started),
            limit: WriteLimit {
                limit: max_written,
                ..WriteLimit::default()
            },
        }))
    }

    /// Resolves once the guest wrote its `max_bytes_written` (never
    /// without a limit): the connection must end.
    pub async fn limit_reached(&self) {
        if self.limit.limit == 0 {
            return std::future::pending().await;
        }
        // A notice given before the wait is kept for it (`notify_one`).
        while !self.limit.reached() {
            self.limit.notify.notified().await;
        }
    }

    /// The `max_bytes_written` the guest reached, if it did.
    pub fn reached_limit(&self) -> Option<u64> {
        self.limit.reached().then_some(self.limit.limit)
    }

    /// Bytes read from and written to the client so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.counters.bytes_in.load(Ordering::Relaxed),
            self.counters.bytes_out.load(Ordering::Relaxed),
        )
    }

    /// How long no byte has moved.
    pub fn idle_for(&self) -> Duration {
        self.counters
            .started
            .elapsed()
            .saturating_sub(self.counters.last_io())
    }

    /// Resolves once no byte has moved for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let idle = self.idle_for();
            if idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }

    /// Whether writing to the client failed (it reset or went away).
    pub fn write_failed(&self) -> Option<io::ErrorKind> {
        match &self.io {
            Io::Datagram(dgram) => dgram.failed(),
            _ => self.outgoing().failed,
        }
    }

    /// Whether the amplification cap dropped some of a datagram's reply.
    pub fn reply_capped(&self) -> bool {
        matches!(&self.io, Io::Datagram(dgram) if dgram.capped())
    }

    /// Whether the client is one datagram, its reply datagrams.
    pub fn is_datagram(&self) -> bool {
        matches!(self.io, Io::Datagram(_))
    }

    /// Drops whatever the guest writes from now on: a datagram request
    /// refused gets no reply (its sender may be forged).
    pub fn discard_replies(&self) {
        if let Io::Datagram(dgram) = &self.io {
            dgram.discard();
        }
    }

    /// Writes what the guest left buffered, then ends the stream (a
    /// half-close: the client reads end of file).
    pub async fn close(&self) -> io::Result<()> {
        match &self.io {
            Io::Raw(raw) => {
                self.drained().await?;
                raw.shutdown()
            }
            Io::Generic(generic) => {
                self.drained().await?;
                generic.shutdown().await
            }
            Io::Datagram(dgram) => dgram.close(&self.counters).await,
        }
    }

    /// Writes what the guest left buffered; the error that ended writing.
    async fn drained(&self) -> io::Result<()> {
        self.drain().await;
        match self.write_failed() {
            Some(kind) => Err(kind.into()),
            None => Ok(()),
        }
    }

    fn outgoing(&self) -> MutexGuard<'_, Outgoing> {
        // A panic while holding this lock cannot leave `Outgoing` invalid.
        self.out.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Reads what has come, at most `size` bytes, without waiting: empty
    /// when nothing has.
    pub fn read(&self, size: usize) -> StreamResult<Bytes> {
        if self.limit.reached() {
            // The connection is ending: no read may keep the guest.
            return Err(StreamError::Closed);
        }
        if size == 0 {
            return Ok(Bytes::new());
        }
        match &self.io {
            Io::Raw(raw) => raw.read(size, &self.counters),
            Io::Generic(generic) => generic.read(size, &self.counters),
            Io::Datagram(dgram) => dgram.read(size, &self.counters),
        }
    }

    /// `blocking-read`: waits until at least one byte came (or the end of
    /// the stream), then reads at most `size` bytes.
    pub async fn read_blocking(&self, size: usize) -> StreamResult<Bytes> {
        if self.limit.reached() {
            return Err(StreamError::Closed);
        }
        if let Io::Raw(raw) = &self.io {
            if let Some(read) = raw.read_sleeping(size, &self.counters) {
                return read;
            }
            if raw.stopping() {
                // Let the runtime end the process before reading on: a
                // client that keeps the socket full would never let it run.
                tokio::task::yield_now().await;
            }
        }
        loop {
            let waited = self.readable().await;
            let bytes = self.read(size)?;
            if !bytes.is_empty() || size == 0 {
                return Ok(bytes);
            }
            // Nothing came although the wait ended: with an error, waiting
            // again would end the same way (the runtime is shutting down).
            waited.map_err(stream_error)?;
        }
    }

    /// Waits until a read would find data, the end of the stream or an
    /// error. An error means the stream is readable (the read reports it).
    pub async fn readable(&self) -> io::Result<()> {
        if self.limit.reached() {
            return Ok(());
        }
        match &self.io {
            Io::Raw(raw) => raw.readable().await,
            Io::Generic(generic) => generic.readable(&self.counters).await,
            // The request, or its end, is always there.
            Io::Datagram(_) => Ok(()),
        }
    }

    /// How much the guest may write now; sends what it can first.
    pub fn check_write(&self) -> StreamResult<usize> {
        if self.limit.reached() {
            return Err(StreamError::Closed);
        }
        if let Io::Datagram(dgram) = &self.io {
            return dgram.check_write(&self.counters);
        }
        let mut out = self.outgoing();
        self.push(&mut out);
        match out.failed {
            Some(kind) => Err(out.refuse(kind)),
            None => Ok(CHUNK.saturating_sub(out.pending.len())),
        }
    }

    /// Queues `bytes` and sends what the stream takes now; past
    /// `max_bytes_written`, only what fits, then the stream is closed.
    pub fn write(&self, bytes: Bytes) -> StreamResult<()> {
        let (bytes, cut) = self.limit.admit(bytes)?;
        self.queue(bytes)?;
        if cut {
            return Err(StreamError::Closed);
        }
        Ok(())
    }

    fn queue(&self, bytes: Bytes) -> StreamResult<()> {
        if let Io::Datagram(dgram) = &self.io {
            return dgram.write(bytes, &self.counters);
        }
        let mut out = self.outgoing();
        if let Some(kind) = out.failed {
            return Err(out.refuse(kind));
        }
        out.pending.extend_from_slice(&bytes);
        self.push(&mut out);
        Ok(())
    }

    /// `blocking-write-and-flush`: queues `bytes`, sends what the stream
    /// takes now and waits only while some is left. A client gone
    /// meanwhile is not an error here (the next write reports it), as in
    /// WASI's own implementation of the call.
    pub async fn write_and_flush(&self, bytes: Bytes) -> StreamResult<()> {
        self.write(bytes)?;
        self.drain().await;
        if self.is_datagram() {
            // A reply that cannot be sent is the connection's end, not the
            // guest's error (see the `dgram` path).
            return Ok(());
        }
        match self.write_failed().map(|kind| stream_error(kind.into())) {
            None | Some(StreamError::Closed) => Ok(()),
            Some(error) => Err(error),
        }
    }

    /// A hook returned: a datagram reply written meanwhile is cut (see the
    /// `dgram` path).
    pub fn end_of_hook(&self) {
        if let Io::Datagram(dgram) = &self.io {
            dgram.flush(&self.counters);
        }
    }

    /// `flush`: a datagram reply is cut here (see the `dgram` path); a
    /// stream sends what it can now. Completion is seen through `drain`.
    pub fn flush(&self) -> StreamResult<()> {
        if let Io::Datagram(dgram) = &self.io {
            dgram.flush(&self.counters);
        }
        self.check_write().map(drop)
    }

    /// Sends as much of the pending bytes as the stream takes now.
    fn push(&self, out: &mut Outgoing) {
        match &self.io {
            Io::Raw(raw) => raw.push(out, &self.counters),
            Io::Generic(generic) => generic.push(out, &self.counters),
            Io::Datagram(_) => {}
        }
    }

    /// Waits until every pending byte was sent (and, for a wrapped stream,
    /// flushed) or writing failed.
    pub async fn drain(&self) {
        match &self.io {
            Io::Raw(raw) => loop {
                {
                    let mut out = self.outgoing();
                    raw.push(&mut out, &self.counters);
                    if out.pending.is_empty() {
                        return;
                    }
                }
                if raw.stream.writable().await.is_err() {
                    self.outgoing().failed = Some(io::ErrorKind::BrokenPipe);
                }
            },
            Io::Generic(_) | Io::Datagram(_) => {
                let _ = std::future::poll_fn(|cx| self.poll_drained(cx)).await;
            }
        }
    }

    /// Polls until every pending byte was sent (and flushed) or writing
    /// failed (the error).
    pub fn poll_drained(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &self.io {
            Io::Raw(raw) => raw.poll_drained(cx, &mut self.outgoing(), &self.counters),
            Io::Generic(generic) => generic.poll_drained(cx, &mut self.outgoing(), &self.counters),
            Io::Datagram(dgram) => dgram.poll_drained(cx, &self.counters),
        }
    }

    /// Polls a read of what has come into `buf` (the guest's stdin as an
    /// `AsyncRead`).
    pub fn poll_read(&self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.limit.reached() {
            return Poll::Ready(Ok(()));
        }
        match &self.io {
            Io::Raw(raw) => raw.poll_read(cx, buf, &self.counters),
            Io::Generic(generic) => generic.poll_read(cx, buf, &self.counters),
            Io::Datagram(dgram) => dgram.poll_read(buf, &self.counters),
        }
    }
}

/// A closed or reset connection ends the stream; anything else is an error
/// the guest can inspect.
fn stream_error(e: io::Error) -> StreamError {
    match e.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::ConnectionAborted
        | io::ErrorKind::NotConnected => StreamError::Closed,
        _ => StreamError::LastOperationFailed(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::transport::RawStream;

    /// A client socket over each kind of stream, and the client's end.
    async fn pairs() -> Vec<(&'static str, Arc<ClientSocket>, tokio::net::UnixStream)> {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let raw = ClientSocket::new(Stream::Raw(RawStream::Unix(a)), Wait::Runtime).unwrap();
        let (c, d) = tokio::net::UnixStream::pair().unwrap();
        let wrapped = ClientSocket::new(
            Stream::Wrapped {
                stream: Box::new(c),
                proto: "unix",
            },
            Wait::Runtime,
        )
        .unwrap();
        vec![("raw", raw, b), ("wrapped", wrapped, d)]
    }

    #[tokio::test]
    async fn both_paths_read_write_count_and_close_alike() {
        for (kind, socket, mut client) in pairs().await {
            assert_eq!(
                socket.read(16).unwrap(),
                Bytes::new(),
                "{kind}: nothing yet"
            );
            client.write_all(b"hello\n").await.unwrap();
            let got = socket.read_blocking(64).await.unwrap();
            assert_eq!(&got[..], b"hello\n", "{kind}");
            socket.write(Bytes::from_static(b"one ")).unwrap();
            socket
                .write_and_flush(Bytes::from_static(b"two\n"))
                .await
                .unwrap();
            let mut reply = [0u8; 8];
            client.read_exact(&mut reply).await.unwrap();
            assert_eq!(&reply, b"one two\n", "{kind}");
            assert_eq!(socket.bytes(), (6, 8), "{kind}");
            assert_eq!(socket.check_write().unwrap(), CHUNK, "{kind}");
            socket.write(Bytes::from_static(b"bye\n")).unwrap();
            socket.close().await.unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"bye\n", "{kind}: the rest, then end of file");
            client.shutdown().await.unwrap();
            assert!(
                matches!(socket.read_blocking(64).await, Err(StreamError::Closed)),
                "{kind}: the client's end of file"
            );
        }
    }

    #[tokio::test]
    async fn a_large_reply_is_drained_as_the_client_reads() {
        for (kind, socket, mut client) in pairs().await {
            let big = Bytes::from(vec![b'x'; 4 * CHUNK]);
            let reader = tokio::spawn(async move {
                let mut got = vec![0u8; 4 * CHUNK];
                client.read_exact(&mut got).await.map(|_| got)
            });
            socket.write_and_flush(big.clone()).await.unwrap();
            assert_eq!(reader.await.unwrap().unwrap(), big, "{kind}");
            assert_eq!(socket.bytes().1, 4 * CHUNK as u64, "{kind}");
        }
    }

    #[tokio::test]
    async fn a_client_gone_is_a_closed_stream_and_a_failed_write() {
        for (kind, socket, client) in pairs().await {
            drop(client);
            let mut failed = false;
            for _ in 0..100 {
                if socket.write(Bytes::from_static(b"x")).is_err() {
                    failed = true;
                    break;
                }
                socket.drain().await;
            }
            assert!(failed, "{kind}: writes to a closed peer never failed");
            assert!(socket.write_failed().is_some(), "{kind}");
            assert!(socket.close().await.is_err(), "{kind}");
        }
    }

    #[tokio::test]
    async fn writes_stop_at_the_limit_and_say_so() {
        let (a, mut client) = tokio::net::UnixStream::pair().unwrap();
        let socket =
            ClientSocket::limited(Stream::Raw(RawStream::Unix(a)), Wait::Runtime, 10).unwrap();
        assert_eq!(socket.reached_limit(), None);
        // (bytes written, whole?, reached after)
        let steps: &[(&[u8], bool, bool)] = &[
            (b"1234", true, false),
            (b"", true, false),
            (b"5678", true, false),
            (b"9abc", false, true),
            (b"d", false, true),
        ];
        for (i, &(bytes, whole, reached)) in steps.iter().enumerate() {
            let got = socket.write(Bytes::copy_from_slice(bytes));
            assert_eq!(got.is_ok(), whole, "step {i}");
            assert_eq!(socket.reached_limit().is_some(), reached, "step {i}");
        }
        assert_eq!(socket.reached_limit(), Some(10));
        assert!(matches!(socket.check_write(), Err(StreamError::Closed)));
        assert!(matches!(
            socket.read_blocking(8).await,
            Err(StreamError::Closed)
        ));
        socket.limit_reached().await;
        socket.drain().await;
        drop(socket);
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"123456789a", "the client got the limit's worth");
    }

    #[test]
    fn writes_after_a_failure_are_refused_then_trap() {
        // (writing failed with, refused writes before, what the next gets)
        let cases = [
            (io::ErrorKind::BrokenPipe, 0, "closed"),
            (
                io::ErrorKind::BrokenPipe,
                WRITES_AFTER_FAILURE - 1,
                "closed",
            ),
            (
                io::ErrorKind::ConnectionReset,
                WRITES_AFTER_FAILURE - 1,
                "closed",
            ),
            (io::ErrorKind::TimedOut, WRITES_AFTER_FAILURE - 1, "failed"),
            (io::ErrorKind::BrokenPipe, WRITES_AFTER_FAILURE, "trap"),
            (io::ErrorKind::TimedOut, WRITES_AFTER_FAILURE, "trap"),
            (io::ErrorKind::BrokenPipe, u32::MAX, "trap"),
        ];
        for (kind, before, want) in cases {
            let mut out = Outgoing {
                failed: Some(kind),
                refused: before,
                ..Outgoing::default()
            };
            let got = match out.refuse(kind) {
                StreamError::Closed => "closed",
                StreamError::LastOperationFailed(_) => "failed",
                StreamError::Trap(e) => {
                    assert_eq!(e.downcast_ref::<KeptWriting>(), Some(&KeptWriting));
                    "trap"
                }
            };
            assert_eq!(got, want, "{kind:?} after {before}");
        }
    }

    #[test]
    fn closed_and_reset_connections_end_the_stream() {
        let cases = [
            (io::ErrorKind::BrokenPipe, true),
            (io::ErrorKind::ConnectionReset, true),
            (io::ErrorKind::ConnectionAborted, true),
            (io::ErrorKind::NotConnected, true),
            (io::ErrorKind::TimedOut, false),
            (io::ErrorKind::Other, false),
        ];
        for (kind, closed) in cases {
            let got = stream_error(kind.into());
            assert_eq!(matches!(got, StreamError::Closed), closed, "{kind:?}");
        }
    }
}
