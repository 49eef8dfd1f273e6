//! HUP: Net::Server's zero-downtime restart. The configuration is checked
//! as it now reads (with `--check`, in a process of its own); then the
//! master re-executes itself, handing the new program its listening sockets
//! and its children, which the new master asks to finish.

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};

use anyhow::Result;
use nix::unistd::Pid;

use super::notify;
use super::signals::Signals;
use crate::board::{self, Closing};
use crate::listen::inherit;
use crate::metrics::http::Endpoint;
use crate::service::Service;

/// HUP: checks the configuration as it now reads, then re-executes this
/// program with the listening sockets of `services`, leaving `workers`
/// running for the new master to retire. With a configuration that does not
/// load, the server goes on as it was (and this returns). systemd hears
/// that the server reloads, and, when it does not, that it still serves.
pub fn restart(
    services: &[Service],
    workers: &[Pid],
    signals: &Signals,
    metrics: Option<&Endpoint>,
) -> Result<()> {
    notify::reloading();
    let outcome = re_execute(services, workers, signals, metrics);
    // Still here: the server goes on as it was.
    notify::not_reloaded();
    outcome
}

/// Checks the configuration with `--check`, then re-executes this program:
/// returns only when it did not (see [`restart`]).
fn re_execute(
    services: &[Service],
    workers: &[Pid],
    signals: &Signals,
    metrics: Option<&Endpoint>,
) -> Result<()> {
    if let Some(dir) = crate::privileges::chrooted() {
        tracing::error!(
            "Received HUP, but the server runs in chroot {}, where it cannot re-execute itself; \
             still serving (stop and start it to reload)",
            dir.display()
        );
        return Ok(());
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(err) => {
            tracing::error!(
                "Received HUP, but this program cannot be found ({err}); still serving"
            );
            return Ok(());
        }
    };
    // The arguments the program started with: a process title may have
    // been written over them since (see `crate::title`).
    let args: Vec<OsString> = crate::title::args().into_iter().skip(1).collect();
    let check = match Command::new(&exe)
        .args(&args)
        .arg("--check")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
    {
        Ok(check) => check,
        Err(err) => {
            tracing::error!(
                "Received HUP, but the configuration cannot be checked ({err}); still serving"
            );
            return Ok(());
        }
    };
    if !check.status.success() {
        // Warnings come first; the error is the last line.
        let why = String::from_utf8_lossy(&check.stderr);
        let why = why.trim().lines().last().unwrap_or("no reason given");
        tracing::error!(
            "Received HUP, but the configuration does not load; still serving the old one: {}",
            why.trim_start_matches("netserver-host: ")
        );
        return Ok(());
    }
    tracing::info!("Received HUP: restarting with the listening sockets");
    let mut fds = Vec::new();
    for service in services {
        for bound in &service.sockets {
            inherit::keep_across_exec(&bound.socket)?;
            let fd = bound.socket.as_fd().as_raw_fd();
            fds.push(format!("{fd}={}", bound.listener));
        }
    }
    let workers: Vec<String> = workers.iter().map(ToString::to_string).collect();
    if let Some(metrics) = metrics {
        metrics.hand_over()?;
    }
    // The workers keep this board: when the new master asks them to
    // finish, they know the server restarts.
    board::set_closing(Closing::Restart);
    signals.hand_over()?;
    let err = Command::new(&exe)
        .args(&args)
        .env(inherit::LISTEN_FDS_VAR, fds.join(";"))
        .env(inherit::OLD_WORKERS_VAR, workers.join(","))
        .env(RESTARTS_VAR, (count() + 1).to_string())
        .exec();
    signals.take_back()?;
    board::set_closing(Closing::No);
    tracing::error!(
        "HUP: cannot re-execute {}: {err}; still serving",
        exe.display()
    );
    Ok(())
}

/// The variable counting the HUP restarts since the server started.
const RESTARTS_VAR: &str = "NETSERVER_RESTARTS";

/// The HUP restarts since the server started (this master is the
/// re-execution of that many).
pub fn count() -> u64 {
    std::env::var(RESTARTS_VAR)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}
