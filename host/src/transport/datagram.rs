//! Datagram sockets, UDP and unix datagram: a request is one datagram
//! received ([`Received`], read with `recvmsg` as Net::Server reads it with
//! `recv`), and the guest's reply goes back to its sender from the same
//! socket ([`ReplyTo`]), capped against amplification ([`ReplyCap`]).

use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage, UnixAddr, recvmsg, sendto,
};
use tokio::io::Interest;
use tokio::net::{UdpSocket, UnixDatagram};

use crate::client::{Credentials, Local, Peer};

/// The largest reply datagram: what one UDP datagram over IPv4 carries
/// (65,535 bytes less the IP and UDP headers). A unix datagram reply is
/// cut at the same size.
pub const MAX_DATAGRAM: usize = 65_507;

/// The bytes an IPv4 and a UDP header add to each datagram on the wire:
/// the amplification cap counts them on both sides.
pub const HEADER_BYTES: u64 = 28;

/// A datagram socket registered with a worker's runtime.
#[derive(Debug)]
pub enum DgramSocket {
    /// UDP.
    Udp(UdpSocket),
    /// A unix datagram socket.
    Unix(UnixDatagram),
}

impl DgramSocket {
    /// The protocol's name, lower case, as the client info gives it.
    pub fn proto(&self) -> &'static str {
        match self {
            Self::Udp(_) => "udp",
            Self::Unix(_) => "unixdgram",
        }
    }

    fn try_io<R>(&self, interest: Interest, io: impl FnOnce() -> io::Result<R>) -> io::Result<R> {
        match self {
            Self::Udp(socket) => socket.try_io(interest, io),
            Self::Unix(socket) => socket.try_io(interest, io),
        }
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            Self::Udp(socket) => socket.readable().await,
            Self::Unix(socket) => socket.readable().await,
        }
    }

    /// Polls until a send may not block.
    pub fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self {
            Self::Udp(socket) => socket.poll_send_ready(cx),
            Self::Unix(socket) => socket.poll_send_ready(cx),
        }
    }

    /// Receives the next datagram, at most `len` bytes of it.
    pub async fn recv(self: &Arc<Self>, len: usize, flags: MsgFlags) -> io::Result<Received> {
        let mut buf = BytesMut::zeroed(len);
        loop {
            self.readable().await?;
            let fd = self.as_fd().as_raw_fd();
            let unix = matches!(**self, Self::Unix(_));
            match self.try_io(Interest::READABLE, || recv_one(fd, &mut buf, flags, unix)) {
                Ok(got) => return Ok(got.into_received(buf, Some(self.clone()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Sends `bytes` to `to` if the socket takes them now.
    fn try_send(&self, bytes: &[u8], to: &Sender) -> io::Result<usize> {
        let fd = self.as_fd().as_raw_fd();
        let to: &dyn SockaddrLike = match to {
            Sender::Ip(addr) => addr,
            Sender::Unix(addr) => addr,
        };
        self.try_io(Interest::WRITABLE, || {
            sendto(fd, bytes, to, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
        })
    }
}

impl AsFd for DgramSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Self::Udp(socket) => socket.as_fd(),
            Self::Unix(socket) => socket.as_fd(),
        }
    }
}

/// A datagram's sender, as `recvmsg` gives it.
#[derive(Clone, Copy, Debug)]
enum Sender {
    /// An IP address.
    Ip(SockaddrStorage),
    /// A unix socket address (a unix address's length is kept only by
    /// `UnixAddr`).
    Unix(UnixAddr),
}

/// One datagram as `recvmsg` returned it.
pub(super) struct Got {
    len: usize,
    truncated: bool,
    from: Option<Sender>,
    cred: Option<Credentials>,
}

/// Receives one datagram into `buf` without waiting, with the sender's
/// address and, on a unix socket (`unix`) with `SO_PASSCRED`, its
/// credentials.
pub(super) fn recv_one(fd: RawFd, buf: &mut [u8], flags: MsgFlags, unix: bool) -> io::Result<Got> {
    let mut iov = [IoSliceMut::new(buf)];
    let flags = flags | MsgFlags::MSG_DONTWAIT;
    if !unix {
        let msg = recvmsg::<SockaddrStorage>(fd, &mut iov, None, flags).map_err(io::Error::from)?;
        return Ok(Got {
            len: msg.bytes,
            truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
            from: msg.address.map(Sender::Ip),
            cred: None,
        });
    }
    let mut cmsg = nix::cmsg_space!(nix::libc::ucred);
    let msg = recvmsg::<UnixAddr>(fd, &mut iov, Some(&mut cmsg), flags).map_err(io::Error::from)?;
    let mut cred = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for cmsg in cmsgs {
            if let ControlMessageOwned::ScmCredentials(c) = cmsg {
                cred = Some(Credentials {
                    pid: c.pid(),
                    uid: c.uid(),
                    gid: c.gid(),
                });
            }
        }
    }
    Ok(Got {
        len: msg.bytes,
        truncated: msg.flags.contains(MsgFlags::MSG_TRUNC),
        from: msg.address.map(Sender::Unix),
        cred,
    })
}

impl Got {
    /// The datagram in `buf`, received on `socket` (`None` in a `fork`
    /// master, which has no runtime to reply through: see
    /// [`Received::reply_through`]).
    pub(super) fn into_received(
        self,
        mut buf: BytesMut,
        socket: Option<Arc<DgramSocket>>,
    ) -> Received {
        buf.truncate(self.len);
        let data = buf.freeze();
        let (peer, to) = match self.from {
            // An unbound sender has an empty address (its length 0).
            Some(Sender::Unix(unix))
                if (unix.len() as usize) <= size_of::<nix::libc::sa_family_t>() =>
            {
                (unknown_peer(self.cred), None)
            }
            Some(Sender::Unix(unix)) => {
                let path = unix.path().map(Into::into);
                // A sender bound to no name cannot be answered.
                let named = path.is_some() || unix.as_abstract().is_some();
                (
                    Peer::Unix {
                        path,
                        cred: self.cred,
                    },
                    named.then_some(Sender::Unix(unix)),
                )
            }
            Some(Sender::Ip(addr)) => match socket_addr(&addr) {
                Some(ip) => (Peer::ip(ip), Some(Sender::Ip(addr))),
                None => (unknown_peer(self.cred), None),
            },
            None => (unknown_peer(self.cred), None),
        };
        Received {
            data,
            truncated: self.truncated,
            peer,
            local: None,
            to,
            socket,
        }
    }
}

fn unknown_peer(cred: Option<Credentials>) -> Peer {
    Peer::Unix { path: None, cred }
}

fn socket_addr(addr: &SockaddrStorage) -> Option<std::net::SocketAddr> {
    if let Some(v4) = addr.as_sockaddr_in() {
        return Some(std::net::SocketAddr::V4((*v4).into()));
    }
    addr.as_sockaddr_in6()
        .map(|v6| std::net::SocketAddr::V6((*v6).into()))
}

/// One datagram received: a request.
#[derive(Debug)]
pub struct Received {
    /// Its bytes, at most the receive length.
    pub data: Bytes,
    /// Whether it was longer than the receive length (the rest is lost,
    /// as with Net::Server's `recv`).
    pub truncated: bool,
    /// The sender.
    pub peer: Peer,
    /// The socket's end, when known.
    pub local: Option<Local>,
    /// Where a reply goes: `None` for a sender with no address.
    to: Option<Sender>,
    /// The socket it came in on, which replies leave from.
    socket: Option<Arc<DgramSocket>>,
}

impl Received {
    /// The protocol of the socket it came in on.
    pub fn proto(&self) -> &'static str {
        self.socket.as_ref().map_or("udp", |s| s.proto())
    }

    /// Whether the sender has an address a reply can go to.
    pub fn answerable(&self) -> bool {
        self.to.is_some()
    }

    /// Where the reply goes, when the sender can be answered.
    pub fn reply_to(&self) -> Option<ReplyTo> {
        Some(ReplyTo {
            socket: self.socket.clone()?,
            to: self.to?,
        })
    }

    /// Replies to a datagram received in a `fork` master are sent through
    /// `socket`, registered with the child's runtime.
    pub fn reply_through(&mut self, socket: Arc<DgramSocket>) {
        self.socket = Some(socket);
    }
}

/// Where a reply goes: the sender's address, from the socket the request
/// came in on.
#[derive(Clone, Debug)]
pub struct ReplyTo {
    socket: Arc<DgramSocket>,
    to: Sender,
}

impl ReplyTo {
    /// Sends one datagram if the socket takes it now.
    pub fn try_send(&self, bytes: &[u8]) -> io::Result<usize> {
        self.socket.try_send(bytes, &self.to)
    }

    /// Polls until a send may not block.
    pub fn poll_send_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.socket.poll_send_ready(cx)
    }
}

