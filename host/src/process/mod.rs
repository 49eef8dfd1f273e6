//! The process model: Net::Server's personalities.
//!
//! The master process reads the configuration, compiles every handler and
//! binds every socket before any thread exists, then becomes a supervisor
//! that only forks, reaps and relays signals; workers build their own
//! runtime after the fork (see [`crate::server`]).
//!
//! | `server_type` | processes |
//! | --- | --- |
//! | `multiplex` | `workers` worker processes, each serving many connections at once |
//! | `single` | one worker, one connection at a time |
//! | `prefork-simple` | `max_servers` workers, one connection at a time each, replaced after `max_requests` |
//! | `prefork` | between `min_servers` and `max_servers` workers, idle ones kept between the spare bounds |
//! | `fork` | the master accepts and forks a child per connection, at most `max_servers` at once |
//! | `inetd` | no master: the one connection on stdin/stdout, then exit |

pub mod fork;
pub mod inetd;
pub mod inherit;
pub mod signals;
pub mod status;
pub mod supervisor;

use anyhow::Result;
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use nix::unistd::{ForkResult, fork};

use crate::config::{Config, ServerType};
use crate::server::Service;

/// Runs the configured personality with the bound services until it is
/// told to stop.
pub fn run(config: &Config, services: Vec<Service>, handed: inherit::Handed) -> Result<()> {
    match config.process.server_type {
        ServerType::Fork => fork::run(config, services, handed),
        _ => supervisor::run(config, services, handed),
    }
}

/// The signal named `name` (`HUP`, `SIGUSR1`, any case), if there is one.
pub fn signal_number(name: &str) -> Option<Signal> {
    let name = name.trim().to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse().ok()
}

/// Forks. The child runs `child` and exits with its status; the parent
/// gets the child's pid.
///
/// The caller must be single-threaded: the master never starts a thread.
pub fn spawn(child: impl FnOnce() -> i32) -> Result<nix::unistd::Pid> {
    debug_assert_eq!(thread_count(), 1, "fork with threads running");
    let parent = nix::unistd::getpid();
    // The stop signals wait, blocked, until the child has its handlers
    // (see `ready_for_signals`): a QUIT sent at once is not lost.
    let mut old_mask = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_BLOCK,
        Some(&stop_signals()),
        Some(&mut old_mask),
    )?;
    // SAFETY: the master process is single-threaded (no runtime, no
    // compilation threads: wasmtime is built without parallel
    // compilation), so the child is a full copy in a consistent state; the
    // child only runs `child` and exits.
    let forked = unsafe { fork() };
    if !matches!(forked, Ok(ForkResult::Child)) {
        pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old_mask), None)?;
    }
    match forked? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            // A child never outlives the master: TERM when it dies (and
            // exit now if it already has).
            let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
            if nix::unistd::getppid() != parent {
                std::process::exit(0);
            }
            let status = child();
            std::process::exit(status)
        }
    }
}

/// The signals that stop a worker.
fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGQUIT] {
        set.add(signal);
    }
    set
}

/// In a child, once its handlers for INT, TERM and QUIT are in place:
/// lets those signals in (any that came since the fork arrive now).
pub fn ready_for_signals() {
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&stop_signals()), None);
}

/// In a worker's helper thread (the epoch ticker, the runtime's blocking
/// pool): blocks the stop signals, so that they go to the main thread.
/// There they interrupt a guest's read sleeping in its socket (see
/// [`crate::connection::Thread::Alone`]); taken by another thread, they
/// would leave it asleep until its timeout.
pub fn leave_signals_to_main_thread() {
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop_signals()), None);
}

/// Threads in this process (Linux).
pub(crate) fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, Iterator::count)
}
