//! The mux world's section of the report (issue 23): host memory per idle
//! connection for several servers in one run, the time one chat message
//! takes to reach every connection, and the echo round trips of the mux
//! world against the hooks world and native tokio.
//!
//! `bench/run` writes the idle-memory and broadcast measurements as JSON
//! lines ([`MuxRecord`]); the round trips are ordinary [`super::Record`]s
//! of a target with `"world": "mux"`.

use std::fmt::Write;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use super::markdown::thousands;
use super::{Group, Scenario, Table};
use crate::chat::BroadcastSummary;
use crate::loadgen::Mode;

/// Issue 23's target: host memory per idle connection of the mux world,
/// KiB.
pub const IDLE_KIB: f64 = 4.0;

/// The clients of the round-trip comparison issue 23 asks for.
pub const ROUND_TRIP_CLIENTS: usize = 32;

/// The hooks-world target the mux world's round trips are compared with:
/// the same personality (multiplex, one worker).
pub const HOOKS_TARGET: &str = "netserver multiplex";

/// One measurement of the mux section, as a JSON line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum MuxRecord {
    /// Host memory per idle connection.
    Idle(Idle),
    /// The delivery times of chat broadcasts.
    Broadcast(Broadcast),
}

/// Host memory per idle connection of one server at one count.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Idle {
    /// The server, as the report shows it.
    pub target: String,
    /// What kind of server it is.
    pub group: Group,
    /// Whether it is the mux world (the target applies to it).
    #[serde(default)]
    pub mux: bool,
    /// What `hold` spoke (`echo` or `chat`).
    pub protocol: String,
    /// Connections held.
    pub connections: usize,
    /// The growth of the server's PSS over the connections, KiB each.
    #[serde(default)]
    pub kib_per_connection: Option<f64>,
    /// Why there is no figure.
    #[serde(default)]
    pub failure: Option<String>,
}

/// The broadcast times of one chat server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Broadcast {
    /// The server, as the report shows it.
    pub target: String,
    /// What kind of server it is.
    pub group: Group,
    /// What `hold --broadcast` printed.
    #[serde(default)]
    pub summary: Option<BroadcastSummary>,
    /// Why there is no summary.
    #[serde(default)]
    pub failure: Option<String>,
}

/// Reads the JSON lines `bench/run` wrote for the mux section (blank lines
/// are skipped; none at all is no error).
pub fn parse_mux_records(text: &str) -> anyhow::Result<Vec<MuxRecord>> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).with_context(|| format!("mux results line {}", i + 1))
        })
        .collect()
}

fn ms(value: Option<f64>) -> String {
    value.map_or("—".into(), |v| format!("{v:.1}"))
}

