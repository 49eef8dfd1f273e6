//! `docs/benchmarks.md`: the tables of a [`Table`].

use std::fmt::Write;

use super::{Group, Scenario, Table, median};
use crate::loadgen::{Mode, Transport};

/// What the report says besides the numbers.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// `key: value` lines about the machine and the settings.
    pub setup: Vec<(String, String)>,
    /// Remarks from the script (targets skipped, pinning, …).
    pub notes: Vec<String>,
    /// The plot's path relative to the markdown file, if there is one.
    pub plot: Option<String>,
    /// Markdown sections placed after the targets table: the per-connection
    /// costs `bench/run` measured, and `bench/analysis.md` (written by hand:
    /// what bounds the targets, with the measurements that show it).
    pub sections: Vec<String>,
    /// The mux section's measurements (issue 23): idle memory, broadcasts.
    pub mux: Vec<super::mux::MuxRecord>,
}

/// A target of issue 5: a scenario and the least ratio to native.
const NATIVE_TARGETS: [(Mode, usize, f64); 2] =
    [(Mode::Roundtrip, 32, 0.8), (Mode::Connect, 8, 0.6)];

/// How far ahead of the best Net::Server personality netserver must be.
const AHEAD_OF_PERL: f64 = 1.5;

/// Issue 22's least ratios to native: UDP with a fresh instance per
/// datagram, UDP with an instance per worker, unix stream round trips.
const UDP_FRESH: f64 = 0.6;
const UDP_PER_WORKER: f64 = 0.8;
const UNIX_ROUND_TRIPS: f64 = 0.8;

/// Issue 21's targets over TLS: the least ratios to native for round trips
/// and for handshakes (full and resumed), and how far ahead of Perl.
const TLS_ROUND_TRIPS: f64 = 0.8;
const TLS_HANDSHAKES: f64 = 0.9;
const TLS_AHEAD_OF_PERL: f64 = 2.0;

/// From this share of its CPU on, the load generator is taken to bound the
/// rate (it runs on one CPU).
const CLIENT_SATURATED: f64 = 0.9;

/// The scenarios over the sockets `transports`: TCP (the tables of issue
/// 5), UDP and unix (issue 22), TLS (issue 21).
fn over(table: &Table, transports: &[Transport]) -> Vec<Scenario> {
    (table.scenarios.iter())
        .filter(|s| transports.contains(&s.transport))
        .copied()
        .collect()
}

/// The scenarios of the TCP tables (issue 5).
fn tcp(table: &Table) -> Vec<Scenario> {
    over(table, &[Transport::Tcp])
}

/// Renders the whole report.
pub fn render(table: &Table, context: &Context) -> String {
    let mut out = String::new();
    out.push_str("# Benchmarks\n\n");
    out.push_str(
        "Written by `bench/run` (do not edit by hand): every netserver-host \
         personality serving the built-in echo handler, side by side with a \
         native tokio echo server (`native-echo`, the no-sandbox limit) and \
         Perl Net::Server, all speaking the same line protocol (`hello\\r\\n` → \
         `You said 'hello'\\r\\n`, checked byte for byte). Targets run in \
         turn, round after round; each number is the median over the rounds, \
         and each ratio is to the native server in the same run.\n\n",
    );
    if let Some(plot) = &context.plot {
        let _ = writeln!(out, "![requests/s relative to native tokio]({plot})\n");
    }
    throughput(&mut out, table);
    goals(&mut out, table);
    sockets(&mut out, table);
    tls(&mut out, table);
    super::mux::render(&mut out, table, &context.mux);
    for section in &context.sections {
        out.push_str(section.trim_end());
        out.push_str("\n\n");
    }
    latency(&mut out, table);
    if !context.setup.is_empty() {
        out.push_str("## Setup\n\n");
        for (key, value) in &context.setup {
            let _ = writeln!(out, "- {key}: {value}");
        }
        out.push('\n');
    }
    if !context.notes.is_empty() {
        out.push_str("## Notes\n\n");
        for note in &context.notes {
            let _ = writeln!(out, "- {note}");
        }
        out.push('\n');
    }
    rounds(&mut out, table);
    out
}

