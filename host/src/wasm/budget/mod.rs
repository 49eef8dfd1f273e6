//! Memory budgets: how much linear memory the live instances of one
//! worker process may hold together — per service (`memory_budget`) and
//! for the whole worker (`worker_memory`) — on top of each instance's own
//! cap (`max_memory`).
//!
//! Every Store counts what its instances' memories and tables grow to in
//! an [`Account`] against two [`Budget`]s, its service's and its worker's
//! (shared atomic counters of the process), from the instance's first
//! memory at instantiation to the Store's drop, which gives all of it
//! back. Its [`Limiter`] is wasmtime's hook on every growth: a growth
//! that would take a budget past its limit fails, and the guest traps
//! with [`SERVICE_BUDGET_TRAP`] or [`WORKER_BUDGET_TRAP`] (not
//! `max_memory`'s reason); at instantiation the instance is not made, and
//! the connection that wanted it is refused. Either way one connection
//! ends, said in its summary line, and the budget's owner is told in the
//! log at most every [`WARN_EVERY`] that it is full.
//!
//! What is counted is the size the guest asked for (pages of linear
//! memory, elements of tables at [`TABLE_ELEMENT_BYTES`] each), not what
//! is resident: a guest cannot hold more of the machine than it is
//! counted for. A finished instance's memory the pooling allocator keeps
//! for reuse is the host's, not any guest's (see docs/sandbox.md).
//!
//! The defaults ([`plan`]) come from the machine (see [`crate::machine`]).
//!
//! | module | concern |
//! | --- | --- |
//! | this one | a budget, an account of one Store against its budgets |
//! | `limiter` | the Store's resource limiter: `max_memory`, then the account |
//! | `plan` | every budget of a worker, as configured or derived from the machine |

mod limiter;
mod plan;

pub use limiter::Limiter;
pub use plan::{Plan, instances_per_worker, plan, processes};

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::log::every::Every;

/// How a growth past a service's `memory_budget` begins its trap (and an
/// instantiation it refuses, its error).
pub const SERVICE_BUDGET_TRAP: &str = "memory_budget exceeded";
/// The same for the worker's `worker_memory`.
pub const WORKER_BUDGET_TRAP: &str = "worker_memory exceeded";

/// The bytes one table element is counted for: a pointer.
pub const TABLE_ELEMENT_BYTES: u64 = 8;

/// How often a full budget is said in the log, at most.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// Which budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    /// A service's `memory_budget`.
    Service,
    /// The worker's `worker_memory`.
    Worker,
}

impl Which {
    /// The budget a trap's or an error's text names, if it names one.
    pub fn named_in(text: &str) -> Option<Self> {
        if text.contains(SERVICE_BUDGET_TRAP) {
            Some(Self::Service)
        } else if text.contains(WORKER_BUDGET_TRAP) {
            Some(Self::Worker)
        } else {
            None
        }
    }
}

/// One budget in one worker process: what it allows, what the instances
/// counted against it hold now, and how many they are.
#[derive(Debug)]
pub struct Budget {
    which: Which,
    limit: u64,
    held: AtomicU64,
    instances: AtomicU64,
    warned: Every,
}

impl Budget {
    /// A service's budget of `limit` bytes.
    pub fn service(limit: u64) -> Arc<Self> {
        Self::new(Which::Service, limit)
    }

    /// The worker's ceiling of `limit` bytes.
    pub fn worker(limit: u64) -> Arc<Self> {
        Self::new(Which::Worker, limit)
    }

    fn new(which: Which, limit: u64) -> Arc<Self> {
        Arc::new(Self {
            which,
            limit,
            held: AtomicU64::new(0),
            instances: AtomicU64::new(0),
            warned: Every::new(WARN_EVERY),
        })
    }

