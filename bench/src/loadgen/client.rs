//! One client's requests: a connection per request, round trips on a
//! persistent connection (TCP, TLS over TCP, or a unix stream socket), or
//! datagrams on a UDP socket of its own.

use std::io;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls_pki_types::ServerName;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream, UdpSocket, UnixStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::Target;
use super::stats::{ErrorKind, Handshake};
use crate::protocol::{MAX_DATAGRAM, MAX_LINE, push_udp_reply};
use crate::tls::version_name;

/// What a request sends and must get back, byte for byte.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The request line with its `\r\n`.
    pub request: Vec<u8>,
    /// The reply expected, with its `\r\n`.
    pub expected: Vec<u8>,
}

/// A failed request: why, and a description.
pub type Failure = (ErrorKind, String);

/// How clients speak TLS: a connector (one client configuration, and so
/// one session cache, shared by every client) and the name sent as SNI and
/// checked against the certificate.
#[derive(Clone)]
pub struct Tls {
    /// The connector of the shared client configuration.
    pub connector: TlsConnector,
    /// The server's name.
    pub name: ServerName<'static>,
}

impl Tls {
    /// Clients speaking TLS with `config`, to the server named `name`.
    pub fn new(config: rustls::ClientConfig, name: &str) -> anyhow::Result<Self> {
        let name = ServerName::try_from(name.to_owned())
            .map_err(|e| anyhow::anyhow!("--tls-name {name:?}: {e}"))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            name,
        })
    }
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// Opens a TCP connection to `addr` with TCP_NODELAY set, from `source`
/// when given (the port is chosen at connect time).
pub async fn connect_tcp(addr: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, Failure> {
    let stream = open(addr, source)
        .await
        .map_err(|e| (ErrorKind::Connect, format!("connect {addr}: {e}")))?;
    stream
        .set_nodelay(true)
        .map_err(|e| (ErrorKind::Connect, format!("TCP_NODELAY: {e}")))?;
    Ok(stream)
}

/// Opens a connection to `addr` with TCP_NODELAY set, from `source` when
/// given (the port is chosen at connect time).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<Connection, Failure> {
    let stream = connect_tcp(addr, source).await?;
    Ok(Connection::new(Stream::Tcp(stream)))
}

/// [`connect`], then a TLS handshake over the connection; a failed
/// handshake is a connect error.
pub async fn connect_tls(
    addr: SocketAddr,
    source: Option<IpAddr>,
    tls: &Tls,
) -> Result<Connection, Failure> {
    let stream = connect_tcp(addr, source).await?;
    let stream = tls
        .connector
        .connect(tls.name.clone(), stream)
        .await
        .map_err(|e| {
            (
                ErrorKind::Connect,
                format!("TLS handshake with {addr}: {e}"),
            )
        })?;
    let (_, session) = stream.get_ref();
    let handshake = Handshake {
        version: session.protocol_version().map_or("unknown", version_name),
        resumed: session.handshake_kind() == Some(rustls::HandshakeKind::Resumed),
    };
    let mut connection = Connection::new(Stream::Tls(Box::new(stream)));
    connection.handshake = Some(handshake);
    Ok(connection)
}

/// Opens a connection to the unix stream socket at `path`.
pub async fn connect_unix(path: &Path) -> Result<Connection, Failure> {
    let stream = UnixStream::connect(path).await.map_err(|e| {
        (
            ErrorKind::Connect,
            format!("connect {}: {e}", path.display()),
        )
    })?;
    Ok(Connection::new(Stream::Unix(stream)))
}

/// Opens a connection to `target`: [`connect`] (from `source` when
/// given), [`connect_tls`] when `tls` is given, or [`connect_unix`].
pub async fn connect_to(
    target: &Target,
    source: Option<IpAddr>,
    tls: Option<&Tls>,
) -> Result<Connection, Failure> {
    match (target, tls) {
        (Target::Ip(addr), None) => connect(*addr, source).await,
        (Target::Ip(addr), Some(tls)) => connect_tls(*addr, source, tls).await,
        (Target::Unix(path), None) => connect_unix(path).await,
        (Target::Unix(path), Some(_)) => Err((
            ErrorKind::Connect,
            format!("{}: no TLS over a unix socket here", path.display()),
        )),
    }
}

