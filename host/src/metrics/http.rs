//! The metrics endpoint's HTTP side, served by the master between two
//! turns of its loop: it never blocks and never starts a thread (the
//! master forks). A scraper's request is read as it comes (`httparse`
//! parses it); `GET /metrics` (or `/`) gets the text in one response, and
//! the connection is closed. A client that sends no complete request
//! within [`REQUEST_TIME`], or more than [`MAX_REQUEST`] bytes, is
//! dropped; at most [`MAX_PENDING`] wait at once.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// How long a scraper has to send its request.
pub const REQUEST_TIME: Duration = Duration::from_secs(2);
/// The largest request read.
pub const MAX_REQUEST: usize = 8 << 10;
/// Scrapers waiting at once; more are closed at once.
pub const MAX_PENDING: usize = 16;
/// How long writing a response may block.
const WRITE_TIME: Duration = Duration::from_secs(2);

/// The variable a HUP hands the endpoint's socket over in.
pub const METRICS_FD_VAR: &str = "NETSERVER_METRICS_FD";

/// The listening socket and the scrapers being read.
#[derive(Debug)]
pub struct Endpoint {
    listener: TcpListener,
    pending: Vec<Pending>,
}

/// A scraper whose request is not complete yet.
#[derive(Debug)]
struct Pending {
    stream: TcpStream,
    request: Vec<u8>,
    since: Instant,
}

impl Endpoint {
    /// Binds `addr` (before root is dropped: a low port works), or takes
    /// the socket a HUP handed over in [`METRICS_FD_VAR`] (removed from the
    /// environment) when it is bound to the same address.
    pub fn open(addr: SocketAddr) -> Result<Self> {
        if let Some(listener) = handed_over(addr) {
            return Self::new(listener);
        }
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        socket
            .bind(&addr.into())
            .with_context(|| format!("metrics_port {addr}: cannot bind"))?;
        socket.listen(64)?;
        Self::new(socket.into())
    }

    fn new(listener: TcpListener) -> Result<Self> {
        listener.set_nonblocking(true)?;
        let endpoint = Self {
            listener,
            pending: Vec::new(),
        };
        if let Ok(addr) = endpoint.local_addr() {
            tracing::info!("Serving metrics on http://{addr}/metrics");
        }
        Ok(endpoint)
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Before a HUP re-executes the program: the socket stays open across
    /// `exec`, named in [`METRICS_FD_VAR`].
    pub fn hand_over(&self) -> Result<()> {
        use nix::fcntl::{FcntlArg, FdFlag, fcntl};
        fcntl(&self.listener, FcntlArg::F_SETFD(FdFlag::empty()))
            .context("metrics socket: cannot keep it across exec")?;
        let fd = self.listener.as_fd();
        // SAFETY: the master has no other thread that reads or writes the
        // environment (it forks, so it runs none).
        unsafe {
            std::env::set_var(
                METRICS_FD_VAR,
                std::os::fd::AsRawFd::as_raw_fd(&fd).to_string(),
            )
        };
        Ok(())
    }

    /// The descriptors to wait on: the listening socket, then the pending
    /// scrapers.
    pub fn fds(&self) -> impl Iterator<Item = BorrowedFd<'_>> {
        std::iter::once(self.listener.as_fd()).chain(self.pending.iter().map(|p| p.stream.as_fd()))
    }

    /// Accepts who is waiting, reads what came, answers complete requests
    /// with `render()`'s text, and drops scrapers that took too long.
    pub fn serve(&mut self, render: impl Fn() -> String) {
        while let Ok((stream, _)) = self.listener.accept() {
            if self.pending.len() >= MAX_PENDING || stream.set_nonblocking(true).is_err() {
                continue;
            }
            self.pending.push(Pending {
                stream,
                request: Vec::new(),
                since: Instant::now(),
            });
        }
        let now = Instant::now();
        let mut answered = Vec::new();
        self.pending.retain_mut(|p| match p.read() {
            Read_::More if now.duration_since(p.since) < REQUEST_TIME => true,
            Read_::More | Read_::Gone => false,
            Read_::Request(target) => {
                answered.push((p.stream.try_clone(), target));
                false
            }
        });
        for (stream, target) in answered {
            let Ok(stream) = stream else { continue };
            respond(stream, target.as_deref(), &render);
        }
    }
}

/// What reading a scraper gave.
enum Read_ {
    /// Not a complete request yet.
    More,
    /// A complete request: its path, if it is a `GET` or `HEAD`.
    Request(Option<String>),
    /// The scraper left, or sent too much or nonsense.
    Gone,
}

impl Pending {
    fn read(&mut self) -> Read_ {
        let mut buf = [0u8; 2048];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Read_::Gone,
                Ok(n) => {
                    self.request.extend_from_slice(&buf[..n]);
                    if self.request.len() > MAX_REQUEST {
                        return Read_::Gone;
                    }
                }
                Err(err) if err.kind() == ErrorKind::WouldBlock => break,
                Err(err) if err.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return Read_::Gone,
            }
        }
        parse(&self.request)
    }
}