/// The receive settings of a service's datagram sockets
/// (`udp_recv_len`, `udp_recv_flags`).
#[derive(Clone, Copy, Debug)]
pub struct RecvSettings {
    /// Bytes read of each datagram.
    pub len: usize,
    /// Extra `recv` flags (see [`crate::config::RECV_FLAGS_ALLOWED`]).
    pub flags: MsgFlags,
}

impl Default for RecvSettings {
    fn default() -> Self {
        Self {
            len: 4096,
            flags: MsgFlags::empty(),
        }
    }
}

/// How often the replies a cap dropped are said in the log, at most.
pub const CAP_LOG_EVERY: Duration = Duration::from_secs(10);

/// A service's amplification cap on UDP replies (`udp_amplification`):
/// the reply to one request may carry at most `factor` times the request's
/// bytes on the wire, each datagram's headers counted ([`HEADER_BYTES`]).
/// Replies over it are dropped, counted, and said in the log at most every
/// [`CAP_LOG_EVERY`].
#[derive(Debug)]
pub struct ReplyCap {
    service: Arc<str>,
    factor: u32,
    dropped: AtomicU64,
    log: Mutex<CapLog>,
}

#[derive(Debug, Default)]
struct CapLog {
    at: Option<Instant>,
    unsaid: u64,
}

