//! How fast a service may fill the log, in each worker, in bursts of as
//! many lines as a second allows (a token bucket):
//!
//! - its guests: `guest_log_rate` lines a second, log calls and stderr
//!   lines together. Lines over the rate are dropped and counted
//!   (`netserver_guest_log_lines_dropped_total`).
//! - the host's own `err` lines about its connections that ended by a
//!   fault (a trap, a limit): `fault_log_rate` a second. Lines over it are
//!   not written; every such end is counted all the same
//!   (`netserver_connections_ended_total{reason}`).
//!
//! A guest that logs without end, or a tenant whose clients reconnect as
//! fast as its guest traps, would otherwise fill the disk and take the CPU
//! that writing costs from every tenant. What is not written is said, at
//! most once a second, in one `warning` line naming the service and how
//! many.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::rate::TokenBucket;

/// How often at most the drops of one service are said in the log.
const SAY_EVERY: Duration = Duration::from_secs(1);

/// Whose lines a [`LogRate`] limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// The guests' log calls and stderr lines (`guest_log_rate`).
    Guest,
    /// The host's lines about connections that ended by a fault
    /// (`fault_log_rate`).
    Faults,
}

/// One log rate of one service in one worker, shared by its instances.
#[derive(Debug)]
pub struct LogRate {
    /// Lines a second, and the largest burst (0: no limit).
    rate: u32,
    lines: Lines,
    service: usize,
    name: Arc<str>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    /// Lines that may be logged now.
    allowance: TokenBucket,
    /// Lines dropped and not said yet.
    dropped: u64,
    /// When drops were last said.
    said: Option<Instant>,
}

impl LogRate {
    /// A bucket for the guests of service `name` (index `service`): `rate`
    /// lines a second, and full to begin with.
    pub fn new(rate: u32, service: usize, name: Arc<str>) -> Self {
        Self::of(Lines::Guest, rate, service, name)
    }

    /// A bucket for `lines` of service `name` (index `service`): `rate`
    /// lines a second, and full to begin with.
    pub fn of(lines: Lines, rate: u32, service: usize, name: Arc<str>) -> Self {
        Self {
            rate,
            lines,
            service,
            name,
            bucket: Mutex::new(Bucket {
                allowance: TokenBucket::full(rate, Instant::now()),
                dropped: 0,
                said: None,
            }),
        }
    }

    /// Whether the service may log one more of its lines now; the lines
    /// refused are said now and then (and a guest's, counted).
    pub fn admit(&self) -> bool {
        if self.rate == 0 {
            return true;
        }
        let (admitted, say) = self.take(Instant::now());
        if !admitted && self.lines == Lines::Guest {
            crate::board::guest_log_dropped(self.service);
        }
        if let Some(dropped) = say {
            match self.lines {
                Lines::Guest => tracing::warn!(
                    "service {}: guest log lines dropped: its guests log more than guest_log_rate {} lines a second ({dropped} dropped since this was last said)",
                    self.name,
                    self.rate
                ),
                Lines::Faults => tracing::warn!(
                    "service {}: connection-end lines not written: more of its connections end by a fault than fault_log_rate {} a second ({dropped} not written since this was last said; netserver_connections_ended_total counts every end)",
                    self.name,
                    self.rate
                ),
            }
        }
        admitted
    }

    /// Takes a token at `now`: whether there was one, and the drops to say
    /// now, if it is time.
    fn take(&self, now: Instant) -> (bool, Option<u64>) {
        let mut bucket = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let admitted = bucket.allowance.take(now, self.rate);
        if !admitted {
            bucket.dropped += 1;
        }
        let due = bucket
            .said
            .is_none_or(|said| now.saturating_duration_since(said) >= SAY_EVERY);
        let say = (bucket.dropped > 0 && due).then(|| {
            bucket.said = Some(now);
            std::mem::take(&mut bucket.dropped)
        });
        (admitted, say)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_the_rate_and_drops_said_once_a_second() {
        let rate = LogRate::new(10, 0, "svc".into());
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        // (when, admitted, drops said)
        let cases: &[(u64, bool, Option<u64>)] = &[
            // The burst: ten lines at once.
            (0, true, None),
            (0, true, None),
            (0, true, None),
            (0, true, None),
            (0, true, None),
            (0, true, None),
            (0, true, None),
            (0, true, None),
            (0, true, None),
            (0, true, None),
            // The eleventh is dropped, and said at once (the first drop).
            (0, false, Some(1)),
            // Dropped, said no sooner than a second later.
            (50, false, None),
            (99, false, None),
            // A tenth of a second later a token is back.
            (100, true, None),
            (150, false, None),
            // A second after the first drops were said: the three since.
            (1000, true, Some(3)),
        ];
        for (i, &(ms, admitted, said)) in cases.iter().enumerate() {
            assert_eq!(rate.take(at(ms)), (admitted, said), "line {i} at {ms} ms");
        }
    }

    #[test]
    fn idle_time_refills_no_more_than_one_burst() {
        let rate = LogRate::new(3, 0, "svc".into());
        let start = Instant::now();
        let later = start + Duration::from_secs(60);
        let admitted = (0..5).filter(|_| rate.take(later).0).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn no_limit_at_zero() {
        let rate = LogRate::new(0, 0, "svc".into());
        assert!((0..10_000).all(|_| rate.admit()));
    }
}
