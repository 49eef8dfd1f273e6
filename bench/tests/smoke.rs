//! CI smoke test of the harness: `native-echo` on port 0, `loadgen` briefly
//! against it in both modes. No timing is asserted, only that requests were
//! served and every reply was exact.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

use netserver_bench::loadgen::{Mode, Summary};

/// A running `native-echo`, killed (by PID) when dropped.
struct NativeEcho {
    child: Child,
    addr: SocketAddr,
}

/// The first line a child writes to `pipe`.
fn first_line(pipe: impl std::io::Read) -> String {
    let mut line = String::new();
    BufReader::new(pipe)
        .read_line(&mut line)
        .expect("read the child's first line");
    line
}

impl NativeEcho {
    fn start() -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_native-echo"))
            .args(["--port", "0", "--threads", "1"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn native-echo");
        let line = first_line(child.stderr.take().expect("stderr"));
        // Binding to TCP port N on host H with IPvX
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words.get(..4),
            Some(&["Binding", "to", "TCP", "port"][..]),
            "{line}"
        );
        let port: u16 = words[4].parse().expect("port");
        let host = words[7];
        Self {
            child,
            addr: format!("{host}:{port}").parse().expect("address"),
        }
    }
}

impl Drop for NativeEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn loadgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen")
}

#[test]
fn loadgen_against_native_echo_in_both_modes() {
    let server = NativeEcho::start();
    let addr = server.addr.to_string();
    for (mode, name) in [(Mode::Connect, "connect"), (Mode::Roundtrip, "roundtrip")] {
        let out = loadgen(&[
            "--addr",
            &addr,
            "--mode",
            name,
            "--clients",
            "4",
            "--warmup",
            "0.1",
            "--duration",
            "0.3",
            "--threads",
            "1",
            "--json",
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Summary = serde_json::from_slice(&out.stdout).expect("JSON summary");
        assert_eq!(summary.mode, mode);
        assert_eq!(summary.errors, 0, "{summary:?}");
        assert!(summary.requests > 0, "{summary:?}");
        assert!(summary.latency_us.p50 > 0.0, "{summary:?}");
    }
}

#[test]
fn loadgen_refuses_other_hosts() {
    let out = loadgen(&["--addr", "192.0.2.1:80", "--duration", "0.1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

#[test]
fn native_echo_refuses_other_hosts() {
    let out = Command::new(env!("CARGO_BIN_EXE_native-echo"))
        .args(["--host", "0.0.0.0"])
        .output()
        .expect("run native-echo");
    assert!(!out.status.success());
}

#[test]
fn hold_keeps_connections_until_stdin_closes() {
    let server = NativeEcho::start();
    let mut hold = Command::new(env!("CARGO_BIN_EXE_hold"))
        .args(["--addr", &server.addr.to_string(), "--connections", "20"])
        .args(["--seconds", "30"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn hold");
    let line = first_line(hold.stdout.take().expect("stdout"));
    assert_eq!(line, "holding 20\n");
    // Closing stdin lets it go.
    drop(hold.stdin.take());
    let status = hold.wait().expect("wait for hold");
    assert!(status.success(), "{status}");
}
