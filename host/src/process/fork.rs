//! The `fork` personality: the master accepts and forks a child for each
//! connection, at most `max_servers` at once (further clients wait in the
//! backlog); every child is reaped. Signals as for the other personalities
//! (see [`super::supervisor`]); TTIN and TTOU change `max_servers`.

use std::collections::BTreeSet;
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use super::inherit::Handed;
use super::signals::{MASTER_SIGNALS, Signals};
use super::supervisor::restart;
use crate::config::Config;
use crate::server::{self, Service};

/// How long children told to stop at once may take before they are killed.
const TERM_GRACE: Duration = Duration::from_secs(5);

/// Runs the `fork` master until it is told to stop.
pub fn run(config: &Config, mut services: Vec<Service>, handed: Handed) -> Result<()> {
    let mut signals = Some(Signals::new(&MASTER_SIGNALS)?);
    let mut children: BTreeSet<Pid> = handed.old_workers.into_iter().map(Pid::from_raw).collect();
    let mut max_servers = config.process.max_servers;
    let mut kill_at: Option<Instant> = None;
    loop {
        while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            match status {
                WaitStatus::Exited(pid, _) | WaitStatus::Signaled(pid, _, _) => {
                    children.remove(&pid);
                }
                _ => break,
            }
        }
        if let Some(at) = kill_at {
            if children.is_empty() {
                return Ok(());
            }
            if Instant::now() >= at {
                for pid in &children {
                    let _ = kill(*pid, Signal::SIGKILL);
                }
            }
        }
        // Wait for a signal, or a client while there is room for one.
        let room = kill_at.is_none() && (children.len() as u32) < max_servers;
        let readable = {
            let Some(sig) = &signals else { break };
            let mut fds = vec![PollFd::new(sig.fd(), PollFlags::POLLIN)];
            let sockets: Vec<(usize, usize)> = services
                .iter()
                .enumerate()
                .flat_map(|(s, service)| (0..service.sockets.len()).map(move |b| (s, b)))
                .collect();
            if room {
                for &(s, b) in &sockets {
                    fds.push(PollFd::new(
                        services[s].sockets[b].socket.as_fd(),
                        PollFlags::POLLIN,
                    ));
                }
            }
            let timeout = if kill_at.is_some() { 50 } else { 1000 };
            match poll(&mut fds, PollTimeout::from(timeout as u16)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(err) => return Err(err).context("poll"),
            }
            let ready: Vec<(usize, usize)> = fds[1..]
                .iter()
                .zip(&sockets)
                .filter(|(fd, _)| fd.revents().is_some_and(|r| r.contains(PollFlags::POLLIN)))
                .map(|(_, at)| *at)
                .collect();
            ready
        };
        let arrived = signals.as_ref().map(Signals::take).unwrap_or_default();
        for signal in arrived {
            match signal {
                Signal::SIGINT | Signal::SIGTERM => {
                    tracing::info!("Received {}: server closing", &signal.as_str()[3..]);
                    services.clear();
                    for pid in &children {
                        let _ = kill(*pid, Signal::SIGTERM);
                    }
                    kill_at = Some(Instant::now() + TERM_GRACE);
                }
                Signal::SIGQUIT if kill_at.is_none() => {
                    tracing::info!("Received QUIT: finishing open connections, then closing");
                    services.clear();
                    kill_at = Some(Instant::now() + config.process.quit_timeout);
                }
                Signal::SIGHUP if kill_at.is_none() => {
                    let pids: Vec<Pid> = children.iter().copied().collect();
                    if let Some(signals) = &signals {
                        restart(&services, &pids, signals)?;
                    }
                }
                Signal::SIGTTIN => {
                    max_servers = max_servers.saturating_add(1);
                    tracing::info!("Received TTIN: increasing max_servers to {max_servers}");
                }
                Signal::SIGTTOU => {
                    max_servers = max_servers.saturating_sub(1).max(1);
                    tracing::info!("Received TTOU: decreasing max_servers to {max_servers}");
                }
                _ => {}
            }
        }
        if kill_at.is_some() {
            continue;
        }
        for (s, b) in readable {
            if children.len() as u32 >= max_servers {
                break;
            }
            let stream = match services[s].sockets[b].socket.accept() {
                Ok((stream, _)) => stream,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(err) => {
                    tracing::warn!("accept failed: {err}");
                    continue;
                }
            };
            let handler = services[s].handler.clone();
            let idle_timeout = services[s].idle_timeout;
            let pid = super::spawn(|| {
                if let Some(signals) = signals.take() {
                    signals.forget();
                }
                // The child serves its client only: no listening socket.
                services.clear();
                server::serve_one(handler, stream, idle_timeout)
            })?;
            tracing::debug!("child {pid} serves a connection");
            children.insert(pid);
        }
    }
    Ok(())
}
