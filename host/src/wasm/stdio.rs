//! Guest stdio: stdin and stdout are the client socket, stderr is the log.
//!
//! The guest's stdin and stdout read and write the socket directly — no
//! extra task and no pipe between them. They reach the socket through a
//! [`GuestIo`] slot that the host attaches a [`ClientSocket`] to for the
//! connection hooks and detaches afterwards: a detached stdin reads end of
//! file and a detached stdout discards what is written, so nothing of one
//! client can reach another through an instance's stdio.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use nix::libc;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

/// The most a guest reads or has buffered for writing in one go.
const CHUNK: usize = 64 * 1024;

/// Reads shorter than this are copied out of the scratch buffer; longer
/// ones take the buffer's bytes without a copy.
const COPY_BELOW: usize = 16 * 1024;

thread_local! {
    /// Where a guest's reads are received (see [`ClientSocket::read`]).
    static SCRATCH: std::cell::RefCell<BytesMut> = std::cell::RefCell::new(BytesMut::new());
}

/// The longest line of guest stderr logged as one line.
const MAX_LOG_LINE: usize = 4096;

/// A receive timeout within this much of the one wanted is kept rather
/// than set again: a timeout may end up to this much late.
const TIMEOUT_SLACK: Duration = Duration::from_millis(10);

/// One accepted client connection, as the guest's stdin and stdout use it.
#[derive(Debug)]
pub struct ClientSocket {
    stream: TcpStream,
    /// Set when the thread serves this connection alone: the guest's reads
    /// then sleep in the socket (see [`ClientSocket::alone`]).
    sleeping: Option<Sleeping>,
    out: Mutex<Outgoing>,
    started: Instant,
    /// Milliseconds from `started` to the last byte moved.
    last_io: AtomicU64,
    /// Bytes read from the client.
    bytes_in: AtomicU64,
    /// Bytes written to the client.
    bytes_out: AtomicU64,
}

/// Bytes the guest wrote that the socket did not take yet, and the error
/// that ended writing.
#[derive(Debug, Default)]
struct Outgoing {
    pending: BytesMut,
    failed: Option<io::ErrorKind>,
}

impl ClientSocket {
    /// Wraps an accepted connection served on a thread that serves others
    /// too: the guest's waits go through the runtime.
    pub fn new(stream: TcpStream) -> Arc<Self> {
        Self::wrap(stream, Instant::now(), None)
    }

    /// Wraps an accepted connection that its thread serves alone (the
    /// personalities that serve one connection at a time per process): the
    /// guest's `blocking-read` sleeps in `recv` on the socket itself, as
    /// Net::Server's children sleep in `read`, instead of waiting for
    /// readiness through the runtime and then reading — a system call, a
    /// fiber switch and a pass through the runtime less per request. The
    /// socket is made blocking and given a receive timeout, so that sleep
    /// ends with data, at the idle timeout or `deadline` (then the runtime
    /// ends the connection), or at a signal (`stop` says whether one asked
    /// the process to end). Everything else still goes through the runtime
    /// without blocking (`MSG_DONTWAIT`).
    pub fn alone(
        stream: TcpStream,
        idle: Duration,
        deadline: Option<Instant>,
        stop: Arc<AtomicBool>,
    ) -> io::Result<Arc<Self>> {
        socket2::SockRef::from(&stream).set_nonblocking(false)?;
        let started = Instant::now();
        let sleeping = Sleeping {
            idle,
            deadline: deadline.map(|at| at.saturating_duration_since(started)),
            stop,
            timeout: Mutex::new(None),
        };
        Ok(Self::wrap(stream, started, Some(sleeping)))
    }

    fn wrap(stream: TcpStream, started: Instant, sleeping: Option<Sleeping>) -> Arc<Self> {
        Arc::new(Self {
            stream,
            sleeping,
            out: Mutex::default(),
            started,
            last_io: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        })
    }