/// Renders "Mux world (issue 23)" when there is anything to show: the
/// `records` of the mux section, or a mux-world target in `table`.
pub fn render(out: &mut String, table: &Table, records: &[MuxRecord]) {
    let mux_targets: Vec<usize> = (0..table.targets.len())
        .filter(|&i| table.mux_world(i))
        .collect();
    if records.is_empty() && mux_targets.is_empty() {
        return;
    }
    let _ = write!(
        out,
        "## Mux world (issue 23)\n\n\
         The mux world (`mux-handler`: Net::Server::Multiplex's callbacks, one \
         WebAssembly instance per worker holding every connection) against the \
         hooks world (an instance per connection), native tokio and Perl \
         Net::Server::Multiplex. Target: host memory per idle connection ≤ \
         {IDLE_KIB} KiB in the mux world (buffers only while data is in flight); \
         ✓ met, ✗ not met.\n\n"
    );
    let idle: Vec<&Idle> = (records.iter())
        .filter_map(|r| match r {
            MuxRecord::Idle(idle) => Some(idle),
            MuxRecord::Broadcast(_) => None,
        })
        .collect();
    if !idle.is_empty() {
        out.push_str(
            "Host memory per idle connection: the growth of the server's \
             proportional set size (every process of it, `/proc/PID/smaps_rollup`) \
             while `hold` keeps the connections open and idle, divided by their \
             number; one worker. Echo connections made one round trip each; chat \
             connections read their welcome line, and are measured once nothing \
             arrived on any of them for half a second.\n\n\
             | server | protocol | connections | KiB per idle connection | target |\n\
             |---|---|---:|---:|---|\n",
        );
        for row in &idle {
            let (figure, goal) = match (row.kib_per_connection, &row.failure) {
                (Some(kib), _) => {
                    let goal = match row.mux {
                        true if kib <= IDLE_KIB => format!("≤ {IDLE_KIB} ✓"),
                        true => format!("≤ {IDLE_KIB} ✗"),
                        false => String::new(),
                    };
                    (format!("{kib:.1}"), goal)
                }
                (None, failure) => (
                    format!("failed: {}", failure.as_deref().unwrap_or("no figure")),
                    if row.mux {
                        format!("≤ {IDLE_KIB} —")
                    } else {
                        String::new()
                    },
                ),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {figure} | {goal} |",
                row.target,
                row.protocol,
                thousands(row.connections as f64)
            );
        }
        out.push('\n');
    }
    let broadcasts: Vec<&Broadcast> = (records.iter())
        .filter_map(|r| match r {
            MuxRecord::Broadcast(b) => Some(b),
            MuxRecord::Idle(_) => None,
        })
        .collect();
    if !broadcasts.is_empty() {
        out.push_str(
            "One message to every connection: with the chat connections held, \
             connection 0 sends K lines one after the other (the next once every \
             other connection read the last, or after the timeout), and each \
             other connection's time from the send until it read the line \
             carrying the message is a sample; p50, p99 and max over all \
             (receiver, message) samples. The samples include the load \
             generator's own time to read every socket on its one thread.\n\n\
             | server | connections | messages | p50 ms | p99 ms | max ms | missed (receiver, message) |\n\
             |---|---:|---:|---:|---:|---:|---:|\n",
        );
        for row in &broadcasts {
            match (&row.summary, &row.failure) {
                (Some(s), _) => {
                    let _ = writeln!(
                        out,
                        "| {} | {} | {} | {} | {} | {} | {} |",
                        row.target,
                        thousands(s.connections as f64),
                        s.messages,
                        ms(s.p50_ms),
                        ms(s.p99_ms),
                        ms(s.max_ms),
                        thousands(s.missed as f64),
                    );
                }
                (None, failure) => {
                    let _ = writeln!(
                        out,
                        "| {} | failed: {} | | | | | |",
                        row.target,
                        failure.as_deref().unwrap_or("no result")
                    );
                }
            }
        }
        out.push('\n');
    }
    round_trips(out, table, &mux_targets);
}

