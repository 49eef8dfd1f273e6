//! What the board counts per service: clients accepted and refused, open,
//! how they ended, bytes, and two histograms (connection duration,
//! instantiation time). Each worker adds to its own row; the master folds
//! a reaped worker's row into the retired row, so that the sums survive a
//! worker's replacement (see [`super::fold`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// HTTP status classes counted: 1xx to 5xx.
pub const HTTP_CLASSES: usize = 5;

/// Why a client was refused before its guest served it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// An access rule (`allow`, `deny`, `cidr_*`, `allow_uid`).
    AccessRules,
    /// A per-address limit (`max_conn_per_ip`, `max_rate_per_ip`).
    PerAddress,
    /// The guest's `allow-deny-hook` (or `mux-connection`) said no.
    AllowDenyHook,
    /// Every place was taken (`max_instances`) and its address held the
    /// most: closed at once.
    InstanceCap,
    /// The service's connections across its workers were at
    /// `max_connections`: closed at once.
    ConnectionCap,
    /// Its instance's first memory did not fit the service's
    /// `memory_budget` in the worker.
    MemoryBudget,
    /// ... nor the worker's `worker_memory`.
    WorkerMemory,
}

/// How many kinds of refusal there are.
pub const REFUSALS: usize = Refusal::ALL.len();

impl Refusal {
    /// Every kind, in the order of their counters.
    pub const ALL: [Self; 7] = [
        Self::AccessRules,
        Self::PerAddress,
        Self::AllowDenyHook,
        Self::InstanceCap,
        Self::ConnectionCap,
        Self::MemoryBudget,
        Self::WorkerMemory,
    ];

    /// Its `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::AccessRules => "access_rules",
            Self::PerAddress => "per_address_limit",
            Self::AllowDenyHook => "allow_deny_hook",
            Self::InstanceCap => "instance_cap",
            Self::ConnectionCap => "max_connections",
            Self::MemoryBudget => "memory_budget",
            Self::WorkerMemory => "worker_memory",
        }
    }
}

/// How a connection ended, as the metrics count it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Its hooks (or callbacks) ran to the end.
    Served,
    /// The access rules or the guest refused it.
    Denied,
    /// `process-request` returned an error.
    HandlerError,
    /// The guest exited through WASI.
    Exited,
    /// The guest trapped (other than for a limit).
    Trap,
    /// It computed past `cpu_limit`.
    CpuLimit,
    /// Its memory grew past `max_memory`.
    MemoryLimit,
    /// No instance could be made.
    InstantiateFailed,
    /// The client went away.
    ClientGone,
    /// A datagram's reply could not be sent.
    ReplyFailed,
    /// `idle_timeout`.
    IdleTimeout,
    /// `connection_timeout`.
    ConnectionTimeout,
    /// Evicted for a waiting client (`max_instances`).
    Evicted,
    /// `mux_write_cap`.
    WriteCap,
    /// `mux_input_cap`.
    InputCap,
    /// The mux instance holding it trapped or could not be made.
    MuxInstance,
    /// Its instance (or the mux instance holding it) could not have or
    /// grow its memory within the service's `memory_budget`.
    MemoryBudget,
    /// ... within the worker's `worker_memory`.
    WorkerMemory,
    /// Its guest wrote `max_bytes_written`.
    BytesWritten,
}

/// How many kinds of ending there are.
pub const ENDINGS: usize = Ending::ALL.len();

impl Ending {
    /// Every ending, in the order of their counters.
    pub const ALL: [Self; 19] = [
        Self::Served,
        Self::Denied,
        Self::HandlerError,
        Self::Exited,
        Self::Trap,
        Self::CpuLimit,
        Self::MemoryLimit,
        Self::InstantiateFailed,
        Self::ClientGone,
        Self::ReplyFailed,
        Self::IdleTimeout,
        Self::ConnectionTimeout,
        Self::Evicted,
        Self::WriteCap,
        Self::InputCap,
        Self::MuxInstance,
        Self::MemoryBudget,
        Self::WorkerMemory,
        Self::BytesWritten,
    ];

