//! The metrics endpoint (`metrics_port`): the whole server's figures in
//! the Prometheus (OpenMetrics) text format, served over HTTP by the
//! master — never by a guest — from the board the processes share (see
//! [`crate::board`]): each worker counts in its own row, and the master
//! sums the rows at each scrape, those of reaped workers included.
//!
//! The exposition format is `prometheus-client`'s; [`http`] is the
//! endpoint the master's loop serves. The metric names:
//!
//! | metric | type | labels |
//! | --- | --- | --- |
//! | `netserver_connections_accepted_total` | counter | `service` |
//! | `netserver_connections_refused_total` | counter | `service`, `reason` (`access_rules`, `per_address_limit`, `allow_deny_hook`, `instance_cap`, `max_connections`, `memory_budget`, `worker_memory`) |
//! | `netserver_connections_open` | gauge | `service` |
//! | `netserver_connections_ended_total` | counter | `service`, `reason` (see [`Ending`]) |
//! | `netserver_received_bytes_total`, `netserver_sent_bytes_total` | counter | `service` |
//! | `netserver_connection_duration_seconds` | histogram | `service` |
//! | `netserver_instantiation_duration_seconds` | histogram | `service` |
//! | `netserver_dequeue_runs_total` | counter | `service` |
//! | `netserver_guest_cpu_turns_total` | counter | `service` |
//! | `netserver_guest_cpu_throttled_total` | counter | `service` |
//! | `netserver_guest_log_lines_dropped_total` | counter | `service` |
//! | `netserver_http_responses_total` | counter | `service`, `code` (`1xx` … `5xx`); wasi:http services only |
//! | `netserver_workers` | gauge | `state` (`idle`, `busy`) |
//! | `netserver_restarts_total` | counter | |
//! | `netserver_module_compilations_total`, `netserver_module_cache_hits_total` | counter | |

pub mod http;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::board::Snapshot;
use crate::board::stats::{
    DURATION_BOUNDS, Ending, HistogramSum, INSTANTIATE_BOUNDS, Refusal, ServiceSum,
};

/// What only the master knows: figures of its own process.
#[derive(Clone, Debug, Default)]
pub struct MasterFigures {
    /// HUP restarts since the server started.
    pub restarts: u64,
    /// Modules compiled, and loaded compiled from the cache, by this
    /// master (at start and at each restart).
    pub compilations: u64,
    /// See `compilations`.
    pub cache_hits: u64,
}

/// The text of one scrape: `services` (their names, in the board's
/// order), the board's sums and the master's own figures.
pub fn render(services: &[String], board: Snapshot, master: MasterFigures) -> String {
    let mut registry = Registry::with_prefix("netserver");
    registry.register_collector(Box::new(Scrape {
        services: services.to_vec(),
        board,
        master,
    }));
    let mut text = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut text, &registry);
    text
}

/// One scrape's figures, encoded when the registry is.
#[derive(Debug)]
struct Scrape {
    services: Vec<String>,
    board: Snapshot,
    master: MasterFigures,
}

/// The labels of a service's series.
type ServiceLabel<'a> = [(&'static str, &'a str); 1];
/// The labels of a series by service and reason.
type ReasonLabels<'a> = [(&'static str, &'a str); 2];
/// A service and an HTTP status class.
type CodeLabels<'a> = [(&'static str, &'a str); 2];

impl Scrape {
    /// The services with their sums.
    fn each(&self) -> impl Iterator<Item = (&str, &ServiceSum)> {
        self.services
            .iter()
            .map(String::as_str)
            .zip(&self.board.services)
    }

