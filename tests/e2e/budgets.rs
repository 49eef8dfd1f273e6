//! Memory budgets (`memory_budget`, `worker_memory`) and the limits of a
//! tenant's connections (`max_bytes_written`, `max_connections`): each
//! ends only the offending connection, with the reason in the log and on
//! the metrics, while the neighbours keep being served.

use std::net::SocketAddr;

use crate::metrics::{endpoint, until};
use crate::util::{Client, Server, children, conf, guests, per_personality};

const MIB: u64 = 1 << 20;

/// What a worker's resident memory may grow by beyond the memory budget
/// its guests hold (see docs/sandbox.md): the host's own memory for a few
/// connections, the pool's slots kept warm, allocator slack.
const OVERHEAD: u64 = 16 * MIB;

/// The worker of a server with one: the master's only child.
fn worker(server: &Server) -> u32 {
    server.eventually("the one worker", || {
        let workers = children(server.pid());
        (workers.len() == 1).then(|| workers[0])
    })
}

/// The resident memory of process `pid`, in bytes (`VmRSS`).
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"));
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// One line from `client`, or what came before the connection ended (a
/// reset included).
fn line_or_end(client: &mut Client) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match client.try_read(&mut byte) {
            Ok(1) => line.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8(line).unwrap()
}

/// A client of the misbehave guest at `addr` that asked it to hold `mib`
/// MiB more, and its answer: `held T`, or empty when the connection
/// ended instead.
fn hold(addr: SocketAddr, mib: u64) -> (Client, String) {
    let mut client = Client::connect(addr);
    client.send(format!("hold {mib}\n").as_bytes());
    let answer = line_or_end(&mut client);
    (client, answer.trim_end().to_owned())
}

/// A client of the echo at `addr` says hello and quits.
fn echoes(addr: SocketAddr) {
    let mut client = Client::connect(addr);
    client.send(b"hello\nquit\n");
    assert_eq!(client.read_all(), "You said 'hello'\r\nYou said 'quit'\r\n");
}

/// Waits until a new client of `addr` can hold `mib` MiB (the memory of
/// connections that ended has been given back); returns it.
fn holds_again(server: &Server, addr: SocketAddr, mib: u64) -> Client {
    server.eventually(&format!("a client holding {mib} MiB"), || {
        let (client, answer) = hold(addr, mib);
        if answer == format!("held {mib}") {
            Ok(client)
        } else {
            Err(format!("answer {answer:?}"))
        }
    })
}

/// The series of `metric` for service `service` and reason `reason`.
fn series(metric: &str, service: &str, reason: &str) -> String {
    format!("netserver_connections_{metric}_total{{service=\"{service}\",reason=\"{reason}\"}}")
}

/// Clients of `addr` that each ask to hold `mib` MiB, one after the
/// other: `n` of them; how many were answered (the others' connections
/// ended), and the clients, still open.
fn hold_many(addr: SocketAddr, n: usize, mib: u64) -> (usize, Vec<Client>) {
    let want = format!("held {mib}");
    let answers: Vec<(Client, String)> = (0..n).map(|_| hold(addr, mib)).collect();
    let held = answers.iter().filter(|(_, answer)| *answer == want).count();
    (
        held,
        answers.into_iter().map(|(client, _)| client).collect(),
    )
}

/// A tenant that asks for more memory than its budget: of six connections
/// that each hold 10 MiB, two fit a budget of 28M; the others trap at the
/// budget (named in the log, not `max_memory`) and end alone, while the
/// echo beside them answers. The worker's resident memory grows by no
/// more than the budget and the host's overhead (without the budget it
/// would grow by 60 MiB and more); once the tenant's connections end, it
/// is served again.
#[test]
fn a_tenant_past_its_memory_budget_ends_while_its_neighbour_answers() {
    let toml = conf(
        "budgets-service-budget.toml",
        &format!(
            r#"
host = "127.0.0.1"
metrics_port = 0

[[service]]
name = "hog"
module = "{misbehave}"
port = 0
memory_budget = "28M"

[[service]]
name = "echo"
module = "{echo}"
port = 0
"#,
            misbehave = guests::MISBEHAVE,
            echo = guests::ECHO,
        ),
    );
    let mut server = Server::start_args(&["--conf-file", &toml]);
    let (hog, echo) = (server.service_addr("hog"), server.service_addr("echo"));
    let metrics = endpoint(&mut server);
    let worker = worker(&server);
    // Each service served once, then the worker's memory at rest.
    let (first, answer) = hold(hog, 0);
    assert_eq!(answer, "held 0");
    drop(first);
    echoes(echo);
    let at_rest = rss(worker);

    let (held, clients) = hold_many(hog, 6, 10);
    assert_eq!(held, 2, "two connections' memory fits the budget");
    let line = server.wait_for_log_all(&[
        "guest trapped in process-request: memory_budget exceeded",
        "service hog may hold 28.0 MiB",
    ]);
    assert!(
        !line.contains("forcing trap"),
        "not max_memory's trap: {line}"
    );
    // Said once as a warning too, for the operator.
    server.wait_for_log_all(&[
        "service hog may hold 28.0 MiB",
        "until memory is given back",
    ]);
    until(
        &server,
        metrics,
        &series("ended", "hog", "memory_budget"),
        4.0,
    );
    // The neighbour is served as before.
    echoes(echo);
    let now = rss(worker);
    assert!(
        now <= at_rest + 28 * MIB + OVERHEAD,
        "the worker holds {} MiB, {} MiB at rest",
        now / MIB,
        at_rest / MIB
    );

    // The budget is given back as the tenant's connections end.
    drop(clients);
    let _again = holds_again(&server, hog, 10);
    echoes(echo);
}

