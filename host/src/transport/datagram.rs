//! Datagram sockets, UDP and unix datagram: a request is one datagram
//! received ([`Received`], read with `recvmsg` as Net::Server reads it with
//! `recv`), and the guest's reply goes back to its sender from the same
//! socket ([`ReplyTo`]), capped against amplification ([`ReplyCap`]).

use std::future::Future;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    ControlMessageOwned, MsgFlags, SockaddrLike, SockaddrStorage, UnixAddr, recvmsg, sendto,
};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::client::{Credentials, Local, Peer};

/// The largest reply datagram: what one UDP datagram over IPv4 carries
/// (65,535 bytes less the IP and UDP headers). A unix datagram reply is
/// cut at the same size.
pub const MAX_DATAGRAM: usize = 65_507;

/// The bytes an IPv4 and a UDP header add to each datagram on the wire:
/// the amplification cap counts them on both sides.
pub const HEADER_BYTES: u64 = 28;

/// A datagram socket registered with a worker's runtime: UDP, or unix
/// datagram.
///
/// The runtime is told of its datagrams through an epoll instance of the
/// socket's own ([`Arrivals`]), armed for one arrival at a time, not by
/// registering the socket itself: an edge-triggered registration (all
/// tokio makes) wakes the runtime's thread waiting in `epoll` at every
/// datagram that arrives, and every reply's buffer freed, even while a task
/// is reading the socket in a loop and would find them anyway. Where the
/// worker's threads share a CPU that is two context switches per datagram,
/// a third of its cost. So [`DgramSocket::recv`] reads until the socket is
/// empty, and only then arms the instance for the next arrival and waits.
/// A reply is sent without waiting; one that would block is tried again
/// later (see [`RoomWait`]).
#[derive(Debug)]
pub struct DgramSocket {
    socket: OwnedFd,
    /// Datagrams to read.
    arrivals: Arrivals,
    unix: bool,
}

impl DgramSocket {
    /// A UDP socket, registered with the current runtime.
    pub fn udp(socket: std::net::UdpSocket) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Self::register(socket.into(), false)
    }

    /// A unix datagram socket, registered with the current runtime.
    pub fn unix(socket: std::os::unix::net::UnixDatagram) -> io::Result<Self> {
        socket.set_nonblocking(true)?;
        Self::register(socket.into(), true)
    }

    fn register(socket: OwnedFd, unix: bool) -> io::Result<Self> {
        Ok(Self {
            arrivals: Arrivals::new(socket.as_fd())?,
            socket,
            unix,
        })
    }

    /// The protocol's name, lower case, as the client info gives it.
    pub fn proto(&self) -> &'static str {
        if self.unix { "unixdgram" } else { "udp" }
    }

    /// Receives the next datagram, at most `len` bytes of it. One task at
    /// a time receives on a socket (its listener's). Each call takes a unit
    /// of the task's cooperative budget, as tokio's own sockets do, so that
    /// a loop over a socket that is never empty still lets the thread's
    /// other tasks run.
    pub async fn recv(self: &Arc<Self>, len: usize, flags: MsgFlags) -> io::Result<Received> {
        tokio::task::consume_budget().await;
        let mut buf = BytesMut::zeroed(len);
        let fd = self.socket.as_raw_fd();
        loop {
            match recv_one(fd, &mut buf, flags, self.unix) {
                Ok(got) => return Ok(got.into_received(buf, Some(self.clone()))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            self.arrivals.wait(self.socket.as_fd()).await?;
        }
    }

    /// Sends `bytes` to `to` if the socket takes them now.
    fn try_send(&self, bytes: &[u8], to: &Sender) -> io::Result<usize> {
        let to: &dyn SockaddrLike = match to {
            Sender::Ip(addr) => addr,
            Sender::Unix(addr) => addr,
        };
        sendto(self.socket.as_raw_fd(), bytes, to, MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)
    }
}

/// An epoll instance holding one datagram socket, registered with the
/// runtime: it becomes readable when a datagram arrives while it is armed
/// (`EPOLLONESHOT`), once.
#[derive(Debug)]
struct Arrivals(AsyncFd<Instance>);

/// An epoll instance's descriptor, as the runtime registers it.
#[derive(Debug)]
struct Instance(Epoll);

impl AsRawFd for Instance {
    fn as_raw_fd(&self) -> RawFd {
        self.0.0.as_raw_fd()
    }
}

/// The event [`Arrivals`] is armed for: one datagram to read.
fn one_arrival() -> EpollEvent {
    EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, 0)
}

