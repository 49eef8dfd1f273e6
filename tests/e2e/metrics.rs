//! The metrics endpoint (`metrics_port`): scraped over HTTP after real
//! traffic, its counters summed over every worker, kept across a worker's
//! replacement and a HUP.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use crate::util::{Client, Server, guests, per_personality, run};

/// The endpoint's address, from the server's `Serving metrics on
/// http://ADDR/metrics` line.
pub fn endpoint(server: &mut Server) -> SocketAddr {
    let line = server.wait_for_log("Serving metrics on http://");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("{line:?}"));
    addr.parse().unwrap()
}

/// `GET path` on `addr`: the status line and the body.
fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).unwrap();
    let (head, body) = reply.split_once("\r\n\r\n").unwrap_or((&reply, ""));
    let status = head.lines().next().unwrap_or("").to_owned();
    (status, body.to_owned())
}

/// The value of the series `series` (name and labels, exactly as
/// exposed) in a scrape of `addr`.
pub fn value(addr: SocketAddr, series: &str) -> f64 {
    let (status, body) = get(addr, "/metrics");
    assert_eq!(status, "HTTP/1.1 200 OK");
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {series} in:\n{body}"))
        .parse()
        .unwrap()
}

/// Waits until `series` reaches `want` (the counters of a connection are
/// written as it ends, after the client saw the end).
pub fn until(server: &Server, addr: SocketAddr, series: &str, want: f64) {
    server.eventually(&format!("{series} = {want}"), || {
        let got = value(addr, series);
        if got == want {
            Ok(())
        } else {
            Err(format!("{got}"))
        }
    });
}

/// One complete echo session.
fn session(server: &Server, from: Option<&str>) -> String {
    let mut client = match from {
        Some(source) => Client::connect_from(source.parse().unwrap(), server.addr),
        None => server.connect(),
    };
    let _ = client.try_send(b"hello\nquit\n");
    // A refused client may be reset (it sent what nobody read).
    String::from_utf8(client.read_until_closed()).unwrap()
}

/// Traffic of every kind a rule counts, then a scrape: served sessions,
/// one refused by an access rule, one by the per-address limit, and the
/// workers by state — summed over every worker. (The per-address limits
/// count in each worker process: with one worker, the third client from
/// one address is over a limit of two.)
fn a_scrape_after_traffic_counts_it(personality: &str) {
    let mut server = Server::start(&[
        "--server-type",
        personality,
        "--workers",
        "1",
        "--min-servers",
        "3",
        "--max-servers",
        "3",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "3",
        "--metrics-port",
        "0",
        "--cidr-allow",
        "127.0.0.0/8",
        "--cidr-deny",
        "127.0.0.2/32",
        "--max-conn-per-ip",
        "2",
    ]);
    let metrics = endpoint(&mut server);
    for _ in 0..5 {
        assert_eq!(
            session(&server, None),
            "You said 'hello'\r\nYou said 'quit'\r\n"
        );
    }
    // Refused by `cidr_deny`: closed with nothing said.
    assert_eq!(session(&server, Some("127.0.0.2")), "");
    // Two held from 127.0.0.3: a third one from there is over its limit.
    // (Sessions one after the other stay under it: a session's place may
    // outlive what its client sees by a moment, never by a session.)
    let held: Vec<Client> = (0..2)
        .map(|i| {
            let mut client = Client::connect_from("127.0.0.3".parse().unwrap(), server.addr);
            client.send(format!("held{i}\n").as_bytes());
            assert_eq!(client.read_line(), format!("You said 'held{i}'\r\n"));
            client
        })
        .collect();
    let per_address = if personality == "multiplex" {
        assert_eq!(session(&server, Some("127.0.0.3")), "");
        1.0
    } else {
        // One connection per worker: the limit never bites.
        0.0
    };
    let echo =
        |series: &str, labels: &str| format!("netserver_{series}{{service=\"echo\"{labels}}}");
    until(&server, metrics, &echo("connections_open", ""), 2.0);
    until(
        &server,
        metrics,
        &echo("connections_refused_total", ",reason=\"per_address_limit\""),
        per_address,
    );
    assert_eq!(
        value(
            metrics,
            &echo("connections_refused_total", ",reason=\"access_rules\"")
        ),
        1.0
    );
    assert_eq!(
        value(metrics, &echo("connections_accepted_total", "")),
        8.0 + per_address
    );
    assert_eq!(
        value(
            metrics,
            &echo("connections_ended_total", ",reason=\"served\"")
        ),
        5.0
    );
    assert_eq!(
        value(
            metrics,
            &echo("connections_ended_total", ",reason=\"denied\"")
        ),
        1.0
    );
    // "hello\nquit\n" in, two answers out, per session.
    assert_eq!(
        value(metrics, &echo("received_bytes_total", "")),
        5.0 * 11.0
    );
    assert!(value(metrics, &echo("sent_bytes_total", "")) >= 5.0 * 35.0);
    assert!(value(metrics, &echo("instantiation_duration_seconds_count", "")) >= 5.0);
    assert_eq!(
        value(metrics, &echo("connection_duration_seconds_count", "")),
        6.0
    );
    let busy = value(metrics, "netserver_workers{state=\"busy\"}");
    let idle = value(metrics, "netserver_workers{state=\"idle\"}");
    assert!(
        busy >= 1.0,
        "{personality}: the held clients' workers are busy"
    );
    assert!(busy + idle >= 1.0);
    for mut client in held {
        client.send(b"quit\n");
        let _ = client.read_all();
    }
    until(&server, metrics, &echo("connections_open", ""), 0.0);
    // Summed over every worker (in a pool the held clients had one each).
    let served = echo("connections_ended_total", ",reason=\"served\"");
    until(&server, metrics, &served, 7.0);
}
per_personality!(a_scrape_after_traffic_counts_it: multiplex, prefork, fork);