impl ReplyCap {
    /// The cap of `service`; `factor` 0 is none.
    pub fn new(service: Arc<str>, factor: u32) -> Arc<Self> {
        Arc::new(Self {
            service,
            factor,
            dropped: AtomicU64::new(0),
            log: Mutex::default(),
        })
    }

    /// The wire bytes a reply to `request` bytes may take, when capped.
    pub fn budget(&self, request: usize) -> Option<u64> {
        (self.factor > 0).then(|| u64::from(self.factor) * (request as u64 + HEADER_BYTES))
    }

    /// Reply datagrams dropped so far by this cap (in this process).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Counts a dropped reply datagram to `peer` and says so in the log
    /// unless it was said less than [`CAP_LOG_EVERY`] ago.
    pub fn drop_reply(&self, peer: &Peer, request: usize, reply: u64, now: Instant) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.unsaid += 1;
        if log
            .at
            .is_some_and(|at| now.duration_since(at) < CAP_LOG_EVERY)
        {
            return;
        }
        tracing::warn!(
            "service {}: {} reply datagram(s) dropped by the amplification cap (udp_amplification {}) since the last report; the latest to {peer}: {reply} bytes on the wire for a request of {} bytes",
            self.service,
            log.unsaid,
            self.factor,
            request as u64 + HEADER_BYTES
        );
        log.at = Some(now);
        log.unsaid = 0;
    }
}

