//! The report `bench/run` writes: each load-generator run is one JSON line
//! ([`Record`]); [`Table`] takes the medians over the rounds and the ratios
//! to the native baseline; [`markdown`] and [`plot`] render it.

pub mod markdown;
pub mod mux;
pub mod plot;

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::loadgen::{Mode, Summary, Transport};

/// What kind of server a target is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// A netserver-host personality.
    Netserver,
    /// The native tokio echo server, the baseline ratios are taken to.
    Native,
    /// A Perl Net::Server personality.
    Perl,
}

/// How a netserver target makes handler instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Instance {
    /// A fresh instance per connection (per datagram over UDP): the default.
    PerConnection,
    /// One instance per worker, serving every connection or datagram.
    PerWorker,
}

/// Which WIT world a netserver target's handler is written to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum World {
    /// Net::Server's hooks (`handler`): an instance per connection, or per
    /// worker.
    Hooks,
    /// Net::Server::Multiplex's callbacks (`mux-handler`, issue 23): one
    /// instance per worker holds every connection.
    Mux,
}

/// One load-generator run against one target, as a JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The target's name, as the report shows it. Servers of one program
    /// on different sockets share a name, and so a row of the report.
    pub target: String,
    /// What kind of server it is.
    pub group: Group,
    /// The socket the load generator talked over (TCP when absent).
    #[serde(default)]
    pub transport: Transport,
    /// How a netserver target makes instances, when `bench/run` says so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<Instance>,
    /// The WIT world of a netserver target's handler, when `bench/run`
    /// says so (the hooks world when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world: Option<World>,
    /// The load generator's mode.
    pub mode: Mode,
    /// Concurrent clients.
    pub clients: usize,
    /// Which round (from 1).
    pub round: u32,
    /// The load generator's result, when it ran.
    #[serde(default)]
    pub summary: Option<Summary>,
    /// Why there is no result (the server did not start, the load generator
    /// failed).
    #[serde(default)]
    pub failure: Option<String>,
    /// The server's CPU time (user and system, its children included) per
    /// successful request over the measured duration, µs, when `bench/run`
    /// measured it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_cpu_us: Option<f64>,
}

/// A socket type, a mode and a number of clients: one column group of the
/// report. TCP scenarios sort first, then UDP, unix and TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Scenario {
    /// The socket the load generator talked over.
    pub transport: Transport,
    /// The load generator's mode.
    pub mode: Mode,
    /// Concurrent clients.
    pub clients: usize,
}

impl Scenario {
    /// A TCP scenario.
    pub fn tcp(mode: Mode, clients: usize) -> Self {
        Self {
            transport: Transport::Tcp,
            mode,
            clients,
        }
    }

    /// A short human name: `new connections/s, 8 clients`, `unix round
    /// trips/s, 8 clients`, `UDP requests/s, 32 clients`, `TLS full
    /// handshakes/s, 8 clients`, `TLS resumed handshakes/s, 8 clients`.
    pub fn label(&self) -> String {
        let what = match (self.transport, self.mode) {
            (_, Mode::Udp) => return format!("UDP requests/s, {} clients", self.clients),
            (Transport::Tls, Mode::Connect) => "full handshakes/s",
            (_, Mode::ConnectResumed) => "resumed handshakes/s",
            (_, Mode::Connect) => "new connections/s",
            (_, Mode::Roundtrip) => "round trips/s",
        };
        format!("{}{what}, {} clients", self.prefix(), self.clients)
    }

    /// A shorter name for plots: `connect, 8 clients`, `unix round trip, 8
    /// clients`, `UDP, 32 clients`, `TLS resumed, 8 clients`.
    pub fn short(&self) -> String {
        let what = match self.mode {
            Mode::Connect => "connect",
            Mode::ConnectResumed => "resumed",
            Mode::Roundtrip => "round trip",
            Mode::Udp => return format!("UDP, {} clients", self.clients),
        };
        format!("{}{what}, {} clients", self.prefix(), self.clients)
    }

    fn prefix(&self) -> &'static str {
        match self.transport {
            Transport::Tcp => "",
            Transport::Udp => "UDP ",
            Transport::Unix => "unix ",
            Transport::Tls => "TLS ",
        }
    }
}

/// All rounds of one target in one scenario.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cell {
    /// Requests/s of each round that ran, in round order.
    pub rates: Vec<f64>,
    /// Median latency of each round that ran, µs.
    pub p50s: Vec<f64>,
    /// 99th-percentile latency of each round that ran, µs.
    pub p99s: Vec<f64>,
    /// Errors over all rounds.
    pub errors: u64,
    /// Successful requests over all rounds.
    pub requests: u64,
    /// Over TLS: of those, the requests whose connection resumed a session.
    pub resumed: u64,
    /// Over TLS: the versions negotiated.
    pub tls_versions: BTreeSet<String>,
    /// The server's CPU µs per request of each round that has it.
    pub server_cpu_us: Vec<f64>,
    /// The load generator's CPU use (in CPUs) of each round that has it.
    pub client_cpu: Vec<f64>,
    /// Rounds that did not run, with why.
    pub failures: Vec<String>,
}

