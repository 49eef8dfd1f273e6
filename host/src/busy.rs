//! A tenant's worker process that keeps a CPU busy asks the kernel for
//! long time slices while it does (`busy_slice`), so that processes that
//! wake for a client run first.
//!
//! Inside a worker, guests that keep computing take turns and leave a
//! thread free (see `fairness`). Between processes the kernel decides. Its
//! scheduler (EEVDF, Linux 6.6 and later) gives each thread a deadline —
//! when its slice began plus the slice (1.4 ms on this 2-CPU machine) —
//! and when a thread wakes, runs whichever has the earlier deadline. So a
//! worker that wakes for its client's request can wait behind one that
//! computes without pause for up to a slice, and twice per round trip when
//! the client runs on the same machine. Measured with `bench/isolation`
//! (a neighbour's p99 while a tenant's 64 connections trap, recurse or
//! spin; see docs/benchmarks.md), that wait is most of what the neighbour
//! feels once the tenant has processes of its own.
//!
//! A worker of a service with `isolation process` therefore watches how
//! much CPU it uses, at each wake of its epoch ticker:
//!
//! - **Busy**: over [`WINDOW`] it used at least [`BUSY`] of one CPU. Each
//!   of its threads (but the ticker's) asks for a slice of `busy_slice`
//!   (100 ms by default, the kernel's longest), so its deadlines lie far
//!   ahead and a thread of another process that wakes, asking for a
//!   shorter slice, runs before it. Its *share* of the CPU does not change
//!   (a slice is not a weight): alone on the machine, or against other
//!   busy processes, it computes as much as before, in longer runs.
//! - **Quiet again**: over [`QUIET_WINDOW`] it wanted less than [`QUIET`]
//!   of one CPU — CPU time used *and* time spent waiting for a CPU, from
//!   the kernel's `schedstat`, so that a worker kept off the CPU by others
//!   does not count as quiet. Its threads take the kernel's default slice
//!   again.
//!
//! Asking for a slice (`sched_setattr`'s `sched_runtime`) needs no
//! privilege, either way, so a worker that dropped root does it itself.
//! Kernels before 6.12 take no slice from a process: there nothing
//! changes.

use std::time::{Duration, Instant};

/// How long a worker's CPU use is looked at before it is called busy.
pub const WINDOW: Duration = Duration::from_millis(20);

/// How long a busy worker's demand is looked at before it is called
/// quiet again.
pub const QUIET_WINDOW: Duration = Duration::from_millis(100);

/// The part of one CPU a worker uses over [`WINDOW`] to be busy.
pub const BUSY: f64 = 0.75;

/// The part of one CPU a busy worker wants (uses or waits for) over
/// [`QUIET_WINDOW`] below which it is quiet again.
pub const QUIET: f64 = 0.5;

/// A worker's watch over how busy it is, and the slice its threads ask
/// for.
#[derive(Debug)]
pub struct Busy {
    /// The slice its threads ask for while busy.
    slice: Duration,
    /// Whether it is busy (its threads on long slices).
    busy: bool,
    /// Where the window being looked at began.
    start: Sample,
    /// The CPU time its threads had used and waited for when a busy
    /// window began, where the kernel says.
    start_demand: Option<Duration>,
}

/// What a process has used at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// When.
    pub wall: Instant,
    /// The CPU time of all its threads.
    pub cpu: Duration,
}

/// What [`Busy::look`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It became busy: long slices for its threads.
    Busy,
    /// It is still busy at the end of a window: long slices again (for
    /// threads started since).
    Still,
    /// It is quiet again: the default slice for its threads.
    Quiet,
}

impl Busy {
    /// In a worker of a service with `busy_slice` `slice` (above 0): its
    /// watch, or `None` where the process's CPU clock cannot be read.
    pub fn new(slice: Duration) -> Option<Self> {
        Some(Self {
            slice,
            busy: false,
            start: Sample::now()?,
            start_demand: None,
        })
    }

    /// Whether it is busy (its threads on long slices).
    pub fn busy(&self) -> bool {
        self.busy
    }

    /// Stops watching: gives the threads the default slice back if they
    /// had long ones.
    pub fn stop(&mut self) {
        if self.busy {
            self.busy = false;
            crate::slice::set_all_but_caller(None);
        }
    }

    /// Looks at the process now, which has used `cpu` (the epoch ticker
    /// calls this at each of its wakes), and gives its threads long slices
    /// or the default one, as [`Busy::look`] says.
    pub fn watch(&mut self, cpu: Duration) {
        let now = Sample {
            wall: Instant::now(),
            cpu,
        };
        let Some(change) = self.look(now, demand) else {
            return;
        };
        match change {
            Change::Busy => tracing::debug!("busy: slices of {:?}", self.slice),
            Change::Quiet => tracing::debug!("quiet again: the default slice"),
            Change::Still => {}
        }
        crate::slice::set_all_but_caller(self.busy.then_some(self.slice));
    }

