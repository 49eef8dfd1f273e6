//! Hostile guests and clients end only their own connection.

use crate::util::{Server, guests, per_personality};

/// Sends `line` to a fresh client of the misbehave guest and reads until the
/// connection closes.
fn misbehave(server: &Server, line: &str) -> String {
    let mut client = server.connect();
    client.send(format!("{line}\n").as_bytes());
    client.read_all()
}

/// After a fault, the server still serves: a new client is answered.
fn still_serves(server: &mut Server) {
    assert!(server.is_running());
    let mut client = server.connect();
    client.send(b"hello\n");
    assert_eq!(client.read_line(), "ok hello\r\n");
}

#[test]
fn trap_ends_only_that_connection() {
    let mut server = Server::start(&["--module", guests::MISBEHAVE]);
    assert_eq!(misbehave(&server, "trap"), "");
    let line = server.wait_for_log("guest trapped in process-request");
    assert!(line.contains("unreachable"), "{line}");
    still_serves(&mut server);
}

#[test]
fn panic_is_logged_with_its_message() {
    let mut server = Server::start(&["--module", guests::MISBEHAVE]);
    assert_eq!(misbehave(&server, "panic"), "");
    server.wait_for_log("guest panicked on request");
    server.wait_for_log("guest trapped in process-request");
    still_serves(&mut server);
}

#[test]
fn memory_bomb_hits_the_cap() {
    let mut server = Server::start(&["--module", guests::MISBEHAVE, "--max-memory", "16M"]);
    assert_eq!(misbehave(&server, "alloc"), "");
    let line = server.wait_for_log("guest trapped in process-request");
    assert!(line.contains("memory"), "{line}");
    still_serves(&mut server);
}

#[test]
fn spinning_guest_is_stopped_and_does_not_stall_others() {
    let mut server = Server::start(&["--module", guests::MISBEHAVE, "--cpu-limit", "2"]);
    let mut spinner = server.connect();
    spinner.send(b"spin\n");
    // While it spins (on one of the two cores or more), others are served.
    for _ in 0..3 {
        still_serves(&mut server);
    }
    assert_eq!(spinner.read_all(), "");
    let line = server.wait_for_log("CPU limit exceeded");
    assert!(line.contains("process-request"), "{line}");
    still_serves(&mut server);
}

/// The personalities that serve one connection at a time run the guest on
/// their only runtime thread: the CPU limit must still stop a spinning
/// guest there (the epoch ticks from a thread of its own), and the process
/// then serves the next client.
fn spinning_guest_is_stopped_in_every_sequential_personality(server_type: &str) {
    let mut server = spin_server(server_type, &[]);
    assert_spin_is_stopped(&mut server, server_type);
}
per_personality!(spinning_guest_is_stopped_in_every_sequential_personality:
    single,
    fork,
    prefork_simple,
    prefork,
);

/// A server of the misbehave guest with a CPU limit of a second.
fn spin_server(server_type: &str, extra: &[&str]) -> Server {
    let args = ["--module", guests::MISBEHAVE, "--cpu-limit", "1"];
    Server::start(&[&args[..], &["--server-type", server_type], extra].concat())
}

/// A spinning guest is stopped at its CPU limit, and the server serves on.
fn assert_spin_is_stopped(server: &mut Server, server_type: &str) {
    assert_eq!(misbehave(server, "spin"), "", "{server_type}");
    let line = server.wait_for_log("CPU limit exceeded");
    assert!(line.contains("process-request"), "{server_type}: {line}");
    still_serves(server);
}

/// A process that was idle for a while, its epoch ticker asleep on the
/// CPU clock, still ticks as soon as a guest computes: the CPU limit stops
/// a spinning guest there, in a worker serving many connections and in one
/// serving one at a time.
fn spinning_guest_is_stopped_after_the_process_was_idle(server_type: &str) {
    let mut server = spin_server(server_type, &["--max-servers", "1"]);
    // Idle for a while first (what is tested, not a wait for something).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_spin_is_stopped(&mut server, server_type);
}
per_personality!(spinning_guest_is_stopped_after_the_process_was_idle: multiplex, prefork_simple);