impl Cell {
    /// The median requests/s over the rounds that ran.
    pub fn rate(&self) -> Option<f64> {
        median(&self.rates)
    }

    /// Over TLS: the share of the successful requests whose connection
    /// resumed a session, over all rounds.
    pub fn resumed_share(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.resumed as f64 / self.requests as f64)
    }
}

/// The results of one benchmark run: targets × scenarios.
#[derive(Debug, Clone, Default)]
pub struct Table {
    /// Targets in the order they were first run.
    pub targets: Vec<(String, Group)>,
    /// Scenarios: TCP first, then UDP, unix and TLS; connect first (full,
    /// then resumed), then by clients.
    pub scenarios: Vec<Scenario>,
    cells: BTreeMap<(usize, Scenario), Cell>,
    per_worker: BTreeSet<usize>,
    mux_world: BTreeSet<usize>,
}

impl Table {
    /// Gathers `records`.
    pub fn from_records(records: &[Record]) -> Self {
        let mut table = Self::default();
        for record in records {
            let index = match table.targets.iter().position(|(t, _)| *t == record.target) {
                Some(i) => i,
                None => {
                    table.targets.push((record.target.clone(), record.group));
                    table.targets.len() - 1
                }
            };
            if record.instance == Some(Instance::PerWorker) {
                table.per_worker.insert(index);
            }
            if record.world == Some(World::Mux) {
                table.mux_world.insert(index);
            }
            let scenario = Scenario {
                transport: record.transport,
                mode: record.mode,
                clients: record.clients,
            };
            if !table.scenarios.contains(&scenario) {
                table.scenarios.push(scenario);
            }
            let cell = table.cells.entry((index, scenario)).or_default();
            match (&record.summary, &record.failure) {
                (Some(s), _) => {
                    cell.rates.push(s.requests_per_s);
                    cell.p50s.push(s.latency_us.p50);
                    cell.p99s.push(s.latency_us.p99);
                    cell.errors += s.errors;
                    cell.requests += s.requests;
                    if let Some(tls) = &s.tls {
                        cell.resumed += tls.resumed;
                        cell.tls_versions.extend(tls.version.clone());
                    }
                    cell.server_cpu_us.extend(record.server_cpu_us);
                    cell.client_cpu.extend(s.client_cpu);
                }
                (None, failure) => cell.failures.push(format!(
                    "round {}: {}",
                    record.round,
                    failure.as_deref().unwrap_or("no result")
                )),
            }
        }
        table.scenarios.sort();
        table
    }

    /// Target `target`'s cell in `scenario`.
    pub fn cell(&self, target: usize, scenario: Scenario) -> Option<&Cell> {
        self.cells.get(&(target, scenario))
    }

    /// The median requests/s of `target` in `scenario`.
    pub fn rate(&self, target: usize, scenario: Scenario) -> Option<f64> {
        self.cell(target, scenario)?.rate()
    }

    /// The index of the native baseline in `scenario`: the first native
    /// target with a result there.
    pub fn native(&self, scenario: Scenario) -> Option<usize> {
        (0..self.targets.len())
            .find(|&i| self.targets[i].1 == Group::Native && self.rate(i, scenario).is_some())
    }

    /// `target`'s median requests/s divided by the native baseline's in the
    /// same scenario.
    pub fn ratio(&self, target: usize, scenario: Scenario) -> Option<f64> {
        let native = self.rate(self.native(scenario)?, scenario)?;
        (native > 0.0).then(|| self.rate(target, scenario).map(|r| r / native))?
    }

    /// `target`'s median requests/s divided by the best Perl target's in
    /// the same scenario.
    pub fn perl_ratio(&self, target: usize, scenario: Scenario) -> Option<f64> {
        let (_, perl) = self.best_perl(scenario)?;
        (perl > 0.0).then(|| self.rate(target, scenario).map(|r| r / perl))?
    }

    /// Whether `target` is a netserver target with one instance per worker.
    pub fn per_worker(&self, target: usize) -> bool {
        self.per_worker.contains(&target)
    }

    /// Whether `target` is a netserver target of the mux world.
    pub fn mux_world(&self, target: usize) -> bool {
        self.mux_world.contains(&target)
    }

