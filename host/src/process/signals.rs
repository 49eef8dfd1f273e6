//! Signals in a process without threads: each signal sets a flag and writes
//! a byte to a pipe, which the master's `poll` loop watches; and what each
//! signal asks of the master ([`Intent`]), as in Net::Server.

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

/// What a signal asks the master to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Intent {
    /// INT, TERM: every child stops at once, then the master exits.
    Stop(Signal),
    /// QUIT (and TERM with `term_drains`): children stop accepting and
    /// finish their connections.
    Drain(Signal),
    /// HUP: re-execute with the listening sockets, reloading everything.
    Restart,
    /// TTIN: one child more.
    More,
    /// TTOU: one child fewer.
    Fewer,
    /// A signal of `sig_passthrough`: sent on to every child.
    PassOn(Signal),
    /// CHLD: children ended (the master reaps at every turn anyway).
    Reap,
}

impl Intent {
    /// What `signal` asks, in order: passed on first when `passthrough`
    /// lists it (as Net::Server does), then its own meaning. With
    /// `term_drains`, TERM asks what QUIT does (INT still stops at once),
    /// for orchestrators that send TERM and expect a graceful stop.
    pub fn of(signal: Signal, passthrough: &[Signal], term_drains: bool) -> Vec<Self> {
        let mut intents = Vec::new();
        if passthrough.contains(&signal) {
            intents.push(Self::PassOn(signal));
        }
        intents.extend(match signal {
            Signal::SIGTERM if term_drains => Some(Self::Drain(signal)),
            Signal::SIGINT | Signal::SIGTERM => Some(Self::Stop(signal)),
            Signal::SIGQUIT => Some(Self::Drain(signal)),
            Signal::SIGHUP => Some(Self::Restart),
            Signal::SIGTTIN => Some(Self::More),
            Signal::SIGTTOU => Some(Self::Fewer),
            Signal::SIGCHLD => Some(Self::Reap),
            _ => None,
        });
        intents
    }
}

/// Blocks `signals` until [`Signals::new`] catches them: sent in between
/// (to a daemon that said it is ready, before its master runs), they wait
/// instead of taking their default action.
pub fn hold(signals: &[Signal]) -> Result<()> {
    let set: SigSet = signals.iter().copied().collect();
    pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).context("sigprocmask")?;
    Ok(())
}

/// Undoes [`hold`]: what arrived meanwhile is delivered now.
fn release(signals: &[Signal]) -> Result<()> {
    let set: SigSet = signals.iter().copied().collect();
    pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&set), None).context("sigprocmask")?;
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
        release(signals)?;
        Ok(Self { flags, wake, ids })
    }

    /// The descriptor that becomes readable when a signal arrived.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    /// Before this process re-executes itself: holds [`MASTER_SIGNALS`]
    /// (`exec` resets the handlers but keeps the mask and what is pending)
    /// and makes those that arrived but were not yet taken pending again.
    /// A signal sent from now until the new master catches them (a TERM
    /// right after a HUP, or during its configuration check) reaches the
    /// new master instead of killing the process or being forgotten.
    pub fn hand_over(&self) -> Result<()> {
        hold(&MASTER_SIGNALS)?;
        for (signal, flag) in &self.flags {
            if MASTER_SIGNALS.contains(signal) && flag.swap(false, Ordering::SeqCst) {
                nix::sys::signal::raise(*signal).context("raise")?;
            }
        }
        Ok(())
    }

    /// Undoes [`Signals::hand_over`] when the re-execution failed: what was
    /// held arrives here again.
    pub fn take_back(&self) -> Result<()> {
        release(&MASTER_SIGNALS)
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
    fn signals_map_to_intents_passed_on_first() {
        use Signal::*;
        let passthrough = [SIGUSR1, SIGHUP];
        let cases: &[(Signal, &[Intent])] = &[
            (SIGINT, &[Intent::Stop(SIGINT)]),
            (SIGTERM, &[Intent::Stop(SIGTERM)]),
            (SIGQUIT, &[Intent::Drain(SIGQUIT)]),
            (SIGHUP, &[Intent::PassOn(SIGHUP), Intent::Restart]),
            (SIGTTIN, &[Intent::More]),
            (SIGTTOU, &[Intent::Fewer]),
            (SIGCHLD, &[Intent::Reap]),
            (SIGUSR1, &[Intent::PassOn(SIGUSR1)]),
            (SIGUSR2, &[]),
        ];
        for (signal, want) in cases {
            assert_eq!(Intent::of(*signal, &passthrough, false), *want, "{signal}");
        }
    }

    #[test]
    fn term_drains_makes_term_a_quit_and_leaves_int_alone() {
        use Signal::*;
        let cases: &[(Signal, &[Signal], &[Intent])] = &[
            (SIGTERM, &[], &[Intent::Drain(SIGTERM)]),
            (SIGINT, &[], &[Intent::Stop(SIGINT)]),
            (SIGQUIT, &[], &[Intent::Drain(SIGQUIT)]),
            (SIGHUP, &[], &[Intent::Restart]),
            // Passed on first, as any signal of `sig_passthrough`.
            (
                SIGTERM,
                &[SIGTERM],
                &[Intent::PassOn(SIGTERM), Intent::Drain(SIGTERM)],
            ),
        ];
        for (signal, passthrough, want) in cases {
            assert_eq!(Intent::of(*signal, passthrough, true), *want, "{signal}");
        }
    }

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

    #[test]
    fn signals_handed_over_are_pending_and_come_back() {
        // SIGTTIN: a master signal whose default action (stop) would
        // show if it escaped; this test is the only one to send it.
        let signals = Signals::new(&[Signal::SIGTTIN]).unwrap();
        nix::sys::signal::raise(Signal::SIGTTIN).unwrap();
        signals.hand_over().unwrap();
        // Taken from the flags, pending in the mask for the next program.
        assert_eq!(signals.take(), vec![]);
        assert!(SigSet::thread_get_mask().unwrap().contains(Signal::SIGTTIN));
        assert!(pending(Signal::SIGTTIN));
        // No exec: released, it arrives here again.
        signals.take_back().unwrap();
        assert_eq!(signals.take(), vec![Signal::SIGTTIN]);
        signals.forget();
    }

    /// Whether `signal` is pending for this thread (from procfs).
    fn pending(signal: Signal) -> bool {
        let status = std::fs::read_to_string("/proc/thread-self/status").unwrap();
        let mask = status
            .lines()
            .find_map(|line| line.strip_prefix("SigPnd:"))
            .map(|hex| u64::from_str_radix(hex.trim(), 16).unwrap())
            .unwrap();
        mask & (1 << (signal as u32 - 1)) != 0
    }
}