#[test]
fn exit_and_error_are_logged() {
    let mut server = Server::start(&["--module", guests::MISBEHAVE]);
    assert_eq!(misbehave(&server, "exit"), "");
    // WASI 0.2 `exit` says only success or failure: any non-zero code is 1.
    server.wait_for_log("the guest exited with status 1");
    assert_eq!(misbehave(&server, "err"), "");
    server.wait_for_log("process-request failed: handler reported an error");
    still_serves(&mut server);
}

#[test]
fn guest_stderr_is_logged_per_line() {
    let mut server = Server::start(&["--module", guests::MISBEHAVE]);
    let mut client = server.connect();
    client.send(b"stderr\nhello\n");
    assert_eq!(client.read_line(), "ok hello\r\n");
    let line = server.wait_for_log("stderr: line 99");
    assert!(line.contains("peer=127.0.0.1:"), "{line}");
}

#[test]
fn a_guest_over_its_log_rate_has_lines_dropped_said_and_counted() {
    let mut server = Server::start(&[
        "--module",
        guests::MISBEHAVE,
        "--guest-log-rate",
        "10",
        "--metrics-port",
        "127.0.0.1:0",
    ]);
    let metrics = crate::metrics::endpoint(&mut server);
    let mut client = server.connect();
    // A hundred lines at once: the burst of ten is logged, the rest is
    // dropped (a line or two more may come back with time), and the
    // connection goes on.
    client.send(b"stderr\nhello\n");
    assert_eq!(client.read_line(), "ok hello\r\n");
    let warning = server.wait_for_log("guest log lines dropped");
    assert!(
        warning.contains("service misbehave")
            && warning.contains("guest_log_rate 10 lines a second"),
        "{warning}"
    );
    let logged = server.log_count("stderr: line ");
    assert!((10..=12).contains(&logged), "{logged} lines logged");
    crate::metrics::until(
        &server,
        metrics,
        r#"netserver_guest_log_lines_dropped_total{service="misbehave"}"#,
        (100 - logged) as f64,
    );
    client.send(b"still\n");
    assert_eq!(client.read_line(), "ok still\r\n");
}

#[test]
fn faults_over_the_fault_log_rate_are_counted_not_written() {
    let mut server = Server::start(&[
        "--module",
        guests::MISBEHAVE,
        "--fault-log-rate",
        "5",
        "--metrics-port",
        "127.0.0.1:0",
    ]);
    let metrics = crate::metrics::endpoint(&mut server);
    // Thirty connections that trap, one after the other, well within a
    // second: the burst of five is written, the rest said in one line.
    for _ in 0..30 {
        assert_eq!(misbehave(&server, "trap"), "");
    }
    let warning = server.wait_for_log("connection-end lines not written");
    assert!(
        warning.contains("service misbehave") && warning.contains("fault_log_rate 5 a second"),
        "{warning}"
    );
    // Every end is counted all the same.
    crate::metrics::until(
        &server,
        metrics,
        r#"netserver_connections_ended_total{service="misbehave",reason="trap"}"#,
        30.0,
    );
    let written = server.log_count("guest trapped in process-request");
    // Five at once, and a token back every 200 ms while they ran.
    assert!((5..=10).contains(&written), "{written} lines written");
    still_serves(&mut server);
}

// The idle-timeout tests run in the personality whose guests wait through
// the runtime (`multiplex`) and in those whose guests sleep in the client's
// socket (one connection per process: `prefork`, `fork`).

fn silent_client_is_closed_after_idle_timeout(personality: &str) {
    let mut server = Server::start(&["--server-type", personality, "--idle-timeout", "0.5"]);
    let mut silent = server.connect();
    // The server closes the connection; read_all returns at its end of file.
    assert_eq!(silent.read_all(), "", "{personality}");
    server.wait_for_log("idle timeout: no data for 0.5s");
    server.assert_echoes("still here", personality);
}
per_personality!(silent_client_is_closed_after_idle_timeout: multiplex, prefork, fork);

