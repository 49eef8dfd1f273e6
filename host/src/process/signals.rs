//! Signals in a process without threads: each signal sets a flag and writes
//! a byte to a pipe, which the parent's `poll` loop watches.

use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Context, Result};
use nix::sys::signal::{SigSet, SigmaskHow, Signal, pthread_sigmask};
use signal_hook::SigId;

/// The signals every master acts on.
pub const MASTER_SIGNALS: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGQUIT,
    Signal::SIGHUP,
    Signal::SIGCHLD,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// Blocks `signals` until [`Signals::new`] catches them: sent in between
/// (to a daemon that said it is ready, before its master runs), they wait
/// instead of taking their default action.
pub fn hold(signals: &[Signal]) -> Result<()> {
    let set: SigSet = signals.iter().copied().collect();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).context("sigprocmask")?;
    Ok(())
}

/// The signals a parent process waits for.
pub struct Signals {
    flags: Vec<(Signal, Arc<AtomicBool>)>,
    wake: UnixStream,
    ids: Vec<SigId>,
}

impl Signals {
    /// Catches `signals` from now on.
    pub fn new(signals: &[Signal]) -> Result<Self> {
        let (wake, write) = UnixStream::pair().context("signal pipe")?;
        wake.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let mut flags = Vec::new();
        let mut ids = Vec::new();
        for &signal in signals {
            let flag = Arc::new(AtomicBool::new(false));
            // The flag first, then the wake-up: actions run in order.
            ids.push(signal_hook::flag::register(signal as i32, flag.clone())?);
            ids.push(signal_hook::low_level::pipe::register(
                signal as i32,
                write.try_clone()?,
            )?);
            flags.push((signal, flag));
        }
        // Held by `hold` until now: they arrive now, caught.
        let set: SigSet = signals.iter().copied().collect();
        pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None).context("sigprocmask")?;
        Ok(Self { flags, wake, ids })
    }

    /// The descriptor that becomes readable when a signal arrived.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// The signals that arrived since the last call, in a fixed order.
    pub fn take(&self) -> Vec<Signal> {
        let mut sink = [0u8; 64];
        while matches!((&self.wake).read(&mut sink), Ok(n) if n > 0) {}
        self.flags
            .iter()
            .filter(|(_, flag)| flag.swap(false, Ordering::SeqCst))
            .map(|(signal, _)| *signal)
            .collect()
    }

    /// In a child after `fork`: stop acting on the parent's signals. The
    /// signals stay caught (by signal-hook's registry, now with nothing to
    /// do): a child ignores them unless it registers its own handlers, as
    /// workers do for INT, TERM and QUIT.
    pub fn forget(self) {
        for id in self.ids {
            signal_hook::low_level::unregister(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_signals_wait_to_be_caught() {
        // Blocked, a signal raised (in this thread) does not take its
        // default action, which would end the test process; it arrives,
        // caught, when `Signals::new` catches it.
        hold(&[Signal::SIGUSR2]).unwrap();
        nix::sys::signal::raise(Signal::SIGUSR2).unwrap();
        let signals = Signals::new(&[Signal::SIGUSR2]).unwrap();
        assert_eq!(signals.take(), vec![Signal::SIGUSR2]);
        signals.forget();
    }
}