/// A datagram received by a `fork` master, which has no runtime: the
/// child it forks serves it, its socket registered there (see
/// `StdIncoming::into_incoming`).
#[derive(Debug)]
pub struct StdReceived {
    /// The datagram; its reply socket is set in the child.
    pub received: Received,
    /// The socket it came in on (a duplicate descriptor).
    pub socket: OwnedFd,
}

impl StdReceived {
    /// Receives a waiting datagram on `fd` (a unix socket when `unix`)
    /// without waiting.
    pub fn receive_now(fd: BorrowedFd<'_>, unix: bool, settings: RecvSettings) -> io::Result<Self> {
        let mut buf = BytesMut::zeroed(settings.len);
        let got = recv_one(fd.as_raw_fd(), &mut buf, settings.flags, unix)?;
        Ok(Self {
            received: got.into_received(buf, None),
            socket: fd.try_clone_to_owned()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_counts_headers_on_both_sides() {
        let cap = ReplyCap::new("s".into(), 3);
        // (request bytes, wire bytes the reply may take)
        let cases = [(0, 84), (5, 99), (100, 384)];
        for (request, want) in cases {
            assert_eq!(cap.budget(request), Some(want), "{request}");
        }
        assert_eq!(ReplyCap::new("s".into(), 0).budget(100), None);
    }

    #[tokio::test]
    async fn a_datagram_and_its_sender() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let addr = server.local_addr().unwrap();
        let server = Arc::new(DgramSocket::Udp(UdpSocket::from_std(server).unwrap()));
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // (sent, receive length, what the request holds, truncated)
        let cases: [(&[u8], usize, &[u8], bool); 4] = [
            (b"hello", 16, b"hello", false),
            (b"", 16, b"", false),
            (b"0123456789abcdef", 16, b"0123456789abcdef", false),
            (b"0123456789abcdefXYZ", 16, b"0123456789abcdef", true),
        ];
        for (sent, len, want, truncated) in cases {
            client.send_to(sent, addr).unwrap();
            let got = server.recv(len, MsgFlags::empty()).await.unwrap();
            assert_eq!(&got.data[..], want);
            assert_eq!(got.truncated, truncated);
            assert_eq!(got.peer, Peer::ip(client.local_addr().unwrap()));
            let reply = got.reply_to().expect("an IP sender can be answered");
            reply.try_send(b"ok").unwrap();
            let mut buf = [0u8; 8];
            let n = client.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"ok");
        }
    }

    #[tokio::test]
    async fn unix_senders_carry_credentials_and_only_named_ones_get_replies() {
        let dir = std::env::temp_dir().join(format!("ns-dgram-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.sock");
        let _ = std::fs::remove_file(&path);
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        nix::sys::socket::setsockopt(&server, nix::sys::socket::sockopt::PassCred, &true).unwrap();
        server.set_nonblocking(true).unwrap();
        let server = Arc::new(DgramSocket::Unix(UnixDatagram::from_std(server).unwrap()));
        let named = std::os::unix::net::UnixDatagram::bind(dir.join("client.sock")).unwrap();
        named.send_to(b"hi", &path).unwrap();
        let got = server.recv(64, MsgFlags::empty()).await.unwrap();
        assert_eq!(got.proto(), "unixdgram");
        assert_eq!(got.peer.uid(), Some(nix::unistd::geteuid().as_raw()));
        got.reply_to().unwrap().try_send(b"back").unwrap();
        let mut buf = [0u8; 8];
        let n = named.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"back");
        let unnamed = std::os::unix::net::UnixDatagram::unbound().unwrap();
        unnamed.send_to(b"hi", &path).unwrap();
        let got = server.recv(64, MsgFlags::empty()).await.unwrap();
        assert!(got.reply_to().is_none(), "an unnamed sender has no address");
        assert_eq!(got.peer.uid(), Some(nix::unistd::geteuid().as_raw()));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