impl Arrivals {
    /// An instance holding `socket`, armed.
    fn new(socket: BorrowedFd<'_>) -> io::Result<Self> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        epoll.add(socket, one_arrival())?;
        // SAFETY: the epoll instance's descriptor is owned by `Instance`,
        // which the `AsyncFd` owns: it stays open and the same until both
        // are dropped.
        let instance =
            unsafe { AsyncFd::register_with_interest(Instance(epoll), Interest::READABLE) }
                .map_err(io::Error::from)?;
        Ok(Self(instance))
    }

    /// Waits for the next datagram on `socket`: arms the instance (a
    /// datagram already there makes it readable at once), waits until it
    /// is readable, and takes its event, so that it is not again until
    /// armed.
    async fn wait(&self, socket: BorrowedFd<'_>) -> io::Result<()> {
        let epoll = &self.0.get_ref().0;
        epoll.modify(socket, &mut one_arrival())?;
        let mut ready = self.0.readable().await?;
        epoll.wait(&mut [EpollEvent::empty()], EpollTimeout::ZERO)?;
        ready.clear_ready();
        Ok(())
    }
}

impl AsFd for DgramSocket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.socket.as_fd()
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
}

/// The first wait before a reply that would have blocked is tried again;
/// each next wait doubles, up to [`ROOM_RETRY_MAX`].
pub const ROOM_RETRY_FIRST: Duration = Duration::from_millis(1);

/// The longest wait between tries of a reply that would block.
pub const ROOM_RETRY_MAX: Duration = Duration::from_millis(64);

/// One reply's wait for room to send. A UDP send blocks when the
/// socket's own send buffer is full, a unix datagram send when the
/// *client's* queue is full — which a socket not connected to that client
/// is never told of: it polls as writable all along. So neither is waited
/// for through the runtime (it would also wake a thread at every reply's
/// buffer freed: see [`DgramSocket`]); the reply is tried again after
/// [`ROOM_RETRY_FIRST`], then after waits doubling up to
/// [`ROOM_RETRY_MAX`], until the socket takes it or the connection's
/// limits end it.
#[derive(Debug, Default)]
pub struct RoomWait {
    retry: Option<Pin<Box<tokio::time::Sleep>>>,
    tries: u32,
}

impl RoomWait {
    /// Polls until a send that would have blocked is to be tried again.
    pub fn poll_retry(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let tries = self.tries;
        let retry = self.retry.get_or_insert_with(|| {
            let after = ROOM_RETRY_FIRST.saturating_mul(1 << tries.min(16));
            Box::pin(tokio::time::sleep(after.min(ROOM_RETRY_MAX)))
        });
        std::task::ready!(retry.as_mut().poll(cx));
        self.retry = None;
        self.tries += 1;
        Poll::Ready(())
    }

