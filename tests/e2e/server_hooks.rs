//! The worker's hooks (`server-hooks`, WIT 0.1.4: `signal-hook`,
//! `server-close-hook`, `idle-hook`) and the server's counts
//! (`server.counts`), end to end: signals sent to the real server, counts
//! read by a real client.

use std::collections::BTreeMap;

use crate::util::{HOOKS_IN_ORDER, Server, guests, kill, per_personality};

/// Options that make each personality with a pool run exactly one worker.
const ONE_WORKER: [&str; 10] = [
    "--workers",
    "1",
    "--min-servers",
    "1",
    "--max-servers",
    "1",
    "--min-spare-servers",
    "0",
    "--max-spare-servers",
    "1",
];

/// Starts a server of `personality` with one worker, and `args`.
fn one_worker(personality: &str, args: &[&str]) -> Server {
    let all = [&["--server-type", personality], ONE_WORKER.as_slice(), args].concat();
    Server::start(&all)
}

/// What `server-info` says to a new client (`usr1=N usr2=M workers=W …`),
/// as numbers by name; the client then quits.
fn info(server: &Server) -> BTreeMap<String, u64> {
    let mut client = server.connect();
    let line = client.read_line();
    client.send(b"quit\n");
    let rest = client.read_all();
    assert_eq!(rest, "You said 'quit'\r\n", "after {line:?}");
    parse(&line)
}

/// `usr1=1 usr2=0 …\r\n` → {usr1: 1, usr2: 0, …}.
fn parse(line: &str) -> BTreeMap<String, u64> {
    let counts: BTreeMap<String, u64> = line
        .split_whitespace()
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| {
            (
                k.to_owned(),
                v.parse().unwrap_or_else(|_| panic!("{line:?}")),
            )
        })
        .collect();
    for key in [
        "usr1", "usr2", "workers", "busy", "open", "served", "pid", "idle",
    ] {
        assert!(counts.contains_key(key), "{key} missing in {line:?}");
    }
    counts
}

/// Waits until a new client of `server` sees `key` at `want`.
fn until(server: &Server, key: &str, want: u64) -> BTreeMap<String, u64> {
    server.eventually(&format!("{key}={want}"), || {
        let now = info(server);
        if now[key] == want {
            Ok(now)
        } else {
            Err(format!("{now:?}"))
        }
    })
}

/// One worker whose per-worker instance counts the USR1s and USR2s that
/// reach it: passed on by the master (`sig_passthrough`), or sent to the
/// worker itself.
fn signals_reach_the_per_worker_instance(personality: &str) {
    let mut server = one_worker(
        personality,
        &[
            "--module",
            guests::SERVER_INFO,
            "--instance",
            "per-worker",
            "--sig-passthrough",
            "USR1,USR2",
        ],
    );
    // The worker serves: its signals are caught from now on.
    let first = info(&server);
    assert_eq!((first["usr1"], first["usr2"]), (0, 0), "{first:?}");
    server.signal("USR1");
    until(&server, "usr1", 1);
    // Straight to the worker, past the master.
    let worker = u32::try_from(first["pid"]).unwrap();
    assert!(kill("USR1", worker));
    until(&server, "usr1", 2);
    server.signal("USR2");
    let last = until(&server, "usr2", 1);
    assert_eq!(last["usr1"], 2, "{last:?}");
    assert_eq!(last["pid"], first["pid"], "one worker, one instance");
    assert!(server.is_running());
    assert!(
        server.log().iter().all(|l| !l.contains("trapped")),
        "a signal hook failed"
    );
}
per_personality!(signals_reach_the_per_worker_instance: multiplex, prefork);

/// Net::Waiter's `get_busy_kids_count` and `get_kids_count`: with three
/// workers and one client held, the next client sees three workers, two of
/// them busy (its own and the held one's).
fn the_busy_worker_count_is_the_servers(personality: &str) {
    let server = Server::start(&[
        "--server-type",
        personality,
        "--max-servers",
        "3",
        "--module",
        guests::SERVER_INFO,
    ]);
    if personality != "fork" {
        // Every worker forked (each has its slot on the board).
        until(&server, "workers", 3);
    }
    let mut held = server.connect();
    let mine = parse(&held.read_line());
    // Its own worker is busy; one that served an earlier client may still
    // be finishing that client's last hook.
    assert_eq!(mine["open"], 1, "{mine:?}");
    assert!(mine["busy"] >= 1, "{mine:?}");
    // Once the earlier clients' workers are done: the held client's
    // worker and the asking client's.
    // (Under `fork` a child that served one counts until it is reaped.)
    let workers = if personality == "fork" { 2 } else { 3 };
    let next = server.eventually("busy=2 of the workers", || {
        let now = info(&server);
        if (now["busy"], now["workers"]) == (2, workers) {
            Ok(now)
        } else {
            Err(format!("{now:?}"))
        }
    });
    assert_eq!(next["open"], 1, "{next:?}");
    held.send(b"quit\n");
    assert_eq!(held.read_all(), "You said 'quit'\r\n");
}
per_personality!(the_busy_worker_count_is_the_servers: prefork_simple, fork);