    /// Whether `target` ran (or failed to) in any of `scenarios`.
    pub fn ran_in(&self, target: usize, scenarios: &[Scenario]) -> bool {
        scenarios
            .iter()
            .any(|&s| self.cells.contains_key(&(target, s)))
    }

    /// The best median requests/s of any Perl Net::Server target in
    /// `scenario`, with its name.
    pub fn best_perl(&self, scenario: Scenario) -> Option<(&str, f64)> {
        self.targets
            .iter()
            .enumerate()
            .filter(|(_, (_, g))| *g == Group::Perl)
            .filter_map(|(i, (name, _))| Some((name.as_str(), self.rate(i, scenario)?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

/// The median of `values` (the mean of the middle two for an even count).
///
/// ```
/// use netserver_bench::report::median;
/// assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
/// assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), Some(2.5));
/// assert_eq!(median(&[]), None);
/// ```
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(sorted[n / 2]),
        _ => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
    }
}

/// Reads the JSON lines `bench/run` wrote (blank lines are skipped).
pub fn parse_records(text: &str) -> anyhow::Result<Vec<Record>> {
    let records = text
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| format!("results line {}", i + 1))
        })
        .collect::<anyhow::Result<Vec<Record>>>()?;
    if records.is_empty() {
        bail!("no results");
    }
    Ok(records)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::loadgen::{ErrorCounts, Latency};

    /// A record of `rate` requests/s.
    pub fn record(target: &str, group: Group, mode: Mode, clients: usize, rate: f64) -> Record {
        Record {
            target: target.into(),
            group,
            transport: Transport::Tcp,
            instance: None,
            world: None,
            mode,
            clients,
            round: 1,
            summary: Some(Summary {
                mode,
                transport: Transport::Tcp,
                addr: "127.0.0.1:1".into(),
                clients,
                source_ips: 1,
                warmup_s: 0.0,
                duration_s: 1.0,
                requests: rate as u64,
                requests_per_s: rate,
                errors: 0,
                error_kinds: ErrorCounts::default(),
                first_error: None,
                latency_us: Latency::default(),
                tls: None,
                client_cpu: None,
            }),
            failure: None,
            server_cpu_us: None,
        }
    }

    /// Native, one netserver target and one Perl target in two scenarios.
    pub fn sample() -> Vec<Record> {
        let mut records = Vec::new();
        for (mode, clients, base) in [(Mode::Connect, 8, 1000.0), (Mode::Roundtrip, 32, 10000.0)] {
            records.push(record("native", Group::Native, mode, clients, base));
            records.push(record("ns", Group::Netserver, mode, clients, base * 0.9));
            records.push(record("ns", Group::Netserver, mode, clients, base * 0.7));
            records.push(record("ns", Group::Netserver, mode, clients, base * 0.8));
            records.push(record("perl", Group::Perl, mode, clients, base * 0.4));
        }
        records.push(Record {
            summary: None,
            failure: Some("did not start".into()),
            round: 2,
            ..record("perl", Group::Perl, Mode::Connect, 8, 0.0)
        });
        records
    }

    /// Records over UDP and a unix socket: native, netserver (a fresh
    /// instance per datagram, and per worker) and Perl.
    pub fn sockets() -> Vec<Record> {
        use {Group::*, Transport::*};
        let (fresh, worker) = (Some(Instance::PerConnection), Some(Instance::PerWorker));
        [
            (Udp, fresh, "ns", Netserver, Mode::Udp, 32, 5000.0),
            (
                Udp,
                worker,
                "ns, per worker",
                Netserver,
                Mode::Udp,
                32,
                7000.0,
            ),
            (Udp, None, "native", Native, Mode::Udp, 32, 10000.0),
            (Udp, None, "perl", Perl, Mode::Udp, 32, 3000.0),
            (Unix, None, "ns", Netserver, Mode::Roundtrip, 8, 9000.0),
            (Unix, None, "native", Native, Mode::Roundtrip, 8, 10000.0),
            (Unix, None, "perl", Perl, Mode::Roundtrip, 8, 5000.0),
        ]
        .into_iter()
        .map(
            |(transport, instance, target, group, mode, clients, rate)| Record {
                transport,
                instance,
                ..record(target, group, mode, clients, rate)
            },
        )
        .collect()
    }

