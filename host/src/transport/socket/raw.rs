//! The raw path: a TCP or unix stream socket read with `recv` and written
//! with `send`, straight between the socket and the guest's buffers; where
//! the thread serves the connection alone, the guest's read sleeps in the
//! socket (see [`Wait::InSocket`]).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::libc;
use tokio::io::{Interest, ReadBuf};
use wasmtime_wasi::p2::{StreamError, StreamResult};

use super::{CHUNK, Counters, Outgoing, Wait, stream_error};
use crate::transport::RawStream;

/// Reads shorter than this are copied out of the scratch buffer; longer
/// ones take the buffer's bytes without a copy.
const COPY_BELOW: usize = 16 * 1024;

/// A receive timeout within this much of the one wanted is kept rather
/// than set again: a timeout may end up to this much late.
const TIMEOUT_SLACK: Duration = Duration::from_millis(10);

thread_local! {
    /// Where a guest's reads are received (see [`Raw::receive`]).
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// A raw socket and how its reads wait.
#[derive(Debug)]
pub(super) struct Raw {
    pub(super) stream: RawStream,
    /// Set when the thread serves this connection alone: the guest's reads
    /// then sleep in the socket.
    sleeping: Option<Sleeping>,
}

impl Raw {
    /// The raw path for `stream`. With [`Wait::InSocket`] the socket is
    /// made blocking and given a receive timeout, so that the guest's
    /// `blocking-read` sleeps in `recv` on the socket itself, as
    /// Net::Server's children sleep in `read`, instead of waiting for
    /// readiness through the runtime and then reading — a system call, a
    /// fiber switch and a pass through the runtime less per request. That
    /// sleep ends with data, at the idle timeout or the deadline (then the
    /// runtime ends the connection), or at a signal. Everything else still
    /// goes through the runtime without blocking (`MSG_DONTWAIT`).
    pub(super) fn new(stream: RawStream, wait: Wait, started: Instant) -> io::Result<Self> {
        let sleeping = match wait {
            Wait::Runtime => None,
            Wait::InSocket {
                idle,
                deadline,
                stop,
            } => {
                stream.sock().set_nonblocking(false)?;
                Some(Sleeping {
                    idle,
                    deadline: deadline.map(|at| at.saturating_duration_since(started)),
                    stop,
                    timeout: Mutex::new(None),
                })
            }
        };
        Ok(Self { stream, sleeping })
    }

    pub(super) fn read(&self, size: usize, counters: &Counters) -> StreamResult<Bytes> {
        match self.receive(size, counters, |buf, want| self.recv_draining(buf, want)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::new()),
            result => result.map_err(stream_error)?,
        }
    }

    /// The guest's read when its thread may sleep in the socket: `None`
    /// when it may not, or when the sleep ended without data (a timeout, a
    /// signal), so that the caller waits through the runtime, which then
    /// sees the timers and signals.
    pub(super) fn read_sleeping(
        &self,
        size: usize,
        counters: &Counters,
    ) -> Option<StreamResult<Bytes>> {
        let sleeping = self.sleeping.as_ref()?;
        let limit = sleeping.limit(counters.started.elapsed(), counters.last_io())?;
        if let Err(e) = sleeping.set_timeout(&self.stream, limit) {
            return Some(Err(stream_error(e)));
        }
        match self.receive(size, counters, |buf, want| {
            recv_into(&self.stream, buf, want, 0)
        }) {
            Err(e) if is_wake_up(&e) => None,
            result => Some(result.map_err(stream_error).and_then(|r| r)),
        }
    }

    /// Whether a signal came that the runtime must see to (INT, TERM,
    /// QUIT) while its thread serves this connection alone.
    pub(super) fn stopping(&self) -> bool {
        (self.sleeping.as_ref()).is_some_and(|sleeping| sleeping.stop.load(Ordering::Relaxed))
    }

    pub(super) async fn readable(&self) -> io::Result<()> {
        self.stream.readable().await
    }

    /// Receives at most `size` bytes (and at most [`CHUNK`]) with `recv`:
    /// end of file is [`StreamError::Closed`], an I/O error is returned as
    /// such for the caller to sort.
    fn receive(
        &self,
        size: usize,
        counters: &Counters,
        recv: impl FnOnce(&mut BytesMut, usize) -> io::Result<usize>,
    ) -> io::Result<StreamResult<Bytes>> {
        let want = size.min(CHUNK);
        // A guest asks for a buffer's worth (8 KiB from Rust's std) and
        // mostly gets a line: receive into this thread's scratch buffer and
        // keep only what came, rather than allocate `want` bytes each time.
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            let n = recv(scratch, want)?;
            if n == 0 {
                return Ok(Err(StreamError::Closed));
            }
            counters.received(n);
            Ok(Ok(if n < COPY_BELOW {
                Bytes::copy_from_slice(scratch)
            } else {
                scratch.split().freeze()
            }))
        })
    }

    /// Reads at most `want` bytes into `buf` without waiting. A read that
    /// returns fewer bytes than asked for has drained the socket (epoll is
    /// edge-triggered), so the socket is marked not readable: the guest's
    /// next read waits for the next edge instead of making a `recv` that
    /// can only fail with `EAGAIN` — one system call less per request, as
    /// tokio's own `poll_read` does. Tokio clears the readiness only if no
    /// new edge arrived since it was observed, so no wake-up is lost.
    fn recv_draining(&self, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
        let mut short = None;
        let result = self.stream.try_io(Interest::READABLE, || {
            let n = recv_into(&self.stream, buf, want, libc::MSG_DONTWAIT)?;
            if 0 < n && n < want {
                // Tokio clears the readiness on `WouldBlock`; the bytes
                // read are returned below.
                short = Some(n);
                return Err(io::ErrorKind::WouldBlock.into());
            }
            Ok(n)
        });
        match (result, short) {
            (_, Some(n)) => Ok(n),
            (result, None) => result,
        }
    }

    /// One `send` that does not wait, whether the socket blocks or not; on
    /// `WouldBlock` the runtime forgets the socket's write readiness, so
    /// that waiting for it waits for room.
    fn send(&self, bytes: &[u8]) -> io::Result<usize> {
        self.stream.try_io(Interest::WRITABLE, || {
            self.stream
                .sock()
                .send_with_flags(bytes, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        })
    }

    /// Sends as much of the pending bytes as the socket takes now.
    pub(super) fn push(&self, out: &mut Outgoing, counters: &Counters) {
        let _ = out.send_with(counters, |bytes| match self.send(bytes) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Poll::Pending,
            sent => Poll::Ready(sent),
        });
    }

    pub(super) fn poll_drained(
        &self,
        cx: &mut Context<'_>,
        out: &mut Outgoing,
        counters: &Counters,
    ) -> Poll<io::Result<()>> {
        loop {
            self.push(out, counters);
            if let Some(kind) = out.failed {
                return Poll::Ready(Err(kind.into()));
            }
            if out.pending.is_empty() {
                return Poll::Ready(Ok(()));
            }
            ready!(self.stream.poll_write_ready(cx))?;
        }
    }

    pub(super) fn poll_read(
        &self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        counters: &Counters,
    ) -> Poll<io::Result<()>> {
        loop {
            ready!(self.stream.poll_read_ready(cx))?;
            let read = self.stream.try_io(Interest::READABLE, || {
                // SAFETY: `recv` writes only initialised bytes, so nothing
                // in the unfilled part is de-initialised.
                let unfilled = unsafe { buf.unfilled_mut() };
                let n = self
                    .stream
                    .sock()
                    .recv_with_flags(unfilled, libc::MSG_DONTWAIT)?;
                // SAFETY: `recv` initialised the first `n` unfilled bytes.
                unsafe { buf.assume_init(n) };
                Ok(n)
            });
            match read {
                Ok(n) => {
                    buf.advance(n);
                    counters.received(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Half-closes the connection: the client reads end of file.
    pub(super) fn shutdown(&self) -> io::Result<()> {
        self.stream.sock().shutdown(std::net::Shutdown::Write)
    }
}

/// How long a guest's read may sleep in the socket of a connection its
/// thread serves alone.
#[derive(Debug)]
struct Sleeping {
    idle: Duration,
    /// When, from the connection's start, its `connection_timeout` ends it.
    deadline: Option<Duration>,
    /// Raised by the signals the runtime must see to (INT, TERM, QUIT).
    stop: Arc<AtomicBool>,
    /// The socket's receive timeout now (`None`: not set yet).
    timeout: Mutex<Option<Duration>>,
}

impl Sleeping {
    /// How long a read starting `elapsed` into the connection, whose last
    /// byte moved at `last_io`, may sleep: until the idle timeout or the
    /// connection's deadline, whichever is first. `None` once a signal came
    /// that the runtime must see to, or when less than a millisecond is
    /// left: the runtime must see to that.
    fn limit(&self, elapsed: Duration, last_io: Duration) -> Option<Duration> {
        if self.stop.load(Ordering::Relaxed) {
            return None;
        }
        let end = match self.deadline {
            Some(deadline) => deadline.min(last_io + self.idle),
            None => last_io + self.idle,
        };
        let limit = end.checked_sub(elapsed)?;
        (limit >= Duration::from_millis(1)).then_some(limit)
    }

    /// Sets the socket's receive timeout to `limit`, unless the one set is
    /// already within [`TIMEOUT_SLACK`] of it (a read then sleeps for at
    /// most that much too long, and one system call per request is saved).
    fn set_timeout(&self, stream: &RawStream, limit: Duration) -> io::Result<()> {
        let mut set = self.timeout.lock().unwrap_or_else(|p| p.into_inner());
        if set.is_some_and(|set| set.abs_diff(limit) <= TIMEOUT_SLACK) {
            return Ok(());
        }
        stream.sock().set_read_timeout(Some(limit))?;
        *set = Some(limit);
        Ok(())
    }
}

/// Whether a sleeping `recv` ended without data or an error of the
/// connection: its receive timeout ran out (`EAGAIN`), or a signal
/// interrupted it.
fn is_wake_up(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}

/// One `recv` with `flags` of at most `want` bytes into `buf`'s spare
/// capacity.
fn recv_into(stream: &RawStream, buf: &mut BytesMut, want: usize, flags: i32) -> io::Result<usize> {
    buf.reserve(want);
    let spare = &mut buf.spare_capacity_mut()[..want];
    let n = stream.sock().recv_with_flags(spare, flags)?;
    // SAFETY: `recv` initialised the first `n` bytes of the spare capacity,
    // which directly follows the `len` bytes already initialised.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sleeping(idle: Duration, deadline: Option<Duration>, stop: bool) -> Sleeping {
        Sleeping {
            idle,
            deadline,
            stop: Arc::new(AtomicBool::new(stop)),
            timeout: Mutex::new(None),
        }
    }

    #[test]
    fn a_read_sleeps_until_the_first_timeout_and_never_after_a_stop() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let us = Duration::from_micros;
        // Deadlines from the connection's start: 5 s after the reads
        // below (at 10 s), and 1 s before them.
        let soon = Some(s(15));
        let past = Some(s(9));
        // (idle timeout, deadline, stop raised, elapsed, last byte at, the
        // sleep allowed: a range, or None)
        let cases = [
            (s(30), None, false, s(10), s(9), Some((s(29), s(29)))),
            (s(30), None, false, s(0), s(0), Some((s(30), s(30)))),
            (s(1), None, false, s(10), s(8), None),
            (s(1), None, false, s(10), s(9), None),
            (s(1), None, false, s(10), s(9) + us(500), None),
            (s(1), None, false, s(10), s(9) + ms(2), Some((ms(2), ms(2)))),
            (s(30), soon, false, s(10), s(10), Some((s(5), s(5)))),
            (s(2), soon, false, s(10), s(10), Some((s(2), s(2)))),
            (s(30), past, false, s(10), s(10), None),
            (s(30), None, true, s(10), s(10), None),
        ];
        for (i, (idle, deadline, stop, elapsed, last_io, want)) in cases.into_iter().enumerate() {
            let got = sleeping(idle, deadline, stop).limit(elapsed, last_io);
            match (got, want) {
                (None, None) => {}
                (Some(got), Some((low, high))) => {
                    assert!(low <= got && got <= high, "case {i}: {got:?}")
                }
                _ => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[tokio::test]
    async fn the_receive_timeout_is_set_again_only_when_it_moves_past_the_slack() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let stream = RawStream::Unix(a);
        let set = |stream: &RawStream| stream.sock().read_timeout().unwrap();
        let sleeping = sleeping(Duration::from_secs(30), None, false);
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        // (asked for, then set on the socket)
        let steps = [
            (s(5), s(5)),
            (s(5) - ms(5), s(5)),
            (s(5) + TIMEOUT_SLACK, s(5)),
            (s(4), s(4)),
            // (The kernel keeps whole jiffies: a tenth of a second is exact.)
            (s(4) + ms(100), s(4) + ms(100)),
        ];
        for (i, (asked, want)) in steps.into_iter().enumerate() {
            sleeping.set_timeout(&stream, asked).unwrap();
            assert_eq!(set(&stream), Some(want), "step {i}");
        }
    }

    #[tokio::test]
    async fn a_sleeping_read_ends_with_data_or_gives_way_at_its_timeout() {
        let (a, mut b) = tokio::net::UnixStream::pair().unwrap();
        let counters = Counters::new(Instant::now());
        let wait = Wait::InSocket {
            idle: Duration::from_millis(50),
            deadline: None,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let raw = Raw::new(RawStream::Unix(a), wait, counters.started).unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut b, b"ping")
            .await
            .unwrap();
        let got = raw.read_sleeping(64, &counters).unwrap().unwrap();
        assert_eq!(&got[..], b"ping");
        // Nothing more: the sleep ends at the idle timeout, without data,
        // for the runtime to see to.
        assert!(raw.read_sleeping(64, &counters).is_none());
    }
}
