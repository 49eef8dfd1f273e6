//! Saying a recurring thing in the log at most so often.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// When a recurring warning was last said, and how often it may be.
#[derive(Debug)]
pub struct Every {
    every: Duration,
    last: Mutex<Option<Instant>>,
}

impl Every {
    /// A warning said at most once per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            last: Mutex::new(None),
        }
    }

    /// Whether the warning may be said at `now`: never said yet, or last
    /// said at least `every` ago. If so, it counts as said now.
    pub fn due(&self, now: Instant) -> bool {
        // An `Option<Instant>` cannot be left invalid by a panic.
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if last.is_some_and(|at| now.duration_since(at) < self.every) {
            return false;
        }
        *last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn said_at_most_once_per_period() {
        let every = Every::new(Duration::from_secs(10));
        let t0 = Instant::now();
        // (seconds after t0, due?)
        let steps = [
            (0, true),
            (1, false),
            (9, false),
            (10, true),
            (15, false),
            (21, true),
        ];
        for (after, want) in steps {
            assert_eq!(
                every.due(t0 + Duration::from_secs(after)),
                want,
                "at {after} s"
            );
        }
    }
}