    /// Records over TLS: full and resumed handshakes and round trips, for
    /// native, netserver and Perl.
    pub fn tls() -> Vec<Record> {
        use Group::*;
        let mut records = Vec::new();
        for (target, group, full, resumed, trips) in [
            ("native", Native, 2000.0, 4000.0, 20000.0),
            ("ns", Netserver, 1900.0, 3000.0, 17000.0),
            ("perl", Perl, 500.0, 1000.0, 9000.0),
        ] {
            for (mode, clients, rate) in [
                (Mode::Connect, 8, full),
                (Mode::ConnectResumed, 8, resumed),
                (Mode::Roundtrip, 32, trips),
            ] {
                let mut record = record(target, group, mode, clients, rate);
                record.transport = Transport::Tls;
                let summary = record.summary.as_mut().expect("a summary");
                summary.transport = Transport::Tls;
                record.server_cpu_us = Some(1e6 / rate);
                summary.client_cpu = Some(if group == Native { 0.95 } else { 0.5 });
                summary.tls = Some(crate::loadgen::TlsSummary {
                    version: Some("TLS 1.3".into()),
                    resumed: if mode == Mode::ConnectResumed {
                        summary.requests * 9 / 10
                    } else {
                        0
                    },
                });
                records.push(record);
            }
        }
        records
    }

    #[test]
    fn tls_scenarios_sort_last() {
        let mut records = tls();
        records.extend(sockets());
        records.extend(sample());
        let table = Table::from_records(&records);
        let labels: Vec<String> = table.scenarios.iter().map(Scenario::label).collect();
        assert_eq!(
            labels[4..],
            [
                "TLS full handshakes/s, 8 clients",
                "TLS resumed handshakes/s, 8 clients",
                "TLS round trips/s, 32 clients"
            ]
        );
        let resumed = table.scenarios[5];
        assert_eq!(resumed.short(), "TLS resumed, 8 clients");
        let ns = table.targets.iter().position(|(t, _)| t == "ns").unwrap();
        assert!((table.ratio(ns, resumed).unwrap() - 0.75).abs() < 1e-9);
        assert!((table.perl_ratio(ns, resumed).unwrap() - 3.0).abs() < 1e-9);
        let cell = table.cell(ns, resumed).unwrap();
        assert!((cell.resumed_share().unwrap() - 0.9).abs() < 1e-9);
        assert_eq!(cell.tls_versions.iter().collect::<Vec<_>>(), ["TLS 1.3"]);
        assert_eq!(
            table.cell(ns, table.scenarios[4]).unwrap().resumed_share(),
            Some(0.0)
        );
    }

    #[test]
    fn scenarios_by_socket() {
        let mut records = sample();
        records.extend(sockets());
        let table = Table::from_records(&records);
        let labels: Vec<String> = table.scenarios.iter().map(Scenario::label).collect();
        assert_eq!(
            labels,
            [
                "new connections/s, 8 clients",
                "round trips/s, 32 clients",
                "UDP requests/s, 32 clients",
                "unix round trips/s, 8 clients"
            ]
        );
        // One row per program, whatever the socket; ratios to the native
        // server of the same scenario.
        assert_eq!(table.targets.len(), 4);
        let (udp, unix) = (table.scenarios[2], table.scenarios[3]);
        assert_eq!(table.native(udp), Some(0));
        assert!((table.ratio(1, udp).unwrap() - 0.5).abs() < 1e-9);
        assert!((table.ratio(1, unix).unwrap() - 0.9).abs() < 1e-9);
        assert!((table.perl_ratio(3, udp).unwrap() - 7.0 / 3.0).abs() < 1e-9);
        assert!(table.per_worker(3) && !table.per_worker(1));
        assert!(!table.ran_in(3, &table.scenarios[..2]));
    }

    #[test]
    fn medians_and_ratios() {
        let table = Table::from_records(&sample());
        assert_eq!(table.targets.len(), 3);
        assert_eq!(table.scenarios.len(), 2);
        let connect = table.scenarios[0];
        assert_eq!(connect.mode, Mode::Connect);
        let ratio = table.ratio(1, connect).unwrap();
        assert!((ratio - 0.8).abs() < 1e-9, "{ratio}");
        assert_eq!(table.best_perl(connect).unwrap().0, "perl");
        assert_eq!(table.cell(2, connect).unwrap().failures.len(), 1);
    }

    #[test]
    fn records_round_trip_through_json() {
        let text: String = sample()
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        assert_eq!(parse_records(&text).unwrap(), sample());
        let text: String = sockets()
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        assert_eq!(parse_records(&text).unwrap(), sockets());
        let text: String = tls()
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        assert!(text.contains(r#""transport":"tls""#), "{text}");
        assert!(text.contains(r#""mode":"connect-resumed""#), "{text}");
        assert_eq!(parse_records(&text).unwrap(), tls());
    }

    #[test]
    fn records_without_a_transport_are_tcp() {
        let line = r#"{"target":"t","group":"native","mode":"roundtrip","clients":8,"round":1,"failure":"x"}"#;
        let records = parse_records(line).unwrap();
        assert_eq!(records[0].transport, Transport::Tcp);
        assert_eq!(records[0].instance, None);
    }
}
