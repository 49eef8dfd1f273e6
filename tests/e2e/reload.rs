//! `watch_module`: a service's module replaced while the server runs —
//! new connections get the new module, open ones finish on the old, the
//! other services and the workers carry on, and a module that cannot be
//! served leaves the old one serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::util::{Client, Server, children, conf, fresh_dir, guests, run};

/// Replaces `path` with `bytes` as a deployment does: written beside it,
/// then renamed over it.
fn deploy(path: &Path, bytes: &[u8]) {
    let next = path.with_extension("next");
    std::fs::write(&next, bytes).unwrap();
    std::fs::rename(&next, path).unwrap();
}

/// A server with two services: `swapped` serves a copy of the echo guest
/// that it watches, `other` the misbehave guest.
fn two_services(name: &str, extra: &str) -> (Server, PathBuf) {
    let dir = fresh_dir("reload", name);
    let module = dir.join("swapped.wasm");
    std::fs::copy(guests::ECHO, &module).unwrap();
    let toml = conf(
        &format!("reload-{name}.toml"),
        &format!(
            r#"
host = "127.0.0.1"
{extra}

[[service]]
name = "swapped"
module = "{module}"
port = 0
watch_module = 1

[[service]]
name = "other"
module = "{misbehave}"
port = 0
"#,
            module = module.display(),
            misbehave = guests::MISBEHAVE,
        ),
    );
    (Server::start_args(&["--conf-file", &toml]), module)
}

/// One line's answer on a new connection to `addr`.
fn answer(addr: std::net::SocketAddr, line: &str) -> String {
    let mut client = Client::connect(addr);
    client.send(format!("{line}\n").as_bytes());
    client.read_line()
}

#[test]
fn a_watched_module_is_replaced_for_new_connections_only() {
    let (mut server, module) = two_services("replaced", "");
    let swapped = server.service_addr("swapped");
    let other = server.service_addr("other");

    // Open connections of both services, before the swap.
    let mut old = Client::connect(swapped);
    old.send(b"before\n");
    assert_eq!(old.read_line(), "You said 'before'\r\n");
    let workers = children(server.pid());
    let mut neighbour = Client::connect(other);
    neighbour.send(b"before\n");
    assert_eq!(neighbour.read_line(), "ok before\r\n");

    deploy(&module, &std::fs::read(guests::MISBEHAVE).unwrap());
    server.wait_for_log("service swapped: ");
    server.wait_for_log("changed: new connections get the new module");
    server.eventually(
        "a new connection served by the new module",
        || match answer(swapped, "after").as_str() {
            "ok after\r\n" => Ok(()),
            other => Err(other.to_owned()),
        },
    );

    // The open connections go on as they were.
    old.send(b"still\n");
    assert_eq!(old.read_line(), "You said 'still'\r\n");
    neighbour.send(b"still\n");
    assert_eq!(neighbour.read_line(), "ok still\r\n");
    // No worker was restarted.
    assert_eq!(children(server.pid()), workers);
}

#[test]
fn a_module_that_cannot_be_served_leaves_the_old_one_serving() {
    let (mut server, module) = two_services("broken", "");
    let swapped = server.service_addr("swapped");
    deploy(&module, b"this is not wasm");
    let line = server.wait_for_log("changed, but cannot be served");
    assert!(line.contains("the module served stays"), "{line}");
    assert_eq!(answer(swapped, "hi"), "You said 'hi'\r\n");
    // A good module later is served.
    deploy(&module, &std::fs::read(guests::MISBEHAVE).unwrap());
    server.wait_for_log("changed: new connections get the new module");
    server.eventually("the good module served", || {
        match answer(swapped, "hi").as_str() {
            "ok hi\r\n" => Ok(()),
            other => Err(other.to_owned()),
        }
    });
}

#[test]
fn a_swap_under_load_refuses_no_connection_of_either_service() {
    for personality in ["multiplex", "prefork"] {
        let (mut server, module) = two_services(
            &format!("load-{personality}"),
            &format!("server_type = \"{personality}\""),
        );
        let swapped = server.service_addr("swapped");
        let other = server.service_addr("other");
        let swapping = Arc::new(AtomicBool::new(true));
        // Clients of both services, one session after another, until the
        // swap is done and seen (at most 2,000 sessions each).
        let load = |addr: std::net::SocketAddr, answers: [&'static str; 2]| {
            let swapping = swapping.clone();
            std::thread::spawn(move || {
                let mut sessions = 0;
                let mut saw_new = false;
                while sessions < 2000 && (swapping.load(Ordering::Relaxed) || !saw_new) {
                    let got = answer(addr, "x");
                    assert!(
                        answers.contains(&got.as_str()),
                        "session {sessions}: {got:?}"
                    );
                    saw_new |= got == answers[1];
                    sessions += 1;
                }
                sessions
            })
        };
        let swapped_load = load(swapped, ["You said 'x'\r\n", "ok x\r\n"]);
        let other_load = load(other, ["ok x\r\n", "ok x\r\n"]);
        std::thread::sleep(std::time::Duration::from_millis(300));
        deploy(&module, &std::fs::read(guests::MISBEHAVE).unwrap());
        server.wait_for_log("changed: new connections get the new module");
        std::thread::sleep(std::time::Duration::from_millis(500));
        swapping.store(false, Ordering::Relaxed);
        let (a, b) = (swapped_load.join().unwrap(), other_load.join().unwrap());
        assert!(a > 0 && b > 0, "{personality}: {a} and {b} sessions");
        assert_eq!(
            answer(swapped, "y"),
            "ok y\r\n",
            "{personality}: the new module is served"
        );
    }
}

#[test]
fn a_mux_handler_is_not_watched() {
    let out = run(&[
        "--module",
        guests::CHAT,
        "--port",
        "127.0.0.1:0",
        "--watch-module",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--watch_module 1") && err.contains("replaced by a restart (HUP)"),
        "{err}"
    );
}