    /// Whether the process, which at `now` has used what it says since
    /// the window began, changes (see the module documentation).
    /// `demand` gives the CPU time its threads used and waited for so
    /// far, where the kernel says (read only as a busy window begins or
    /// ends).
    pub fn look(
        &mut self,
        now: Sample,
        demand: impl FnOnce() -> Option<Duration>,
    ) -> Option<Change> {
        let wall = now.wall.saturating_duration_since(self.start.wall);
        let cpu = now.cpu.saturating_sub(self.start.cpu);
        if !self.busy {
            if wall < WINDOW {
                return None;
            }
            self.start = now;
            if cpu.as_secs_f64() < BUSY * wall.as_secs_f64() {
                return None;
            }
            self.busy = true;
            self.start_demand = demand();
            return Some(Change::Busy);
        }
        if wall < QUIET_WINDOW {
            return None;
        }
        let demand_now = demand();
        let wanted = match (self.start_demand, demand_now) {
            (Some(then), Some(now)) => now.saturating_sub(then),
            // Without the kernel's count: the CPU time used.
            _ => cpu,
        };
        self.start = now;
        self.start_demand = demand_now;
        if wanted.as_secs_f64() < QUIET * wall.as_secs_f64() {
            self.busy = false;
            return Some(Change::Quiet);
        }
        Some(Change::Still)
    }
}

impl Sample {
    /// This process, now; `None` where its CPU clock cannot be read.
    fn now() -> Option<Self> {
        Some(Self {
            wall: Instant::now(),
            cpu: process_cpu()?,
        })
    }
}

/// The CPU time of every thread of this process, or `None` where its CPU
/// clock cannot be read.
pub fn process_cpu() -> Option<Duration> {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_PROCESS_CPUTIME_ID)
        .ok()
        .map(Duration::from)
}

/// The CPU time this process's threads have used and waited for a CPU
/// (the first two numbers of each thread's `schedstat`), or `None` where
/// the kernel does not say.
fn demand() -> Option<Duration> {
    let mut total = 0u64;
    for entry in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // A thread that ended meanwhile counts no more.
        let Ok(text) = std::fs::read_to_string(entry.path().join("schedstat")) else {
            continue;
        };
        total += schedstat_demand(&text)?;
    }
    Some(Duration::from_nanos(total))
}

/// Nanoseconds on a CPU and waiting for one, from a `schedstat` line
/// (`RUN WAIT SLICES`).
fn schedstat_demand(text: &str) -> Option<u64> {
    let mut numbers = text.split_whitespace().map(str::parse::<u64>);
    let run = numbers.next()?.ok()?;
    let wait = numbers.next()?.ok()?;
    run.checked_add(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A watch that started at `t0`, nothing used, not busy.
    fn watch(t0: Instant) -> Busy {
        Busy {
            slice: Duration::from_millis(100),
            busy: false,
            start: Sample {
                wall: t0,
                cpu: Duration::ZERO,
            },
            start_demand: None,
        }
    }

    /// ms since the start, CPU ms used so far, demand ms so far (`None`:
    /// the kernel does not say), and what the watch does.
    type Step = (u64, u64, Option<u64>, Option<Change>);

    #[test]
    fn long_slices_when_busy_over_a_window_and_back_when_it_wants_less_than_quiet() {
        #[rustfmt::skip]
        let cases: &[(&str, &[Step])] = &[
            ("a window not over yet says nothing", &[
                (10, 10, Some(10), None),
            ]),
            ("idle: not busy", &[
                (5_000, 10, Some(10), None),
                (10_000, 20, Some(20), None),
            ]),
            ("half a CPU: not busy", &[
                (20, 10, Some(10), None),
                (40, 20, Some(20), None),
            ]),
            ("three quarters of a CPU: busy", &[
                (20, 15, Some(15), Some(Change::Busy)),
            ]),
            ("two threads computing: busy within one window", &[
                (10, 20, Some(20), None),
                (20, 40, Some(40), Some(Change::Busy)),
            ]),
            ("busy and kept off the CPU, but still wanting it: stays busy", &[
                (20, 20, Some(20), Some(Change::Busy)),
                (60, 22, Some(60), None),
                (120, 25, Some(120), Some(Change::Still)),
                (220, 30, Some(220), Some(Change::Still)),
            ]),
            ("busy, then waiting on its clients: quiet", &[
                (20, 20, Some(20), Some(Change::Busy)),
                (120, 30, Some(30), Some(Change::Quiet)),
                (140, 31, Some(31), None),
            ]),
            ("quiet, then busy again", &[
                (20, 20, Some(20), Some(Change::Busy)),
                (120, 30, Some(30), Some(Change::Quiet)),
                (140, 50, Some(50), Some(Change::Busy)),
            ]),
            ("without the kernel's count, what it used decides", &[
                (20, 20, None, Some(Change::Busy)),
                (120, 100, None, Some(Change::Still)),
                (220, 110, None, Some(Change::Quiet)),
            ]),
        ];
        for (name, steps) in cases {
            let t0 = Instant::now();
            let mut busy = watch(t0);
            for (i, &(at, cpu, demand, expected)) in steps.iter().enumerate() {
                let now = Sample {
                    wall: t0 + ms(at),
                    cpu: ms(cpu),
                };
                let got = busy.look(now, || demand.map(ms));
                assert_eq!(got, expected, "{name}, step {i}");
            }
        }
    }

    #[test]
    fn schedstat_lines_give_run_and_wait() {
        #[rustfmt::skip]
        let cases = [
            ("332085387 429411 47\n", Some(332_514_798)),
            ("0 86800 1", Some(86_800)),
            ("12", None),
            ("", None),
            ("x 1 2", None),
        ];
        for (text, expected) in cases {
            assert_eq!(schedstat_demand(text), expected, "{text:?}");
        }
    }

    #[test]
    fn this_process_has_a_clock_and_a_demand() {
        assert!(Sample::now().is_some());
        // Every Linux this server runs on has schedstat (CONFIG_SCHED_INFO);
        // the fallback is tested above.
        assert!(demand().is_some_and(|d| d > Duration::ZERO));
    }
}