    /// A counter per service.
    fn per_service(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        value: impl Fn(&ServiceSum) -> u64,
    ) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (service, sum) in self.each() {
            let labels: ServiceLabel = [("service", service)];
            ConstCounter::new(value(sum)).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A histogram per service.
    fn histograms<const N: usize>(
        &self,
        encoder: &mut DescriptorEncoder,
        name: &str,
        help: &str,
        bounds: &[f64],
        value: impl Fn(&ServiceSum) -> &HistogramSum<N>,
    ) -> std::fmt::Result {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
        for (service, sum) in self.each() {
            let labels: ServiceLabel = [("service", service)];
            encode_histogram(family.encode_family(&labels)?, bounds, value(sum))?;
        }
        Ok(())
    }
}

/// Encodes `histogram` (bucket counts, the last `+Inf`) with the upper
/// `bounds` of all but the last bucket.
fn encode_histogram<const N: usize>(
    mut encoder: MetricEncoder,
    bounds: &[f64],
    histogram: &HistogramSum<N>,
) -> std::fmt::Result {
    let buckets: Vec<(f64, u64)> = bounds
        .iter()
        .copied()
        .chain([f64::MAX])
        .zip(histogram.buckets)
        .collect();
    let sum = histogram.sum_nanos as f64 / 1e9;
    encoder.encode_histogram::<NoLabelSet>(sum, histogram.count(), &buckets, None)
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        self.per_service(
            &mut encoder,
            "connections_accepted",
            "Clients accepted (connections, and datagrams on datagram ports).",
            |s| s.accepted,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "connections_refused",
                "Clients refused before their guest served them, by the rule that refused them.",
                None,
                MetricType::Counter,
            )?;
            for (service, sum) in self.each() {
                for why in Refusal::ALL {
                    let labels: ReasonLabels = [("service", service), ("reason", why.label())];
                    ConstCounter::new(sum.refused[why as usize])
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "connections_open",
                "Clients being served now.",
                None,
                MetricType::Gauge,
            )?;
            for (service, sum) in self.each() {
                let labels: ServiceLabel = [("service", service)];
                ConstGauge::new(i64::try_from(sum.open).unwrap_or(i64::MAX))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "connections_ended",
                "Connections ended, by how they ended.",
                None,
                MetricType::Counter,
            )?;
            for (service, sum) in self.each() {
                for how in Ending::ALL {
                    let labels: ReasonLabels = [("service", service), ("reason", how.label())];
                    ConstCounter::new(sum.ended[how as usize])
                        .encode(family.encode_family(&labels)?)?;
                }
            }
        }
        self.per_service(
            &mut encoder,
            "received_bytes",
            "Bytes received from clients.",
            |s| s.bytes_in,
        )?;
        self.per_service(&mut encoder, "sent_bytes", "Bytes sent to clients.", |s| {
            s.bytes_out
        })?;
        self.histograms(
            &mut encoder,
            "connection_duration_seconds",
            "How long connections lasted, from admission to their end.",
            &DURATION_BOUNDS,
            |s| &s.duration,
        )?;
        self.histograms(
            &mut encoder,
            "instantiation_duration_seconds",
            "How long making an instance of the handler took.",
            &INSTANTIATE_BOUNDS,
            |s| &s.instantiation,
        )?;
        self.per_service(
            &mut encoder,
            "dequeue_runs",
            "Runs of the handler's dequeue.",
            |s| s.dequeue_runs,
        )?;
        self.per_service(
            &mut encoder,
            "guest_cpu_turns",
            "Ticks of CPU (10 ms) the handler's guests computed through without waiting for their clients, each a turn shared out by cpu_share.",
            |s| s.cpu_turns,
        )?;
        self.per_service(
            &mut encoder,
            "guest_cpu_throttled",
            "Connections (and mux instances, signal deliveries) that began while the service was throttled for taking more than its cpu_share part of a worker's CPU while other services had connections open.",
            |s| s.cpu_throttled,
        )?;
        self.per_service(
            &mut encoder,
            "guest_log_lines_dropped",
            "Log lines (log calls and stderr lines) of the service's guests dropped for going over guest_log_rate.",
            |s| s.log_dropped,
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "http_responses",
                "Responses to HTTP requests (wasi:http services), by status class.",
                None,
                MetricType::Counter,
            )?;
            for (service, sum) in self.each() {
                // Only services that answered HTTP have the series.
                if sum.http_responses.iter().all(|&n| n == 0) {
                    continue;
                }
                for (class, n) in ["1xx", "2xx", "3xx", "4xx", "5xx"]
                    .into_iter()
                    .zip(sum.http_responses)
                {
                    let labels: CodeLabels = [("service", service), ("code", class)];
                    ConstCounter::new(n).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "workers",
                "Worker processes, by state (busy: serving at least one client).",
                None,
                MetricType::Gauge,
            )?;
            let totals = &self.board.totals;
            let idle = totals.workers.saturating_sub(totals.busy);
            for (state, n) in [("idle", idle), ("busy", totals.busy)] {
                let labels = [("state", state)];
                ConstGauge::new(i64::from(n)).encode(family.encode_family(&labels)?)?;
            }
        }
        let master = [
            (
                "restarts",
                "HUP restarts since the server started.",
                self.master.restarts,
            ),
            (
                "module_compilations",
                "Modules compiled by the master (at start and at each restart).",
                self.master.compilations,
            ),
            (
                "module_cache_hits",
                "Modules loaded compiled from the module cache.",
                self.master.cache_hits,
            ),
        ];
        for (name, help, value) in master {
            let metric = ConstCounter::new(value);
            metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::board::Totals;

    #[test]
    fn a_scrape_names_every_series() {
        let mut sum = ServiceSum {
            accepted: 7,
            open: 2,
            bytes_in: 100,
            bytes_out: 250,
            dequeue_runs: 3,
            ..ServiceSum::default()
        };
        sum.refused[Refusal::PerAddress as usize] = 1;
        sum.ended[Ending::Served as usize] = 4;
        sum.ended[Ending::CpuLimit as usize] = 1;
        sum.duration.buckets[0] = 3;
        sum.duration.buckets[11] = 1;
        sum.duration.sum_nanos = 1_500_000_000;
        sum.http_responses = [0, 5, 0, 1, 2];
        let board = Snapshot {
            services: vec![sum, ServiceSum::default()],
            totals: Totals {
                workers: 4,
                busy: 1,
                ..Totals::default()
            },
        };
        let master = MasterFigures {
            restarts: 2,
            compilations: 1,
            cache_hits: 1,
        };
        let text = render(&["echo".into(), "chat".into()], board, master);
        // (line, present)
        let cases = [
            "# TYPE netserver_connections_accepted counter",
            r#"netserver_connections_accepted_total{service="echo"} 7"#,
            r#"netserver_connections_accepted_total{service="chat"} 0"#,
            r#"netserver_connections_refused_total{service="echo",reason="per_address_limit"} 1"#,
            r#"netserver_connections_refused_total{service="echo",reason="instance_cap"} 0"#,
            r#"netserver_connections_open{service="echo"} 2"#,
            r#"netserver_connections_ended_total{service="echo",reason="served"} 4"#,
            r#"netserver_connections_ended_total{service="echo",reason="cpu_limit"} 1"#,
            r#"netserver_received_bytes_total{service="echo"} 100"#,
            r#"netserver_sent_bytes_total{service="echo"} 250"#,
            r#"netserver_connection_duration_seconds_sum{service="echo"} 1.5"#,
            r#"netserver_connection_duration_seconds_count{service="echo"} 4"#,
            r#"netserver_connection_duration_seconds_bucket{le="0.001",service="echo"} 3"#,
            r#"netserver_connection_duration_seconds_bucket{le="+Inf",service="echo"} 4"#,
            r#"netserver_instantiation_duration_seconds_count{service="chat"} 0"#,
            r#"netserver_dequeue_runs_total{service="echo"} 3"#,
            r#"netserver_workers{state="idle"} 3"#,
            r#"netserver_workers{state="busy"} 1"#,
            "netserver_restarts_total 2",
            "netserver_module_compilations_total 1",
            "netserver_module_cache_hits_total 1",
            r#"netserver_http_responses_total{service="echo",code="2xx"} 5"#,
            r#"netserver_http_responses_total{service="echo",code="1xx"} 0"#,
            r#"netserver_http_responses_total{service="echo",code="5xx"} 2"#,
            "# EOF",
        ];
        for line in cases {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in:\n{text}"
            );
        }
        // A service that answered no HTTP request has no such series.
        assert!(!text.contains(r#"netserver_http_responses_total{service="chat""#));
    }
}