/// A request so far: complete or not, and its path.
fn parse(bytes: &[u8]) -> Read_ {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    match request.parse(bytes) {
        Ok(httparse::Status::Complete(_)) => {
            let path = match request.method {
                Some("GET" | "HEAD") => request.path.map(str::to_owned),
                _ => None,
            };
            Read_::Request(path)
        }
        Ok(httparse::Status::Partial) => Read_::More,
        Err(_) => Read_::Gone,
    }
}

/// Answers one request: the metrics for `GET /metrics` (or `/`), 404 for
/// another path, 405 for another method.
fn respond(mut stream: TcpStream, target: Option<&str>, render: &impl Fn() -> String) {
    let (status, body) = match target.map(|t| t.split('?').next().unwrap_or(t)) {
        Some("/metrics" | "/") => ("200 OK", render()),
        Some(_) => (
            "404 Not Found",
            "not found: the metrics are at /metrics\n".to_owned(),
        ),
        None => ("405 Method Not Allowed", "GET /metrics\n".to_owned()),
    };
    let content_type = if status.starts_with("200") {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; charset=utf-8"
    };
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // The response fits the socket's buffer as a rule; a scraper that
    // does not read gets WRITE_TIME.
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_write_timeout(Some(WRITE_TIME));
    let _ = stream
        .write_all(head.as_bytes())
        .and_then(|()| stream.write_all(body.as_bytes()));
    let _ = stream.shutdown(std::net::Shutdown::Write);
}

/// The socket a HUP handed over, if it is bound to `addr` (or to a port
/// chosen for port 0 on the same address).
fn handed_over(addr: SocketAddr) -> Option<TcpListener> {
    let fd: RawFd = std::env::var(METRICS_FD_VAR).ok()?.parse().ok()?;
    // SAFETY: read once, before any thread exists; the variable goes so
    // that no child inherits it.
    unsafe { std::env::remove_var(METRICS_FD_VAR) };
    // SAFETY: the previous master named this descriptor, which it kept
    // open across `exec` for us; nothing else in this process owns it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listener = TcpListener::from(owned);
    let bound = listener.local_addr().ok()?;
    let same = bound.ip() == addr.ip() && (addr.port() == 0 || bound.port() == addr.port());
    if !same {
        // The configuration names another address now: close the old one.
        return None;
    }
    use nix::fcntl::{FcntlArg, FdFlag, fcntl};
    let _ = fcntl(&listener, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    Some(listener)
}

/// Closes a handed-over socket nobody took (the new configuration has no
/// `metrics_port`).
pub fn close_handed_over() {
    if let Ok(fd) = std::env::var(METRICS_FD_VAR)
        && let Ok(fd) = fd.parse::<RawFd>()
    {
        // SAFETY: as in `handed_over`: read once, before any thread.
        unsafe { std::env::remove_var(METRICS_FD_VAR) };
        // SAFETY: as in `handed_over`: ours alone; dropped, it closes.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_complete_or_not() {
        let cases: &[(&[u8], Option<Option<&str>>)] = &[
            (
                b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n",
                Some(Some("/metrics")),
            ),
            (b"HEAD / HTTP/1.0\r\n\r\n", Some(Some("/"))),
            (b"POST /metrics HTTP/1.1\r\n\r\n", Some(None)),
            (b"GET /metrics HTTP/1.1\r\nHost: x\r\n", None),
            (b"GET /met", None),
        ];
        for (bytes, want) in cases {
            let got = match parse(bytes) {
                Read_::Request(path) => Some(path),
                Read_::More => None,
                Read_::Gone => panic!("{bytes:?} is not nonsense"),
            };
            assert_eq!(got.as_ref().map(|p| p.as_deref()), *want, "{bytes:?}");
        }
        assert!(matches!(parse(b"\x00\x01 nonsense\r\n\r\n"), Read_::Gone));
    }

    #[test]
    fn a_scrape_gets_the_text_and_others_are_told_where_it_is() {
        let mut endpoint = Endpoint::open("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = endpoint.local_addr().unwrap();
        let cases = [
            (
                "GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n",
                "200 OK",
                "the text\n",
            ),
            (
                "GET /other HTTP/1.1\r\n\r\n",
                "404 Not Found",
                "at /metrics",
            ),
            ("DELETE / HTTP/1.1\r\n\r\n", "405", "GET /metrics"),
        ];
        for (request, status, body) in cases {
            let mut client = TcpStream::connect(addr).unwrap();
            client.write_all(request.as_bytes()).unwrap();
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            let mut reply = String::new();
            // The endpoint answers when served; serve until it has.
            let deadline = Instant::now() + Duration::from_secs(10);
            while reply.is_empty() && Instant::now() < deadline {
                endpoint.serve(|| "the text\n".to_owned());
                client.set_nonblocking(true).unwrap();
                let mut buf = [0u8; 4096];
                if let Ok(n) = client.read(&mut buf) {
                    reply.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            client.set_nonblocking(false).unwrap();
            let _ = client.read_to_string(&mut reply);
            assert!(
                reply.starts_with(&format!("HTTP/1.1 {status}")),
                "{reply:?}"
            );
            assert!(reply.contains(body), "{reply:?}");
        }
    }
}