/// The round-trip rates of the mux world, the hooks world's multiplex and
/// native tokio over TCP, with the ratios.
fn round_trips(out: &mut String, table: &Table, mux_targets: &[usize]) {
    let scenario = Scenario::tcp(Mode::Roundtrip, ROUND_TRIP_CLIENTS);
    if mux_targets.is_empty() {
        out.push_str(
            "Echo round trips: the mux world's echo (`ns-mux`) did not run \
             (see the notes).\n\n",
        );
        return;
    }
    let hooks = (0..table.targets.len()).find(|&i| {
        table.targets[i].1 == Group::Netserver
            && !table.mux_world(i)
            && table.targets[i].0 == HOOKS_TARGET
    });
    let native = table.native(scenario);
    let rate = |i: Option<usize>| i.and_then(|i| table.rate(i, scenario));
    let _ = write!(
        out,
        "Echo round trips at {ROUND_TRIP_CLIENTS} clients (TCP, persistent \
         connections, medians over the rounds): the mux world's line echo \
         (`mux_echo.wasm`, byte-identical to the built-in echo) against the \
         hooks world's built-in echo on the same personality ({HOOKS_TARGET}) \
         and native tokio.\n\n\
         | server | round trips/s, {ROUND_TRIP_CLIENTS} clients | × hooks world | × native |\n\
         |---|---:|---:|---:|\n"
    );
    let (hooks_rate, native_rate) = (rate(hooks), rate(native));
    let ratio = |r: Option<f64>, base: Option<f64>| {
        r.zip(base.filter(|&b| b > 0.0))
            .map_or("—".into(), |(r, b)| format!("{:.2}", r / b))
    };
    for &i in mux_targets {
        let r = rate(Some(i));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            table.targets[i].0,
            r.map_or("—".into(), thousands),
            ratio(r, hooks_rate),
            ratio(r, native_rate)
        );
    }
    for (i, label) in [(hooks, "hooks world"), (native, "native")] {
        let Some(i) = i else {
            let _ = writeln!(out, "| ({label}: did not run) | — | — | — |");
            continue;
        };
        let r = rate(Some(i));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            table.targets[i].0,
            r.map_or("—".into(), thousands),
            ratio(r, hooks_rate),
            ratio(r, native_rate)
        );
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::markdown::{Context, render as render_report};
    use crate::report::tests::{record, sample};
    use crate::report::{Record, World};

    fn idle(target: &str, group: Group, mux: bool, n: usize, kib: Option<f64>) -> MuxRecord {
        MuxRecord::Idle(Idle {
            target: target.into(),
            group,
            mux,
            protocol: if mux { "chat" } else { "echo" }.into(),
            connections: n,
            kib_per_connection: kib,
            failure: kib
                .is_none()
                .then(|| "hold: connection 1021: no reply within 5 s".into()),
        })
    }

    fn records() -> Vec<MuxRecord> {
        vec![
            idle(
                "netserver mux world",
                Group::Netserver,
                true,
                10000,
                Some(3.2),
            ),
            idle(
                "netserver multiplex",
                Group::Netserver,
                false,
                10000,
                Some(56.0),
            ),
            idle("native tokio", Group::Native, false, 10000, Some(11.0)),
            idle(
                "Perl Net::Server::Multiplex",
                Group::Perl,
                false,
                10000,
                None,
            ),
            idle(
                "Perl Net::Server::Multiplex",
                Group::Perl,
                false,
                1000,
                Some(2.1),
            ),
            MuxRecord::Broadcast(Broadcast {
                target: "netserver mux world".into(),
                group: Group::Netserver,
                summary: Some(BroadcastSummary {
                    connections: 10000,
                    messages: 20,
                    receivers: 9999,
                    samples: 199_980,
                    p50_ms: Some(12.25),
                    p99_ms: Some(30.0),
                    max_ms: Some(31.5),
                    missed: 0,
                    receivers_missed: 0,
                    timeout_s: 10.0,
                    lines_while_connecting: 0,
                }),
                failure: None,
            }),
            MuxRecord::Broadcast(Broadcast {
                target: "native tokio chat".into(),
                group: Group::Native,
                summary: None,
                failure: Some("the server did not start".into()),
            }),
        ]
    }

    /// `sample()`'s round trips at 32 clients (native 10,000/s, "ns"
    /// 8,000/s), with "ns" named as the hooks world's multiplex and a mux
    /// target at 9,000/s.
    fn table_records() -> Vec<Record> {
        let mut records: Vec<Record> = sample()
            .into_iter()
            .map(|mut r| {
                if r.target == "ns" {
                    r.target = HOOKS_TARGET.into();
                }
                r
            })
            .collect();
        records.push(Record {
            world: Some(World::Mux),
            ..record(
                "netserver mux world",
                Group::Netserver,
                Mode::Roundtrip,
                32,
                9000.0,
            )
        });
        records
    }

    #[test]
    fn mux_records_round_trip_through_json() {
        let text: String = records()
            .iter()
            .map(|r| serde_json::to_string(r).unwrap() + "\n")
            .collect();
        assert!(text.contains(r#""kind":"idle""#), "{text}");
        assert!(text.contains(r#""kind":"broadcast""#), "{text}");
        assert_eq!(parse_mux_records(&text).unwrap(), records());
        assert_eq!(parse_mux_records("\n").unwrap(), []);
        // What bench/run writes by hand.
        let line = r#"{"kind":"idle","target":"t","group":"perl","protocol":"echo","connections":1000,"failure":"x"}"#;
        let parsed = parse_mux_records(line).unwrap();
        assert!(
            matches!(&parsed[0], MuxRecord::Idle(i) if !i.mux && i.kib_per_connection.is_none())
        );
        let json: Record = serde_json::from_str(
            r#"{"target":"t","group":"netserver","world":"mux","mode":"roundtrip","clients":32,"round":1,"failure":"x"}"#,
        )
        .unwrap();
        assert_eq!(json.world, Some(World::Mux));
    }

    #[test]
    fn renders_idle_memory_broadcast_and_round_trips() {
        let table = Table::from_records(&table_records());
        let mut text = String::new();
        render(&mut text, &table, &records());
        for row in [
            "## Mux world (issue 23)",
            "| netserver mux world | chat | 10,000 | 3.2 | ≤ 4 ✓ |",
            "| netserver multiplex | echo | 10,000 | 56.0 |  |",
            "| Perl Net::Server::Multiplex | echo | 10,000 | failed: hold: connection 1021: no reply within 5 s |  |",
            "| Perl Net::Server::Multiplex | echo | 1,000 | 2.1 |  |",
            "| netserver mux world | 10,000 | 20 | 12.2 | 30.0 | 31.5 | 0 |",
            "| native tokio chat | failed: the server did not start | | | | | |",
            "| netserver mux world | 9,000 | 1.12 | 0.90 |",
            "| netserver multiplex | 8,000 | 1.00 | 0.80 |",
            "| native | 10,000 | 1.25 | 1.00 |",
        ] {
            assert!(text.contains(row), "{row} missing:\n{text}");
        }
        // Over the target: ✗.
        let mut over = records();
        over[0] = idle(
            "netserver mux world",
            Group::Netserver,
            true,
            10000,
            Some(4.5),
        );
        let mut text = String::new();
        render(&mut text, &table, &over);
        assert!(text.contains("| 4.5 | ≤ 4 ✗ |"), "{text}");
    }

    #[test]
    fn renders_nothing_without_the_mux_world() {
        let mut text = String::new();
        render(&mut text, &Table::from_records(&sample()), &[]);
        assert_eq!(text, "");
        // Without a hooks target the row says so.
        let mut without_hooks = sample();
        without_hooks.retain(|r| r.target != "ns");
        without_hooks.push(Record {
            world: Some(World::Mux),
            ..record("mux", Group::Netserver, Mode::Roundtrip, 32, 5000.0)
        });
        render(&mut text, &Table::from_records(&without_hooks), &[]);
        assert!(text.contains("| mux | 5,000 | — | 0.50 |"), "{text}");
        assert!(text.contains("| (hooks world: did not run) |"), "{text}");
        assert!(!text.contains("Host memory per idle"), "{text}");
        // Measurements without the mux echo's round trips say so.
        let mut text = String::new();
        render(&mut text, &Table::from_records(&sample()), &records()[..1]);
        assert!(text.contains("(`ns-mux`) did not run"), "{text}");
    }

    #[test]
    fn the_report_places_it_after_tls() {
        let context = Context {
            mux: records(),
            ..Context::default()
        };
        let text = render_report(&Table::from_records(&table_records()), &context);
        let mux_at = text.find("## Mux world (issue 23)").expect("the section");
        assert!(
            mux_at > text.find("## Targets (issue 5)").unwrap(),
            "{text}"
        );
        assert!(mux_at < text.find("## Latency").unwrap(), "{text}");
    }
}
