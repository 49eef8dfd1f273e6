//! One client's requests: a connection per request, or round trips on a
//! persistent connection.

use std::io;
use std::net::{IpAddr, SocketAddr};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpSocket, TcpStream};

use super::stats::ErrorKind;
use crate::protocol::MAX_LINE;

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

/// Opens a connection to `addr` with TCP_NODELAY set, from `source` when
/// given (the port is chosen at connect time).
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>) -> Result<Connection, Failure> {
    let stream = open(addr, source)
        .await
        .map_err(|e| (ErrorKind::Connect, format!("connect {addr}: {e}")))?;
    stream
        .set_nodelay(true)
        .map_err(|e| (ErrorKind::Connect, format!("TCP_NODELAY: {e}")))?;
    Ok(Connection {
        stream: BufReader::new(stream),
        reply: Vec::with_capacity(64),
    })
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

/// A connection doing request/reply round trips.
#[derive(Debug)]
pub struct Connection {
    stream: BufReader<TcpStream>,
    reply: Vec<u8>,
}

impl Connection {
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

/// A request on a connection of its own (from `source` when given):
/// connect, one round trip, close.
pub async fn connect_once(
    addr: SocketAddr,
    source: Option<IpAddr>,
    exchange: &Exchange,
) -> Result<(), Failure> {
    let mut connection = connect(addr, source).await?;
    connection.round_trip(exchange).await
}
