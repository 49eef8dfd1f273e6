//! Logging: `log_file` (re-opened across HUP, so logrotate works), the
//! system log, and one line per connection at level 3.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;

use crate::util::{BIN, PATIENCE, Server, require_root, run};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netserver-logging-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn session(server: &Server, line: &str) -> String {
    let mut client = server.connect();
    client.send(format!("{line}\nquit\n").as_bytes());
    client.read_all()
}

#[test]
fn log_file_is_written_and_reopened_after_hup() {
    // The new file is given to nobody, whom the server becomes.
    if !require_root() {
        return;
    }
    let dir = scratch("file");
    let path = dir.join("server.log");
    let mut command = Command::new(BIN);
    command.args(["--port", "127.0.0.1:0", "--log-level", "3", "--log-file"]);
    command.arg(&path);
    let mut server = Server::spawn_logging(command, Some(&path));
    assert_eq!(
        session(&server, "one"),
        "You said 'one'\r\nYou said 'quit'\r\n"
    );
    // One line per connection, at level 3, with peer, service, bytes,
    // duration and outcome.
    let line = server.wait_for_log("connection ended");
    assert!(
        line.contains(" info conn{service=echo peer=127.0.0.1:")
            && line.contains("9 bytes in, 33 bytes out: served"),
        "{line}"
    );
    // Nothing reaches stderr when there is a log file.
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("Binding to TCP port"), "{text}");
    // logrotate: rename, create the new file for the server's user (nobody,
    // as it dropped root: `create 0640 nobody nogroup`), then HUP; the
    // restarted server writes the new file.
    let rotated = dir.join("server.log.1");
    std::fs::rename(&path, &rotated).unwrap();
    std::fs::write(&path, "").unwrap();
    std::os::unix::fs::chown(&path, Some(65534), Some(65534)).unwrap();
    server.signal("HUP");
    server.wait_for_log("inherited across a restart");
    // Until they end, the previous workers may still take a client (and
    // log to the file they have open).
    server.wait_for_log_all(&["previous worker ", " ended ("]);
    assert_eq!(
        session(&server, "two"),
        "You said 'two'\r\nYou said 'quit'\r\n"
    );
    let fresh = server.eventually("a connection line in the new file", || {
        let fresh = std::fs::read_to_string(&path).unwrap_or_default();
        fresh
            .contains("9 bytes in, 33 bytes out: served")
            .then_some(fresh)
    });
    assert!(fresh.contains("inherited across a restart"), "{fresh}");
    let old = std::fs::read_to_string(&rotated).unwrap();
    assert!(old.contains("Received HUP"), "{old}");
    // A file the server's user cannot write is refused at HUP: the server
    // goes on with the old one.
    let kept = dir.join("server.log.2");
    std::fs::rename(&path, &kept).unwrap();
    std::fs::write(&path, "").unwrap();
    server.signal("HUP");
    // Said in the file the server still has open.
    let refused = server.eventually("the HUP to be refused in the old file", || {
        let text = std::fs::read_to_string(&kept).unwrap();
        text.lines()
            .find(|l| l.contains("still serving the old one"))
            .map(str::to_owned)
            .ok_or(text)
    });
    assert!(
        refused.contains("cannot be written by uid 65534"),
        "{refused}"
    );
    assert_eq!(
        session(&server, "three"),
        "You said 'three'\r\nYou said 'quit'\r\n"
    );
}

#[test]
fn the_system_log_gets_each_line_with_its_severity() {
    let dir = scratch("syslog");
    let socket = dir.join("log");
    let syslog = UnixDatagram::bind(&socket).unwrap();
    syslog.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["--port", "127.0.0.1:0", "--log-level", "3"])
        .args(["--log-file", "Sys::Syslog", "--syslog-ident", "myserver"])
        .args(["--syslog-facility", "local3", "--syslog-logsock"])
        .arg(&socket);
    let mut child = command.spawn().unwrap();
    let mut lines = Vec::new();
    let mut receive = |until: &str| -> String {
        let mut buf = [0u8; 4096];
        loop {
            let n = syslog.recv(&mut buf).expect("a syslog datagram");
            let line = String::from_utf8_lossy(&buf[..n]).into_owned();
            lines.push(line.clone());
            if line.contains(until) {
                return line;
            }
        }
    };
    let binding = receive("Binding to TCP port");
    let port: u16 = binding
        .split("Binding to TCP port ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .expect("port");
    // local3 (19) * 8 + notice (5).
    let master = format!("myserver[{}]: ", child.id());
    assert!(
        binding.starts_with("<157>") && binding.contains(&master),
        "{binding}"
    );
    let mut client = crate::util::Client::connect(([127, 0, 0, 1], port).into());
    client.send(b"hi\nquit\n");
    assert_eq!(client.read_all(), "You said 'hi'\r\nYou said 'quit'\r\n");
    let ended = receive("connection ended");
    // Level 3 is syslog's info (6); the worker gives its own pid.
    assert!(ended.starts_with("<158>"), "{ended}");
    assert!(
        ended.contains("myserver[") && !ended.contains(&master),
        "{ended}"
    );
    // No timestamp and level of our own: syslog has them.
    assert!(!ended.contains(" info "), "{ended}");
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn bad_log_settings_exit_2_naming_them() {
    let dir = scratch("bad");
    let missing = dir.join("no-syslog-here");
    let missing = missing.to_str().unwrap();
    for (args, needles) in [
        (
            vec!["--log-file", "/nonexistent-dir/x.log"],
            vec!["log-file", "/nonexistent-dir/x.log"],
        ),
        (
            vec!["--log-file", "Sys::Syslog", "--syslog-facility", "local9"],
            vec!["syslog-facility", "local9"],
        ),
        (
            vec![
                "--log-file",
                "Sys::Syslog",
                "--syslog-logsock",
                "carrier-pigeon",
            ],
            vec!["syslog-logsock", "carrier-pigeon"],
        ),
        (
            vec!["--log-file", "Sys::Syslog", "--syslog-logopt", "pid|loud"],
            vec!["syslog-logopt", "pid|loud"],
        ),
        (
            vec!["--log-file", "Sys::Syslog", "--syslog-logsock", missing],
            vec!["cannot reach the system log", missing],
        ),
    ] {
        let out = run(&[&["--port", "127.0.0.1:0"][..], &args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        for needle in needles {
            assert!(err.contains(needle), "{args:?}: {err}");
        }
    }
}
