//! The listening sockets as the kernel sees them.

use std::process::Command;

use crate::util::Server;

/// The backlog of the listening socket on `port`, as `ss` shows it (its
/// Send-Q column, for a socket in LISTEN).
fn backlog(port: u16) -> u32 {
    let out = Command::new("ss")
        .args(["-ltnH", &format!("sport = :{port}")])
        .output()
        .expect("ss (from iproute2; .ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .next()
        .unwrap_or_else(|| panic!("no socket on port {port}: {text}"));
    line.split_whitespace()
        .nth(2)
        .and_then(|q| q.parse().ok())
        .unwrap_or_else(|| panic!("no Send-Q in {line:?}"))
}

/// The kernel's cap on every backlog.
fn somaxconn() -> u32 {
    std::fs::read_to_string("/proc/sys/net/core/somaxconn")
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .unwrap_or(u32::MAX)
}

#[test]
fn listen_sets_the_backlog_of_every_listening_socket() {
    let cap = somaxconn();
    for (args, want) in [(&[][..], 1024), (&["--listen", "17"][..], 17)] {
        let want = want.min(cap);
        let server = Server::start(args);
        assert_eq!(backlog(server.addr.port()), want, "{args:?}");
        server.assert_echoes("queued", "after checking the backlog");
    }
}
