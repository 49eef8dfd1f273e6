//! The server around a handler's instance, as its worker sees it (the
//! WIT's interface `server`): its [`counts`], and the types of the worker's
//! hooks ([`Handler::signal_hook`](crate::Handler::signal_hook) and
//! friends).
//!
//! ```no_run
//! let c = netserver_sdk::server::counts();
//! netserver_sdk::log::info(format_args!(
//!     "{} of {} workers busy; this one ({}) has served {}",
//!     c.busy_workers, c.workers, c.worker_pid, c.served
//! ));
//! ```

use std::fmt;

use crate::bindings::netserver::handler::server as wit;

/// The server's counts, read when asked (Net::Waiter's `get_kids_count`
/// and `get_busy_kids_count`, Net::Server's `requests`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Counts {
    /// Worker processes serving now (Net::Waiter's `get_kids_count`): the
    /// pool's workers, or under `server_type fork` the children serving a
    /// client. `dequeue` processes are not workers. 1 under `inetd`. After
    /// a HUP, the previous server's workers still finishing are not counted.
    pub workers: u32,
    /// Of them, those serving at least one client now (Net::Waiter's
    /// `get_busy_kids_count`); this worker counts while it serves the
    /// client a hook runs for.
    pub busy_workers: u32,
    /// Clients this worker serves now, the current one included.
    pub open: u32,
    /// Clients this worker has taken since it started, the current one
    /// included (Net::Server's `requests`, which `max_requests` bounds).
    pub served: u64,
    /// This worker's process id (the `worker N started` of the log).
    pub worker_pid: u32,
}

impl From<wit::ServerCounts> for Counts {
    fn from(c: wit::ServerCounts) -> Self {
        Self {
            workers: c.workers,
            busy_workers: c.busy_workers,
            open: c.open,
            served: c.served,
            worker_pid: c.worker_pid,
        }
    }
}

/// The server's counts now. Cheap: the host reads them from a table the
/// workers and the master share. Needs a host that serves
/// `netserver:handler@0.1.4`.
pub fn counts() -> Counts {
    wit::counts().into()
}

/// A signal that reached the worker, for
/// [`Handler::signal_hook`](crate::Handler::signal_hook): sent to it, or
/// to the master with the signal in `sig_passthrough`, which passes it on
/// to every worker (Net::Waiter's `propagate_signal`). Displayed as its
/// name without `SIG`: `HUP`, `USR1`, `USR2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Signal {
    /// SIGHUP (with `sig_passthrough HUP`, each worker gets it before the
    /// master restarts).
    Hup,
    /// SIGUSR1.
    Usr1,
    /// SIGUSR2.
    Usr2,
}

impl From<wit::Signal> for Signal {
    fn from(signal: wit::Signal) -> Self {
        match signal {
            wit::Signal::Hup => Self::Hup,
            wit::Signal::Usr1 => Self::Usr1,
            wit::Signal::Usr2 => Self::Usr2,
        }
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hup => "HUP",
            Self::Usr1 => "USR1",
            Self::Usr2 => "USR2",
        })
    }
}

/// Why the server closes, for
/// [`Handler::server_close_hook`](crate::Handler::server_close_hook).
/// Displayed lower case: `drain`, `stop`, `restart`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// QUIT: workers stop accepting and finish their connections (within
    /// `quit_timeout`).
    Drain,
    /// INT or TERM: workers stop at once.
    Stop,
    /// HUP: the server restarts; new workers take over and this one
    /// finishes its connections.
    Restart,
}

impl From<wit::CloseReason> for CloseReason {
    fn from(reason: wit::CloseReason) -> Self {
        match reason {
            wit::CloseReason::Drain => Self::Drain,
            wit::CloseReason::Stop => Self::Stop,
            wit::CloseReason::Restart => Self::Restart,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Drain => "drain",
            Self::Stop => "stop",
            Self::Restart => "restart",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converted_and_displayed() {
        let signals = [
            (wit::Signal::Hup, Signal::Hup, "HUP"),
            (wit::Signal::Usr1, Signal::Usr1, "USR1"),
            (wit::Signal::Usr2, Signal::Usr2, "USR2"),
        ];
        for (from, want, shown) in signals {
            assert_eq!(Signal::from(from), want);
            assert_eq!(want.to_string(), shown);
        }
        let reasons = [
            (wit::CloseReason::Drain, CloseReason::Drain, "drain"),
            (wit::CloseReason::Stop, CloseReason::Stop, "stop"),
            (wit::CloseReason::Restart, CloseReason::Restart, "restart"),
        ];
        for (from, want, shown) in reasons {
            assert_eq!(CloseReason::from(from), want);
            assert_eq!(want.to_string(), shown);
        }
    }

    #[test]
    fn counts_converted() {
        let counts = Counts::from(wit::ServerCounts {
            workers: 5,
            busy_workers: 2,
            open: 1,
            served: 1 << 40,
            worker_pid: 4242,
        });
        assert_eq!(
            (counts.workers, counts.busy_workers, counts.open),
            (5, 2, 1)
        );
        assert_eq!((counts.served, counts.worker_pid), (1 << 40, 4242));
    }
}
