//! Listening sockets: bound ([`ListenSocket`], before any runtime exists),
//! then accepting ([`Listener`], in a worker's runtime), and the
//! connections they accept ([`Accepted`]).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{AddressFamily, getsockopt, sockopt};
use tokio::net::{TcpListener, UnixListener};

use super::stream::{RawStream, StdStream, credentials, family_of, local_of};
use crate::client::{Local, Peer};

/// A bound, listening socket, non-blocking, not registered with any
/// runtime (the master binds before it forks).
#[derive(Debug)]
pub enum ListenSocket {
    /// TCP.
    Tcp(std::net::TcpListener),
    /// A unix stream socket.
    Unix(std::os::unix::net::UnixListener),
}

impl ListenSocket {
    /// Takes a bound and listening socket (just bound, handed over across
    /// a HUP, or by systemd), made non-blocking; an error says why it
    /// cannot be served.
    pub fn adopt(fd: OwnedFd) -> Result<Self, String> {
        if !getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
            return Err("is not a listening socket".to_owned());
        }
        let socket = match family_of(fd.as_fd()) {
            Some(AddressFamily::Inet | AddressFamily::Inet6) => Self::Tcp(fd.into()),
            Some(AddressFamily::Unix) => Self::Unix(fd.into()),
            _ => return Err("is not a TCP or unix socket".to_owned()),
        };
        socket.set_nonblocking().map_err(|e| e.to_string())?;
        Ok(socket)
    }

    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Self::Tcp(socket) => socket.set_nonblocking(true),
            Self::Unix(socket) => socket.set_nonblocking(true),
        }
    }

    /// The address it is bound to (the real port when 0 was asked).
    pub fn local(&self) -> io::Result<Local> {
        local_of(self.as_fd())
    }

    /// Accepts a waiting client without waiting (the `fork` master, which
    /// polls the sockets itself).
    pub fn accept_now(&self) -> io::Result<StdStream> {
        Ok(match self {
            Self::Tcp(socket) => StdStream::Tcp(socket.accept()?.0),
            Self::Unix(socket) => StdStream::Unix(socket.accept()?.0),
        })
    }

    /// Registers the socket with the current runtime to accept on it.
    pub fn into_listener(self) -> io::Result<Listener> {
        let fixed = self.local().ok().filter(|local| match local {
            // A wildcard's connections each have their own local address.
            Local::Ip(addr) => !addr.ip().is_unspecified(),
            Local::Unix(_) => true,
        });
        let kind = match self {
            Self::Tcp(socket) => Kind::Tcp(TcpListener::from_std(socket)?),
            Self::Unix(socket) => Kind::Unix(UnixListener::from_std(socket)?),
        };
        Ok(Listener { kind, fixed })
    }
}

impl AsFd for ListenSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Tcp(socket) => socket.as_fd(),
            Self::Unix(socket) => socket.as_fd(),
        }
    }
}

/// A listening socket registered with a worker's runtime.
#[derive(Debug)]
pub struct Listener {
    kind: Kind,
    /// The local address of every connection accepted, when the socket is
    /// bound to one address: each known here is a system call saved per
    /// connection.
    fixed: Option<Local>,
}

#[derive(Debug)]
enum Kind {
    Tcp(TcpListener),
    Unix(UnixListener),
}

impl Listener {
    /// Waits for the next client.
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
        };
        Ok(Accepted {
            stream,
            peer,
            local: self.fixed.clone(),
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
}

impl Accepted {
    /// A connection whose ends are asked of the kernel when it is served.
    pub fn new(stream: RawStream) -> Self {
        Self {
            stream,
            peer: None,
            local: None,
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
