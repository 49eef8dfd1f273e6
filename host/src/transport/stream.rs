//! Accepted streams: a raw socket (TCP or unix stream), or a stream that
//! wraps one (TLS, or inetd's pipes); a datagram request served as one;
//! and the PROXY header read from a raw socket's start.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::Arc;
use std::task::{Context, Poll};

use nix::sys::socket::{MsgFlags, recv};
use tokio::io::{AsyncRead, AsyncWrite, Interest};
use tokio::net::{TcpStream, UnixStream};

use super::addr::{credentials, family_of, local_of};
use super::datagram::{Received, ReplyCap};
use crate::client::{Local, Peer};
use crate::proxy::{self, Origin, Parsed};

/// A stream that is not a raw socket, such as TLS over one: served
/// through its `AsyncRead` and `AsyncWrite`.
pub trait AsyncStream: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin + 'static> AsyncStream for T {}

/// What a client's guest reads and writes: an accepted stream, or one
/// datagram and its reply.
pub enum Stream {
    /// A raw socket: read and written with `recv` and `send`.
    Raw(RawStream),
    /// A stream wrapping a socket (TLS), or pipes.
    Wrapped {
        /// The stream.
        stream: Box<dyn AsyncStream>,
        /// Its protocol's name, as the client info gives it.
        proto: &'static str,
    },
    /// A datagram request, and its service's cap on the reply.
    Datagram(Box<Received>, Option<Arc<ReplyCap>>),
}

impl Stream {
    /// The protocol's name, lower case, as the client info gives it.
    pub fn proto(&self) -> &'static str {
        match self {
            Self::Raw(raw) => raw.proto(),
            Self::Wrapped { proto, .. } => proto,
            Self::Datagram(received, _) => received.proto(),
        }
    }
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Raw(raw) => f.debug_tuple("Raw").field(raw).finish(),
            Self::Wrapped { proto, .. } => write!(f, "Wrapped({proto})"),
            Self::Datagram(received, _) => f.debug_tuple("Datagram").field(received).finish(),
        }
    }
}

/// A connected socket, registered with the runtime.
#[derive(Debug)]
pub enum RawStream {
    /// TCP.
    Tcp(TcpStream),
    /// A unix stream socket.
    Unix(UnixStream),
}

