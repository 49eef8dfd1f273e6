//! The sandbox's limits on one Store: linear memory and CPU (applied where
//! the Store is made: `state::new_store`).
//!
//! Memory: the Store's limiter refuses growth past `max_memory` and traps,
//! so the log names the reason; it also counts every instance's memory
//! against its service's and its worker's budgets (see
//! [`super::budget`]).
//!
//! CPU: the engine's epoch advances every [`EPOCH_TICK`] of the process's
//! CPU time (see [`super::ticker`]). A running guest
//! checks the epoch in its loops; at each tick it yields to the other
//! connections and the [`CpuMeter`] counts one tick of computation. When the
//! guest waits for its client the count starts again, so `cpu_limit` bounds
//! how long a guest may compute without waiting — an infinite loop traps
//! after `cpu_limit`, a chatty handler never does.

use std::time::Duration;

use wasmtime::StoreLimitsBuilder;

use super::engine::EPOCH_TICK;

/// How a trap for computing past `cpu_limit` begins.
pub const CPU_LIMIT_TRAP: &str = "CPU limit exceeded";
/// What a trap for growing memory past `max_memory` says (wasmtime's
/// limiter's words).
pub const MEMORY_LIMIT_TRAP: &str = "forcing trap when growing memory";

/// Counts the epoch ticks a guest computed for since it last waited
/// (for `cpu_limit`), and since it last really waited (for fairness: a
/// read or write that completes at once keeps a guest computing).
#[derive(Debug)]
pub struct CpuMeter {
    budget_ticks: u64,
    ticks: u64,
    waits_seen: u64,
    busy_ticks: u64,
    pends_seen: u64,
    limit: Duration,
}

impl CpuMeter {
    /// A meter allowing `limit` of computation between two waits.
    pub fn new(limit: Duration) -> Self {
        let ticks = limit.as_nanos() / EPOCH_TICK.as_nanos();
        Self {
            budget_ticks: (ticks as u64).max(1),
            ticks: 0,
            waits_seen: 0,
            busy_ticks: 0,
            pends_seen: 0,
            limit,
        }
    }

    /// Records one tick of computation, given how often the guest has waited
    /// so far and how often it really waited; `false` once the budget is
    /// spent.
    pub fn tick(&mut self, waits: u64, pends: u64) -> bool {
        if waits != self.waits_seen {
            self.waits_seen = waits;
            self.ticks = 0;
        }
        if pends != self.pends_seen {
            self.pends_seen = pends;
            self.busy_ticks = 0;
        }
        self.ticks += 1;
        self.busy_ticks += 1;
        self.ticks <= self.budget_ticks
    }

    /// Whether the guest computed through a whole tick without really
    /// waiting (its first tick may have come just after it started).
    pub fn computing(&self) -> bool {
        self.busy_ticks >= 2
    }

    /// Starts a new budget (at the start of every hook call).
    pub fn reset(&mut self) {
        self.ticks = 0;
        self.busy_ticks = 0;
    }

    /// The computation allowed between two waits.
    pub fn limit(&self) -> Duration {
        self.limit
    }
}

/// The memory limits of one Store: growth past `max_memory` traps.
pub fn limits(max_memory: u64) -> wasmtime::StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(usize::try_from(max_memory).unwrap_or(usize::MAX))
        .trap_on_grow_failure(true)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_whose_io_never_waits_keeps_computing() {
        let mut meter = CpuMeter::new(EPOCH_TICK * 100);
        // (waits, pends, computing after the tick)
        let steps = [
            (0, 0, false), // the first tick may come just after the start
            (0, 0, true),
            (1, 1, false), // it really waited
            (2, 1, true),  // then read or wrote without waiting
            (3, 1, true),
            (4, 2, false),
        ];
        for (i, (waits, pends, computing)) in steps.into_iter().enumerate() {
            assert!(meter.tick(waits, pends), "step {i}");
            assert_eq!(meter.computing(), computing, "step {i}");
        }
        meter.reset();
        assert!(!meter.computing());
    }

    #[test]
    fn meter_counts_ticks_between_waits() {
        let mut meter = CpuMeter::new(EPOCH_TICK * 3);
        // (waits so far, expected verdict)
        let steps = [
            (0, true),
            (0, true),
            (0, true),
            (0, false),
            (1, true), // the guest waited: a fresh budget
            (1, true),
            (1, true),
            (1, false),
        ];
        for (i, (waits, ok)) in steps.into_iter().enumerate() {
            assert_eq!(meter.tick(waits, waits), ok, "step {i}");
        }
        meter.reset();
        assert!(meter.tick(1, 1));
    }

    #[test]
    fn tiny_limits_allow_one_tick() {
        let mut meter = CpuMeter::new(Duration::from_micros(1));
        assert!(meter.tick(0, 0));
        assert!(!meter.tick(0, 0));
    }
}