async fn open(addr: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect(addr).await;
    };
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    bind_address_no_port(&socket)?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// Lets `connect` pick the source port, so binding only the source address
/// does not reserve a port per socket (IP_BIND_ADDRESS_NO_PORT).
#[cfg(target_os = "linux")]
fn bind_address_no_port(socket: &TcpSocket) -> io::Result<()> {
    nix::sys::socket::setsockopt(
        socket,
        nix::sys::socket::sockopt::IpBindAddressNoPort,
        &true,
    )
    .map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn bind_address_no_port(_: &TcpSocket) -> io::Result<()> {
    Ok(())
}

/// A connected stream socket of either kind, or TLS over TCP.
#[derive(Debug)]
enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

/// A connection doing request/reply round trips.
#[derive(Debug)]
pub struct Connection {
    stream: BufReader<Stream>,
    reply: Vec<u8>,
    handshake: Option<Handshake>,
}

impl Connection {
    fn new(stream: Stream) -> Self {
        Self {
            stream: BufReader::new(stream),
            reply: Vec::with_capacity(64),
            handshake: None,
        }
    }

    /// What the TLS handshake came to, on a TLS connection.
    pub fn handshake(&self) -> Option<Handshake> {
        self.handshake
    }

    /// Closes the connection: over TLS, sends close_notify first (what a
    /// well-behaved client does; whether it arrives is not checked); else
    /// just closes.
    pub async fn close(mut self) {
        if let Stream::Tls(stream) = self.stream.get_mut() {
            let _ = stream.shutdown().await;
        }
    }

    /// Sends the request, reads one reply line and checks it.
    pub async fn round_trip(&mut self, exchange: &Exchange) -> Result<(), Failure> {
        let io_err = |what: &str, e: io::Error| (ErrorKind::Io, format!("{what}: {e}"));
        self.stream
            .get_mut()
            .write_all(&exchange.request)
            .await
            .map_err(|e| io_err("write", e))?;
        self.reply.clear();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
        let n = (&mut self.stream)
            .take(limit)
            .read_until(b'\n', &mut self.reply)
            .await
            .map_err(|e| io_err("read", e))?;
        if n == 0 {
            return Err((ErrorKind::Io, "the server closed before replying".into()));
        }
        if self.reply != exchange.expected {
            return Err((
                ErrorKind::Mismatch,
                format!(
                    "expected {:?}, got {:?}",
                    exchange.expected.escape_ascii().to_string(),
                    self.reply.escape_ascii().to_string()
                ),
            ));
        }
        Ok(())
    }
}

/// A request on a connection of its own (from `source` when given, over
/// TLS when `tls` is given): connect (with a TLS handshake), one round
/// trip, close. Returns what the TLS handshake came to, over TLS.
pub async fn connect_once(
    target: &Target,
    source: Option<IpAddr>,
    tls: Option<&Tls>,
    exchange: &Exchange,
) -> Result<Option<Handshake>, Failure> {
    let mut connection = connect_to(target, source, tls).await?;
    connection.round_trip(exchange).await?;
    let handshake = connection.handshake();
    connection.close().await;
    Ok(handshake)
}

/// One client's UDP socket, connected to the server: each request is the
/// datagram `LINE-CLIENT-SEQ` (SEQ counting from 0), and its reply must be
/// the datagram `You said "LINE-CLIENT-SEQ"`.
#[derive(Debug)]
pub struct Datagrams {
    socket: UdpSocket,
    /// `LINE-CLIENT-`: what every request of this client starts with.
    prefix: Vec<u8>,
    seq: u64,
    request: Vec<u8>,
    expected: Vec<u8>,
    reply: Vec<u8>,
}

impl Datagrams {
    /// Binds a socket on the loopback address of `addr`'s family and
    /// connects it to `addr`, for client number `client` sending `line`.
    pub async fn open(addr: SocketAddr, line: &[u8], client: usize) -> Result<Self, Failure> {
        let local: IpAddr = if addr.is_ipv4() {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        };
        let fail = |e: io::Error| (ErrorKind::Connect, format!("UDP socket to {addr}: {e}"));
        let socket = UdpSocket::bind(SocketAddr::new(local, 0))
            .await
            .map_err(fail)?;
        socket.connect(addr).await.map_err(fail)?;
        let mut prefix = line.to_vec();
        let _ = write!(prefix, "-{client}-");
        Ok(Self {
            socket,
            prefix,
            seq: 0,
            request: Vec::with_capacity(64),
            expected: Vec::with_capacity(80),
            reply: vec![0; MAX_DATAGRAM],
        })
    }

    /// Sends the next request and waits for its reply. Late replies to
    /// this client's earlier requests (answered after their timeout) are
    /// skipped; the caller bounds the wait, and a request given up on is
    /// not sent again (the next one has the next number).
    pub async fn request(&mut self) -> Result<(), Failure> {
        let seq = self.seq;
        self.seq += 1;
        self.request.clear();
        self.request.extend_from_slice(&self.prefix);
        let _ = write!(self.request, "{seq}");
        self.expected.clear();
        push_udp_reply(&mut self.expected, &self.request);
        let io_err = |what: &str, e: io::Error| (ErrorKind::Io, format!("{what}: {e}"));
        self.socket
            .send(&self.request)
            .await
            .map_err(|e| io_err("send", e))?;
        loop {
            let n = self
                .socket
                .recv(&mut self.reply)
                .await
                .map_err(|e| io_err("recv", e))?;
            let reply = &self.reply[..n];
            if reply == self.expected {
                return Ok(());
            }
            if earlier_reply(reply, &self.prefix, seq) {
                continue;
            }
            return Err((
                ErrorKind::Mismatch,
                format!(
                    "expected {:?}, got {:?}",
                    self.expected.escape_ascii().to_string(),
                    reply.escape_ascii().to_string()
                ),
            ));
        }
    }
}

/// Whether `reply` is the answer to a request `PREFIX<n>` with `n < seq`.
fn earlier_reply(reply: &[u8], prefix: &[u8], seq: u64) -> bool {
    let Some(number) = reply
        .strip_prefix(&b"You said \""[..])
        .and_then(|r| r.strip_prefix(prefix))
        .and_then(|r| r.strip_suffix(b"\""))
    else {
        return false;
    };
    !number.is_empty()
        && number.iter().all(u8::is_ascii_digit)
        && std::str::from_utf8(number)
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
            .is_some_and(|n| n < seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_late_replies_from_wrong_ones() {
        let prefix = b"hello-3-";
        assert!(earlier_reply(b"You said \"hello-3-7\"", prefix, 9));
        assert!(!earlier_reply(b"You said \"hello-3-9\"", prefix, 9));
        assert!(!earlier_reply(b"You said \"hello-4-7\"", prefix, 9));
        assert!(!earlier_reply(b"You said \"hello-3-\"", prefix, 9));
        assert!(!earlier_reply(b"You said \"hello-3-+1\"", prefix, 9));
        assert!(!earlier_reply(b"You said 'hello-3-7'", prefix, 9));
    }

    #[tokio::test]
    async fn datagrams_skip_late_replies() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let mut client = Datagrams::open(server.local_addr().unwrap(), b"hi", 2)
            .await
            .unwrap();
        let answer = async {
            let mut buf = [0; 64];
            // The first request goes unanswered until the second arrives;
            // then both are answered, the late one first.
            let (n, peer) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hi-2-0");
            let (n, _) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hi-2-1");
            server.send_to(b"You said \"hi-2-0\"", peer).await.unwrap();
            server.send_to(b"You said \"hi-2-1\"", peer).await.unwrap();
            let (n, _) = server.recv_from(&mut buf).await.unwrap();
            assert_eq!(&buf[..n], b"hi-2-2");
            server
                .send_to(b"You said \"something else\"", peer)
                .await
                .unwrap();
        };
        let requests = async {
            let short = std::time::Duration::from_millis(50);
            assert!(tokio::time::timeout(short, client.request()).await.is_err());
            client.request().await.unwrap();
            let (kind, _) = client.request().await.unwrap_err();
            assert_eq!(kind, ErrorKind::Mismatch);
        };
        tokio::join!(answer, requests);
    }
}