fn throughput(out: &mut String, table: &Table) {
    let scenarios = tcp(table);
    if scenarios.is_empty() {
        return;
    }
    out.push_str("## Throughput\n\nRequests/s (median), and × native.\n\n| target |");
    for s in &scenarios {
        let _ = write!(out, " {} | × native |", s.label());
    }
    out.push_str(" errors |\n|---|");
    out.push_str(&"---:|---:|".repeat(scenarios.len()));
    out.push_str("---:|\n");
    for (i, (name, _)) in table.targets.iter().enumerate() {
        if !table.ran_in(i, &scenarios) {
            continue;
        }
        let _ = write!(out, "| {name} |");
        let mut errors = 0;
        for &s in &scenarios {
            let rate = table.rate(i, s).map_or("—".into(), thousands);
            let ratio = table.ratio(i, s).map_or("—".into(), |r| format!("{r:.2}"));
            let _ = write!(out, " {rate} | {ratio} |");
            errors += table.cell(i, s).map_or(0, |c| c.errors);
        }
        let _ = writeln!(out, " {errors} |");
    }
    out.push('\n');
}

fn goals(out: &mut String, table: &Table) {
    let scenario = Scenario::tcp;
    let present: Vec<_> = NATIVE_TARGETS
        .iter()
        .filter(|(m, c, _)| table.scenarios.contains(&scenario(*m, *c)))
        .collect();
    if present.is_empty() {
        return;
    }
    out.push_str(
        "## Targets (issue 5)\n\n✓ met, ✗ not met. \"Net::Server\" is the faster \
         Perl personality in that scenario.\n\n| netserver-host |",
    );
    for (mode, clients, least) in &present {
        let _ = write!(
            out,
            " {} ≥ {least}× native |",
            scenario(*mode, *clients).label()
        );
    }
    for (mode, clients, _) in &present {
        let _ = write!(
            out,
            " {} ≥ {AHEAD_OF_PERL}× Net::Server |",
            scenario(*mode, *clients).label()
        );
    }
    let _ = writeln!(out, "\n|---|{}", "---:|".repeat(present.len() * 2));
    let scenarios = tcp(table);
    for (i, (name, group)) in table.targets.iter().enumerate() {
        if *group != Group::Netserver || !table.ran_in(i, &scenarios) {
            continue;
        }
        let _ = write!(out, "| {name} |");
        for (mode, clients, least) in &present {
            let ratio = table.ratio(i, scenario(*mode, *clients));
            let _ = write!(out, " {} |", verdict(ratio, *least));
        }
        for (mode, clients, _) in &present {
            let ahead = table.perl_ratio(i, scenario(*mode, *clients));
            let _ = write!(out, " {} |", verdict(ahead, AHEAD_OF_PERL));
        }
        out.push('\n');
    }
    out.push('\n');
}

/// The least ratio to native issue 22 asks of `target` in `scenario`, for
/// netserver targets over UDP and unix sockets.
fn least_native(table: &Table, target: usize, scenario: Scenario) -> Option<f64> {
    if table.targets[target].1 != Group::Netserver {
        return None;
    }
    match (scenario.transport, scenario.mode) {
        (_, Mode::Udp) if table.per_worker(target) => Some(UDP_PER_WORKER),
        (_, Mode::Udp) => Some(UDP_FRESH),
        (Transport::Unix, Mode::Roundtrip) => Some(UNIX_ROUND_TRIPS),
        _ => None,
    }
}

