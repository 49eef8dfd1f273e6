//! Forking a child process from the master.

use anyhow::Result;
use nix::sys::signal::Signal;
use nix::unistd::{ForkResult, fork};

use crate::threads;

/// Forks. The child runs `child` and exits with its status; the parent
/// gets the child's pid.
///
/// The caller must be single-threaded: the master never starts a thread.
pub fn spawn(child: impl FnOnce() -> i32) -> Result<nix::unistd::Pid> {
    debug_assert_eq!(threads::count(), 1, "fork with threads running");
    let parent = nix::unistd::getpid();
    // The stop signals wait, blocked, until the child has its handlers
    // (see `threads::ready_for_signals`): a QUIT sent at once is not lost.
    let old_mask = threads::hold_stop_signals()?;
    // SAFETY: the master process is single-threaded (no runtime, no
    // compilation threads: wasmtime is built without parallel
    // compilation), so the child is a full copy in a consistent state; the
    // child only runs `child` and exits.
    let forked = unsafe { fork() };
    if !matches!(forked, Ok(ForkResult::Child)) {
        threads::restore_mask(&old_mask)?;
    }
    match forked? {
        ForkResult::Parent { child } => Ok(child),
        ForkResult::Child => {
            tie_to(parent);
            let status = child();
            std::process::exit(status)
        }
    }
}

/// In a child of `parent`: a child never outlives the master, so it asks
/// for TERM when the master dies (and exits now if it already has). Called
/// again once the child changed its user, which clears that request.
pub fn tie_to(parent: nix::unistd::Pid) {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGTERM);
    if nix::unistd::getppid() != parent {
        std::process::exit(0);
    }
}