    /// The bytes it allows.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The bytes its instances hold now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Relaxed)
    }

    /// Takes `bytes` more, if they fit; otherwise nothing, and why.
    fn take(&self, bytes: u64, asker: &Arc<str>) -> Result<(), OverBudget> {
        let fits = |held: u64| held.checked_add(bytes).filter(|&n| n <= self.limit);
        match self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, fits)
        {
            Ok(_) => Ok(()),
            Err(held) => Err(OverBudget {
                which: self.which,
                service: asker.clone(),
                limit: self.limit,
                held,
                instances: self.instances.load(Ordering::Relaxed),
                asked: bytes,
            }),
        }
    }

    /// Gives `bytes` back.
    fn give_back(&self, bytes: u64) {
        let less = |held: u64| Some(held.saturating_sub(bytes));
        let _ = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, less);
    }

    /// Says in the log, at most every [`WARN_EVERY`], that `over` found
    /// the budget full.
    fn warn(&self, over: &OverBudget) {
        if !self.warned.due(Instant::now()) {
            return;
        }
        tracing::warn!(
            "{over}: growing instances trap and new connections are refused until memory is given back"
        );
    }
}

/// Why a growth was refused: the budget it would have passed, how full
/// it was, and what was asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverBudget {
    /// The budget.
    pub which: Which,
    /// The service whose instance asked.
    pub service: Arc<str>,
    /// What the budget allows.
    pub limit: u64,
    /// What its instances held.
    pub held: u64,
    /// How many instances it counts.
    pub instances: u64,
    /// The bytes asked for.
    pub asked: u64,
}

impl fmt::Display for OverBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (limit, held, asked) = (shown(self.limit), shown(self.held), shown(self.asked));
        let n = self.instances;
        match self.which {
            Which::Service => write!(
                f,
                "{SERVICE_BUDGET_TRAP}: service {} may hold {limit} of linear memory in this worker, \
                 and holds {held} in {n} instance(s); {asked} more was asked",
                self.service
            ),
            Which::Worker => write!(
                f,
                "{WORKER_BUDGET_TRAP}: this worker's instances may hold {limit} of linear memory, \
                 and hold {held} in {n} instance(s); {asked} more was asked by service {}",
                self.service
            ),
        }
    }
}

impl std::error::Error for OverBudget {}

/// A size as the log shows it, in MiB (GiB from 1 GiB up).
pub fn shown(bytes: u64) -> String {
    const MIB: f64 = (1u64 << 20) as f64;
    let mib = bytes as f64 / MIB;
    if mib >= 1024.0 {
        format!("{:.1} GiB", mib / 1024.0)
    } else {
        format!("{mib:.1} MiB")
    }
}

/// The budgets one service's Stores count against in a worker: the
/// service's and the worker's.
#[derive(Clone, Debug)]
pub struct Budgets {
    service: Arc<Budget>,
    worker: Arc<Budget>,
    name: Arc<str>,
}

impl Budgets {
    /// `service`'s budget within the worker's `worker` (`name`: the
    /// service's, for the log).
    pub fn new(name: Arc<str>, service: Arc<Budget>, worker: Arc<Budget>) -> Self {
        Self {
            service,
            worker,
            name,
        }
    }

    /// The service's budget.
    pub fn service(&self) -> &Arc<Budget> {
        &self.service
    }

    /// The worker's ceiling.
    pub fn worker(&self) -> &Arc<Budget> {
        &self.worker
    }
}

/// What one Store's instances hold against their budgets: all of it is
/// given back when the Store (and so its account) is dropped.
#[derive(Debug)]
pub struct Account {
    budgets: Budgets,
    /// Bytes taken from both budgets.
    held: u64,
    /// The last memory growth taken, until the next one shows it
    /// succeeded (wasmtime says only when one fails).
    memory_pending: u64,
    /// The same for tables.
    table_pending: u64,
}

impl Account {
    /// An empty account against `budgets`: one instance more for each.
    pub fn new(budgets: Budgets) -> Self {
        budgets.service.instances.fetch_add(1, Ordering::Relaxed);
        budgets.worker.instances.fetch_add(1, Ordering::Relaxed);
        Self {
            budgets,
            held: 0,
            memory_pending: 0,
            table_pending: 0,
        }
    }

    /// The bytes this account holds.
    pub fn held(&self) -> u64 {
        self.held
    }

