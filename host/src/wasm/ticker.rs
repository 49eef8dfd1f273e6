//! The epoch ticker: one thread per process that advances the engine's
//! epoch at every [`EPOCH_TICK`] of CPU time the process uses.
//!
//! A running guest checks the epoch in its loops; each tick makes it yield
//! to the other connections and counts against its CPU limit (see
//! [`super::sandbox`]). Only a tick from another thread can do that: a
//! guest computing in a loop holds the thread it runs on (the runtime's
//! only one where a process serves one connection at a time). One ticker
//! per process and engine, never a timer per connection.
//!
//! The tick is measured on the process's CPU clock, not the wall clock: a
//! guest can only compute while its process runs, so a tick of CPU time is
//! what `cpu_limit` counts and what preemption shares out, and a process
//! that waits — an idle prefork pool, a child between its client's
//! requests, one whose CPU is taken by its siblings — is not woken for
//! ticks that no guest could use. (On the wall clock, 32 busy prefork
//! children woke their tickers 3,000 times a second, each a switch into
//! another process, and an idle pool of 50 children 5,000 times; see
//! docs/benchmarks.md.)

use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, ClockNanosleepFlags};

use super::engine::EPOCH_TICK;
use crate::busy::Busy;

/// Starts this process's ticker for `engine` (in a worker, after the fork:
/// the master has no threads). It leaves the stop signals to the main
/// thread, where they wake a guest's sleeping read.
///
/// With `busy` (a tenant's worker with `busy_slice`), it also watches how
/// busy the process is at each wake (see [`crate::busy`]). While the
/// process is busy, the ticker wakes on the wall clock instead, every
/// tick, so that it sees the process turn quiet (a quiet process uses no
/// CPU time to end a sleep on its CPU clock), and still advances the epoch
/// once per tick of CPU time used.
pub fn start(engine: wasmtime::Engine, mut busy: Option<Busy>) -> Result<()> {
    let mut clock = Clock::PROCESS_CPU;
    std::thread::Builder::new()
        .name("netserver-epoch".into())
        .spawn(move || {
            crate::threads::leave_signals_to_main_thread();
            // The CPU time at the last tick (read only with `busy`).
            let mut ticked = Duration::ZERO;
            loop {
                let Some(watch) = &mut busy else {
                    clock.sleep(EPOCH_TICK);
                    engine.increment_epoch();
                    continue;
                };
                if watch.busy() {
                    std::thread::sleep(EPOCH_TICK);
                } else {
                    clock.sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
                // Without a CPU clock nothing says how busy it is.
                let Some(used) = crate::busy::process_cpu().filter(|_| clock != Clock::Wall) else {
                    watch.stop();
                    busy = None;
                    continue;
                };
                if watch.busy() {
                    while used.saturating_sub(ticked) >= EPOCH_TICK {
                        engine.increment_epoch();
                        ticked += EPOCH_TICK;
                    }
                } else {
                    ticked = used;
                }
                watch.watch(used);
            }
        })
        .context("cannot start the epoch ticker")?;
    Ok(())
}

/// The clock a tick is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// A CPU-time clock: [`Clock::PROCESS_CPU`].
    Cpu(ClockId),
    /// Real time, where the CPU clock cannot be slept on.
    Wall,
}

impl Clock {
    /// The CPU time of every thread of this process.
    const PROCESS_CPU: Clock = Clock::Cpu(ClockId::CLOCK_PROCESS_CPUTIME_ID);

    /// Sleeps for `tick` of this clock. If the CPU clock cannot be slept
    /// on (a kernel or seccomp policy without it), says so once and uses
    /// the wall clock from then on.
    fn sleep(&mut self, tick: Duration) {
        if let Clock::Cpu(clock) = *self {
            match sleep_cpu(clock, tick) {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(
                        "the epoch ticker cannot sleep on the process's CPU clock ({err}); \
                         it ticks in real time"
                    );
                    *self = Clock::Wall;
                }
            }
        }
        std::thread::sleep(tick);
    }
}

/// Sleeps until CPU-time `clock` has advanced by `tick`.
fn sleep_cpu(clock: ClockId, tick: Duration) -> nix::Result<()> {
    let until = nix::time::clock_gettime(clock)? + TimeSpec::from_duration(tick);
    loop {
        // An absolute end: a signal's interruption sleeps on to the same end.
        match nix::time::clock_nanosleep(clock, ClockNanosleepFlags::TIMER_ABSTIME, &until) {
            Err(nix::errno::Errno::EINTR) => continue,
            done => return done.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Instant;

    use super::*;

    /// The CPU time this process has used.
    fn cpu_used() -> Duration {
        nix::time::clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)
            .unwrap()
            .into()
    }

    #[test]
    fn a_cpu_tick_lasts_until_the_process_has_computed_that_long() {
        let tick = Duration::from_millis(30);
        let stop = Arc::new(AtomicBool::new(false));
        // Computes (bounded: 60 s) until the tick is over.
        let spinner = std::thread::spawn({
            let stop = stop.clone();
            move || {
                let started = Instant::now();
                while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
                    std::hint::spin_loop();
                }
            }
        });
        let before = cpu_used();
        let mut clock = Clock::PROCESS_CPU;
        clock.sleep(tick);
        let used = cpu_used() - before;
        stop.store(true, Ordering::Relaxed);
        spinner.join().unwrap();
        assert_eq!(clock, Clock::PROCESS_CPU, "fell back to the wall clock");
        assert!(used >= tick, "woke after {used:?} of CPU time");
    }

    #[test]
    fn a_cpu_clock_that_cannot_be_slept_on_gives_way_to_the_wall_clock() {
        // Linux refuses to sleep on the calling thread's own CPU clock
        // (EINVAL), as a kernel or a seccomp policy might refuse the
        // process's.
        let mut clock = Clock::Cpu(ClockId::CLOCK_THREAD_CPUTIME_ID);
        let tick = Duration::from_millis(20);
        let started = Instant::now();
        clock.sleep(tick);
        assert!(started.elapsed() >= tick, "{:?}", started.elapsed());
        assert_eq!(clock, Clock::Wall);
    }
}
