//! A token bucket: `rate` events a second, in bursts of as many. The
//! per-address connection rate (`max_rate_per_ip`) and the guests' log
//! rate (`guest_log_rate`) both count with it.

use std::time::Instant;

/// What a bucket holds: the events it allows now, and when it was last
/// filled. The rate is its owner's, given at each call (one owner keeps
/// many buckets at one rate).
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f64,
    filled: Instant,
}

impl TokenBucket {
    /// A full bucket for `rate` a second, at `now`.
    pub fn full(rate: u32, now: Instant) -> Self {
        Self {
            tokens: f64::from(rate),
            filled: now,
        }
    }

    /// Fills it for the time since it was last filled, up to one burst.
    pub fn refill(&mut self, now: Instant, rate: u32) {
        let rate = f64::from(rate);
        let since = now.saturating_duration_since(self.filled).as_secs_f64();
        self.tokens = (self.tokens + since * rate).min(rate);
        self.filled = now;
    }

    /// Fills it, then takes one token: whether there was one.
    pub fn take(&mut self, now: Instant, rate: u32) -> bool {
        self.refill(now, rate);
        let taken = self.tokens >= 1.0;
        if taken {
            self.tokens -= 1.0;
        }
        taken
    }

    /// Whether it holds a whole burst (as it would after long disuse).
    pub fn is_full(&self, rate: u32) -> bool {
        self.tokens >= f64::from(rate)
    }

    /// Moves its last filling `by` into the past, as if that time had gone
    /// by (for tests, instead of sleeping).
    #[cfg(test)]
    pub fn set_back(&mut self, by: std::time::Duration) {
        self.filled -= by;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn bursts_then_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::full(4, start);
        // (ms after the start, taken)
        let cases = [
            (0, true),
            (0, true),
            (0, true),
            (0, true),
            (0, false),
            (100, false),
            (250, true),
            (250, false),
            // A long pause refills one burst, no more.
            (60_000, true),
            (60_000, true),
            (60_000, true),
            (60_000, true),
            (60_000, false),
        ];
        for (i, (ms, taken)) in cases.into_iter().enumerate() {
            let now = start + Duration::from_millis(ms);
            assert_eq!(bucket.take(now, 4), taken, "case {i} at {ms} ms");
        }
        assert!(!bucket.is_full(4));
        bucket.refill(start + Duration::from_secs(120), 4);
        assert!(bucket.is_full(4));
    }
}
