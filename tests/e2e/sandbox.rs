//! The sandbox: a guest gets no file, no environment and no network unless
//! its service grants them, and a connection ends at its time limit.

use std::net::TcpListener;
use std::path::PathBuf;

use crate::util::{Server, guests, per_personality};

/// Sends each probe line to one client of the misbehave guest and returns
/// the answers, one per line.
fn probe(server: &Server, lines: &[&str]) -> Vec<String> {
    let mut client = server.connect();
    let mut answers = Vec::new();
    for line in lines {
        client.send(format!("{line}\n").as_bytes());
        answers.push(client.read_line().trim_end().to_owned());
    }
    answers
}

/// A scratch directory with one file, `data.txt` (5 bytes).
fn scratch(name: &str) -> PathBuf {
    let dir = crate::util::fresh_dir("sandbox", name);
    std::fs::write(dir.join("data.txt"), "hello").unwrap();
    dir
}

#[test]
fn nothing_is_granted_by_default() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let open = listener.local_addr().unwrap();
    let server = Server::start(&["--module", guests::MISBEHAVE]);
    let answers = probe(
        &server,
        &[
            "read /etc/passwd",
            "write /tmp/netserver-escape",
            "env PATH",
            "env HOME",
            &format!("connect {open}"),
        ],
    );
    assert_eq!(
        answers,
        [
            "read error NotFound",
            "write error NotFound",
            "env PATH unset",
            "env HOME unset",
            "connect error PermissionDenied",
        ],
        "the guest reached something it was not granted"
    );
    assert!(!std::path::Path::new("/tmp/netserver-escape").exists());
}

#[test]
fn granted_directory_environment_and_network() {
    let ro = scratch("ro");
    let rw = scratch("rw");
    // As root, the server drops root for nobody: the writable grant must be
    // nobody's to write (the read-only one stays root's, readable by all).
    // As another user, the server stays that user, who owns both.
    if nix::unistd::geteuid().is_root() {
        std::os::unix::fs::chown(&rw, Some(65534), Some(65534)).unwrap();
    }
    let granted = TcpListener::bind("127.0.0.1:0").unwrap();
    let granted_addr = granted.local_addr().unwrap();
    // Loopback answers for the whole 127/8: an address outside the grant.
    let other = TcpListener::bind("127.0.0.2:0").unwrap();
    let other_addr = other.local_addr().unwrap();
    let server = Server::start(&[
        "--module",
        guests::MISBEHAVE,
        "--grant-dir",
        &format!("{}:/data", ro.display()),
        "--grant-dir",
        &format!("{}:/scratch:rw", rw.display()),
        "--grant-env",
        "GREETING=hi there",
        "--grant-connect",
        "127.0.0.1/32",
    ]);
    let answers = probe(
        &server,
        &[
            "read /data/data.txt",
            "write /data/new.txt",
            "read /scratch/data.txt",
            "write /scratch/new.txt",
            "read /etc/passwd",
            "env GREETING",
            "env PATH",
            &format!("connect {granted_addr}"),
            &format!("connect {other_addr}"),
        ],
    );
    assert_eq!(
        answers,
        [
            "read 5 bytes",
            "write error PermissionDenied",
            "read 5 bytes",
            "wrote",
            "read error NotFound",
            "env GREETING=hi there",
            "env PATH unset",
            "connected",
            "connect error PermissionDenied",
        ]
    );
    assert_eq!(std::fs::read_to_string(rw.join("new.txt")).unwrap(), "x");
    assert!(!ro.join("new.txt").exists());
}

fn connection_timeout_ends_a_busy_connection(personality: &str) {
    let timeouts = ["--connection-timeout", "0.5", "--idle-timeout", "60"];
    let mut server = Server::start(&[&["--server-type", personality][..], &timeouts].concat());
    let mut client = server.connect();
    // Keeps talking, so it is never idle; the deadline ends it anyway.
    client.send(b"one\n");
    assert_eq!(client.read_line(), "You said 'one'\r\n", "{personality}");
    server.wait_for_log("connection timeout: open for 0.5s");
    assert_eq!(client.read_all(), "", "{personality}");
    server.assert_echoes("two", personality);
}
per_personality!(connection_timeout_ends_a_busy_connection: multiplex, prefork, fork);
