//! The built-in echo handler and handler hooks, seen by a client.

use crate::util::{HOOKS_IN_ORDER, Server, guests, per_personality};

#[test]
fn builtin_echo_answers_and_quit_closes() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.send(b"hello\r\nquit\r\n");
    assert_eq!(client.read_all(), "You said 'hello'\r\nYou said 'quit'\r\n");
}

/// Byte for byte, in the personality whose guest waits through the
/// runtime and in those whose guest sleeps in its client's socket: a line
/// that comes in two pieces, lines longer than one read, and the client's
/// end of file.
fn echo_is_byte_exact_over_many_lines(personality: &str) {
    let server = Server::start(&["--server-type", personality]);
    let mut client = server.connect();
    let long = "x".repeat(200_000);
    let lines = [
        "first",
        "",
        "  spaced  ",
        "tab\there",
        "ünïcödé",
        &long,
        "bare lf",
    ];
    let mut sent = String::new();
    let mut want = String::new();
    for (i, line) in lines.iter().enumerate() {
        let end = if i == lines.len() - 1 { "\n" } else { "\r\n" };
        sent.push_str(&format!("{line}{end}"));
        want.push_str(&format!("You said '{line}'\r\n"));
    }
    // The first line's start, then (once the guest is likely waiting for
    // the rest: a pause so the pieces arrive apart, not a timing
    // assertion) everything else.
    let (start, rest) = sent.as_bytes().split_at(3);
    client.send(start);
    std::thread::sleep(std::time::Duration::from_millis(50));
    client.send(rest);
    client.shutdown_write();
    assert_eq!(client.read_all(), want, "{personality}");
}
per_personality!(echo_is_byte_exact_over_many_lines: multiplex, prefork, fork);

#[test]
fn echo_stops_reading_after_quit() {
    let server = Server::start(&[]);
    let mut client = server.connect();
    client.send(b"one\nplease quit now\nnever answered\n");
    assert_eq!(
        client.read_all(),
        "You said 'one'\r\nYou said 'please quit now'\r\n"
    );
}

#[test]
fn clients_are_served_concurrently() {
    let server = Server::start(&[]);
    // Every client is connected and mid-conversation before any finishes.
    let mut clients: Vec<_> = (0..8).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        client.send(format!("client {i}\n").as_bytes());
        assert_eq!(client.read_line(), format!("You said 'client {i}'\r\n"));
    }
    for (i, client) in clients.iter_mut().enumerate().rev() {
        client.send(format!("again {i}\nquit\n").as_bytes());
        assert_eq!(
            client.read_all(),
            format!("You said 'again {i}'\r\nYou said 'quit'\r\n")
        );
    }
}

#[test]
fn echo_guest_file_is_served_with_module() {
    let server = Server::start(&["--module", guests::ECHO]);
    let mut client = server.connect();
    client.send(b"from a file\nquit\n");
    assert_eq!(
        client.read_all(),
        "You said 'from a file'\r\nYou said 'quit'\r\n"
    );
}

#[test]
fn ipv6_loopback_is_served() {
    let server = Server::start_on("[::1]:0", &[]);
    assert!(server.addr.is_ipv6());
    let mut client = server.connect();
    client.send(b"v6\nquit\n");
    assert_eq!(client.read_all(), "You said 'v6'\r\nYou said 'quit'\r\n");
}

#[test]
fn hooks_run_in_net_server_order_with_client_info() {
    let mut server = Server::start(&[
        "--module",
        guests::HOOK_TRACE,
        "--property",
        "greeting=hi there",
        "--service",
        "tracer",
    ]);
    let mut client = server.connect();
    let local = server.addr.port();
    client.send(b"ping\nquit\n");
    let reply = client.read_all();
    let peer_port = reply
        .split("peer=127.0.0.1:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("peer port in reply");
    assert_eq!(
        reply,
        format!(
            "peer=127.0.0.1:{peer_port} local=127.0.0.1:{local} proto=tcp service=tracer host=-\r\n\
             prop greeting=hi there\r\n\
             You said 'ping'\r\nYou said 'quit'\r\n\
             bye\r\n"
        )
    );
    server.wait_for_log("hook child-finish-hook");
    // A second client: a handler that implements every hook has each of
    // them called again (only hooks left at the SDK's default are skipped).
    let mut client = server.connect();
    client.send(b"quit\n");
    assert!(client.read_all().ends_with("bye\r\n"));
    server.wait_for_log_lines("hook child-finish-hook", 2);
    let order: Vec<String> = server
        .log()
        .iter()
        .filter_map(|l| l.split("hook ").nth(1).map(str::to_owned))
        .collect();
    let one = HOOKS_IN_ORDER;
    assert_eq!(order, [one, one].concat());
    let skipped: Vec<String> = server
        .log()
        .into_iter()
        .filter(|l| l.contains("does nothing"))
        .collect();
    assert!(skipped.is_empty(), "{skipped:?}");
    // Guest stderr and guest log lines are tagged with the service and peer.
    let stderr = server.wait_for_log("stderr from hook-trace");
    assert!(
        stderr.contains("service=tracer") && stderr.contains("peer=127.0.0.1:"),
        "{stderr}"
    );
}

#[test]
fn allow_deny_hook_refusal_runs_request_denied_hook() {
    let mut server = Server::start(&["--module", guests::HOOK_TRACE, "--property", "deny=yes"]);
    let mut client = server.connect();
    client.send(b"ping\n");
    let reply = client.read_all();
    assert!(reply.ends_with("denied\r\nbye\r\n"), "{reply:?}");
    assert!(!reply.contains("You said"), "{reply:?}");
    server.wait_for_log("denied by allow-deny-hook");
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.contains("hook process-request"))
    );
}

#[test]
fn hooks_left_at_the_sdk_default_are_called_once_then_skipped() {
    // The built-in echo implements post-accept-hook and process-request.
    let mut server = Server::start(&[]);
    for i in 0..3 {
        let mut client = server.connect();
        client.send(format!("round {i}\nquit\n").as_bytes());
        assert_eq!(
            client.read_all(),
            format!("You said 'round {i}'\r\nYou said 'quit'\r\n")
        );
    }
    server.wait_for_log_lines("connection ended", 3);
    let log = server.log();
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    for hook in [
        "child-init-hook",
        "allow-deny-hook",
        "post-process-request-hook",
        "child-finish-hook",
    ] {
        let line = format!("service echo: {hook} does nothing; it is no longer called");
        assert_eq!(count(&line), 1, "{hook}: {log:#?}");
    }
    for hook in ["post-accept-hook", "post-client-connection-hook"] {
        assert_eq!(count(&format!("{hook} does nothing")), 0, "{log:#?}");
    }
    // post-accept-hook, which echo implements, ran for every client.
    assert_eq!(count("echo serves 127.0.0.1:"), 3, "{log:#?}");
}