/// The UDP and unix socket scenarios (issue 22): a row per target and
/// scenario, with the ratios to native and to Perl and the targets.
fn sockets(out: &mut String, table: &Table) {
    let scenarios = over(table, &[Transport::Udp, Transport::Unix]);
    if scenarios.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "## UDP and unix sockets (issue 22)\n\n\
         The same echo over other sockets, against native tokio on the same \
         kind of socket and Perl Net::Server (`proto udp`, `proto unix`). UDP: \
         each client has a socket of its own connected to the server and sends \
         the datagram `hello-CLIENT-SEQ` once the last was answered; the answer \
         must be `You said \"hello-CLIENT-SEQ\"` (Net::Server's default UDP \
         answer), and a datagram not answered in time counts as an error. Unix: \
         the round trips of the TCP tables over a unix stream socket. Requests/s \
         are medians over the rounds; × native is to the native server in the \
         same scenario, × Net::Server to the faster Perl personality there. \
         Targets for netserver-host: UDP ≥ {UDP_FRESH}× native with a fresh \
         instance per datagram and ≥ {UDP_PER_WORKER}× with an instance per \
         worker, unix round trips ≥ {UNIX_ROUND_TRIPS}× native, and all ≥ \
         {AHEAD_OF_PERL}× Net::Server; ✓ met, ✗ not met.\n\n\
         | target | scenario | requests/s | × native | target | × Net::Server | target | p50 / p99 µs | errors |\n\
         |---|---|---:|---:|---|---:|---|---:|---:|\n"
    );
    for &s in &scenarios {
        for (i, (name, group)) in table.targets.iter().enumerate() {
            let Some(cell) = table.cell(i, s) else {
                continue;
            };
            let rate = cell.rate().map_or("—".into(), thousands);
            let ratio = table.ratio(i, s);
            let perl = table.perl_ratio(i, s);
            let number = |r: Option<f64>| r.map_or("—".into(), |r| format!("{r:.2}"));
            let ahead = (*group == Group::Netserver).then_some(AHEAD_OF_PERL);
            let latency = (median(&cell.p50s).zip(median(&cell.p99s)))
                .map_or("—".into(), |(p50, p99)| format!("{p50:.0} / {p99:.0}"));
            let _ = writeln!(
                out,
                "| {name} | {} | {rate} | {} | {} | {} | {} | {latency} | {} |",
                s.label(),
                number(ratio),
                goal(least_native(table, i, s), ratio),
                number(perl),
                goal(ahead, perl),
                cell.errors,
            );
        }
    }
    out.push('\n');
}

/// The least ratio to native issue 21 asks of `target` in the TLS
/// `scenario`: netserver targets only.
fn least_native_tls(table: &Table, target: usize, scenario: Scenario) -> Option<f64> {
    if table.targets[target].1 != Group::Netserver {
        return None;
    }
    match scenario.mode {
        Mode::Connect | Mode::ConnectResumed => Some(TLS_HANDSHAKES),
        Mode::Roundtrip => Some(TLS_ROUND_TRIPS),
        Mode::Udp => None,
    }
}

/// `≥ LEAST ✓` when `ratio` is at least `least`, `≥ LEAST ✗` when not,
/// `≥ LEAST —` without a ratio; empty without a target.
fn goal(least: Option<f64>, ratio: Option<f64>) -> String {
    match (least, ratio) {
        (None, _) => String::new(),
        (Some(least), Some(r)) if r >= least => format!("≥ {least} ✓"),
        (Some(least), Some(_)) => format!("≥ {least} ✗"),
        (Some(least), None) => format!("≥ {least} —"),
    }
}