impl RawStream {
    /// The protocol's name, lower case, as the client info gives it.
    pub fn proto(&self) -> &'static str {
        match self {
            Self::Tcp(_) => "tcp",
            Self::Unix(_) => "unix",
        }
    }

    /// Sends small replies at once (TCP: no Nagle delay); the guest writes
    /// its replies whole.
    pub fn send_at_once(&self) {
        if let Self::Tcp(stream) = self {
            let _ = stream.set_nodelay(true);
        }
    }

    /// Runs `io` (a non-blocking system call on [`RawStream::sock`]) if the
    /// runtime thinks the socket is ready for `interest`; on `WouldBlock`
    /// the runtime forgets that readiness (see tokio's `try_io`).
    pub fn try_io<R>(
        &self,
        interest: Interest,
        io: impl FnOnce() -> io::Result<R>,
    ) -> io::Result<R> {
        match self {
            Self::Tcp(stream) => stream.try_io(interest, io),
            Self::Unix(stream) => stream.try_io(interest, io),
        }
    }

    /// Waits until the socket may be readable.
    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Self::Tcp(stream) => stream.readable().await,
            Self::Unix(stream) => stream.readable().await,
        }
    }

    /// Waits until the socket may be ready for `interest`; says how.
    pub async fn ready(&self, interest: Interest) -> io::Result<tokio::io::Ready> {
        match self {
            Self::Tcp(stream) => stream.ready(interest).await,
            Self::Unix(stream) => stream.ready(interest).await,
        }
    }

    /// Waits until the socket may be writable.
    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Self::Tcp(stream) => stream.writable().await,
            Self::Unix(stream) => stream.writable().await,
        }
    }

    /// Polls for read readiness.
    pub fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Tcp(stream) => stream.poll_read_ready(cx),
            Self::Unix(stream) => stream.poll_read_ready(cx),
        }
    }

    /// Polls for write readiness.
    pub fn poll_write_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Tcp(stream) => stream.poll_write_ready(cx),
            Self::Unix(stream) => stream.poll_write_ready(cx),
        }
    }

    /// The socket, for system calls the runtime does not make.
    pub fn sock(&self) -> socket2::SockRef<'_> {
        socket2::SockRef::from(self)
    }

    /// The client's end, asked of the kernel.
    pub fn peer(&self) -> io::Result<Peer> {
        match self {
            Self::Tcp(stream) => stream.peer_addr().map(Peer::ip),
            Self::Unix(stream) => {
                let path = stream.peer_addr()?.as_pathname().map(Into::into);
                Ok(Peer::Unix {
                    path,
                    cred: credentials(stream),
                })
            }
        }
    }

    /// The server's end, asked of the kernel.
    pub fn local(&self) -> io::Result<Local> {
        local_of(self.as_fd())
    }

    /// Reads the PROXY header at the start of the stream, consuming exactly
    /// its bytes (what follows stays for the guest), within
    /// [`proxy::HEADER_TIMEOUT`]. The error says why the connection must
    /// be closed.
    pub async fn read_proxy_header(&self) -> Result<Origin, String> {
        match tokio::time::timeout(proxy::HEADER_TIMEOUT, self.proxy_header()).await {
            Ok(result) => result,
            Err(_) => Err(format!(
                "no complete PROXY header within {}s",
                proxy::HEADER_TIMEOUT.as_secs()
            )),
        }
    }

    async fn proxy_header(&self) -> Result<Origin, String> {
        let why = |e: io::Error| format!("reading the PROXY header: {e}");
        let mut buf = vec![0; proxy::MAX_HEADER];
        let fd = self.as_raw_fd();
        loop {
            let ready = self.ready(Interest::READABLE).await.map_err(why)?;
            // Peek (whatever follows the header stays for the guest), and
            // while the header is not whole, wait for the next bytes: the
            // peeked ones leave the socket readable, so a `WouldBlock` from
            // inside `try_io` makes the runtime forget that readiness —
            // unless more came meanwhile — and the next wait is for more.
            let peeked = self.try_io(Interest::READABLE, || {
                let seen = recv(fd, &mut buf, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT)
                    .map_err(io::Error::from)?;
                match proxy::parse(&buf[..seen]) {
                    Parsed::Incomplete if seen > 0 => Err(io::ErrorKind::WouldBlock.into()),
                    parsed => Ok((seen, parsed)),
                }
            });
            match peeked {
                // The client's end came after a part of a header: no more
                // will come.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && ready.is_read_closed() => {
                    return Err("the connection closed inside the PROXY header".to_owned());
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(why(e)),
                Ok((0, _)) => {
                    return Err("the connection closed before a whole PROXY header".to_owned());
                }
                Ok((_, Parsed::Header { len, origin })) => {
                    self.consume(&mut buf[..len]).await.map_err(why)?;
                    return Ok(origin);
                }
                Ok((_, Parsed::Invalid(why))) => return Err(why),
                Ok((_, Parsed::Incomplete)) => unreachable!("an empty peek ends above"),
            }
        }
    }

    /// Reads exactly `buf.len()` bytes, already known to be there.
    async fn consume(&self, buf: &mut [u8]) -> io::Result<()> {
        let fd = self.as_raw_fd();
        let mut done = 0;
        while done < buf.len() {
            let read = self.try_io(Interest::READABLE, || {
                recv(fd, &mut buf[done..], MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
            });
            match read {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// A raw socket read and written through the runtime (the TLS layer
/// above it uses these).
impl AsyncRead for RawStream {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => std::pin::Pin::new(stream).poll_read(cx, buf),
            Self::Unix(stream) => std::pin::Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for RawStream {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(stream) => std::pin::Pin::new(stream).poll_write(cx, buf),
            Self::Unix(stream) => std::pin::Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: std::pin::Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(stream) => std::pin::Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Unix(stream) => std::pin::Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: std::pin::Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(stream) => std::pin::Pin::new(stream).poll_shutdown(cx),
            Self::Unix(stream) => std::pin::Pin::new(stream).poll_shutdown(cx),
        }
    }
}

impl AsFd for RawStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(stream) => stream.as_fd(),
            Self::Unix(stream) => stream.as_fd(),
        }
    }
}

