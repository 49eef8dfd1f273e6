//! `docs/benchmarks.md`: the tables of a [`Table`].

use std::fmt::Write;

use super::{Group, Scenario, Table, median};
use crate::loadgen::Mode;

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
}

/// A target of issue 5: a scenario and the least ratio to native.
const NATIVE_TARGETS: [(Mode, usize, f64); 2] =
    [(Mode::Roundtrip, 32, 0.8), (Mode::Connect, 8, 0.6)];

/// How far ahead of the best Net::Server personality netserver must be.
const AHEAD_OF_PERL: f64 = 1.5;

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
    out.push_str("## Throughput\n\nRequests/s (median), and × native.\n\n| target |");
    for s in &table.scenarios {
        let _ = write!(out, " {} | × native |", s.label());
    }
    out.push_str(" errors |\n|---|");
    out.push_str(&"---:|---:|".repeat(table.scenarios.len()));
    out.push_str("---:|\n");
    for (i, (name, _)) in table.targets.iter().enumerate() {
        let _ = write!(out, "| {name} |");
        let mut errors = 0;
        for &s in &table.scenarios {
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
    let scenario = |mode, clients| Scenario { mode, clients };
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
    for (i, (name, group)) in table.targets.iter().enumerate() {
        if *group != Group::Netserver {
            continue;
        }
        let _ = write!(out, "| {name} |");
        for (mode, clients, least) in &present {
            let ratio = table.ratio(i, scenario(*mode, *clients));
            let _ = write!(out, " {} |", verdict(ratio, *least));
        }
        for (mode, clients, _) in &present {
            let s = scenario(*mode, *clients);
            let ahead = match (table.rate(i, s), table.best_perl(s)) {
                (Some(ours), Some((_, perl))) if perl > 0.0 => Some(ours / perl),
                _ => None,
            };
            let _ = write!(out, " {} |", verdict(ahead, AHEAD_OF_PERL));
        }
        out.push('\n');
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
    out.push_str(
        "## Latency\n\nMicroseconds per request (connect included in connect mode), \
         p50 / p99, medians over the rounds.\n\n| target |",
    );
    for s in &table.scenarios {
        let _ = write!(out, " {} |", s.short());
    }
    let _ = writeln!(out, "\n|---|{}", "---:|".repeat(table.scenarios.len()));
    for (i, (name, _)) in table.targets.iter().enumerate() {
        let _ = write!(out, "| {name} |");
        for &s in &table.scenarios {
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
    use crate::report::tests::sample;

    #[test]
    fn renders_tables_and_verdicts() {
        let table = Table::from_records(&sample());
        let context = Context {
            setup: vec![("rounds".into(), "3".into())],
            notes: vec!["a note".into()],
            plot: Some("benchmarks.svg".into()),
            sections: vec!["## Why\n\nBecause.\n".into()],
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
    }
}