/// A tenant whose instance's first memory does not fit its budget at all
/// is refused before its guest runs: one line says which budget and how
/// full, and the refusal is counted as one.
#[test]
fn a_connection_whose_instance_does_not_fit_is_refused() {
    let toml = conf(
        "budgets-refused.toml",
        &format!(
            r#"
host = "127.0.0.1"
metrics_port = 0

[[service]]
name = "tiny"
module = "{misbehave}"
port = 0
memory_budget = "512K"

[[service]]
name = "echo"
module = "{echo}"
port = 0
"#,
            misbehave = guests::MISBEHAVE,
            echo = guests::ECHO,
        ),
    );
    let mut server = Server::start_args(&["--conf-file", &toml]);
    let (tiny, echo) = (server.service_addr("tiny"), server.service_addr("echo"));
    let metrics = endpoint(&mut server);
    let mut client = Client::connect(tiny);
    client.send(b"hello\n");
    assert_eq!(client.read_until_closed(), b"");
    let line =
        server.wait_for_log("refused: memory_budget exceeded: service tiny may hold 0.5 MiB");
    assert!(
        line.contains("and holds 0.0 MiB in 1 instance(s)"),
        "{line}"
    );
    until(
        &server,
        metrics,
        &series("refused", "tiny", "memory_budget"),
        1.0,
    );
    until(
        &server,
        metrics,
        &series("ended", "tiny", "memory_budget"),
        1.0,
    );
    echoes(echo);
}

/// The worker's ceiling holds across its services: two tenants with
/// budgets larger than the worker's `worker_memory` of 28M hold 10 MiB
/// each; further connections, of either, trap at the worker's ceiling;
/// when one tenant's connection ends, the other may take its room.
#[test]
fn the_worker_ceiling_bounds_every_service_of_a_worker() {
    let toml = conf(
        "budgets-worker-ceiling.toml",
        &format!(
            r#"
host = "127.0.0.1"
worker_memory = "28M"
memory_budget = "1G"

[[service]]
name = "a"
module = "{misbehave}"
port = 0

[[service]]
name = "b"
module = "{misbehave}"
port = 0
"#,
            misbehave = guests::MISBEHAVE,
        ),
    );
    let mut server = Server::start_args(&["--conf-file", &toml]);
    let (a, b) = (server.service_addr("a"), server.service_addr("b"));
    let worker = worker(&server);
    let (first, answer) = hold(a, 0);
    assert_eq!(answer, "held 0");
    drop(first);
    let at_rest = rss(worker);
    let (_a, answer) = hold(a, 10);
    assert_eq!(answer, "held 10");
    let (b_client, answer) = hold(b, 10);
    assert_eq!(answer, "held 10");
    let (held_a, _more_a) = hold_many(a, 2, 10);
    let (held_b, _more_b) = hold_many(b, 2, 10);
    assert_eq!((held_a, held_b), (0, 0), "the worker is full");
    server.wait_for_log_all(&[
        "worker_memory exceeded: this worker's instances may hold 28.0 MiB of linear memory, and hold",
        "by service a",
    ]);
    server.wait_for_log_all(&["worker_memory exceeded", "by service b"]);
    let now = rss(worker);
    assert!(
        now <= at_rest + 28 * MIB + OVERHEAD,
        "the worker holds {} MiB, {} MiB at rest",
        now / MIB,
        at_rest / MIB
    );
    drop(b_client);
    let _again = holds_again(&server, a, 10);
}

/// A server of `personality` with `option` (flag and value) serving
/// `misbehave.wasm`, its metrics endpoint, and a client that asked it to
/// flood.
fn flooding(personality: &str, option: [&str; 2]) -> (Server, SocketAddr, Client) {
    let mut server = Server::start(&[
        "--server-type",
        personality,
        "--module",
        guests::MISBEHAVE,
        option[0],
        option[1],
        "--metrics-port",
        "0",
    ]);
    let metrics = endpoint(&mut server);
    let mut client = server.connect();
    client.send(b"flood\n");
    (server, metrics, client)
}

