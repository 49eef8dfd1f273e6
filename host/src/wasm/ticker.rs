//! The epoch ticker: one thread per process that advances the engine's
//! epoch every [`EPOCH_TICK`] while a guest may run, and sleeps otherwise.
//!
//! A running guest checks the epoch in its loops; each tick makes it yield
//! to the other connections and counts against its CPU limit (see
//! [`super::sandbox`]). Only a tick from another thread can do that: a
//! guest computing in a loop holds the thread it runs on (the runtime's
//! only one where a process serves one connection at a time). One ticker
//! per process and engine, never a timer per connection.
//!
//! A guest runs only inside an instance, and each instance keeps the ticker
//! awake ([`Awake`]) from before it is made until it is dropped. When no
//! instance has existed for [`PARK_AFTER`] ticks the ticker sleeps until
//! the next one is made, so an idle process — a prefork pool waiting for
//! clients — is not woken a hundred times a second for nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use anyhow::{Context, Result};

use super::engine::EPOCH_TICK;

/// Ticks without an instance after which the ticker sleeps (a second).
const PARK_AFTER: u32 = 100;

/// This process's ticker.
static PROCESS: OnceLock<Ticker> = OnceLock::new();

/// Starts this process's ticker for `engine`, once (in a worker, after the
/// fork: the master has no threads). It leaves the stop signals to the main
/// thread, where they wake a guest's sleeping read.
pub fn start(engine: wasmtime::Engine) -> Result<()> {
    process().run(engine, EPOCH_TICK, PARK_AFTER)
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
    /// Starts the thread that advances `engine`'s epoch every `tick`, and
    /// sleeps after `park_after` ticks with nothing awake; does nothing if
    /// it already runs.
    fn run(&self, engine: wasmtime::Engine, tick: Duration, park_after: u32) -> Result<()> {
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
                    std::thread::sleep(tick);
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

    #[test]
    fn the_ticker_sleeps_with_no_instance_and_wakes_for_the_next() {
        let engine = wasmtime::Engine::default();
        let ticker = Ticker::default();
        let ticks = || ticker.0.ticks.load(Ordering::Relaxed);
        let parked = || ticker.0.parked.load(Ordering::SeqCst);
        ticker
            .run(engine.clone(), Duration::from_millis(1), 3)
            .unwrap();
        // A second start is a no-op.
        ticker.run(engine, Duration::from_millis(1), 3).unwrap();
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