/// Workers replaced after every client (`max_requests 1`): what they
/// counted is still in the sums.
#[test]
fn counts_survive_a_workers_replacement() {
    let mut server = Server::start(&[
        "--server-type",
        "prefork-simple",
        "--max-servers",
        "2",
        "--max-requests",
        "1",
        "--metrics-port",
        "0",
    ]);
    let metrics = endpoint(&mut server);
    for _ in 0..4 {
        assert_eq!(
            session(&server, None),
            "You said 'hello'\r\nYou said 'quit'\r\n"
        );
    }
    // Each worker served one and was replaced.
    server.wait_for_log_lines("ended (status 0)", 4);
    let served = "netserver_connections_ended_total{service=\"echo\",reason=\"served\"}";
    until(&server, metrics, served, 4.0);
    assert_eq!(
        value(
            metrics,
            "netserver_connections_accepted_total{service=\"echo\"}"
        ),
        4.0
    );
}

/// How connections of a hostile guest ended, each reason its own series.
#[test]
fn each_ending_has_its_reason() {
    let mut server = Server::start(&[
        "--module",
        guests::MISBEHAVE,
        "--metrics-port",
        "0",
        "--cpu-limit",
        "0.2",
        "--max-memory",
        "16M",
    ]);
    let metrics = endpoint(&mut server);
    for line in ["trap", "spin", "alloc", "exit", "err", "fine"] {
        let mut client = server.connect();
        client.send(format!("{line}\n").as_bytes());
        if line == "fine" {
            assert_eq!(client.read_line(), "ok fine\r\n");
            client.shutdown_write();
        }
        let _ = client.read_all();
    }
    let ended = |reason: &str| {
        format!("netserver_connections_ended_total{{service=\"misbehave\",reason=\"{reason}\"}}")
    };
    for reason in [
        "trap",
        "cpu_limit",
        "memory_limit",
        "exited",
        "handler_error",
        "served",
    ] {
        until(&server, metrics, &ended(reason), 1.0);
    }
}

/// The guest's own refusal (`allow-deny-hook`) is counted as one.
#[test]
fn allow_deny_hook_refusals_are_counted() {
    let mut server = Server::start(&[
        "--module",
        guests::MISBEHAVE,
        "--property",
        "allow_deny=refuse",
        "--metrics-port",
        "0",
    ]);
    let metrics = endpoint(&mut server);
    let _ = server.connect().read_all();
    until(
        &server,
        metrics,
        "netserver_connections_refused_total{service=\"misbehave\",reason=\"allow_deny_hook\"}",
        1.0,
    );
}

/// A HUP keeps the endpoint's socket (the same port, never closed) and
/// counts the restart; a path other than /metrics is told where to go.
#[test]
fn the_endpoint_survives_a_hup() {
    let mut server = Server::start(&["--metrics-port", "0"]);
    let metrics = endpoint(&mut server);
    assert_eq!(value(metrics, "netserver_restarts_total"), 0.0);
    let (status, body) = get(metrics, "/other");
    assert_eq!(status, "HTTP/1.1 404 Not Found");
    assert!(body.contains("/metrics"), "{body}");
    server.signal("HUP");
    server.wait_for_log("inherited across a restart");
    until(&server, metrics, "netserver_restarts_total", 1.0);
    assert_eq!(
        session(&server, None),
        "You said 'hello'\r\nYou said 'quit'\r\n"
    );
}

#[test]
fn bad_metrics_ports_are_refused() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = taken.local_addr().unwrap().to_string();
    let cases = [
        ("nonsense", "--metrics-port"),
        ("127.0.0.1:99999", "must be PORT or ADDRESS:PORT"),
        (taken.as_str(), "cannot bind"),
    ];
    for (value, want) in cases {
        let out = run(&["--port", "127.0.0.1:0", "--metrics-port", value]);
        assert_eq!(out.status.code(), Some(2), "{value}");
        let err = String::from_utf8_lossy(&out.stderr);
        let last = err.trim().lines().last().unwrap_or("");
        assert!(
            last.contains(want) && last.contains(value),
            "{value}: {err}"
        );
    }
}
