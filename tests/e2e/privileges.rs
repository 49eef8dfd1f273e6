//! Dropping root after binding, for real (as root; as another user these
//! tests are skipped): the process serving clients runs as nobody, chroot
//! takes effect, and root is kept only when asked for.

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, Ordering};

use crate::util::{Server, per_personality, require_root, run};

pub const NOBODY: u32 = 65534;

/// Real, effective, saved and filesystem uids and gids, and the
/// supplementary groups, of process `pid` (from /proc).
pub fn ids(pid: u32) -> (Vec<u32>, Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_default()
            .split_whitespace()
            .map(|n| n.parse().unwrap())
            .collect()
    };
    (field("Uid:"), field("Gid:"), field("Groups:"))
}

/// The pid of the worker the log says started.
fn worker(server: &mut Server) -> u32 {
    let line = server.wait_for_log("worker ");
    line.split("worker ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no worker pid in {line}"))
}

fn nogroup() -> u32 {
    nix::unistd::Group::from_name("nogroup")
        .unwrap()
        .map_or(NOBODY, |g| g.gid.as_raw())
}

/// A free port below 1024 on 127.0.0.1, never the same twice in this
/// process (the tests that ask run in parallel).
fn low_port() -> u16 {
    static NEXT: AtomicU16 = AtomicU16::new(900);
    std::iter::from_fn(|| Some(NEXT.fetch_add(1, Ordering::SeqCst)))
        .take_while(|p| *p < 1000)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free port below 1024")
}

fn echo_works(server: &Server) {
    let mut client = server.connect();
    client.send(b"hi\nquit\n");
    assert_eq!(client.read_all(), "You said 'hi'\r\nYou said 'quit'\r\n");
}

fn root_on_a_low_port_serves_as_nobody(server_type: &str) {
    if !require_root() {
        return;
    }
    let port = low_port();
    let mut server = Server::start_on(
        &format!("127.0.0.1:{port}"),
        &["--server-type", server_type],
    );
    assert_eq!(server.addr.port(), port);
    echo_works(&server);
    let gid = nogroup();
    let all = |id: u32| vec![id; 4];
    // The master dropped root too (it binds nothing after the start).
    assert_eq!(
        ids(server.pid()),
        (all(NOBODY), all(gid), vec![gid]),
        "{server_type} master"
    );
    if server_type != "fork" {
        let pid = worker(&mut server);
        assert_eq!(
            ids(pid),
            (all(NOBODY), all(gid), vec![gid]),
            "{server_type} worker"
        );
    }
    let log = server.log().join("\n");
    assert!(
        log.contains(&format!("Setting uid to \"{NOBODY}\"")),
        "{log}"
    );
}
per_personality!(root_on_a_low_port_serves_as_nobody: multiplex, prefork, fork);

#[test]
fn a_fork_child_serving_a_client_runs_as_nobody() {
    if !require_root() {
        return;
    }
    let mut server = Server::start(&["--server-type", "fork"]);
    let mut client = server.connect();
    // While the child holds the connection, read its ids.
    client.send(b"hi\n");
    assert_eq!(client.read_line(), "You said 'hi'\r\n");
    let line = server.wait_for_log("child ");
    let pid: u32 = line
        .split("child ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("child pid");
    let (uids, gids, _) = ids(pid);
    assert_eq!(uids, vec![NOBODY; 4]);
    assert_eq!(gids, vec![nogroup(); 4]);
}

#[test]
fn user_and_group_are_taken_as_configured() {
    if !require_root() {
        return;
    }
    let mut server = Server::start(&["--user", "daemon", "--group", "daemon"]);
    echo_works(&server);
    let daemon = nix::unistd::User::from_name("daemon").unwrap().unwrap();
    let group = nix::unistd::Group::from_name("daemon").unwrap().unwrap();
    let pid = worker(&mut server);
    let (uids, gids, groups) = ids(pid);
    assert_eq!(uids, vec![daemon.uid.as_raw(); 4]);
    assert_eq!(gids, vec![group.gid.as_raw(); 4]);
    assert_eq!(groups, vec![group.gid.as_raw()]);
}

#[test]
fn root_only_when_asked_for() {
    if !require_root() {
        return;
    }
    let mut server = Server::start(&["--user", "root"]);
    echo_works(&server);
    let pid = worker(&mut server);
    assert_eq!(ids(pid).0, vec![0; 4]);
    server.wait_for_log("user root: the server and its workers run as root");
}

#[test]
fn chroot_takes_effect() {
    if !require_root() {
        return;
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("chroot");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut server = Server::start(&["--chroot", dir.to_str().unwrap()]);
    // The compiled guest is in memory: the chroot needs nothing in it.
    echo_works(&server);
    for pid in [server.pid(), worker(&mut server)] {
        let root = std::fs::read_link(format!("/proc/{pid}/root")).unwrap();
        assert_eq!(root, dir, "pid {pid}");
        assert_eq!(ids(pid).0, vec![NOBODY; 4]);
    }
    // A HUP cannot re-execute inside the chroot: refused, still serving.
    server.signal("HUP");
    server.wait_for_log("where it cannot re-execute itself; still serving");
    echo_works(&server);
}

#[test]
fn users_the_server_cannot_become_are_refused_before_binding() {
    if !require_root() {
        return;
    }
    for (args, needle) in [
        (vec!["--user", "no-such-user-here"], "no-such-user-here"),
        (vec!["--group", "no-such-group-here"], "no-such-group-here"),
        (vec!["--chroot", "/no/such/dir"], "/no/such/dir"),
    ] {
        let out = run(&[&["--port", "127.0.0.1:0"][..], &args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains(needle), "{err}");
    }
    // As nobody, becoming root is refused, naming the user.
    let out = std::process::Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(crate::util::BIN)
        .args([
            "--port",
            "127.0.0.1:0",
            "--user",
            "root",
            "--module-cache",
            "off",
        ])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("user root: cannot become another user when not started as root"),
        "{err}"
    );
    assert!(!err.contains("Binding"), "{err}");
}