fn client_that_pauses_after_a_line_is_closed_after_idle_timeout(personality: &str) {
    let mut server = Server::start(&["--server-type", personality, "--idle-timeout", "0.5"]);
    let mut client = server.connect();
    client.send(b"one\n");
    assert_eq!(client.read_line(), "You said 'one'\r\n", "{personality}");
    assert_eq!(client.read_all(), "", "{personality}");
    server.wait_for_log("idle timeout: no data for 0.5s");
}
per_personality!(client_that_pauses_after_a_line_is_closed_after_idle_timeout:
    multiplex,
    prefork,
    fork,
);

#[test]
fn client_that_resets_mid_reply_is_harmless() {
    let mut server = Server::start(&[]);
    for _ in 0..20 {
        let mut client = server.connect();
        client.send(&b"x".repeat(100_000));
        client.send(b"\n");
        // Drop without reading: the server's write fails or the reset arrives.
    }
    let mut client = server.connect();
    client.send(b"after resets\nquit\n");
    assert_eq!(
        client.read_all(),
        "You said 'after resets'\r\nYou said 'quit'\r\n"
    );
    assert!(server.is_running());
}

#[test]
fn command_guest_sees_client_addresses_and_panic_ends_only_its_client() {
    let mut server = Server::start(&["--module", guests::COMMAND_ENV]);
    let mut first = server.connect();
    let local_port = server.addr.port();
    let greeting = first.read_line();
    let peer_port = greeting
        .split("TCPREMOTEPORT=")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_owned();
    assert_eq!(
        greeting,
        format!(
            "TCPREMOTEIP=127.0.0.1 TCPREMOTEPORT={peer_port} TCPLOCALIP=127.0.0.1 \
             TCPLOCALPORT={local_port} PROTO=TCP\r\n"
        )
    );
    first.send(b"hi\npanic\n");
    assert_eq!(first.read_all(), "echo: hi\r\n");
    server.wait_for_log("command guest panicked");
    server.wait_for_log("guest trapped in process-request");
    let mut second = server.connect();
    second.read_line();
    second.send(b"next\nquit\n");
    assert_eq!(second.read_all(), "echo: next\r\n");
}

#[test]
fn without_room_for_the_pool_instances_are_allocated_on_demand() {
    // 16 GiB of address space cannot hold the pool for 1000 instances (each
    // reserves its memory's 4 GiB), but holds a few instances made on demand.
    let mut server = Server::start_through_shell("ulimit -v 16777216; exec \"$0\" \"$@\"", &[]);
    server.wait_for_log("pooling allocator unavailable");
    let mut client = server.connect();
    client.send(b"on demand\nquit\n");
    assert_eq!(
        client.read_all(),
        "You said 'on demand'\r\nYou said 'quit'\r\n"
    );
}

fn client_that_never_reads_is_closed_after_idle_timeout(personality: &str) {
    let mut server = Server::start(&["--server-type", personality, "--idle-timeout", "0.5"]);
    let mut hog = server.connect();
    // Replies pile up until both socket buffers are full and the guest's
    // write waits; then nothing moves and the idle timeout ends it.
    let line = [b"y".repeat(1000), b"\n".to_vec()].concat();
    let writer = std::thread::spawn(move || {
        for _ in 0..20_000 {
            if hog.try_send(&line).is_err() {
                return true;
            }
        }
        false
    });
    server.wait_for_log("idle timeout: no data for 0.5s");
    server.assert_echoes("meanwhile", personality);
    // The hog's connection was closed under it.
    assert!(
        writer.join().unwrap(),
        "{personality}: the server never closed the hog's connection"
    );
}
per_personality!(client_that_never_reads_is_closed_after_idle_timeout: multiplex, prefork, fork);