/// The flooding connection ended as `line` says, counted as `reason`,
/// and the next client of `server` (of `personality`) is served.
fn ended_and_next_served(
    server: &mut Server,
    metrics: SocketAddr,
    line: &str,
    reason: &str,
    personality: &str,
) {
    server.wait_for_log(line);
    until(server, metrics, &series("ended", "misbehave", reason), 1.0);
    let mut next = server.connect();
    next.send(b"hello\n");
    assert_eq!(next.read_line(), "ok hello\r\n", "{personality}");
}

/// A guest that writes forever (ignoring that its writes fail) is cut off
/// at `max_bytes_written`: the client gets no more than that, the log
/// says why, and the next client is served.
fn a_connection_is_cut_off_at_max_bytes_written(personality: &str) {
    let (mut server, metrics, mut client) = flooding(personality, ["--max-bytes-written", "100K"]);
    let got = client.read_until_closed();
    assert!(
        !got.is_empty() && got.len() <= 100 << 10,
        "{personality}: {} bytes",
        got.len()
    );
    assert!(got.iter().all(|&b| b == b'x'), "{personality}");
    ended_and_next_served(
        &mut server,
        metrics,
        "cut off: the handler wrote 102400 bytes, its max_bytes_written",
        "max_bytes_written",
        personality,
    );
}
per_personality!(a_connection_is_cut_off_at_max_bytes_written: multiplex, prefork);

/// A guest that ignores its writes failing once its client has gone, and
/// keeps writing, is ended at its `WRITES_AFTER_FAILURE`th refused write
/// (it would otherwise compute until its `cpu_limit`, for no one), with
/// the reason in its log line; the next client is served.
fn a_guest_writing_to_a_client_that_left_is_ended(personality: &str) {
    let (mut server, metrics, mut client) = flooding(personality, ["--cpu-limit", "600"]);
    let mut some = [0u8; 4096];
    let n = client.try_read(&mut some).expect("the flood's first bytes");
    assert!(
        n > 0 && some[..n].iter().all(|&b| b == b'x'),
        "{personality}"
    );
    // Gone, with the flood unread: the server's next writes fail.
    drop(client);
    ended_and_next_served(
        &mut server,
        metrics,
        "the client went away; the handler kept writing to a client that had gone (1024 writes refused)",
        "client_gone",
        personality,
    );
}
per_personality!(a_guest_writing_to_a_client_that_left_is_ended: multiplex, prefork);

/// A datagram's reply counts too: a guest flooding its reply is cut off
/// at the limit (no more than it reaches the sender), and the next
/// datagram is served.
#[test]
fn a_datagram_reply_is_cut_off_at_max_bytes_written() {
    let mut server = Server::start(&[
        "--port",
        "127.0.0.1:0/udp",
        "--module",
        guests::MISBEHAVE,
        "--max-bytes-written",
        "10K",
        "--udp-amplification",
        "0",
    ]);
    let addr = server.bound_of("UDP", 1)[0];
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(addr).unwrap();
    socket.send(b"flood\n").unwrap();
    server.wait_for_log("cut off: the handler wrote 10240 bytes, its max_bytes_written");
    // What came of the reply, read until none more comes for a while.
    socket
        .set_read_timeout(Some(std::time::Duration::from_millis(500)))
        .unwrap();
    let mut buf = vec![0u8; 70_000];
    let mut got = 0;
    while let Ok(n) = socket.recv(&mut buf) {
        got += n;
    }
    assert!(got <= 10 << 10, "{got} bytes");
    socket
        .set_read_timeout(Some(crate::util::PATIENCE))
        .unwrap();
    socket.send(b"hello\n").unwrap();
    let n = socket.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ok hello\r\n");
}

/// In the mux world the limit is each connection's: the flooding one is
/// cut off, the instance and its other connections go on.
#[test]
fn a_mux_connection_is_cut_off_at_max_bytes_written() {
    let mut server = Server::start(&[
        "--module",
        guests::MUX_PROBE,
        "--max-bytes-written",
        "100K",
        "--mux-write-cap",
        "4M",
    ]);
    let mut other = server.connect();
    assert_eq!(other.read_line(), "HELLO 1\r\n");
    let mut flooding = server.connect();
    assert_eq!(flooding.read_line(), "HELLO 2\r\n");
    flooding.send(b"/flood 1000000\n");
    let got = flooding.read_until_closed();
    assert!(got.len() + 9 <= 100 << 10, "{} bytes", got.len());
    server.wait_for_log("cut off: the handler wrote 102400 bytes, its max_bytes_written");
    other.send(b"still\n");
    assert_eq!(other.read_line(), "ECHO still\r\n");
    let mut next = server.connect();
    assert_eq!(next.read_line(), "HELLO 3\r\n", "the same instance");
}