    /// Takes `bytes` from the service's budget, then the worker's; from
    /// neither when either is full (then says so, at most every
    /// [`WARN_EVERY`]).
    fn take(&mut self, bytes: u64) -> Result<(), OverBudget> {
        if bytes == 0 {
            return Ok(());
        }
        let Budgets {
            service,
            worker,
            name,
        } = &self.budgets;
        let taken = service.take(bytes, name).and_then(|()| {
            worker
                .take(bytes, name)
                .inspect_err(|_| service.give_back(bytes))
        });
        match taken {
            Ok(()) => {
                self.held += bytes;
                Ok(())
            }
            Err(over) => {
                match over.which {
                    Which::Service => service.warn(&over),
                    Which::Worker => worker.warn(&over),
                }
                Err(over)
            }
        }
    }

    /// Gives back `bytes` this account took.
    fn give_back(&mut self, bytes: u64) {
        let bytes = bytes.min(self.held);
        self.held -= bytes;
        self.budgets.service.give_back(bytes);
        self.budgets.worker.give_back(bytes);
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        self.give_back(self.held);
        self.budgets
            .service
            .instances
            .fetch_sub(1, Ordering::Relaxed);
        self.budgets
            .worker
            .instances
            .fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budgets(service: u64, worker: &Arc<Budget>) -> Budgets {
        Budgets::new("s".into(), Budget::service(service), worker.clone())
    }

    #[test]
    fn a_budget_takes_what_fits_and_nothing_else() {
        let budget = Budget::service(100);
        let asker: Arc<str> = "s".into();
        // (take or give back, bytes, taken?, held after)
        let steps: &[(bool, u64, bool, u64)] = &[
            (true, 60, true, 60),
            (true, 50, false, 60),
            (true, 40, true, 100),
            (true, 1, false, 100),
            (false, 60, true, 40),
            (true, 50, true, 90),
            (false, 1000, true, 0),
            (true, u64::MAX, false, 0),
            (true, 100, true, 100),
        ];
        for (i, &(take, bytes, ok, held)) in steps.iter().enumerate() {
            if take {
                assert_eq!(budget.take(bytes, &asker).is_ok(), ok, "step {i}");
            } else {
                budget.give_back(bytes);
            }
            assert_eq!(budget.held(), held, "step {i}");
        }
        let over = budget.take(1, &asker).unwrap_err();
        assert_eq!((over.limit, over.held, over.asked), (100, 100, 1));
        assert!(over.to_string().starts_with(SERVICE_BUDGET_TRAP), "{over}");
    }

    #[test]
    fn sizes_as_the_log_shows_them() {
        let cases = [
            (0, "0.0 MiB"),
            (512 << 10, "0.5 MiB"),
            (28 << 20, "28.0 MiB"),
            (1023 << 20, "1023.0 MiB"),
            (1 << 30, "1.0 GiB"),
            (6 << 40, "6144.0 GiB"),
        ];
        for (bytes, want) in cases {
            assert_eq!(shown(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn accounts_count_against_both_budgets_and_give_all_back() {
        let worker = Budget::worker(150);
        let (a, b) = (budgets(100, &worker), budgets(100, &worker));
        let mut first = Account::new(a.clone());
        let mut second = Account::new(b.clone());
        assert_eq!(worker.instances.load(Ordering::Relaxed), 2);
        // (account, bytes, refused by, then held by service a, service b
        // and the worker)
        type Step = (usize, u64, Option<Which>, (u64, u64, u64));
        let steps: &[Step] = &[
            (0, 90, None, (90, 0, 90)),
            (0, 20, Some(Which::Service), (90, 0, 90)),
            (1, 50, None, (90, 50, 140)),
            // Fits b's budget, not the worker's: b is not charged either.
            (1, 20, Some(Which::Worker), (90, 50, 140)),
            (1, 10, None, (90, 60, 150)),
        ];
        for (i, &(who, bytes, refused, want)) in steps.iter().enumerate() {
            let account = if who == 0 { &mut first } else { &mut second };
            let got = account.take(bytes).err().map(|over| over.which);
            assert_eq!(got, refused, "step {i}");
            let held = (a.service.held(), b.service.held(), worker.held());
            assert_eq!(held, want, "step {i}");
        }
        assert_eq!((first.held(), second.held()), (90, 60));
        drop(first);
        assert_eq!((a.service.held(), worker.held()), (0, 60));
        drop(second);
        assert_eq!((b.service.held(), worker.held()), (0, 0));
        assert_eq!(worker.instances.load(Ordering::Relaxed), 0);
    }
}