    /// A send went through: the next wait starts short again.
    pub fn sent(&mut self) {
        self.tries = 0;
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
        let addr = server.local_addr().unwrap();
        let server = Arc::new(DgramSocket::udp(server).unwrap());
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

    /// The socket's arrivals instance is armed again each time the socket
    /// is found empty: datagrams sent while the receiver waits, in bursts
    /// read before it waits again, and after a pause are all received.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_datagram_is_received_whenever_it_arrives() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let server = Arc::new(DgramSocket::udp(server).unwrap());
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // (datagrams sent at once, pause before sending them)
        let cases = [(1, 0), (1, 20), (5, 0), (1, 0), (32, 5), (2, 30), (1, 0)];
        for (round, (burst, pause)) in cases.into_iter().enumerate() {
            let receiver = {
                let server = server.clone();
                tokio::spawn(async move {
                    let mut got = Vec::new();
                    for _ in 0..burst {
                        let received = server.recv(64, MsgFlags::empty()).await.unwrap();
                        got.push(received.data);
                    }
                    got
                })
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            for i in 0..burst {
                client
                    .send_to(format!("{round}-{i}").as_bytes(), addr)
                    .unwrap();
            }
            let got = tokio::time::timeout(Duration::from_secs(5), receiver)
                .await
                .unwrap_or_else(|_| panic!("round {round}: a datagram was not received"))
                .unwrap();
            let want: Vec<Bytes> = (0..burst)
                .map(|i| Bytes::from(format!("{round}-{i}")))
                .collect();
            assert_eq!(got, want, "round {round}");
        }
    }

    /// A loop receiving from a socket that is never empty gives way to the
    /// thread's other tasks (the socket's reads take cooperative budget:
    /// tokio's is 128 units).
    #[tokio::test(flavor = "current_thread")]
    async fn a_receiving_loop_lets_other_tasks_run() {
        const QUEUED: usize = 200;
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        // Room for them all (the kernel caps it at rmem_max, 208 KiB by
        // default, doubled: some 400 small datagrams).
        nix::sys::socket::setsockopt(&server, nix::sys::socket::sockopt::RcvBuf, &(1 << 20))
            .unwrap();
        let addr = server.local_addr().unwrap();
        let server = Arc::new(DgramSocket::udp(server).unwrap());
        let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..QUEUED {
            client.send_to(&i.to_be_bytes(), addr).unwrap();
        }
        let ran = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let other = {
            let ran = ran.clone();
            tokio::spawn(async move { ran.store(true, Ordering::Relaxed) })
        };
        let mut received_before_it_ran = None;
        for n in 0..QUEUED {
            let wait =
                tokio::time::timeout(Duration::from_secs(5), server.recv(64, MsgFlags::empty()));
            wait.await
                .unwrap_or_else(|_| panic!("only {n} of {QUEUED} datagrams were queued"))
                .unwrap();
            if received_before_it_ran.is_none() && ran.load(Ordering::Relaxed) {
                received_before_it_ran = Some(n);
            }
        }
        other.await.unwrap();
        let n = received_before_it_ran.expect("the other task ran only after the loop");
        assert!(n <= 130, "the other task waited for {n} datagrams");
    }

    /// A unix datagram socket bound in a fresh directory named for `test`:
    /// the directory, the socket's path and the socket.
    fn unix_server(
        test: &str,
    ) -> (
        std::path::PathBuf,
        std::path::PathBuf,
        std::os::unix::net::UnixDatagram,
    ) {
        let dir = std::env::temp_dir().join(format!("{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("server.sock");
        let _ = std::fs::remove_file(&path);
        let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        (dir, path, server)
    }

    /// A reply that would block is tried again, later and later, and goes
    /// once the client's queue has room (a unix client's, which the socket
    /// is never told of).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reply_that_would_block_goes_once_there_is_room() {
        let (dir, path, server) = unix_server("ns-room");
        let server = Arc::new(DgramSocket::unix(server).unwrap());
        let client = std::os::unix::net::UnixDatagram::bind(dir.join("client.sock")).unwrap();
        client.send_to(b"hi", &path).unwrap();
        let reply = server
            .recv(64, MsgFlags::empty())
            .await
            .unwrap()
            .reply_to()
            .unwrap();
        let mut queued = 0;
        loop {
            match reply.try_send(b"x") {
                Ok(_) => queued += 1,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("send: {e}"),
            }
        }
        assert!(queued > 0, "the client's queue took no datagram");
        for round in 0..3 {
            let sending = {
                let reply = reply.clone();
                tokio::spawn(async move {
                    let mut wait = RoomWait::default();
                    loop {
                        match reply.try_send(b"late") {
                            Ok(_) => return wait.tries,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                                std::future::poll_fn(|cx| wait.poll_retry(cx)).await;
                            }
                            Err(e) => panic!("send: {e}"),
                        }
                    }
                })
            };
            tokio::time::sleep(Duration::from_millis(30)).await;
            assert!(
                !sending.is_finished(),
                "round {round}: sent to a full queue"
            );
            let mut buf = [0u8; 8];
            client.recv(&mut buf).unwrap();
            let tries = tokio::time::timeout(Duration::from_secs(5), sending)
                .await
                .unwrap_or_else(|_| panic!("round {round}: not sent once there was room"))
                .unwrap();
            // Some 30 ms of waits from 1 ms, doubling (1, 2, 4, 8, 16...):
            // a few tries, not one per millisecond.
            assert!((2..=12).contains(&tries), "round {round}: {tries} tries");
        }
        // The queue holds what was sent, in order: the three late ones last.
        let mut got = Vec::new();
        let mut buf = [0u8; 8];
        client.set_nonblocking(true).unwrap();
        while let Ok(n) = client.recv(&mut buf) {
            got.push(buf[..n].to_vec());
        }
        assert_eq!(got.len(), queued);
        assert!(got.ends_with(&[b"late".to_vec(), b"late".to_vec(), b"late".to_vec()]));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[tokio::test]
    async fn unix_senders_carry_credentials_and_only_named_ones_get_replies() {
        let (dir, path, server) = unix_server("ns-dgram");
        nix::sys::socket::setsockopt(&server, nix::sys::socket::sockopt::PassCred, &true).unwrap();
        let server = Arc::new(DgramSocket::unix(server).unwrap());
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
