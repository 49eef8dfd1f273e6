//! The epoch ticker: one thread per process that advances the engine's
//! epoch at every [`EPOCH_TICK`] of CPU time the process uses while a guest
//! may run, and sleeps otherwise.
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
//! that waits for its clients — a prefork child between requests, or one
//! whose CPU is taken by its siblings — is not woken for ticks that no
//! guest could use. (On the wall clock, 32 busy prefork children woke
//! their tickers 3,000 times a second, each a switch into another process;
//! see docs/benchmarks.md.)
//!
//! A guest runs only inside an instance, and each instance keeps the ticker
//! awake ([`Awake`]) from before it is made until it is dropped. When no
//! instance has existed for [`PARK_AFTER`] ticks the ticker sleeps until
//! the next one is made. An idle process uses no CPU and so gets no ticks
//! anyway; this keeps a process busy with the host's own work and no guest
//! (refusing a flood of denied clients, say) from being woken for ticks
//! too.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use anyhow::{Context, Result};
use nix::sys::time::TimeSpec;
use nix::time::{ClockId, ClockNanosleepFlags};

use super::engine::EPOCH_TICK;

/// Ticks without an instance after which the ticker sleeps (a second).
const PARK_AFTER: u32 = 100;

/// This process's ticker.
static PROCESS: OnceLock<Ticker> = OnceLock::new();

/// Starts this process's ticker for `engine`, once (in a worker, after the
/// fork: the master has no threads). It leaves the stop signals to the main
/// thread, where they wake a guest's sleeping read.
pub fn start(engine: wasmtime::Engine) -> Result<()> {
    process().run(engine, Clock::PROCESS_CPU, EPOCH_TICK, PARK_AFTER)
}

/// Keeps this process's ticker awake until dropped: held by each instance.
pub fn awake() -> Awake {
    process().awake()
}

fn process() -> &'static Ticker {
    PROCESS.get_or_init(Ticker::default)
}

/// An epoch ticker and what keeps it awake.
#[derive(Debug, Default)]
struct Ticker(Arc<Shared>);

#[derive(Debug, Default)]
struct Shared {
    /// Holders of [`Awake`] now.
    awake: AtomicUsize,
    /// Set while the ticker sleeps until the next [`Awake`].
    parked: AtomicBool,
    /// Epochs advanced so far.
    ticks: AtomicU64,
    /// The ticker's thread, once it runs.
    thread: OnceLock<Thread>,
}

impl Ticker {
    /// Starts the thread that advances `engine`'s epoch every `tick` of
    /// `clock`, and sleeps after `park_after` ticks with nothing awake; does
    /// nothing if it already runs.
    fn run(
        &self,
        engine: wasmtime::Engine,
        mut clock: Clock,
        tick: Duration,
        park_after: u32,
    ) -> Result<()> {
        if self.0.thread.get().is_some() {
            return Ok(());
        }
        let shared = self.0.clone();
        let handle = std::thread::Builder::new()
            .name("netserver-epoch".into())
            .spawn(move || {
                crate::process::leave_signals_to_main_thread();
                let mut idle = 0;
                loop {
                    if shared.awake.load(Ordering::SeqCst) > 0 {
                        idle = 0;
                    } else if idle < park_after {
                        idle += 1;
                    } else {
                        shared.sleep_until_awake();
                        idle = 0;
                    }
                    clock.sleep(tick);
                    engine.increment_epoch();
                    shared.ticks.fetch_add(1, Ordering::Relaxed);
                }
            })
            .context("cannot start the epoch ticker")?;
        let _ = self.0.thread.set(handle.thread().clone());
        Ok(())
    }

    /// Keeps the ticker awake until the result is dropped.
    fn awake(&self) -> Awake {
        self.0.awake.fetch_add(1, Ordering::SeqCst);
        // Read after the count is raised: either the ticker sees the count
        // before it would sleep, or this sees it asleep and wakes it.
        if self.0.parked.load(Ordering::SeqCst)
            && let Some(thread) = self.0.thread.get()
        {
            thread.unpark();
        }
        Awake(self.0.clone())
    }
}

impl Shared {
    /// On the ticker's thread: sleeps until something is awake.
    fn sleep_until_awake(&self) {
        self.parked.store(true, Ordering::SeqCst);
        // Checked after `parked` is set (see `Ticker::awake`); `park` may
        // also return for no reason, hence the loop.
        while self.awake.load(Ordering::SeqCst) == 0 {
            std::thread::park();
        }
        self.parked.store(false, Ordering::SeqCst);
    }
}

/// The clock a tick is measured on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clock {
    /// A CPU-time clock: [`Clock::PROCESS_CPU`].
    Cpu(ClockId),
    /// Real time (where the CPU clock cannot be slept on, and in tests).
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

/// Keeps the ticker awake while it lives (see [`awake`]).
#[derive(Debug)]
pub struct Awake(Arc<Shared>);

impl Drop for Awake {
    fn drop(&mut self) {
        self.0.awake.fetch_sub(1, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    /// Waits (at most 10 s) until `ready` holds.
    fn wait_until(what: &str, ready: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !ready() {
            assert!(Instant::now() < deadline, "never {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

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

    #[test]
    fn the_ticker_sleeps_with_no_instance_and_wakes_for_the_next() {
        let engine = wasmtime::Engine::default();
        let ticker = Ticker::default();
        let ticks = || ticker.0.ticks.load(Ordering::Relaxed);
        let parked = || ticker.0.parked.load(Ordering::SeqCst);
        let tick = Duration::from_millis(1);
        ticker.run(engine.clone(), Clock::Wall, tick, 3).unwrap();
        // A second start is a no-op.
        ticker.run(engine, Clock::Wall, tick, 3).unwrap();
        let mut rounds = Vec::new();
        for round in 0..3 {
            wait_until("asleep", parked);
            let before = ticks();
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(ticks(), before, "round {round}: ticked while asleep");
            // Two holders, one after the other's wake-up: it ticks while
            // either is alive, then sleeps again.
            let first = ticker.awake();
            wait_until("ticking", || ticks() >= before + 5);
            let second = ticker.awake();
            drop(first);
            let now = ticks();
            wait_until("ticking on", || ticks() >= now + 5);
            assert!(!parked(), "round {round}");
            drop(second);
            rounds.push(ticks() - before);
        }
        wait_until("asleep at the end", parked);
        assert_eq!(ticker.0.awake.load(Ordering::SeqCst), 0, "{rounds:?}");
    }
}
