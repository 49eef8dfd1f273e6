//! Threads and the stop signals: which thread of a process a stop signal
//! reaches. A leaf, used by the daemon, the process model and the epoch
//! ticker alike.

use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};

/// The signals that stop a worker: INT and TERM at once, QUIT after its
/// connections.
pub fn stop_signals() -> SigSet {
    let mut set = SigSet::empty();
    for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGQUIT] {
        set.add(signal);
    }
    set
}

/// Blocks the stop signals in this thread; returns the mask it had.
pub fn hold_stop_signals() -> nix::Result<SigSet> {
    let mut old = SigSet::empty();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop_signals()), Some(&mut old))?;
    Ok(old)
}

/// Puts back a mask [`hold_stop_signals`] returned.
pub fn restore_mask(old: &SigSet) -> nix::Result<()> {
    pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(old), None)
}

/// In a worker, once its handlers for INT, TERM and QUIT are in place:
/// lets those signals in (any that came since the fork arrive now).
pub fn ready_for_signals() {
    let _ = pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&stop_signals()), None);
}

/// In a worker's helper thread (the epoch ticker, the runtime's blocking
/// pool): blocks the stop signals, so that they go to the main thread.
/// There they interrupt a guest's read sleeping in its socket (see
/// `transport`'s sleeping read); taken by another thread, they would leave
/// it asleep until its timeout.
pub fn leave_signals_to_main_thread() {
    let _ = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&stop_signals()), None);
}

/// Threads in this process (Linux).
pub fn count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, Iterator::count)
}