    /// Bytes read from and written to the client so far.
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.bytes_in.load(Ordering::Relaxed),
            self.bytes_out.load(Ordering::Relaxed),
        )
    }

    /// Resolves once no byte has moved for `timeout`.
    pub async fn idle(&self, timeout: Duration) {
        loop {
            let idle = self.started.elapsed().saturating_sub(self.last_io());
            if idle >= timeout {
                return;
            }
            tokio::time::sleep(timeout - idle).await;
        }
    }

    /// Whether writing to the client failed (it reset or went away).
    pub fn write_failed(&self) -> Option<io::ErrorKind> {
        self.outgoing().failed
    }

    /// Writes what the guest left buffered, then half-closes the connection
    /// so the client reads end of file.
    pub async fn close(&self) -> io::Result<()> {
        self.drain().await;
        if let Some(kind) = self.write_failed() {
            return Err(kind.into());
        }
        socket2::SockRef::from(&self.stream).shutdown(std::net::Shutdown::Write)
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

    fn outgoing(&self) -> MutexGuard<'_, Outgoing> {
        // A panic while holding this lock cannot leave `Outgoing` invalid.
        self.out.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn read(&self, size: usize) -> StreamResult<Bytes> {
        if size == 0 {
            return Ok(Bytes::new());
        }
        match self.receive(size, |buf, want| self.recv_draining(buf, want)) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::new()),
            result => result.map_err(stream_error)?,
        }
    }

    /// The guest's read when its thread may sleep in the socket (see
    /// [`ClientSocket::alone`]): `None` when it may not, or when the sleep
    /// ended without data (a timeout, a signal), so that the caller waits
    /// through the runtime, which then sees the timers and signals.
    fn read_sleeping(&self, size: usize) -> Option<StreamResult<Bytes>> {
        let sleeping = self.sleeping.as_ref()?;
        let limit = sleeping.limit(self.started.elapsed(), self.last_io())?;
        if let Err(e) = sleeping.set_timeout(&self.stream, limit) {
            return Some(Err(stream_error(e)));
        }
        match self.receive(size, |buf, want| recv_into(&self.stream, buf, want, 0)) {
            Err(e) if is_wake_up(&e) => None,
            result => Some(result.map_err(stream_error).and_then(|r| r)),
        }
    }

    /// Whether a signal asked the process to end while its thread serves
    /// this connection alone.
    fn stopping(&self) -> bool {
        (self.sleeping.as_ref()).is_some_and(|sleeping| sleeping.stop.load(Ordering::Relaxed))
    }

    /// Receives at most `size` bytes (and at most [`CHUNK`]) with `recv`:
    /// end of file is [`StreamError::Closed`], an I/O error is returned as
    /// such for the caller to sort.
    fn receive(
        &self,
        size: usize,
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
            self.received(n);
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
        let result = self.stream.try_io(tokio::io::Interest::READABLE, || {
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
        self.stream.try_io(tokio::io::Interest::WRITABLE, || {
            socket2::SockRef::from(&self.stream)
                .send_with_flags(bytes, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
        })
    }

    /// Sends as much of the pending bytes as the socket takes now.
    fn push(&self, out: &mut Outgoing) {
        while !out.pending.is_empty() && out.failed.is_none() {
            match self.send(&out.pending) {
                Ok(n) => {
                    out.pending.advance(n);
                    self.touch();
                    self.bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    out.failed = Some(e.kind());
                    out.pending.clear();
                }
            }
        }
    }

    fn check_write(&self) -> StreamResult<usize> {
        let mut out = self.outgoing();
        self.push(&mut out);
        match out.failed {
            Some(kind) => Err(stream_error(kind.into())),
            None => Ok(CHUNK.saturating_sub(out.pending.len())),
        }
    }

    fn write(&self, bytes: Bytes) -> StreamResult<()> {
        let mut out = self.outgoing();
        if let Some(kind) = out.failed {
            return Err(stream_error(kind.into()));
        }
        out.pending.extend_from_slice(&bytes);
        self.push(&mut out);
        Ok(())
    }

    /// `blocking-write-and-flush`: queues `bytes`, sends what the socket
    /// takes now and waits only while some is left. A client gone
    /// meanwhile is not an error here (the next write reports it), as in
    /// WASI's own implementation of the call.
    async fn write_and_flush(&self, bytes: Bytes) -> StreamResult<()> {
        self.write(bytes)?;
        self.drain().await;
        match self.write_failed().map(|kind| stream_error(kind.into())) {
            None | Some(StreamError::Closed) => Ok(()),
            Some(error) => Err(error),
        }
    }

    /// Waits until every pending byte was sent or writing failed.
    async fn drain(&self) {
        loop {
            {
                let mut out = self.outgoing();
                self.push(&mut out);
                if out.pending.is_empty() {
                    return;
                }
            }
            if self.stream.writable().await.is_err() {
                self.outgoing().failed = Some(io::ErrorKind::BrokenPipe);
            }
        }
    }
}

/// How long a guest's read may sleep in the socket of a connection its
/// thread serves alone (see [`ClientSocket::alone`]).
#[derive(Debug)]
struct Sleeping {
    idle: Duration,
    /// When, from the connection's start, its `connection_timeout` ends it.
    deadline: Option<Duration>,
    /// Raised by the signals that end the process.
    stop: Arc<AtomicBool>,
    /// The socket's receive timeout now (`None`: not set yet).
    timeout: Mutex<Option<Duration>>,
}

impl Sleeping {
    /// How long a read starting `elapsed` into the connection, whose last
    /// byte moved at `last_io`, may sleep: until the idle timeout or the
    /// connection's deadline, whichever is first. `None` once a signal
    /// asked the process to end or when less than a millisecond is left:
    /// the runtime must see to that.
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
    fn set_timeout(&self, stream: &TcpStream, limit: Duration) -> io::Result<()> {
        let mut set = self.timeout.lock().unwrap_or_else(|p| p.into_inner());
        if set.is_some_and(|set| set.abs_diff(limit) <= TIMEOUT_SLACK) {
            return Ok(());
        }
        socket2::SockRef::from(stream).set_read_timeout(Some(limit))?;
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
fn recv_into(stream: &TcpStream, buf: &mut BytesMut, want: usize, flags: i32) -> io::Result<usize> {
    buf.reserve(want);
    let spare = &mut buf.spare_capacity_mut()[..want];
    let n = socket2::SockRef::from(stream).recv_with_flags(spare, flags)?;
    // SAFETY: `recv` initialised the first `n` bytes of the spare capacity,
    // which directly follows the `len` bytes already initialised.
    unsafe { buf.set_len(buf.len() + n) };
    Ok(n)
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

/// The slot through which an instance's stdin and stdout reach the client.
/// Cloned into the instance's WASI context; the host attaches and detaches
/// the client.
#[derive(Clone, Debug, Default)]
pub struct GuestIo(Arc<GuestIoInner>);

#[derive(Debug, Default)]
struct GuestIoInner {
    client: Mutex<Option<Arc<ClientSocket>>>,
    /// How often the guest waited for the client: each wait ends a burst of
    /// computation (see [`crate::wasm::sandbox`]).
    waits: AtomicU64,
}

impl GuestIo {
    /// Connects stdin and stdout to `client`.
    pub fn attach(&self, client: Arc<ClientSocket>) {
        *self.slot() = Some(client);
    }

    /// Disconnects stdin and stdout: stdin reads end of file, stdout discards.
    pub fn detach(&self) {
        *self.slot() = None;
    }

    /// How often the guest waited for the client so far.
    pub fn waits(&self) -> u64 {
        self.0.waits.load(Ordering::Relaxed)
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<ClientSocket>>> {
        // An `Option<Arc<_>>` cannot be left invalid by a panic.
        self.0.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn client(&self) -> Option<Arc<ClientSocket>> {
        self.slot().clone()
    }

    fn note_wait(&self) {
        self.0.waits.fetch_add(1, Ordering::Relaxed);
    }

    /// The guest's stdin.
    pub fn stdin(&self) -> GuestStdin {
        GuestStdin(self.clone())
    }

    /// The guest's stdout.
    pub fn stdout(&self) -> GuestStdout {
        GuestStdout(self.clone())
    }
}

/// The guest's stdin: reads the attached client.
#[derive(Clone, Debug)]
pub struct GuestStdin(GuestIo);

/// The guest's stdout: writes to the attached client.
#[derive(Clone, Debug)]
pub struct GuestStdout(GuestIo);

impl IsTerminal for GuestStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl IsTerminal for GuestStdout {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for GuestStdin {
    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }
}

impl StdoutStream for GuestStdout {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStdin {
    async fn ready(&mut self) {
        if let Some(client) = self.0.client() {
            self.0.note_wait();
            // An error means the socket is readable (it will report the error).
            let _ = client.stream.readable().await;
        }
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for GuestStdin {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        match self.0.client() {
            Some(client) => client.read(size),
            None => Err(StreamError::Closed),
        }
    }

    /// `blocking-read`, the call behind every read of Rust's `std::io::stdin`:
    /// the default would look the client up twice per read.
    async fn blocking_read(&mut self, size: usize) -> StreamResult<Bytes> {
        let Some(client) = self.0.client() else {
            return Err(StreamError::Closed);
        };
        self.0.note_wait();
        if let Some(read) = client.read_sleeping(size) {
            return read;
        }
        if client.stopping() {
            // Let the runtime end the process before reading on: a client
            // that keeps the socket full would never let it run.
            tokio::task::yield_now().await;
        }
        loop {
            let waited = client.stream.readable().await;
            let bytes = client.read(size)?;
            if !bytes.is_empty() || size == 0 {
                return Ok(bytes);
            }
            // Nothing came although the wait ended: with an error, waiting
            // again would end the same way (the runtime is shutting down).
            waited.map_err(stream_error)?;
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStdout {
    async fn ready(&mut self) {
        if let Some(client) = self.0.client() {
            self.0.note_wait();
            client.drain().await;
        }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestStdout {
    /// `blocking-write-and-flush`, the call behind the SDK's `reply()`: one
    /// send, and no wait unless the socket is full. The default would wait
    /// for readiness twice and check for room three times per call.
    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        let Some(client) = self.0.client() else {
            return Ok(());
        };
        self.0.note_wait();
        client.write_and_flush(bytes).await
    }

    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        match self.0.client() {
            Some(client) => client.write(bytes),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Completion is observed through `ready`, which waits for the drain.
        self.check_write().map(drop)
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        match self.0.client() {
            Some(client) => client.check_write(),
            None => Ok(CHUNK),
        }
    }
}

impl AsyncRead for GuestStdin {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let Some(client) = self.0.client() else {
            return Poll::Ready(Ok(()));
        };
        loop {
            ready!(client.stream.poll_read_ready(cx))?;
            let read = client.stream.try_io(tokio::io::Interest::READABLE, || {
                // SAFETY: `recv` writes only initialised bytes, so nothing
                // in the unfilled part is de-initialised.
                let unfilled = unsafe { buf.unfilled_mut() };
                let n = socket2::SockRef::from(&client.stream)
                    .recv_with_flags(unfilled, libc::MSG_DONTWAIT)?;
                // SAFETY: `recv` initialised the first `n` unfilled bytes.
                unsafe { buf.assume_init(n) };
                Ok(n)
            });
            match read {
                Ok(n) => {
                    buf.advance(n);
                    client.received(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for GuestStdout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(client) = self.0.client() else {
            return Poll::Ready(Ok(buf.len()));
        };
        ready!(self.as_ref().poll_drained(cx, &client))?;
        client
            .write(Bytes::copy_from_slice(buf))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.client() {
            Some(client) => self.as_ref().poll_drained(cx, &client),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl GuestStdout {
    fn poll_drained(&self, cx: &mut Context<'_>, client: &ClientSocket) -> Poll<io::Result<()>> {
        loop {
            {
                let mut out = client.outgoing();
                client.push(&mut out);
                if let Some(kind) = out.failed {
                    return Poll::Ready(Err(kind.into()));
                }
                if out.pending.is_empty() {
                    return Poll::Ready(Ok(()));
                }
            }
            ready!(client.stream.poll_write_ready(cx))?;
        }
    }
}

/// The guest's stderr: each line becomes a log line at `notice`, inside the
/// connection's span (so tagged with the service and the client).
#[derive(Clone, Debug, Default)]
pub struct GuestStderr(Arc<Mutex<Vec<u8>>>);

impl GuestStderr {
    fn take_lines(&self, bytes: &[u8]) {
        let mut buf = self.0.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend_from_slice(bytes);
        while let Some(end) = line_end(&buf) {
            log_line(&buf[..end]);
            buf.drain(..end);
        }
    }
}

fn log_line(line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    tracing::info!(target: "guest", "stderr: {}", text.trim_end_matches(['\r', '\n']));
}

/// Where the first log line in `buf` ends: after a newline, or at
/// [`MAX_LOG_LINE`] bytes.
fn line_end(buf: &[u8]) -> Option<usize> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => Some(i + 1),
        None if buf.len() >= MAX_LOG_LINE => Some(MAX_LOG_LINE),
        None => None,
    }
}

impl Drop for GuestStderr {
    fn drop(&mut self) {
        // The last handle logs what is left of an unterminated line.
        if Arc::strong_count(&self.0) == 1 {
            let rest = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if !rest.is_empty() {
                log_line(&rest);
            }
        }
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStderr {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStderr {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take_lines(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(CHUNK)
    }
}

impl AsyncWrite for GuestStderr {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.take_lines(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let set = |client: &TcpStream| socket2::SockRef::from(client).read_timeout().unwrap();
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
            sleeping.set_timeout(&client, asked).unwrap();
            assert_eq!(set(&client), Some(want), "step {i}");
        }
    }

    #[test]
    fn log_lines_split_at_newline_or_length() {
        let long = vec![b'x'; MAX_LOG_LINE + 10];
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"", None),
            (b"partial", None),
            (b"one\n", Some(4)),
            (b"one\ntwo\n", Some(4)),
            (b"\n", Some(1)),
            (&long, Some(MAX_LOG_LINE)),
        ];
        for &(buf, want) in cases {
            assert_eq!(line_end(buf), want, "{:?}", String::from_utf8_lossy(buf));
        }
    }
}
