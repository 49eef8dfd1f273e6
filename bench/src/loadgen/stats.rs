//! What the clients count: successes with their latency, and errors by kind.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// What a TLS connection's handshake came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// The version negotiated: `TLS 1.3`, `TLS 1.2`.
    pub version: &'static str,
    /// Whether a session was resumed (rather than a full handshake).
    pub resumed: bool,
}

/// The longest latency the histogram tells apart (longer ones saturate).
const MAX_LATENCY_NS: u64 = 60_000_000_000;

/// Why a request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The TCP connection could not be opened.
    Connect,
    /// Reading or writing failed, or the server closed before replying.
    Io,
    /// The reply was not byte for byte the expected one.
    Mismatch,
    /// No reply within the per-request timeout.
    Timeout,
}

/// Error counts by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorCounts {
    /// Connections that could not be opened.
    pub connect: u64,
    /// Reads or writes that failed, or early closes.
    pub io: u64,
    /// Replies that were not the expected bytes.
    pub mismatch: u64,
    /// Requests without a reply in time.
    pub timeout: u64,
}

impl ErrorCounts {
    /// All errors together.
    pub fn total(&self) -> u64 {
        self.connect + self.io + self.mismatch + self.timeout
    }

    fn count(&mut self, kind: ErrorKind) {
        let slot = match kind {
            ErrorKind::Connect => &mut self.connect,
            ErrorKind::Io => &mut self.io,
            ErrorKind::Mismatch => &mut self.mismatch,
            ErrorKind::Timeout => &mut self.timeout,
        };
        *slot += 1;
    }

    fn add(&mut self, other: &ErrorCounts) {
        self.connect += other.connect;
        self.io += other.io;
        self.mismatch += other.mismatch;
        self.timeout += other.timeout;
    }
}

/// The measuring window: requests ending before `measure_from` are warm-up;
/// successes count when they end by `until`; errors count when they end
/// after `measure_from`, even past `until`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// End of the warm-up.
    pub measure_from: Instant,
    /// End of the measurement: no request starts after it.
    pub until: Instant,
}

/// One client's (or all clients') counts.
#[derive(Debug, Clone)]
pub struct Stats {
    latency_ns: Histogram<u64>,
    ok: u64,
    resumed: u64,
    tls_version: Option<&'static str>,
    errors: ErrorCounts,
    first_error: Option<String>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            latency_ns: Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3)
                .expect("valid histogram bounds"),
            ok: 0,
            resumed: 0,
            tls_version: None,
            errors: ErrorCounts::default(),
            first_error: None,
        }
    }
}

impl Stats {
    /// Records a request that succeeded at `end` after `latency`; whether
    /// it counted (it ended inside the measured window).
    pub fn success(&mut self, window: &Window, end: Instant, latency: Duration) -> bool {
        if end < window.measure_from || end > window.until {
            return false;
        }
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.latency_ns.saturating_record(ns.max(1));
        self.ok += 1;
        true
    }

    /// Records a request on a connection of its own that succeeded at `end`
    /// after `latency`, over TLS when `handshake` is given: a resumed
    /// handshake counts as such when the request counts.
    pub fn handshake_success(
        &mut self,
        window: &Window,
        end: Instant,
        latency: Duration,
        handshake: Option<Handshake>,
    ) {
        let counted = self.success(window, end, latency);
        if let Some(handshake) = handshake {
            self.tls_handshake(handshake);
            if counted && handshake.resumed {
                self.resumed += 1;
            }
        }
    }

    /// Notes the version a TLS handshake negotiated (the first one seen is
    /// kept).
    pub fn tls_handshake(&mut self, handshake: Handshake) {
        self.tls_version.get_or_insert(handshake.version);
    }

    /// Records a request that failed at `end`, saying why in `detail`.
    pub fn error(&mut self, window: &Window, end: Instant, kind: ErrorKind, detail: String) {
        if end < window.measure_from {
            return;
        }
        self.errors.count(kind);
        self.first_error.get_or_insert(detail);
    }