/// A worker's own count of the clients it took (Net::Server's `requests`).
#[test]
fn served_counts_this_workers_clients() {
    let server = Server::start(&["--server-type", "single", "--module", guests::SERVER_INFO]);
    let served: Vec<u64> = (0..3).map(|_| info(&server)["served"]).collect();
    assert_eq!(served, [1, 2, 3]);
}

/// `idle-hook` runs on a one-connection-at-a-time worker's instance after
/// `check_for_idle` seconds without a client, and again while it idles.
#[test]
fn idle_hook_runs_between_clients() {
    let mut server = Server::start(&[
        "--server-type",
        "single",
        "--module",
        guests::SERVER_INFO,
        "--instance",
        "per-worker",
        "--check-for-idle",
        "0.1",
    ]);
    let first = info(&server);
    assert_eq!(first["idle"], 0, "{first:?}");
    let later = server.eventually("idle-hook to run twice", || {
        // Long enough without a client for the hook to run meanwhile.
        std::thread::sleep(std::time::Duration::from_millis(300));
        let now = info(&server);
        if now["idle"] >= 2 {
            Ok(now)
        } else {
            Err(format!("{now:?}"))
        }
    });
    assert_eq!(later["pid"], first["pid"]);
    assert!(server.is_running());
}

/// One hook-trace client that quits at once; it is told `bye`.
fn quit_session(server: &Server) {
    let mut client = server.connect();
    client.send(b"quit\n");
    assert!(client.read_all().ends_with("bye\r\n"));
}

/// The hooks hook-trace logged, in order (`hook NAME ARG`; a worker
/// hook's line has no client tag before it).
fn hooks_logged(server: &Server) -> Vec<String> {
    server
        .log()
        .iter()
        .filter_map(|l| l.split_once(" hook ").map(|(_, hook)| hook.to_owned()))
        .collect()
}

/// QUIT, TERM and HUP close the server: each per-worker instance's
/// `server-close-hook` runs with the reason, before its
/// `child-finish-hook` (QUIT, HUP).
fn server_close_hook_runs_as_the_server_closes(personality: &str) {
    for (signal, reason) in [("QUIT", "drain"), ("TERM", "stop"), ("HUP", "restart")] {
        let mut server = one_worker(
            personality,
            &["--module", guests::HOOK_TRACE, "--instance", "per-worker"],
        );
        quit_session(&server);
        server.wait_for_log("hook post-client-connection-hook");
        server.signal(signal);
        let line = format!("hook server-close-hook {reason}");
        server.wait_for_log(&line);
        if signal == "HUP" {
            // The new server serves; the old worker finishes.
            server.wait_for_log("hook child-finish-hook");
            server.signal("TERM");
        }
        if signal != "TERM" {
            server.wait_for_log("hook child-finish-hook");
        }
        let hooks = hooks_logged(&server);
        let close = hooks.iter().position(|h| *h == line[5..]);
        let finish = hooks.iter().position(|h| h == "child-finish-hook");
        assert!(close.is_some(), "{personality} {signal}: {hooks:?}");
        if let Some(finish) = finish {
            assert!(close < Some(finish), "{personality} {signal}: {hooks:?}");
        }
        assert_eq!(server.wait_exit(), Some(0), "{personality} {signal}");
    }
}
per_personality!(server_close_hook_runs_as_the_server_closes: multiplex, prefork, single);

