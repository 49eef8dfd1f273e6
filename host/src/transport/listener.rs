//! Listening sockets: bound ([`ListenSocket`], before any runtime exists),
//! then serving ([`Listener`], in a worker's runtime), and what comes in
//! on them ([`Incoming`]): a connection accepted on a stream socket
//! ([`Accepted`]), or a datagram received on a datagram socket
//! ([`Received`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::sys::socket::{AddressFamily, SockType, getsockopt, setsockopt, sockopt};
use tokio::net::{TcpListener, UnixListener};

use super::addr::{credentials, family_of, local_of};
use super::datagram::{DgramSocket, Received, RecvSettings, StdReceived};
use super::stream::{AsyncStream, RawStream, StdStream};
use super::tls::Greeted;
use crate::client::{Local, Peer};

/// A bound socket, listening (stream) or not (datagram), non-blocking,
/// not registered with any runtime (the master binds before it forks).
#[derive(Debug)]
pub enum ListenSocket {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// A unix stream socket.
    Unix(std::os::unix::net::UnixListener),
    /// UDP.
    Udp(std::net::UdpSocket),
    /// A unix datagram socket.
    UnixDgram(std::os::unix::net::UnixDatagram),
}

impl ListenSocket {
    /// Takes a bound socket (just bound, handed over across a HUP, or by
    /// systemd): a listening stream socket or a datagram socket, made
    /// non-blocking (a unix datagram socket is told to pass its senders'
    /// credentials); an error says why it cannot be served.
    pub fn adopt(fd: OwnedFd) -> Result<Self, String> {
        let datagram = match getsockopt(&fd, sockopt::SockType) {
            Ok(SockType::Datagram) => true,
            Ok(SockType::Stream) => false,
            Ok(_) => return Err("is neither a stream nor a datagram socket".to_owned()),
            Err(_) => return Err("is not a listening socket".to_owned()),
        };
        if !datagram && !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
            return Err("is not a listening socket".to_owned());
        }
        let socket = match (family_of(fd.as_fd()), datagram) {
            (Some(AddressFamily::Inet | AddressFamily::Inet6), false) => Self::Tcp(fd.into()),
            (Some(AddressFamily::Unix), false) => Self::Unix(fd.into()),
            (Some(AddressFamily::Inet | AddressFamily::Inet6), true) => Self::Udp(fd.into()),
            (Some(AddressFamily::Unix), true) => {
                setsockopt(&fd, sockopt::PassCred, &true).map_err(|e| e.to_string())?;
                Self::UnixDgram(fd.into())
            }
            _ => return Err("is not an IP or unix socket".to_owned()),
        };
        socket.set_nonblocking().map_err(|e| e.to_string())?;
        Ok(socket)
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Self::Tcp(socket) => socket.set_nonblocking(true),
            Self::Unix(socket) => socket.set_nonblocking(true),
            Self::Udp(socket) => socket.set_nonblocking(true),
            Self::UnixDgram(socket) => socket.set_nonblocking(true),
        }
    }

    /// Whether it receives datagrams rather than accepting connections.
    pub fn is_datagram(&self) -> bool {
        matches!(self, Self::Udp(_) | Self::UnixDgram(_))
    }

    /// Its protocol, as a port spec names it.
    pub fn proto(&self) -> &'static str {
        match self {
            Self::Tcp(_) => "tcp",
            Self::Unix(_) => "unix",
            Self::Udp(_) => "udp",
            Self::UnixDgram(_) => "unixdgram",
        }
    }

    /// The address it is bound to (the real port when 0 was asked).
    pub fn local(&self) -> io::Result<Local> {
        local_of(self.as_fd())
    }

    /// Takes a waiting client without waiting (the `fork` master, which
    /// polls the sockets itself): a connection accepted, or a datagram
    /// received (its first `recv.len` bytes).
    pub fn take_now(&self, recv: RecvSettings) -> io::Result<StdIncoming> {
        let local = self.local().ok();
        Ok(match self {
            Self::Tcp(socket) => StdIncoming::Stream(StdStream::Tcp(socket.accept()?.0)),
            Self::Unix(socket) => StdIncoming::Stream(StdStream::Unix(socket.accept()?.0)),
            Self::Udp(_) | Self::UnixDgram(_) => {
                let unix = matches!(self, Self::UnixDgram(_));
                let mut got = StdReceived::receive_now(self.as_fd(), unix, recv)?;
                got.received.local = local;
                StdIncoming::Datagram(Box::new(got))
            }
        })
    }

    /// Registers the socket with the current runtime to serve it.
    pub fn into_listener(self) -> io::Result<Listener> {
        let fixed = self.local().ok().filter(|local| match local {
            // A wildcard's connections each have their own local address.
            Local::Ip(addr) => !addr.ip().is_unspecified(),
            Local::Unix(_) => true,
        });
        let kind = match self {
            Self::Tcp(socket) => Kind::Tcp(TcpListener::from_std(socket)?),
            Self::Unix(socket) => Kind::Unix(UnixListener::from_std(socket)?),
            Self::Udp(socket) => Kind::Datagram(Arc::new(DgramSocket::udp(socket)?)),
            Self::UnixDgram(socket) => Kind::Datagram(Arc::new(DgramSocket::unix(socket)?)),
        };
        Ok(Listener {
            kind,
            fixed,
            tls: false,
        })
    }
}