    /// Its `reason` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Served => "served",
            Self::Denied => "denied",
            Self::HandlerError => "handler_error",
            Self::Exited => "exited",
            Self::Trap => "trap",
            Self::CpuLimit => "cpu_limit",
            Self::MemoryLimit => "memory_limit",
            Self::InstantiateFailed => "instantiate_failed",
            Self::ClientGone => "client_gone",
            Self::ReplyFailed => "reply_failed",
            Self::IdleTimeout => "idle_timeout",
            Self::ConnectionTimeout => "connection_timeout",
            Self::Evicted => "evicted",
            Self::WriteCap => "mux_write_cap",
            Self::InputCap => "mux_input_cap",
            Self::MuxInstance => "mux_instance_failed",
            Self::MemoryBudget => "memory_budget",
            Self::WorkerMemory => "worker_memory",
            Self::BytesWritten => "max_bytes_written",
        }
    }
}

/// Upper bounds (seconds) of the connection-duration buckets; the last
/// bucket is `+Inf`.
pub const DURATION_BOUNDS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 60.0, 300.0,
];
/// Upper bounds (seconds) of the instantiation-time buckets.
pub const INSTANTIATE_BOUNDS: [f64; 10] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.05, 0.25,
];

/// A histogram in shared memory: a count per bucket (the last one `+Inf`)
/// and the sum of what was observed, in nanoseconds.
#[repr(C)]
#[derive(Debug)]
pub struct Histogram<const N: usize> {
    buckets: [AtomicU64; N],
    sum_nanos: AtomicU64,
}

impl<const N: usize> Default for Histogram<N> {
    fn default() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_nanos: AtomicU64::new(0),
        }
    }
}