/// A mux instance is one instance of its service: its memory counts
/// against the service's budget, and growing past it ends the instance
/// (and the connections it held) with the budget's reason.
#[test]
fn a_mux_instance_counts_against_its_service_budget() {
    let mut server = Server::start(&["--module", guests::MUX_PROBE, "--memory-budget", "16M"]);
    let mut client = server.connect();
    assert_eq!(client.read_line(), "HELLO 1\r\n");
    client.send(b"/alloc 4\n");
    assert_eq!(client.read_line(), "ALLOCATED 4\r\n");
    client.send(b"/alloc 32\n");
    assert_eq!(client.read_until_closed(), b"");
    server.wait_for_log_all(&[
        "the mux instance trapped in mux-input",
        "memory_budget exceeded",
    ]);
    // A fresh instance, its memory counted from nothing again.
    let mut next = server.connect();
    assert_eq!(next.read_line(), "HELLO 1\r\n");
    next.send(b"/alloc 4\n");
    assert_eq!(next.read_line(), "ALLOCATED 4\r\n");
}

/// A worker's shared instance (`instance per-worker`) counts against its
/// service's budget for as long as it lives, its clients' allocations
/// adding up; past the budget it traps and is dropped, its memory given
/// back, and the next client gets a fresh one.
#[test]
fn a_per_worker_instance_counts_against_its_service_budget() {
    let mut server = Server::start(&[
        "--module",
        guests::MISBEHAVE,
        "--instance",
        "per-worker",
        "--memory-budget",
        "16M",
    ]);
    let turn = |server: &Server, mib: u64| {
        let mut client = server.connect();
        client.send(format!("hold {mib}\n").as_bytes());
        client.shutdown_write();
        String::from_utf8(client.read_until_closed()).unwrap()
    };
    assert_eq!(turn(&server, 4), "held 4\r\n");
    assert_eq!(turn(&server, 4), "held 8\r\n", "the same instance");
    assert_eq!(turn(&server, 10), "", "past the budget");
    server.wait_for_log_all(&["guest trapped in process-request", "memory_budget exceeded"]);
    assert_eq!(turn(&server, 4), "held 4\r\n", "a fresh instance");
}

/// `max_connections` counts a service's connections across all its worker
/// processes: with 3 open — each served by its own process under
/// `prefork`, by either of two workers under `multiplex` — the fourth is
/// closed at once with the reason in the log; when one ends, a new client
/// is served.
fn max_connections_counts_across_workers(personality: &str, extra: &[&str]) {
    let mut server = Server::start(
        &[
            &[
                "--server-type",
                personality,
                "--max-connections",
                "3",
                "--metrics-port",
                "0",
            ],
            extra,
        ]
        .concat(),
    );
    let metrics = endpoint(&mut server);
    let mut open: Vec<Client> = (0..3)
        .map(|i| {
            let mut client = server.connect();
            client.send(format!("hi {i}\n").as_bytes());
            assert_eq!(client.read_line(), format!("You said 'hi {i}'\r\n"));
            client
        })
        .collect();
    let mut fourth = server.connect();
    assert_eq!(fourth.read_until_closed(), b"", "{personality}");
    server.wait_for_log("3 connections are open across the workers (max_connections 3)");
    server.wait_for_log("service echo: 3 connections open across the workers, its max_connections");
    until(
        &server,
        metrics,
        &series("refused", "echo", "max_connections"),
        1.0,
    );
    // One ends: its place is free again, in whichever worker.
    let mut gone = open.remove(0);
    gone.send(b"quit\n");
    assert_eq!(gone.read_all(), "You said 'quit'\r\n");
    server.eventually("a client served again", || {
        let mut client = server.connect();
        let _ = client.try_send(b"again\nquit\n");
        let got = String::from_utf8(client.read_until_closed()).unwrap();
        got == "You said 'again'\r\nYou said 'quit'\r\n"
    });
}
per_personality!(max_connections_counts_across_workers:
    prefork(&[][..]),
    two_workers as multiplex(&["--workers", "2"][..]),
);

/// Under `inetd` no board is shared: each process serves one connection,
/// and a `max_connections` given is said not to apply.
#[test]
fn max_connections_is_said_not_to_apply_to_inetd() {
    let out = crate::util::run(&[
        "--check",
        "--server-type",
        "inetd",
        "--max-connections",
        "3",
    ]);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("service echo: max_connections counts across the worker processes; with server_type inetd each process serves one connection, so it does not apply"),
        "{stderr}"
    );
}