/// The TLS scenarios (issue 21): a row per target and scenario, with the
/// ratios to native TLS and to Perl, the targets, and the share of resumed
/// handshakes.
fn tls(out: &mut String, table: &Table) {
    let scenarios = over(table, &[Transport::Tls]);
    if scenarios.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "## TLS (issue 21)\n\n\
         The same echo over TLS, against native tokio with rustls (the same \
         library and ring provider as netserver-host) and Perl \
         Net::Server::PreFork with `proto ssl` (IO::Socket::SSL over OpenSSL). \
         Full handshakes: the connect mode, every request on a new connection \
         with a full handshake (the client keeps no session: resumption \
         disabled), one line round trip, close_notify and close. Resumed \
         handshakes: the same, the clients sharing one session cache, so a \
         connection resumes a session the server issued to an earlier one; \
         \"resumed\" is the share of the requests whose handshake was resumed. \
         Round trips: long-lived TLS connections, one line at a time. \
         Requests/s are medians over the rounds; × native is to native tokio \
         over TLS in the same run, × Net::Server to Perl there. Targets for \
         netserver-host: round trips ≥ {TLS_ROUND_TRIPS}× native, handshakes \
         (full and resumed) ≥ {TLS_HANDSHAKES}× native, all ≥ \
         {TLS_AHEAD_OF_PERL}× Net::Server; ✓ met, ✗ not met. Server CPU: \
         the server's CPU time (its children's included) per request over the \
         measured duration; load generator: the share of its one CPU the \
         load generator used (medians over the rounds).\n\n\
         | target | scenario | requests/s | × native | target | × Net::Server | target | resumed | server CPU µs/request | load generator CPU | p50 / p99 µs | errors |\n\
         |---|---|---:|---:|---|---:|---|---:|---:|---:|---:|---:|\n"
    );
    let mut saturated = Vec::new();
    let mut versions = std::collections::BTreeSet::new();
    for &s in &scenarios {
        for (i, (name, group)) in table.targets.iter().enumerate() {
            let Some(cell) = table.cell(i, s) else {
                continue;
            };
            versions.extend(cell.tls_versions.iter().cloned());
            let rate = cell.rate().map_or("—".into(), thousands);
            let ratio = table.ratio(i, s);
            let perl = table.perl_ratio(i, s);
            let number = |r: Option<f64>| r.map_or("—".into(), |r| format!("{r:.2}"));
            let ahead = (*group == Group::Netserver).then_some(TLS_AHEAD_OF_PERL);
            let resumed = match s.mode {
                Mode::Connect | Mode::ConnectResumed => cell
                    .resumed_share()
                    .map_or("—".into(), |share| format!("{:.0}%", share * 100.0)),
                Mode::Roundtrip | Mode::Udp => "—".into(),
            };
            let latency = (median(&cell.p50s).zip(median(&cell.p99s)))
                .map_or("—".into(), |(p50, p99)| format!("{p50:.0} / {p99:.0}"));
            let server_cpu =
                median(&cell.server_cpu_us).map_or("—".into(), |us| format!("{us:.0}"));
            let client_cpu = median(&cell.client_cpu);
            if *group == Group::Native && client_cpu.is_some_and(|c| c >= CLIENT_SATURATED) {
                saturated.push(s.label());
            }
            let client_cpu = client_cpu.map_or("—".into(), |c| format!("{:.0}%", c * 100.0));
            let _ = writeln!(
                out,
                "| {name} | {} | {rate} | {} | {} | {} | {} | {resumed} | {server_cpu} | {client_cpu} | {latency} | {} |",
                s.label(),
                number(ratio),
                goal(least_native_tls(table, i, s), ratio),
                number(perl),
                goal(ahead, perl),
                cell.errors,
            );
        }
    }
    if !versions.is_empty() {
        let versions: Vec<String> = versions.into_iter().collect();
        let _ = write!(out, "\nVersion negotiated: {}.\n", versions.join(", "));
    }
    if !saturated.is_empty() {
        let _ = write!(
            out,
            "\nAgainst native tokio the load generator used {:.0}% of its CPU or \
             more in: {}. There the rate is bounded by the client's side of the \
             handshakes as much as by the server, so the ratios to native are \
             higher than the servers' own costs would give; the server CPU per \
             request compares the servers themselves.\n",
            CLIENT_SATURATED * 100.0,
            saturated.join("; ")
        );
    }
    out.push('\n');
}

fn verdict(ratio: Option<f64>, least: f64) -> String {
    match ratio {
        Some(r) if r >= least => format!("{r:.2} ✓"),
        Some(r) => format!("{r:.2} ✗"),
        None => "—".into(),
    }
}