/// A worker retired for `max_requests` is not the server closing: its
/// instance's `child-finish-hook` runs, its `server-close-hook` does not.
#[test]
fn a_retired_worker_runs_no_server_close_hook() {
    let mut server = Server::start(&[
        "--server-type",
        "prefork-simple",
        "--max-servers",
        "1",
        "--max-requests",
        "1",
        "--module",
        guests::HOOK_TRACE,
        "--instance",
        "per-worker",
    ]);
    quit_session(&server);
    server.wait_for_log("hook child-finish-hook");
    let hooks = hooks_logged(&server);
    assert!(
        hooks.iter().all(|h| !h.starts_with("server-close-hook")),
        "{hooks:?}"
    );
    // Its replacement serves.
    quit_session(&server);
}

/// The mux chat says goodbye to every client as the server closes (in its
/// `server-close-hook`) and closes them; the worker then ends without
/// waiting for `quit_timeout`.
#[test]
fn a_mux_handler_closes_its_clients_as_the_server_closes() {
    let mut server = Server::start(&[
        "--module",
        guests::CHAT,
        "--idle-timeout",
        "600",
        "--quit-timeout",
        "600",
        "--workers",
        "1",
    ]);
    let mut clients: Vec<_> = (0..3).map(|_| server.connect()).collect();
    for client in &mut clients {
        assert!(client.read_line().starts_with("Welcome"));
    }
    server.signal("QUIT");
    for client in &mut clients {
        let rest = client.read_all();
        assert!(rest.ends_with("*** server closing (drain)\r\n"), "{rest:?}");
    }
    assert_eq!(server.wait_exit(), Some(0));
}

/// A hook that traps ends the instance, logged; the worker serves on
/// with a fresh one.
#[test]
fn a_trap_in_signal_hook_ends_only_the_instance() {
    let mut server = Server::start(&[
        "--server-type",
        "prefork",
        "--min-servers",
        "1",
        "--max-servers",
        "1",
        "--min-spare-servers",
        "0",
        "--max-spare-servers",
        "1",
        "--module",
        guests::HOOK_TRACE,
        "--instance",
        "per-worker",
        "--property",
        "panic_in=signal-hook",
        "--sig-passthrough",
        "USR1",
    ]);
    quit_session(&server);
    server.signal("USR1");
    server.wait_for_log("guest trapped in signal-hook");
    quit_session(&server);
    // A fresh instance: child-init-hook ran again.
    server.wait_for_log_lines("hook child-init-hook", 2);
}

/// A handler built before 0.1.4 exports no worker hooks: a signal passed
/// to its worker changes nothing, and it serves on.
#[test]
fn a_handler_without_server_hooks_ignores_passed_signals() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/hook-trace-0.1.0.wasm"
    );
    let mut server = Server::start(&[
        "--module",
        fixture,
        "--instance",
        "per-worker",
        "--sig-passthrough",
        "USR1,USR2",
    ]);
    quit_session(&server);
    server.signal("USR1");
    server.signal("USR2");
    quit_session(&server);
    assert!(server.is_running());
    server.signal("QUIT");
    assert_eq!(server.wait_exit(), Some(0));
    let hooks = hooks_logged(&server);
    assert!(
        hooks.iter().all(|h| !h.contains("server-close")),
        "{hooks:?}"
    );
}

/// Every hook of a per-worker instance in order, the worker's included,
/// end to end in each personality with a pool of workers: a client, a
/// signal, a quiet spell (one-connection-at-a-time workers only), QUIT.
fn every_hook_in_order(personality: &str) {
    let mut server = one_worker(
        personality,
        &[
            "--module",
            guests::HOOK_TRACE,
            "--instance",
            "per-worker",
            "--sig-passthrough",
            "USR1",
            "--check-for-idle",
            "0.2",
        ],
    );
    quit_session(&server);
    server.wait_for_log("hook post-client-connection-hook");
    server.signal("USR1");
    server.wait_for_log("hook signal-hook USR1");
    let sequential = personality != "multiplex";
    if sequential {
        server.wait_for_log("hook idle-hook");
    }
    server.signal("QUIT");
    assert_eq!(server.wait_exit(), Some(0), "{personality}");
    let mut hooks = hooks_logged(&server);
    // However many quiet spells there were, they come as one.
    hooks.dedup();
    // A client's hooks, without the child-finish-hook that ends the list.
    let mut want = HOOKS_IN_ORDER[..HOOKS_IN_ORDER.len() - 1].to_vec();
    want.push("signal-hook USR1");
    if sequential {
        want.push("idle-hook");
    }
    want.extend(["server-close-hook drain", "child-finish-hook"]);
    assert_eq!(hooks, want, "{personality}");
}
per_personality!(every_hook_in_order: multiplex, single, prefork_simple, prefork);
