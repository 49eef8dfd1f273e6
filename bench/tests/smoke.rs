//! CI smoke test of the harness: `native-echo` on port 0 (TCP, TLS and UDP)
//! and on a unix socket, `loadgen` briefly against it in every mode. No
//! timing is asserted, only that requests were served and every reply was
//! exact.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netserver_bench::chat::BroadcastSummary;
use netserver_bench::loadgen::{Mode, Summary, Transport};

/// A child process, killed (by PID) when dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A running `native-echo` on an IP address, killed when dropped.
struct NativeEcho {
    _child: Running,
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

/// Starts the native server `bin` with `args` (and one thread); returns
/// it with the first line it logs.
fn spawn_native(bin: &str, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(bin)
        .args(args)
        .args(["--threads", "1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
    let line = first_line(child.stderr.take().expect("stderr"));
    (child, line)
}

/// Starts `native-echo` with `args` (and one thread); returns it with the
/// first line it logs.
fn spawn_native_echo(args: &[&str]) -> (Child, String) {
    spawn_native(env!("CARGO_BIN_EXE_native-echo"), args)
}

impl NativeEcho {
    fn start() -> Self {
        Self::start_ip("TCP", &[])
    }

    /// Serving `proto` (`TCP`, `SSL` or `UDP`) on port 0.
    fn start_ip(proto: &str, args: &[&str]) -> Self {
        let (child, line) = spawn_native_echo(&[&["--port", "0"][..], args].concat());
        // Binding to TCP port N on host H with IPvX
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            words.get(..4),
            Some(&["Binding", "to", proto, "port"][..]),
            "{line}"
        );
        let port: u16 = words[4].parse().expect("port");
        let host = words[7];
        Self {
            _child: Running(child),
            addr: format!("{host}:{port}").parse().expect("address"),
        }
    }
}

/// A directory of this test's own, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "netserver-bench-smoke-{}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn loadgen(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run loadgen")
}

/// Runs `loadgen` briefly (4 clients, one thread) with `args`; checks that
/// it succeeded and returns its summary.
fn brief_loadgen(args: &[&str]) -> Summary {
    let brief = [
        "--clients",
        "4",
        "--warmup",
        "0.1",
        "--duration",
        "0.3",
        "--threads",
        "1",
        "--json",
    ];
    let out = loadgen(&[args, &brief[..]].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON summary")
}

fn assert_clean(summary: &Summary) {
    assert_eq!(summary.errors, 0, "{summary:?}");
    assert!(summary.requests > 0, "{summary:?}");
    assert!(summary.latency_us.p50 > 0.0, "{summary:?}");
}

#[test]
fn loadgen_udp_against_native_echo() {
    let server = NativeEcho::start_ip("UDP", &["--udp"]);
    let summary = brief_loadgen(&["--addr", &server.addr.to_string(), "--mode", "udp"]);
    assert_eq!(summary.mode, Mode::Udp);
    assert_eq!(summary.transport, Transport::Udp);
    assert_clean(&summary);
}

#[test]
fn loadgen_unix_against_native_echo() {
    let dir = TempDir::new("unix");
    let path = dir.0.join("echo.sock");
    let path_text = path.to_str().expect("a UTF-8 path");
    let (child, line) = spawn_native_echo(&["--unix", path_text]);
    let _server = Running(child);
    assert_eq!(
        line,
        format!("Binding to UNIX socket file \"{path_text}\"\n")
    );
    for (mode, name) in [(Mode::Connect, "connect"), (Mode::Roundtrip, "roundtrip")] {
        let summary = brief_loadgen(&["--unix", path_text, "--mode", name]);
        assert_eq!(summary.mode, mode);
        assert_eq!(summary.transport, Transport::Unix);
        assert_eq!(summary.addr, path_text);
        assert_clean(&summary);
    }
}

#[test]
fn loadgen_udp_without_a_server_ends_with_errors() {
    // A port nothing listens on: every datagram is refused or unanswered,
    // and the run still ends on time.
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free port")
        .port();
    let began = Instant::now();
    let out = loadgen(&[
        "--addr",
        &format!("127.0.0.1:{port}"),
        "--mode",
        "udp",
        "--clients",
        "2",
        "--warmup",
        "0",
        "--duration",
        "0.3",
        "--timeout",
        "0.2",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(began.elapsed() < Duration::from_secs(10));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: Summary = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(summary.requests, 0, "{summary:?}");
    assert!(summary.errors > 0, "{summary:?}");
}

#[test]
fn loadgen_refuses_udp_over_unix() {
    let out = loadgen(&["--unix", "/nonexistent.sock", "--mode", "udp"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("needs an IP address"), "{stderr}");
}

#[test]
fn loadgen_against_native_echo_in_both_modes() {
    let server = NativeEcho::start();
    let addr = server.addr.to_string();
    for (mode, name) in [(Mode::Connect, "connect"), (Mode::Roundtrip, "roundtrip")] {
        let summary = brief_loadgen(&["--addr", &addr, "--mode", name]);
        assert_eq!(summary.mode, mode);
        assert_eq!(summary.transport, Transport::Tcp);
        assert_clean(&summary);
    }
}

/// The test certificate (self-signed, `localhost`) and its key.
fn test_cert() -> (&'static str, &'static str) {
    (
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/localhost-cert.pem"),
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/localhost-key.pem"),
    )
}

#[test]
fn loadgen_tls_against_native_echo() {
    let (cert, key) = test_cert();
    let server = NativeEcho::start_ip("SSL", &["--tls-cert", cert, "--tls-key", key]);
    let addr = server.addr.to_string();
    let tls = ["--addr", &addr, "--tls", "--tls-ca", cert];
    for (mode, args) in [
        (Mode::Connect, &["--mode", "connect"][..]),
        (Mode::ConnectResumed, &["--mode", "connect", "--tls-resume"]),
        (Mode::Roundtrip, &["--mode", "roundtrip"]),
        (
            Mode::Connect,
            &["--mode", "connect", "--tls-version", "1.2"],
        ),
    ] {
        let summary = brief_loadgen(&[&tls[..], args].concat());
        assert_eq!(summary.mode, mode);
        assert_eq!(summary.transport, Transport::Tls);
        assert_clean(&summary);
        let handshakes = summary.tls.as_ref().expect("TLS figures");
        let version = if args.contains(&"1.2") {
            "TLS 1.2"
        } else {
            "TLS 1.3"
        };
        assert_eq!(handshakes.version.as_deref(), Some(version), "{summary:?}");
        if mode == Mode::ConnectResumed {
            // All but the first few connections (one per client at most,
            // before a session is cached) resume one.
            assert!(handshakes.resumed > summary.requests / 2, "{summary:?}");
        } else {
            assert_eq!(handshakes.resumed, 0, "{summary:?}");
        }
    }
}

#[test]
fn loadgen_tls_fails_against_another_name() {
    let (cert, key) = test_cert();
    let server = NativeEcho::start_ip("SSL", &["--tls-cert", cert, "--tls-key", key]);
    let addr = server.addr.to_string();
    let out = loadgen(&[
        "--addr",
        &addr,
        "--tls",
        "--tls-ca",
        cert,
        "--tls-name",
        "example.com",
        "--mode",
        "connect",
        "--clients",
        "1",
        "--warmup",
        "0",
        "--duration",
        "0.2",
        "--threads",
        "1",
        "--json",
    ]);
    assert!(out.status.success());
    let summary: Summary = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(summary.requests, 0, "{summary:?}");
    assert!(summary.error_kinds.connect > 0, "{summary:?}");
    let first = summary.first_error.unwrap_or_default();
    assert!(first.contains("TLS handshake"), "{first}");
}

#[test]
fn loadgen_refuses_tls_misuse() {
    let (cert, _) = test_cert();
    for (args, why) in [
        (
            &["--unix", "/nonexistent.sock", "--tls", "--tls-ca", cert][..],
            "cannot be used with",
        ),
        (&["--addr", "127.0.0.1:1", "--tls"], "--tls-ca"),
        (&["--addr", "127.0.0.1:1", "--tls-resume"], "--tls"),
        (
            &[
                "--addr",
                "127.0.0.1:1",
                "--tls",
                "--tls-ca",
                cert,
                "--tls-resume",
            ],
            "--tls-resume is for --mode connect",
        ),
        (
            &[
                "--addr",
                "127.0.0.1:1",
                "--tls",
                "--tls-ca",
                cert,
                "--mode",
                "udp",
            ],
            "does not speak TLS",
        ),
        (
            &["--addr", "127.0.0.1:1", "--mode", "connect-resumed"],
            "invalid value",
        ),
    ] {
        let out = loadgen(args);
        assert!(!out.status.success(), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(why), "{args:?}: {stderr}");
    }
}

#[test]
fn loadgen_refuses_other_hosts() {
    let out = loadgen(&["--addr", "192.0.2.1:80", "--duration", "0.1"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}

/// `native-http` answers http-hello's page, 404 elsewhere, and binds
/// loopback only.
#[test]
fn native_http_answers_the_page() {
    use std::io::{Read, Write};
    let (child, line) = spawn_native(env!("CARGO_BIN_EXE_native-http"), &["--port", "0"]);
    let _child = Running(child);
    let port: u16 = line
        .split_whitespace()
        .nth(4)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {line:?}"));
    let get = |path: &str| {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n"
        )
        .unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).unwrap();
        reply
    };
    let page = get("/");
    assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
    assert!(page.contains("content-type: text/plain\r\n"), "{page}");
    assert!(
        page.ends_with("\r\n\r\nHello from a wasi:http component!\n"),
        "{page}"
    );
    assert!(get("/other").starts_with("HTTP/1.1 404 "));
    let out = Command::new(env!("CARGO_BIN_EXE_native-http"))
        .args(["--host", "0.0.0.0"])
        .output()
        .expect("run native-http");
    assert!(!out.status.success());
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

/// `hold --protocol chat` against `native-echo --chat` (`extra` its
/// options): `connections` connections, each welcomed, then a broadcast of
/// 3 messages on a `broadcast` line; returns the summary.
fn hold_chat_broadcast(extra: &[&str], connections: usize) -> BroadcastSummary {
    use std::io::Write as _;
    let server = NativeEcho::start_ip("TCP", &[&["--chat"][..], extra].concat());
    let mut hold = Running(
        Command::new(env!("CARGO_BIN_EXE_hold"))
            .args(["--addr", &server.addr.to_string()])
            .args(["--connections", &connections.to_string()])
            .args(["--protocol", "chat", "--broadcast", "3", "--seconds", "30"])
            .args(["--timeout", "5", "--settle", "10", "--quiet-ms", "100"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn hold"),
    );
    let mut stdin = hold.0.stdin.take().expect("stdin");
    let mut stdout = BufReader::new(hold.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("read holding");
    assert_eq!(line, format!("holding {connections}\n"));
    writeln!(stdin, "broadcast").expect("ask for the broadcast");
    line.clear();
    stdout.read_line(&mut line).expect("read the summary");
    let summary: BroadcastSummary = serde_json::from_str(&line).expect("JSON summary");
    drop(stdin);
    let status = hold.0.wait().expect("wait for hold");
    assert!(status.success(), "{status}");
    summary
}

#[test]
fn hold_chat_broadcasts_to_every_connection() {
    for (extra, joins) in [(&[][..], true), (&["--no-join-notices"][..], false)] {
        let n = 40;
        let summary = hold_chat_broadcast(extra, n);
        assert_eq!(summary.connections, n, "{summary:?}");
        assert_eq!((summary.messages, summary.receivers), (3, n - 1));
        assert_eq!(summary.samples, 3 * (n - 1), "{summary:?}");
        assert_eq!((summary.missed, summary.receivers_missed), (0, 0));
        let (p50, p99, max) = (
            summary.p50_ms.unwrap(),
            summary.p99_ms.unwrap(),
            summary.max_ms.unwrap(),
        );
        assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{summary:?}");
        // Every join was announced to those already there: n (n - 1) / 2.
        let announced = if joins { (n * (n - 1) / 2) as u64 } else { 0 };
        assert_eq!(summary.lines_while_connecting, announced, "{summary:?}");
    }
}

#[test]
fn hold_chat_fails_without_welcome() {
    // An echo server is no chat: the first line of each connection is
    // taken for its welcome only once it sent one, so against the echo
    // nobody is welcomed and hold fails in time.
    let server = NativeEcho::start();
    let began = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_hold"))
        .args(["--addr", &server.addr.to_string(), "--connections", "2"])
        .args(["--protocol", "chat"])
        .stdin(Stdio::null())
        .output()
        .expect("run hold");
    assert!(!out.status.success());
    assert!(began.elapsed() < Duration::from_secs(20));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no welcome line within 5 s"), "{stderr}");
}

#[test]
fn hold_refuses_broadcast_without_chat() {
    let out = Command::new(env!("CARGO_BIN_EXE_hold"))
        .args(["--addr", "127.0.0.1:1", "--broadcast", "2"])
        .stdin(Stdio::null())
        .output()
        .expect("run hold");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--broadcast is for --protocol chat"),
        "{stderr}"
    );
}