fn latency(out: &mut String, table: &Table) {
    let scenarios = tcp(table);
    if scenarios.is_empty() {
        return;
    }
    out.push_str(
        "## Latency\n\nMicroseconds per request (connect included in connect mode), \
         p50 / p99, medians over the rounds.\n\n| target |",
    );
    for s in &scenarios {
        let _ = write!(out, " {} |", s.short());
    }
    let _ = writeln!(out, "\n|---|{}", "---:|".repeat(scenarios.len()));
    for (i, (name, _)) in table.targets.iter().enumerate() {
        if !table.ran_in(i, &scenarios) {
            continue;
        }
        let _ = write!(out, "| {name} |");
        for &s in &scenarios {
            let text = table
                .cell(i, s)
                .and_then(|c| Some((median(&c.p50s)?, median(&c.p99s)?)))
                .map_or("—".into(), |(p50, p99)| format!("{p50:.0} / {p99:.0}"));
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out.push('\n');
}

fn rounds(out: &mut String, table: &Table) {
    out.push_str("## Every round\n\nRequests/s of each round, in order.\n\n");
    out.push_str("| target | scenario | rounds | failures |\n|---|---|---|---|\n");
    for (i, (name, _)) in table.targets.iter().enumerate() {
        for &s in &table.scenarios {
            let Some(cell) = table.cell(i, s) else {
                continue;
            };
            let rates: Vec<String> = cell.rates.iter().map(|&r| thousands(r)).collect();
            let _ = writeln!(
                out,
                "| {name} | {} | {} | {} |",
                s.short(),
                rates.join(", "),
                cell.failures.join("; ")
            );
        }
    }
}

/// `value` rounded, with thousands separated by commas.
///
/// ```
/// use netserver_bench::report::markdown::thousands;
/// assert_eq!(thousands(1234567.4), "1,234,567");
/// assert_eq!(thousands(999.5), "1,000");
/// assert_eq!(thousands(12.0), "12");
/// ```
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::{sample, sockets, tls};

    #[test]
    fn renders_tables_and_verdicts() {
        let table = Table::from_records(&sample());
        let context = Context {
            setup: vec![("rounds".into(), "3".into())],
            notes: vec!["a note".into()],
            plot: Some("benchmarks.svg".into()),
            sections: vec!["## Why\n\nBecause.\n".into()],
            mux: Vec::new(),
        };
        let text = render(&table, &context);
        assert!(text.contains("![requests/s relative to native tokio](benchmarks.svg)"));
        assert!(
            text.contains("| ns | 800 | 0.80 | 8,000 | 0.80 | 0 |"),
            "{text}"
        );
        // 0.8 ≥ 0.8 for round trips; 0.8 ≥ 0.6 for connections; 2× Perl.
        assert!(
            text.contains("| ns | 0.80 ✓ | 0.80 ✓ | 2.00 ✓ | 2.00 ✓ |"),
            "{text}"
        );
        assert!(text.contains("round 2: did not start"));
        let (targets, why) = (
            text.find("## Targets").unwrap(),
            text.find("## Why").unwrap(),
        );
        assert!(
            targets < why && why < text.find("## Latency").unwrap(),
            "{text}"
        );
        assert!(text.contains("- a note"));
        assert!(!text.contains("## UDP and unix sockets"));
    }

    #[test]
    fn renders_udp_and_unix_beside_tcp() {
        let tcp_only = render(&Table::from_records(&sample()), &Context::default());
        let mut records = sample();
        records.extend(sockets());
        let text = render(&Table::from_records(&records), &Context::default());
        // The TCP tables are as without the other sockets.
        let tcp_part = |t: &str| t[..t.find("## Latency").unwrap()].to_owned();
        let before_sockets = &text[..text.find("## UDP and unix sockets").unwrap()];
        assert_eq!(before_sockets, tcp_part(&tcp_only), "{text}");
        assert!(!before_sockets.contains("per worker"), "{text}");
        for row in [
            "| ns | UDP requests/s, 32 clients | 5,000 | 0.50 | ≥ 0.6 ✗ | 1.67 | ≥ 1.5 ✓ | 0 / 0 | 0 |",
            "| ns, per worker | UDP requests/s, 32 clients | 7,000 | 0.70 | ≥ 0.8 ✗ | 2.33 | ≥ 1.5 ✓ | 0 / 0 | 0 |",
            "| native | UDP requests/s, 32 clients | 10,000 | 1.00 |  | 3.33 |  | 0 / 0 | 0 |",
            "| perl | UDP requests/s, 32 clients | 3,000 | 0.30 |  | 1.00 |  | 0 / 0 | 0 |",
            "| ns | unix round trips/s, 8 clients | 9,000 | 0.90 | ≥ 0.8 ✓ | 1.80 | ≥ 1.5 ✓ | 0 / 0 | 0 |",
        ] {
            assert!(text.contains(row), "{row} missing:\n{text}");
        }
        let latency = &text[text.find("## Latency").unwrap()..];
        assert!(!latency[..latency.find("## Every").unwrap()].contains("UDP"));
        assert!(text.contains("| ns, per worker | UDP, 32 clients | 7,000 |"));
    }

    #[test]
    fn renders_tls_after_the_other_sockets() {
        let mut without = sample();
        without.extend(sockets());
        let before = render(&Table::from_records(&without), &Context::default());
        let mut records = without.clone();
        records.extend(tls());
        let text = render(&Table::from_records(&records), &Context::default());
        // Everything before it is as without TLS.
        let tls_at = text.find("## TLS (issue 21)").expect("a TLS section");
        let latency_at = |t: &str| t.find("## Latency").unwrap();
        assert_eq!(&text[..tls_at], &before[..latency_at(&before)], "{text}");
        assert_eq!(
            &text[latency_at(&text)..text.find("## Every round").unwrap()],
            &before[latency_at(&before)..before.find("## Every round").unwrap()]
        );
        for row in [
            "| native | TLS full handshakes/s, 8 clients | 2,000 | 1.00 |  | 4.00 |  | 0% | 500 | 95% | 0 / 0 | 0 |",
            "| ns | TLS full handshakes/s, 8 clients | 1,900 | 0.95 | ≥ 0.9 ✓ | 3.80 | ≥ 2 ✓ | 0% | 526 | 50% | 0 / 0 | 0 |",
            "| ns | TLS resumed handshakes/s, 8 clients | 3,000 | 0.75 | ≥ 0.9 ✗ | 3.00 | ≥ 2 ✓ | 90% | 333 | 50% | 0 / 0 | 0 |",
            "| ns | TLS round trips/s, 32 clients | 17,000 | 0.85 | ≥ 0.8 ✓ | 1.89 | ≥ 2 ✗ | — | 59 | 50% | 0 / 0 | 0 |",
            "| perl | TLS round trips/s, 32 clients | 9,000 | 0.45 |  | 1.00 |  | — | 111 | 50% | 0 / 0 | 0 |",
            "Version negotiated: TLS 1.3.",
            "in: TLS full handshakes/s, 8 clients; TLS resumed handshakes/s, 8 clients; TLS round trips/s, 32 clients.",
        ] {
            assert!(text.contains(row), "{row} missing:\n{text}");
        }
        assert!(text.contains("| ns | TLS resumed, 8 clients | 3,000 |"));
    }

    #[test]
    fn renders_tls_alone() {
        let text = render(&Table::from_records(&tls()), &Context::default());
        for absent in [
            "## Throughput",
            "## Targets (issue 5)",
            "## UDP and unix",
            "## Latency",
        ] {
            assert!(!text.contains(absent), "{absent}:\n{text}");
        }
        assert!(text.contains("## TLS (issue 21)"));
    }

    #[test]
    fn renders_udp_and_unix_alone() {
        let text = render(&Table::from_records(&sockets()), &Context::default());
        for absent in ["## Throughput", "## Targets (issue 5)", "## Latency"] {
            assert!(!text.contains(absent), "{absent}:\n{text}");
        }
        assert!(text.contains("## UDP and unix sockets (issue 22)"));
    }
}