impl AsRawFd for RawStream {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.as_fd().as_raw_fd()
    }
}

/// A connected socket not yet registered with a runtime: the connection
/// a `fork` child or `inetd` serves.
#[derive(Debug)]
pub enum StdStream {
    /// TCP.
    Tcp(std::net::TcpStream),
    /// A unix stream socket.
    Unix(std::os::unix::net::UnixStream),
}

impl StdStream {
    /// The connected stream socket on `fd` (inetd's stdin), or why it is
    /// not one.
    pub fn from_fd(fd: OwnedFd) -> Result<Self, String> {
        use nix::sys::socket::{AddressFamily, SockType, getsockopt, sockopt};
        match getsockopt(&fd, sockopt::SockType) {
            Ok(SockType::Stream) => {}
            Ok(_) => return Err("is not a stream socket".to_owned()),
            Err(_) => return Err("is not a socket".to_owned()),
        }
        let stream = match family_of(fd.as_fd()) {
            Some(AddressFamily::Unix) => Self::Unix(fd.into()),
            Some(AddressFamily::Inet | AddressFamily::Inet6) => Self::Tcp(fd.into()),
            _ => return Err("is not a TCP or unix socket".to_owned()),
        };
        let connected = match &stream {
            Self::Tcp(s) => s.peer_addr().is_ok(),
            Self::Unix(s) => s.peer_addr().is_ok(),
        };
        if !connected {
            return Err("is not a connected socket".to_owned());
        }
        Ok(stream)
    }

    /// The stream, non-blocking and registered with the current runtime.
    pub fn into_raw(self) -> io::Result<RawStream> {
        Ok(match self {
            Self::Tcp(stream) => {
                stream.set_nonblocking(true)?;
                RawStream::Tcp(TcpStream::from_std(stream)?)
            }
            Self::Unix(stream) => {
                stream.set_nonblocking(true)?;
                RawStream::Unix(UnixStream::from_std(stream)?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_proxy_header_is_consumed_exactly() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = RawStream::Unix(a);
        let client = b;
        client
            .try_write(b"PROXY TCP4 192.0.2.7 10.0.0.1 4000 25\r\nhello")
            .unwrap();
        let origin = server.read_proxy_header().await.unwrap();
        assert_eq!(
            origin,
            Origin::Relayed {
                client: "192.0.2.7:4000".parse().unwrap(),
                server: "10.0.0.1:25".parse().unwrap(),
            }
        );
        let mut rest = [0u8; 16];
        server.readable().await.unwrap();
        let n = recv(server.as_raw_fd(), &mut rest, MsgFlags::empty()).unwrap();
        assert_eq!(&rest[..n], b"hello");
    }

    #[tokio::test]
    async fn a_client_that_leaves_inside_a_proxy_header_ends_the_wait() {
        let (a, b) = UnixStream::pair().unwrap();
        let server = RawStream::Unix(a);
        b.try_write(b"PROXY TCP4 192.0.2.").unwrap();
        drop(b);
        let err = server.read_proxy_header().await.unwrap_err();
        assert_eq!(err, "the connection closed inside the PROXY header");
    }

    #[tokio::test]
    async fn unix_peers_carry_their_credentials() {
        let (a, _b) = UnixStream::pair().unwrap();
        let server = RawStream::Unix(a);
        assert_eq!(server.proto(), "unix");
        let Peer::Unix { path, cred } = server.peer().unwrap() else {
            panic!("a unix peer");
        };
        assert_eq!(path, None);
        let cred = cred.expect("credentials");
        assert_eq!(cred.uid, nix::unistd::geteuid().as_raw());
        assert_eq!(cred.pid, std::process::id() as i32);
    }

    #[test]
    fn only_a_connected_stream_socket_is_served() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(matches!(
            StdStream::from_fd(OwnedFd::from(a)),
            Ok(StdStream::Unix(_))
        ));
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            StdStream::from_fd(OwnedFd::from(file)).unwrap_err(),
            "is not a socket"
        );
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            StdStream::from_fd(OwnedFd::from(listener)).unwrap_err(),
            "is not a connected socket"
        );
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            StdStream::from_fd(OwnedFd::from(udp)).unwrap_err(),
            "is not a stream socket"
        );
    }
}
