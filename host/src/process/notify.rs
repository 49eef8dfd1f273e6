//! systemd's readiness protocol (`Type=notify`, `sd_notify(3)`), spoken
//! by the master through the `sd-notify` crate (which starts no thread: the
//! master forks), and only when systemd asked for it by setting
//! `NOTIFY_SOCKET`. A message that cannot be sent is logged, once, and
//! never stops the server.
//!
//! | when | message |
//! | --- | --- |
//! | every socket bound, the first workers started (and again after a HUP, by the new master) | `MAINPID=`, `READY=1`, `STATUS=` |
//! | HUP, before the configuration is checked | `RELOADING=1`, `MONOTONIC_USEC=` |
//! | HUP that did not restart (a configuration that does not load) | `READY=1`, `STATUS=` saying so |
//! | INT, TERM, QUIT | `STOPPING=1`, `STATUS=` |
//! | every [`STATUS_EVERY`] while serving, when the counts changed | `STATUS=workers N, busy B, served S` |

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

use crate::board;

/// How often the master refreshes its `STATUS=` (when it changed).
pub const STATUS_EVERY: Duration = Duration::from_secs(2);

/// The variable systemd names its socket in.
const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The last `STATUS=` sent, and when.
static LAST: Mutex<Option<(String, Instant)>> = Mutex::new(None);

/// Whether a failure was logged already.
static FAILED: AtomicBool = AtomicBool::new(false);

/// Whether systemd listens.
fn enabled() -> bool {
    std::env::var_os(NOTIFY_SOCKET).is_some_and(|s| !s.is_empty())
}

/// The status line of `totals`.
pub fn status_line(totals: &board::Totals) -> String {
    format!(
        "workers {}, busy {}, served {}",
        totals.workers, totals.busy, totals.served
    )
}

fn send(states: &[NotifyState]) {
    if let Err(err) = sd_notify::notify(states)
        && !FAILED.swap(true, Ordering::Relaxed)
    {
        let socket = std::env::var_os(NOTIFY_SOCKET).unwrap_or_default();
        tracing::warn!(
            "cannot notify systemd at {}: {err} (further failures are not logged)",
            socket.to_string_lossy()
        );
    }
}

/// Ready to serve: every socket is bound and the workers run. Says which
/// process is the main one (after a HUP the same, re-executed).
pub fn ready() {
    if !enabled() {
        return;
    }
    let status = remember(status_line(&board::totals()));
    send(&[
        NotifyState::MainPid(std::process::id()),
        NotifyState::Ready,
        NotifyState::Status(&status),
    ]);
}

/// A HUP: reloading, until the new master says it is ready (or
/// [`not_reloaded`]). Newer systemd wants the time of the reload with it.
pub fn reloading() {
    if !enabled() {
        return;
    }
    let mut states = vec![NotifyState::Reloading];
    if let Ok(now) = NotifyState::monotonic_usec_now() {
        states.push(now);
    }
    states.push(NotifyState::Status("reloading"));
    send(&states);
}

/// A HUP that did not restart the server (the log says why): still
/// serving, as before.
pub fn not_reloaded() {
    if !enabled() {
        return;
    }
    let status = remember(format!(
        "reload failed, still serving as before (see the log); {}",
        status_line(&board::totals())
    ));
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// INT, TERM or QUIT: the server is stopping (`drain`: finishing its
/// connections first).
pub fn stopping(drain: bool) {
    if !enabled() {
        return;
    }
    let status = if drain {
        "stopping: finishing open connections"
    } else {
        "stopping"
    };
    send(&[NotifyState::Stopping, NotifyState::Status(status)]);
}

/// Refreshes `STATUS=` with the board's counts, when they changed and the
/// last one is [`STATUS_EVERY`] old.
pub fn status() {
    if !enabled() {
        return;
    }
    let line = status_line(&board::totals());
    let due = match &*last() {
        Some((sent, at)) => *sent != line && at.elapsed() >= STATUS_EVERY,
        None => true,
    };
    if due {
        let line = remember(line);
        send(&[NotifyState::Status(&line)]);
    }
}

/// How long the master may sleep before its next [`status`]: forever when
/// systemd does not listen.
pub fn every() -> Duration {
    if enabled() {
        STATUS_EVERY
    } else {
        Duration::MAX
    }
}

fn last() -> std::sync::MutexGuard<'static, Option<(String, Instant)>> {
    LAST.lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Notes `status` as the last one sent; returns it.
fn remember(status: String) -> String {
    *last() = Some((status.clone(), Instant::now()));
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_gives_the_boards_counts() {
        let totals = board::Totals {
            workers: 4,
            busy: 1,
            open: 3,
            served: 120,
        };
        assert_eq!(status_line(&totals), "workers 4, busy 1, served 120");
    }
}