    /// Adds `other`'s counts to these.
    pub fn merge(&mut self, other: &Stats) {
        // Both histograms have the same bounds, so adding cannot fail.
        let _ = self.latency_ns.add(&other.latency_ns);
        self.ok += other.ok;
        self.resumed += other.resumed;
        if self.tls_version.is_none() {
            self.tls_version = other.tls_version;
        }
        self.errors.add(&other.errors);
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// Successful requests counted.
    pub fn ok(&self) -> u64 {
        self.ok
    }

    /// Successful requests counted whose TLS handshake was resumed.
    pub fn resumed(&self) -> u64 {
        self.resumed
    }

    /// The TLS version negotiated, when a TLS handshake was seen.
    pub fn tls_version(&self) -> Option<&'static str> {
        self.tls_version
    }

    /// Errors counted, by kind.
    pub fn errors(&self) -> ErrorCounts {
        self.errors
    }

    /// The first error seen, described.
    pub fn first_error(&self) -> Option<&str> {
        self.first_error.as_deref()
    }

    /// Latency percentiles of the successful requests, in microseconds.
    pub fn latency(&self) -> Latency {
        let us = |ns: u64| ns as f64 / 1000.0;
        let h = &self.latency_ns;
        Latency {
            p50: us(h.value_at_quantile(0.50)),
            p90: us(h.value_at_quantile(0.90)),
            p99: us(h.value_at_quantile(0.99)),
            max: us(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// Latency of successful requests, in microseconds (0 when there were none).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Slowest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_and_merge() {
        let t0 = Instant::now();
        let window = Window {
            measure_from: t0 + Duration::from_secs(1),
            until: t0 + Duration::from_secs(2),
        };
        let mut a = Stats::default();
        a.success(&window, t0, Duration::from_micros(5)); // warm-up
        a.success(
            &window,
            t0 + Duration::from_millis(1500),
            Duration::from_micros(10),
        );
        a.success(
            &window,
            t0 + Duration::from_secs(3),
            Duration::from_micros(10),
        ); // late
        a.error(
            &window,
            t0 + Duration::from_secs(3),
            ErrorKind::Timeout,
            "t".into(),
        );
        let mut b = Stats::default();
        b.error(&window, t0, ErrorKind::Io, "warm-up".into());
        b.success(
            &window,
            t0 + Duration::from_millis(1200),
            Duration::from_micros(30),
        );
        a.merge(&b);
        assert_eq!(a.ok(), 2);
        assert_eq!(a.errors().total(), 1);
        assert_eq!(a.errors().timeout, 1);
        assert_eq!(a.first_error(), Some("t"));
        let latency = a.latency();
        assert!((latency.max - 30.0).abs() < 0.1, "{latency:?}");
    }

    #[test]
    fn resumed_handshakes_count_inside_the_window() {
        let t0 = Instant::now();
        let window = Window {
            measure_from: t0 + Duration::from_secs(1),
            until: t0 + Duration::from_secs(2),
        };
        let inside = t0 + Duration::from_millis(1500);
        let (full, resumed) = (
            Handshake {
                version: "TLS 1.3",
                resumed: false,
            },
            Handshake {
                version: "TLS 1.3",
                resumed: true,
            },
        );
        let mut a = Stats::default();
        let latency = Duration::from_micros(100);
        a.handshake_success(&window, t0, latency, Some(resumed)); // warm-up
        a.handshake_success(&window, inside, latency, Some(full));
        a.handshake_success(&window, inside, latency, Some(resumed));
        let mut b = Stats::default();
        b.handshake_success(&window, inside, latency, Some(resumed));
        b.handshake_success(&window, inside, latency, None);
        a.merge(&b);
        assert_eq!((a.ok(), a.resumed()), (4, 2));
        assert_eq!(a.tls_version(), Some("TLS 1.3"));
        assert_eq!(Stats::default().tls_version(), None);
    }
}
