//! Listening sockets handed over at start instead of bound: by the previous
//! `netserver-host` across a HUP (`NETSERVER_LISTEN_FDS`), or by systemd's
//! socket activation (`LISTEN_PID`, `LISTEN_FDS`).

use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};

use anyhow::{Result, bail};
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use super::Plan;
use crate::client::Local;
use crate::config::port::Proto;
use crate::transport::ListenSocket;

/// The variable naming the sockets a HUP hands to the new process:
/// `FD=SPEC` pairs separated by `;`, SPEC being the listener it was bound
/// for.
pub const LISTEN_FDS_VAR: &str = "NETSERVER_LISTEN_FDS";
/// The variable naming the old process's workers, which the new process
/// asks to finish and reaps.
pub const OLD_WORKERS_VAR: &str = "NETSERVER_OLD_WORKERS";
/// systemd's first passed descriptor.
const SD_LISTEN_FDS_START: RawFd = 3;

/// Where an inherited socket came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The previous netserver-host, across a HUP.
    Restart,
    /// systemd socket activation.
    Systemd,
}

/// One inherited listening socket.
#[derive(Debug)]
pub struct Inherited {
    /// The socket.
    pub socket: ListenSocket,
    /// Its address.
    pub local: Local,
    /// The listener it was bound for (across a HUP).
    pub spec: Option<String>,
    /// Where it came from.
    pub origin: Origin,
}

/// The sockets handed over to this process, read from the environment
/// (and removed from it, so children do not see them).
#[derive(Debug, Default)]
pub struct Handed {
    sockets: Vec<Inherited>,
    /// The previous process's workers (across a HUP).
    pub old_workers: Vec<i32>,
    /// Whether this process is a HUP's re-execution of the server.
    pub restarted: bool,
}

impl Handed {
    /// Reads (and removes) the hand-over variables. Call before any thread
    /// exists.
    pub fn from_env() -> Result<Self> {
        let mut handed = Self::default();
        if let Ok(list) = std::env::var(LISTEN_FDS_VAR) {
            handed.restarted = true;
            for item in list.split(';').filter(|i| !i.is_empty()) {
                let Some((fd, spec)) = item.split_once('=') else {
                    bail!("{LISTEN_FDS_VAR}: bad entry '{item}'");
                };
                let fd: RawFd = fd.parse()?;
                handed
                    .sockets
                    .push(adopt(fd, Some(spec.to_owned()), Origin::Restart)?);
            }
        }
        if let Ok(pids) = std::env::var(OLD_WORKERS_VAR) {
            handed.old_workers = pids.split(',').filter_map(|p| p.parse().ok()).collect();
        }
        let for_us = std::env::var("LISTEN_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            == Some(std::process::id());
        if for_us {
            let count: RawFd = std::env::var("LISTEN_FDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            for fd in SD_LISTEN_FDS_START..SD_LISTEN_FDS_START + count {
                handed.sockets.push(adopt(fd, None, Origin::Systemd)?);
            }
        }
        for var in [
            LISTEN_FDS_VAR,
            OLD_WORKERS_VAR,
            "LISTEN_PID",
            "LISTEN_FDS",
            "LISTEN_FDNAMES",
        ] {
            // SAFETY: called at start, before any thread exists, so nothing
            // reads the environment concurrently.
            unsafe { std::env::remove_var(var) };
        }
        Ok(handed)
    }

    /// The inherited socket for a planned socket: of the same kind (stream
    /// or datagram) on the same address or path, or — for port 0, which
    /// asked for any port — the socket that was bound for the same listener
    /// on the same IP.
    pub fn take(&mut self, plan: &Plan, spec: &str) -> Option<Inherited> {
        let at = self.sockets.iter().position(|s| {
            let datagram = s.socket.is_datagram();
            match (plan, &s.local) {
                (Plan::Inet { address, proto, .. }, Local::Ip(have)) => {
                    datagram == (*proto == Proto::Udp)
                        && (*have == *address
                            || (address.port() == 0
                                && have.ip() == address.ip()
                                && s.spec.as_deref() == Some(spec)))
                }
                (Plan::Unix { path, proto }, Local::Unix(have)) => {
                    datagram == (*proto == Proto::UnixDgram) && have.as_os_str() == path.as_str()
                }
                _ => false,
            }
        })?;
        Some(self.sockets.remove(at))
    }
    // Whether systemd handed over sockets.
    pub fn has_systemd_sockets(&self) -> bool {
        self.sockets.iter().any(|s| s.origin == Origin::Systemd)
    }

    /// The systemd sockets no listener asked for.
    pub fn take_systemd_rest(&mut self) -> Vec<Inherited> {
        let (rest, keep) = std::mem::take(&mut self.sockets)
            .into_iter()
            .partition(|s| s.origin == Origin::Systemd);
        self.sockets = keep;
        rest
    }
}

/// Takes ownership of an inherited listening socket.
fn adopt(fd: RawFd, spec: Option<String>, origin: Origin) -> Result<Inherited> {
    // SAFETY: F_GETFD only reads the descriptor's flags; any integer is a
    // valid argument (a closed one gives EBADF).
    if unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } < 0 {
        bail!("descriptor {fd} handed over is not open");
    }
    // SAFETY: the descriptor was handed to this process by its parent
    // (systemd or the previous netserver-host) for it to own; nothing else
    // in this process uses it. It is checked to be a listening socket
    // below, and closed when the returned value is dropped.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let socket = match ListenSocket::adopt(owned) {
        Ok(socket) => socket,
        Err(why) => bail!("descriptor {fd} handed over {why}"),
    };
    let local = socket.local()?;
    Ok(Inherited {
        socket,
        local,
        spec,
        origin,
    })
}

/// Lets `socket` survive `exec` (for a HUP's hand-over).
pub fn keep_across_exec(socket: &impl AsFd) -> Result<()> {
    fcntl(socket, FcntlArg::F_SETFD(FdFlag::empty()))?;
    Ok(())
}