impl<const N: usize> Histogram<N> {
    fn observe(&self, bounds: &[f64], took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = bounds.iter().position(|&b| secs <= b).unwrap_or(N - 1);
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn add_to(&self, sum: &mut HistogramSum<N>) {
        for (into, bucket) in sum.buckets.iter_mut().zip(&self.buckets) {
            *into += bucket.load(Ordering::Relaxed);
        }
        sum.sum_nanos += self.sum_nanos.load(Ordering::Relaxed);
    }

    fn add(&self, from: &Self) {
        for (into, bucket) in self.buckets.iter().zip(&from.buckets) {
            into.fetch_add(bucket.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        self.sum_nanos
            .fetch_add(from.sum_nanos.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    fn clear(&self) {
        for bucket in &self.buckets {
            bucket.store(0, Ordering::Relaxed);
        }
        self.sum_nanos.store(0, Ordering::Relaxed);
    }
}

/// One service's counters in one worker's row (or the retired row).
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct Stats {
    accepted: AtomicU64,
    open: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    dequeue_runs: AtomicU64,
    /// Turns its guests took in the CPU lane (see `fairness`).
    cpu_turns: AtomicU64,
    /// Its tasks that began while it was throttled (see `fairness`).
    cpu_throttled: AtomicU64,
    /// Its guests' log lines dropped over `guest_log_rate`.
    log_dropped: AtomicU64,
    /// Its HTTP responses, by status class (1xx to 5xx).
    http_responses: [AtomicU64; HTTP_CLASSES],
    refused: [AtomicU64; REFUSALS],
    ended: [AtomicU64; ENDINGS],
    duration: Histogram<12>,
    instantiation: Histogram<11>,
    /// Connections this worker holds under `max_connections` (not a
    /// metric: given back by the master if the worker dies holding some).
    held: AtomicU64,
}

impl Stats {
    /// A client taken: accepted, and open until [`Stats::closed`].
    pub(super) fn opened(&self) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
    }

    /// A client counted by [`Stats::opened`] is gone.
    pub(super) fn closed(&self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }

    /// Accepted and refused at once (never open).
    pub(super) fn refused_at_once(&self, why: Refusal) {
        self.accepted.fetch_add(1, Ordering::Relaxed);
        self.refused(why);
    }

    pub(super) fn refused(&self, why: Refusal) {
        self.refused[why as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn ended(&self, how: Ending, bytes: (u64, u64), took: Duration) {
        self.ended[how as usize].fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes.0, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes.1, Ordering::Relaxed);
        self.duration.observe(&DURATION_BOUNDS, took);
    }

    pub(super) fn instantiated(&self, took: Duration) {
        self.instantiation.observe(&INSTANTIATE_BOUNDS, took);
    }

    /// One connection more (`1`) or less (`-1`) held under
    /// `max_connections`.
    pub(super) fn held(&self, change: i8) {
        if change > 0 {
            self.held.fetch_add(1, Ordering::Relaxed);
        } else {
            let _ = self
                .held
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_sub(1))
                });
        }
    }

    /// What a reaped worker held under `max_connections`, now zero.
    pub(super) fn take_held(&self) -> u64 {
        self.held.swap(0, Ordering::Relaxed)
    }

    pub(super) fn dequeued(&self) {
        self.dequeue_runs.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn cpu_turn(&self) {
        self.cpu_turns.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn cpu_throttled(&self) {
        self.cpu_throttled.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn log_dropped(&self) {
        self.log_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// An HTTP response of status class `class` (0: 1xx, … 4: 5xx).
    pub(super) fn http_response(&self, class: usize) {
        if let Some(n) = self.http_responses.get(class) {
            n.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Adds this row to `sum`.
    pub(super) fn add_to(&self, sum: &mut ServiceSum) {
        sum.accepted += self.accepted.load(Ordering::Relaxed);
        sum.open += self.open.load(Ordering::Relaxed);
        sum.bytes_in += self.bytes_in.load(Ordering::Relaxed);
        sum.bytes_out += self.bytes_out.load(Ordering::Relaxed);
        sum.dequeue_runs += self.dequeue_runs.load(Ordering::Relaxed);
        sum.cpu_turns += self.cpu_turns.load(Ordering::Relaxed);
        sum.cpu_throttled += self.cpu_throttled.load(Ordering::Relaxed);
        sum.log_dropped += self.log_dropped.load(Ordering::Relaxed);
        for (into, n) in sum.http_responses.iter_mut().zip(&self.http_responses) {
            *into += n.load(Ordering::Relaxed);
        }
        for (into, n) in sum.refused.iter_mut().zip(&self.refused) {
            *into += n.load(Ordering::Relaxed);
        }
        for (into, n) in sum.ended.iter_mut().zip(&self.ended) {
            *into += n.load(Ordering::Relaxed);
        }
        self.duration.add_to(&mut sum.duration);
        self.instantiation.add_to(&mut sum.instantiation);
    }

    /// Adds a reaped worker's row to this (retired) row, all but `open`
    /// (its clients are gone with it), and clears that row.
    pub(super) fn fold(&self, from: &Self) {
        let move_over = |into: &AtomicU64, from: &AtomicU64| {
            into.fetch_add(from.swap(0, Ordering::Relaxed), Ordering::Relaxed);
        };
        move_over(&self.accepted, &from.accepted);
        move_over(&self.bytes_in, &from.bytes_in);
        move_over(&self.bytes_out, &from.bytes_out);
        move_over(&self.dequeue_runs, &from.dequeue_runs);
        move_over(&self.cpu_turns, &from.cpu_turns);
        move_over(&self.cpu_throttled, &from.cpu_throttled);
        move_over(&self.log_dropped, &from.log_dropped);
        for (into, n) in self.http_responses.iter().zip(&from.http_responses) {
            move_over(into, n);
        }
        for (into, n) in self.refused.iter().zip(&from.refused) {
            move_over(into, n);
        }
        for (into, n) in self.ended.iter().zip(&from.ended) {
            move_over(into, n);
        }
        from.open.store(0, Ordering::Relaxed);
        self.duration.add(&from.duration);
        from.duration.clear();
        self.instantiation.add(&from.instantiation);
        from.instantiation.clear();
    }
}

/// A histogram summed over the board.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSum<const N: usize> {
    /// The count in each bucket (not cumulative; the last is `+Inf`).
    pub buckets: [u64; N],
    /// The sum of what was observed, in nanoseconds.
    pub sum_nanos: u64,
}

impl<const N: usize> Default for HistogramSum<N> {
    fn default() -> Self {
        Self {
            buckets: [0; N],
            sum_nanos: 0,
        }
    }
}

impl<const N: usize> HistogramSum<N> {
    /// How many were observed.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }
}

/// One service's figures summed over every worker, live and retired.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceSum {
    /// Clients accepted.
    pub accepted: u64,
    /// Clients open now.
    pub open: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// `dequeue` runs.
    pub dequeue_runs: u64,
    /// Turns its guests took in the CPU lane: ticks of CPU they computed
    /// through without waiting for their clients.
    pub cpu_turns: u64,
    /// Connections (and mux instances, signal deliveries) that began while
    /// the service was throttled for taking more than its part of a
    /// worker's CPU.
    pub cpu_throttled: u64,
    /// Its guests' log lines dropped over `guest_log_rate`.
    pub log_dropped: u64,
    /// HTTP responses, by status class (1xx to 5xx).
    pub http_responses: [u64; HTTP_CLASSES],
    /// Refusals, by [`Refusal`] (in [`Refusal::ALL`]'s order).
    pub refused: [u64; REFUSALS],
    /// Ends, by [`Ending`] (in [`Ending::ALL`]'s order).
    pub ended: [u64; ENDINGS],
    /// Connection durations.
    pub duration: HistogramSum<12>,
    /// Instantiation times.
    pub instantiation: HistogramSum<11>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_in_counter_order_and_distinct() {
        for (i, how) in Ending::ALL.into_iter().enumerate() {
            assert_eq!(how as usize, i, "{how:?}");
        }
        for (i, why) in Refusal::ALL.into_iter().enumerate() {
            assert_eq!(why as usize, i, "{why:?}");
        }
        let mut labels: Vec<&str> = Ending::ALL.iter().map(|e| e.label()).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), Ending::ALL.len());
        assert_eq!(DURATION_BOUNDS.len() + 1, 12);
        assert_eq!(INSTANTIATE_BOUNDS.len() + 1, 11);
    }

    #[test]
    fn observations_land_in_their_buckets() {
        // (seconds, bucket of the duration histogram)
        let cases = [
            (0.0, 0),
            (0.001, 0),
            (0.0011, 1),
            (0.05, 3),
            (2.0, 7),
            (300.0, 10),
            (301.0, 11),
            (1e9, 11),
        ];
        for (secs, bucket) in cases {
            let h = Histogram::<12>::default();
            h.observe(&DURATION_BOUNDS, Duration::from_secs_f64(secs));
            let mut sum = HistogramSum::default();
            h.add_to(&mut sum);
            assert_eq!(sum.count(), 1, "{secs}");
            assert_eq!(sum.buckets[bucket], 1, "{secs}: {:?}", sum.buckets);
        }
    }

    #[test]
    fn folding_keeps_the_totals_and_clears_the_row() {
        let (retired, row) = (Stats::default(), Stats::default());
        row.opened();
        row.opened();
        row.closed();
        row.refused(Refusal::PerAddress);
        row.refused_at_once(Refusal::InstanceCap);
        row.ended(Ending::Served, (10, 20), Duration::from_millis(3));
        row.instantiated(Duration::from_micros(80));
        row.dequeued();
        retired.fold(&row);
        let (mut r, mut w) = (ServiceSum::default(), ServiceSum::default());
        retired.add_to(&mut r);
        row.add_to(&mut w);
        assert_eq!(w, ServiceSum::default(), "the row is cleared");
        assert_eq!(
            (r.accepted, r.open, r.bytes_in, r.bytes_out),
            (3, 0, 10, 20)
        );
        assert_eq!(r.refused, [0, 1, 0, 1, 0, 0, 0]);
        assert_eq!(r.ended[Ending::Served as usize], 1);
        assert_eq!((r.duration.count(), r.instantiation.count()), (1, 1));
        assert_eq!(r.duration.sum_nanos, 3_000_000);
        assert_eq!(r.dequeue_runs, 1);
    }
}
