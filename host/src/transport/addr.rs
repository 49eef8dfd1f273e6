//! What the kernel says of a socket: its local address, its address
//! family, and a unix peer's credentials.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::sys::socket::{SockaddrLike, SockaddrStorage, getsockname};
use tokio::net::UnixStream;

use crate::client::{Credentials, Local};

/// A unix peer's credentials, when the kernel gives them.
pub(super) fn credentials(stream: &UnixStream) -> Option<Credentials> {
    let cred = stream.peer_cred().ok()?;
    Some(Credentials {
        pid: cred.pid().unwrap_or(0),
        uid: cred.uid(),
        gid: cred.gid(),
    })
}

/// The local end of the socket `fd`: an IP address, or a unix path.
pub(super) fn local_of(fd: BorrowedFd<'_>) -> io::Result<Local> {
    let addr: SockaddrStorage = getsockname(fd.as_raw_fd()).map_err(io::Error::from)?;
    if let Some(v4) = addr.as_sockaddr_in() {
        return Ok(Local::ip(std::net::SocketAddr::V4((*v4).into())));
    }
    if let Some(v6) = addr.as_sockaddr_in6() {
        return Ok(Local::ip(std::net::SocketAddr::V6((*v6).into())));
    }
    if let Some(unix) = addr.as_unix_addr() {
        let path = unix.path().map(Into::into).unwrap_or_default();
        return Ok(Local::Unix(path));
    }
    Err(io::Error::other("not an IP or unix socket"))
}

/// The address family of the socket `fd`, if it is one.
pub(super) fn family_of(fd: BorrowedFd<'_>) -> Option<nix::sys::socket::AddressFamily> {
    getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .and_then(|a| a.family())
}