impl AsFd for ListenSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(socket) => socket.as_fd(),
            Self::Unix(socket) => socket.as_fd(),
            Self::Udp(socket) => socket.as_fd(),
            Self::UnixDgram(socket) => socket.as_fd(),
        }
    }
}

/// A client not yet registered with a runtime: what a `fork` master takes
/// from a socket for the child it forks, or what `inetd` finds on stdin.
#[derive(Debug)]
pub enum StdIncoming {
    /// A connection.
    Stream(StdStream),
    /// A datagram.
    Datagram(Box<StdReceived>),
    /// Two pipes, read from and written to (`inetd` run from a pipe).
    Pipes {
        /// What the client sends.
        input: OwnedFd,
        /// Where the replies go.
        output: OwnedFd,
    },
}

impl StdIncoming {
    /// The client, registered with the current runtime.
    pub fn into_incoming(self) -> io::Result<Incoming> {
        Ok(match self {
            Self::Stream(stream) => {
                let stream = stream.into_raw()?;
                stream.send_at_once();
                Incoming::Stream(Accepted::new(stream))
            }
            Self::Datagram(got) => {
                let StdReceived {
                    mut received,
                    socket,
                } = *got;
                // The socket it came in on, as a worker registers it.
                let listener = ListenSocket::adopt(socket)
                    .map_err(io::Error::other)?
                    .into_listener()?;
                let Kind::Datagram(socket) = listener.kind else {
                    return Err(io::Error::other("not a datagram socket"));
                };
                received.reply_through(socket);
                Incoming::Datagram(received)
            }
            Self::Pipes { input, output } => {
                let input = tokio::net::unix::pipe::Receiver::from_owned_fd(input)?;
                let output = tokio::net::unix::pipe::Sender::from_owned_fd(output)?;
                Incoming::Pipe(Box::new(tokio::io::join(input, output)))
            }
        })
    }
}

/// A bound socket registered with a worker's runtime.
#[derive(Debug)]
pub struct Listener {
    kind: Kind,
    /// The local address of every connection accepted, when the socket is
    /// bound to one address: each known here is a system call saved per
    /// connection.
    fixed: Option<Local>,
    /// Whether it is a TLS port.
    tls: bool,
}

#[derive(Debug)]
enum Kind {
    Tcp(TcpListener),
    Unix(UnixListener),
    Datagram(Arc<DgramSocket>),
}

/// A client to serve: what came in on a socket, or inetd's pipes.
pub enum Incoming {
    /// A connection, accepted.
    Stream(Accepted),
    /// A datagram, received.
    Datagram(Received),
    /// Pipes (`inetd` run from a pipe): a client with no address.
    Pipe(Box<dyn AsyncStream>),
    /// A client of a shared TLS port, its ClientHello read.
    Greeted(Box<Greeted>),
}

impl std::fmt::Debug for Incoming {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Stream(accepted) => f.debug_tuple("Stream").field(accepted).finish(),
            Self::Datagram(received) => f.debug_tuple("Datagram").field(received).finish(),
            Self::Pipe(_) => f.write_str("Pipe"),
            Self::Greeted(greeted) => f.debug_tuple("Greeted").field(greeted).finish(),
        }
    }
}

impl Incoming {
    /// The same client, come on a TLS port (`tls`): a connection is
    /// handshaken once admitted.
    pub fn over_tls(mut self, tls: bool) -> Self {
        if let Self::Stream(accepted) = &mut self {
            accepted.tls |= tls;
        }
        self
    }

    /// The client's IP address, when already known.
    pub fn peer_ip(&self) -> Option<std::net::IpAddr> {
        match self {
            Self::Stream(accepted) => accepted.peer.as_ref().and_then(Peer::ip_addr),
            Self::Datagram(received) => received.peer.ip_addr(),
            Self::Pipe(_) => None,
            Self::Greeted(greeted) => greeted.peer.ip_addr(),
        }
    }
}

