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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
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

/// One accepted client connection, as the guest's stdin and stdout use it.
#[derive(Debug)]
pub struct ClientSocket {
    stream: TcpStream,
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
    /// Wraps an accepted connection.
    pub fn new(stream: TcpStream) -> Arc<Self> {
        Arc::new(Self {
            stream,
            out: Mutex::default(),
            started: Instant::now(),
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

    fn outgoing(&self) -> MutexGuard<'_, Outgoing> {
        // A panic while holding this lock cannot leave `Outgoing` invalid.
        self.out.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    fn read(&self, size: usize) -> StreamResult<Bytes> {
        if size == 0 {
            return Ok(Bytes::new());
        }
        let want = size.min(CHUNK);
        // A guest asks for a buffer's worth (8 KiB from Rust's std) and
        // mostly gets a line: receive into this thread's scratch buffer and
        // keep only what came, rather than allocate `want` bytes each time.
        SCRATCH.with_borrow_mut(|scratch| {
            scratch.clear();
            match self.recv_draining(scratch, want) {
                Ok(0) => Err(StreamError::Closed),
                Ok(n) => {
                    self.touch();
                    self.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
                    Ok(if n < COPY_BELOW {
                        Bytes::copy_from_slice(scratch)
                    } else {
                        scratch.split().freeze()
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Bytes::new()),
                Err(e) => Err(stream_error(e)),
            }
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
            let n = recv_into(&self.stream, buf, want)?;
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

    /// Sends as much of the pending bytes as the socket takes now.
    fn push(&self, out: &mut Outgoing) {
        while !out.pending.is_empty() && out.failed.is_none() {
            match self.stream.try_write(&out.pending) {
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

/// One `recv` of at most `want` bytes into `buf`'s spare capacity.
fn recv_into(stream: &TcpStream, buf: &mut BytesMut, want: usize) -> io::Result<usize> {
    buf.reserve(want);
    let spare = &mut buf.spare_capacity_mut()[..want];
    let n = socket2::SockRef::from(stream).recv(spare)?;
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
            match client.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    client.touch();
                    client.bytes_in.fetch_add(n as u64, Ordering::Relaxed);
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