impl Listener {
    /// Waits for the next client: a connection, or a datagram (its first
    /// `recv.len` bytes).
    pub async fn next(&self, recv: RecvSettings) -> io::Result<Incoming> {
        if let Kind::Datagram(socket) = &self.kind {
            let mut received = socket.recv(recv.len, recv.flags).await?;
            received.local = self.fixed.clone();
            return Ok(Incoming::Datagram(received));
        }
        self.accept().await.map(Incoming::Stream)
    }

    /// The same listener as a TLS port: its connections are handshaken
    /// once admitted.
    pub fn serving_tls(self) -> Self {
        Self { tls: true, ..self }
    }

    /// Whether it receives datagrams.
    pub fn is_datagram(&self) -> bool {
        matches!(self.kind, Kind::Datagram(_))
    }

    /// Waits for the next connection (a stream socket only).
    pub async fn accept(&self) -> io::Result<Accepted> {
        let (stream, peer) = match &self.kind {
            Kind::Tcp(listener) => {
                let (stream, peer) = listener.accept().await?;
                (RawStream::Tcp(stream), Some(Peer::ip(peer)))
            }
            Kind::Unix(listener) => {
                let (stream, peer) = listener.accept().await?;
                let peer = Peer::Unix {
                    path: peer.as_pathname().map(Into::into),
                    cred: credentials(&stream),
                };
                (RawStream::Unix(stream), Some(peer))
            }
            Kind::Datagram(_) => {
                return Err(io::Error::other("a datagram socket accepts no connection"));
            }
        };
        Ok(Accepted {
            stream,
            peer,
            local: self.fixed.clone(),
            tls: self.tls,
        })
    }

    /// The local address of every connection it accepts, when it is bound
    /// to one address.
    pub fn fixed_local(&self) -> Option<&Local> {
        self.fixed.as_ref()
    }
}

/// An accepted client connection, with what is already known of its two
/// ends.
#[derive(Debug)]
pub struct Accepted {
    /// The connection.
    pub stream: RawStream,
    /// The client's end, as `accept` reported it.
    pub peer: Option<Peer>,
    /// The server's end, when the listener is bound to one address.
    pub local: Option<Local>,
    /// Whether it came on a TLS port: the host handshakes once it is
    /// admitted.
    pub tls: bool,
}

impl Accepted {
    /// A connection whose ends are asked of the kernel when it is served.
    pub fn new(stream: RawStream) -> Self {
        Self {
            stream,
            peer: None,
            local: None,
            tls: false,
        }
    }

    /// The client's end and the server's, asking the kernel only for those
    /// not known yet. Fails when the client already left.
    pub fn ends(&self) -> io::Result<(Peer, Local)> {
        let peer = match &self.peer {
            Some(peer) => peer.clone(),
            None => self.stream.peer()?,
        };
        let local = match &self.local {
            Some(local) => local.clone(),
            None => self.stream.local()?,
        };
        Ok((peer, local))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bound(addr: &str) -> Option<ListenSocket> {
        let listener = std::net::TcpListener::bind(addr).ok()?;
        Some(ListenSocket::adopt(listener.into()).unwrap())
    }

    #[tokio::test]
    async fn only_a_listener_bound_to_one_address_fixes_the_local_end() {
        // (bound to, whether its connections share its address)
        let cases = [
            ("127.0.0.1:0", true),
            ("0.0.0.0:0", false),
            ("[::1]:0", true),
            ("[::]:0", false),
        ];
        for (addr, fixed) in cases {
            let Some(socket) = bound(addr) else {
                // No IPv6 on this machine.
                assert!(addr.starts_with('['), "cannot bind {addr}");
                continue;
            };
            let local = socket.local().unwrap();
            let listener = socket.into_listener().unwrap();
            let want = fixed.then_some(&local);
            assert_eq!(listener.fixed_local(), want, "{addr}");
        }
        let dir = std::env::temp_dir().join(format!("ns-listener-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let unix = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let listener = ListenSocket::adopt(unix.into())
            .unwrap()
            .into_listener()
            .unwrap();
        assert_eq!(listener.fixed_local(), Some(&Local::Unix(path.clone())));
        let _client = tokio::net::UnixStream::connect(&path).await.unwrap();
        let accepted = listener.accept().await.unwrap();
        let (peer, local) = accepted.ends().unwrap();
        assert_eq!(local, Local::Unix(path.clone()));
        assert_eq!(peer.uid(), Some(nix::unistd::geteuid().as_raw()));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn what_is_not_a_listening_socket_is_refused() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert_eq!(
            ListenSocket::adopt(a.into()).unwrap_err(),
            "is not a listening socket"
        );
        let file = std::fs::File::open("/dev/null").unwrap();
        assert_eq!(
            ListenSocket::adopt(file.into()).unwrap_err(),
            "is not a listening socket"
        );
    }
}
