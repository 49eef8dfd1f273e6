//! The mux world (issue 23): Net::Server::Multiplex's callbacks on one
//! instance per worker. The chat example with three clients, over TCP,
//! TLS and a unix socket at once; lines split across packets; end of input
//! then close, in order; a client that never reads cut off while the others
//! go on and the worker's memory stays flat; refused clients; a trapping or
//! spinning callback closing that instance's connections only; timeouts,
//! the timer and `dequeue` on the same instance; what cannot serve a mux
//! handler refused at start.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::UnixStream;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned};

use crate::pki::Pki;
use crate::util::{BIN, Client, PATIENCE, Server, children, eventually, fresh_dir, guests, run};

/// The chat example, with `args`.
fn chat(args: &[&str]) -> Server {
    let mut all = vec!["--module", guests::CHAT, "--idle-timeout", "600"];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// The probe guest, with `args`.
fn probe(args: &[&str]) -> Server {
    let mut all = vec!["--module", guests::MUX_PROBE, "--idle-timeout", "600"];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// A client of the probe guest, greeted as the instance's `n`th.
fn greeted(server: &Server, n: u32) -> Client {
    let mut client = server.connect();
    assert_eq!(client.read_line(), format!("HELLO {n}\r\n"));
    client
}

/// A connected chat client: its welcome line read, its nick learnt.
fn join(server: &Server) -> (Client, String) {
    let mut client = server.connect();
    let welcome = client.read_line();
    assert!(
        welcome.starts_with("Welcome, you are number "),
        "{welcome:?}"
    );
    let nick = nick_of(&welcome);
    (client, nick)
}

/// The nick a welcome line gives: `… You are guestN.`
fn nick_of(welcome: &str) -> String {
    welcome
        .trim_end()
        .rsplit(' ')
        .next()
        .unwrap()
        .trim_end_matches('.')
        .to_owned()
}

/// Reads lines until one equal to `want` (skipping JOIN lines and the
/// like); fails on end of input.
fn read_until(client: &mut Client, want: &str) {
    loop {
        let line = client.read_line();
        assert!(!line.is_empty(), "closed before {want:?}");
        if line == want {
            return;
        }
    }
}

#[test]
fn three_clients_chat() {
    let server = chat(&[]);
    let (mut a, nick_a) = join(&server);
    let (mut b, nick_b) = join(&server);
    read_until(&mut a, &format!("JOIN: {nick_b} from 127.0.0.1\r\n"));
    let (mut c, nick_c) = join(&server);
    for client in [&mut a, &mut b] {
        read_until(client, &format!("JOIN: {nick_c} from 127.0.0.1\r\n"));
    }
    a.send(b"hello, everyone\n");
    for client in [&mut a, &mut b, &mut c] {
        read_until(client, &format!("[{nick_a}] hello, everyone\r\n"));
    }
    b.send(b"/nick bob\r\n");
    for client in [&mut a, &mut b, &mut c] {
        read_until(client, &format!("NICK: {nick_b} is now bob\r\n"));
    }
    c.send(b"/nick bob\n");
    read_until(&mut c, "ERROR: nick bob is taken\r\n");
    c.send(b"/who\n");
    read_until(
        &mut c,
        &format!("WHO: 3 connected: {nick_a}, bob, {nick_c}\r\n"),
    );
    b.send(b"hi from bob\n");
    for client in [&mut a, &mut b, &mut c] {
        read_until(client, "[bob] hi from bob\r\n");
    }
    c.send(b"/quit\n");
    assert_eq!(String::from_utf8(c.read_until_closed()).unwrap(), "BYE\r\n");
    for client in [&mut a, &mut b] {
        read_until(client, &format!("LEFT: {nick_c}\r\n"));
    }
    a.send(b"/who\n");
    read_until(&mut a, &format!("WHO: 2 connected: {nick_a}, bob\r\n"));
}

#[test]
fn lines_split_across_packets_are_reassembled() {
    let server = chat(&[]);
    let (mut a, nick) = join(&server);
    for part in [&b"hel"[..], b"lo, wo", b"rld\r", b"\nsecond", b" line\n"] {
        a.send(part);
        std::thread::sleep(Duration::from_millis(30));
    }
    assert_eq!(a.read_line(), format!("[{nick}] hello, world\r\n"));
    assert_eq!(a.read_line(), format!("[{nick}] second line\r\n"));
}

#[test]
fn a_client_leaving_mid_line_gets_end_of_input_then_close() {
    let mut server = chat(&[]);
    let (mut a, _) = join(&server);
    let (mut b, nick_b) = join(&server);
    read_until(&mut a, &format!("JOIN: {nick_b} from 127.0.0.1\r\n"));
    b.send(b"half a li");
    std::thread::sleep(Duration::from_millis(50));
    b.send(b"ne");
    b.shutdown_write();
    // Its last line is said (mux-eof), then it is gone (mux-close).
    read_until(&mut a, &format!("[{nick_b}] half a line\r\n"));
    read_until(&mut a, &format!("LEFT: {nick_b}\r\n"));
    let eof = format!("eof from {nick_b} (11 bytes left)");
    let left = format!("{nick_b} left");
    server.wait_for_log(&eof);
    server.wait_for_log(&left);
    let log = server.log();
    let at = |needle: &str| log.iter().position(|l| l.contains(needle)).unwrap();
    assert!(at(&eof) < at(&left), "mux-eof before mux-close");
    // It closed after its last line reached it too.
    let rest = String::from_utf8(b.read_until_closed()).unwrap();
    assert!(
        rest.ends_with(&format!("[{nick_b}] half a line\r\n")),
        "{rest:?}"
    );
}

/// The resident memory of process `pid`, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_client_that_never_reads_is_cut_off_while_the_others_go_on() {
    let mut server = probe(&["--mux-write-cap", "256K"]);
    let worker = eventually("a worker", || children(server.pid()).first().copied());
    let mut talker = greeted(&server, 1);
    let mut silent = greeted(&server, 2);
    talker.send(b"before\n");
    assert_eq!(talker.read_line(), "ECHO before\r\n");
    let before = rss_kib(worker);
    // 200 MB asked for a client that reads none of it.
    silent.send(b"/flood 200000000\n");
    let line = server.wait_for_log("more than 262144 bytes were queued");
    assert!(line.contains("mux_write_cap"), "{line}");
    let stopped = server.wait_for_log("flood stopped after");
    let sent: u64 = stopped
        .rsplit("after ")
        .next()
        .and_then(|n| n.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(sent < 200_000_000, "{stopped}");
    // The others are served meanwhile and after.
    for i in 0..20 {
        talker.send(format!("line {i}\n").as_bytes());
        assert_eq!(talker.read_line(), format!("ECHO line {i}\r\n"));
    }
    let after = rss_kib(worker);
    assert!(
        after < before + 32 * 1024,
        "the worker grew from {before} KiB to {after} KiB"
    );
    // What reached the client before the cut, and then the end.
    let got = silent.read_until_closed();
    assert!(got.len() < 64 << 20, "{} bytes", got.len());
    greeted(&server, 3);
}

#[test]
fn a_client_the_rules_refuse_never_reaches_mux_connection() {
    let mut server = probe(&[
        "--cidr-allow",
        "127.0.0.1/32",
        "--cidr-deny",
        "127.0.0.2/32",
    ]);
    let mut refused = Client::connect_from("127.0.0.2".parse().unwrap(), server.addr);
    assert_eq!(refused.read_until_closed(), b"");
    server.wait_for_log("denied by cidr_deny 127.0.0.2/32");
    // The first client the instance hears of is number 1.
    greeted(&server, 1);
}

#[test]
fn mux_connection_may_refuse_with_a_message() {
    let mut server = probe(&["--property", "deny=all"]);
    let mut client = server.connect();
    assert_eq!(client.read_until_closed(), b"DENIED\r\n");
    server.wait_for_log("denied by mux-connection");
    assert!(
        !server.log().iter().any(|l| l.contains("close conn=")),
        "no mux-close for a refused client"
    );
}

#[test]
fn a_trap_closes_that_instances_connections_and_a_fresh_one_serves_the_next() {
    let mut server = probe(&[]);
    let mut a = greeted(&server, 1);
    let mut b = greeted(&server, 2);
    a.send(b"/crash\n");
    assert_eq!(a.read_until_closed(), b"");
    assert_eq!(b.read_until_closed(), b"");
    let line = server.wait_for_log("the mux instance trapped in mux-input");
    assert!(line.contains("closing the 2 connection(s)"), "{line}");
    assert_eq!(
        server
            .wait_for_log_lines("connection ended after", 2)
            .iter()
            .filter(|l| l.contains("the mux instance trapped"))
            .count(),
        2
    );
    let mut c = server.connect();
    assert_eq!(c.read_line(), "HELLO 1\r\n", "a fresh instance");
    c.send(b"still here\n");
    assert_eq!(c.read_line(), "ECHO still here\r\n");
    assert!(server.is_running());
}

#[test]
fn a_callback_past_its_cpu_or_memory_limit_ends_the_instance_only() {
    let cases: [(&[&str], &[u8], &str); 2] = [
        (&["--cpu-limit", "1"], b"/spin\n", "CPU limit exceeded"),
        (&["--max-memory", "16M"], b"/alloc 64\n", "memory"),
    ];
    for (args, line, why) in cases {
        let mut server = probe(args);
        let mut client = greeted(&server, 1);
        client.send(line);
        assert_eq!(client.read_until_closed(), b"");
        let trap = server.wait_for_log("the mux instance trapped in mux-input");
        assert!(trap.contains(why), "{args:?}: {trap}");
        assert!(server.is_running());
        greeted(&server, 1);
    }
}

#[test]
fn timeouts_the_timer_and_dequeue_run_on_the_same_instance() {
    let mut server = probe(&["--check-for-dequeue", "1"]);
    let mut a = greeted(&server, 1);
    let mut b = greeted(&server, 2);
    a.send(b"/timeout 0.2\n");
    assert_eq!(a.read_line(), "OK\r\n");
    assert_eq!(a.read_line(), "TIMEOUT\r\n");
    // Cleared, it does not fire.
    a.send(b"/timeout 0.3\n/timeout none\n/list\n");
    assert_eq!(a.read_line(), "OK\r\n");
    assert_eq!(a.read_line(), "OK\r\n");
    assert_eq!(a.read_line(), "LIST 2\r\n");
    b.send(b"/timer 0.1\n");
    assert_eq!(b.read_line(), "OK\r\n");
    assert_eq!(b.read_line(), "TIMER\r\n");
    assert_eq!(a.read_line(), "TIMER\r\n", "not TIMEOUT: it was cleared");
    server.wait_for_log("dequeue ran with 2 connections");
    a.send(b"/dequeues\n");
    let line = a.read_line();
    assert!(
        line.starts_with("DEQUEUES ") && line != "DEQUEUES 0\r\n",
        "{line:?}"
    );
    // No process is forked for it: the worker is the master's only child.
    assert_eq!(children(server.pid()).len(), 1);
}

#[test]
fn shutdown_write_ends_the_clients_input_and_keeps_reading_it() {
    let mut server = probe(&[]);
    let mut client = greeted(&server, 1);
    client.send(b"/shutdown\n");
    assert_eq!(client.read_to_end(), b"SHUTDOWN\r\n");
    // Its input still arrives; its end closes the connection.
    client.send(b"/list\n");
    client.shutdown_write();
    server.wait_for_log("eof conn=");
    server.wait_for_log("close conn=");
}

#[test]
fn the_idle_timeout_closes_a_silent_client_and_mux_close_runs() {
    let mut server = Server::start(&["--module", guests::MUX_PROBE, "--idle-timeout", "1"]);
    let mut client = greeted(&server, 1);
    assert_eq!(client.read_until_closed(), b"");
    server.wait_for_log("idle timeout");
    server.wait_for_log("close conn=1");
}

#[test]
fn the_callbacks_see_the_client_they_are_about() {
    let server = probe(&[]);
    let mut client = greeted(&server, 1);
    client.send(b"/info\n");
    let line = client.read_line();
    assert!(line.starts_with("INFO tcp 127.0.0.1 "), "{line:?}");
    assert!(line.ends_with(" none\r\n"), "{line:?}");
}

#[test]
fn mux_echo_answers_as_the_built_in_echo() {
    let server = Server::start(&["--module", guests::MUX_ECHO]);
    let mut client = server.connect();
    client.send(b"hello\r\nquit\r\nignored\r\n");
    assert_eq!(client.read_all(), "You said 'hello'\r\nYou said 'quit'\r\n");
}

/// A TLS chat client trusting `pki`'s CA.
fn tls_client(pki: &Pki, addr: std::net::SocketAddr) -> StreamOwned<ClientConnection, TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("localhost").unwrap();
    let conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(PATIENCE)).unwrap();
    StreamOwned::new(conn, tcp)
}

#[test]
fn tls_unix_and_tcp_clients_share_one_chat() {
    let pki = Pki::new("mux-chat");
    let dir = fresh_dir("mux", "chat-unix");
    let path = dir.join("chat.sock");
    let unix_spec = format!("{}|unix", path.display());
    let mut command = Command::new(BIN);
    command
        .args(["--port", "127.0.0.1:0", "--port", "127.0.0.1:0/ssl"])
        .args(["--port", &unix_spec, "--log-level", "4"])
        .args(["--module", guests::CHAT, "--idle-timeout", "600"])
        .args(pki.server_args());
    let mut server = Server::spawn(command);
    let tls_addr = server.bound_of("SSL", 1)[0];
    let (mut tcp, tcp_nick) = join(&server);
    let mut tls = BufReader::new(tls_client(&pki, tls_addr));
    let mut line = String::new();
    tls.read_line(&mut line).unwrap();
    assert!(line.starts_with("Welcome, you are number 2"), "{line:?}");
    let tls_nick = nick_of(&line);
    let unix = UnixStream::connect(&path).unwrap();
    unix.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut unix_lines = BufReader::new(unix.try_clone().unwrap());
    line.clear();
    unix_lines.read_line(&mut line).unwrap();
    assert!(line.starts_with("Welcome, you are number 3"), "{line:?}");
    read_until(&mut tcp, &format!("JOIN: {tls_nick} from 127.0.0.1\r\n"));
    tls.get_mut().write_all(b"over tls\n").unwrap();
    tls.get_mut().flush().unwrap();
    read_until(&mut tcp, &format!("[{tls_nick}] over tls\r\n"));
    let heard = |reader: &mut dyn BufRead, want: &str| loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "closed before {want:?}"
        );
        if line == want {
            break;
        }
    };
    heard(&mut unix_lines, &format!("[{tls_nick}] over tls\r\n"));
    (&unix).write_all(b"over unix\n").unwrap();
    heard(&mut tls, "[guest3] over unix\r\n");
    read_until(&mut tcp, "[guest3] over unix\r\n");
    tcp.send(b"over tcp\n");
    heard(&mut tls, &format!("[{tcp_nick}] over tcp\r\n"));
    heard(&mut unix_lines, &format!("[{tcp_nick}] over tcp\r\n"));
    unix.shutdown(Shutdown::Both).unwrap();
    read_until(&mut tcp, "LEFT: guest3\r\n");
    let mut rest = Vec::new();
    drop(tls.get_mut().sock.shutdown(Shutdown::Write));
    let _ = tls.read_to_end(&mut rest);
}

#[test]
fn what_cannot_serve_a_mux_handler_is_refused_at_start() {
    let cases: [(&[&str], &str); 3] = [
        (
            &["--server-type", "prefork"],
            "a mux handler is served by server_type multiplex only, not prefork",
        ),
        (
            &["--server-type", "single"],
            "a mux handler is served by server_type multiplex only, not single",
        ),
        (
            &["--port", "127.0.0.1:0/udp"],
            "--port 127.0.0.1:0/udp: a mux handler",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["--module", guests::CHAT, "--check"];
        all.extend_from_slice(args);
        let out = run(&all);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(want), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
    let out = run(&["--module", guests::CHAT, "--check"]);
    assert!(out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("\"mux\""), "{report}");
}

#[test]
fn many_clients_at_once_each_see_every_line() {
    let server = chat(&[]);
    let mut clients: Vec<(Client, String)> = (0..20).map(|_| join(&server)).collect();
    let nick = clients[0].1.clone();
    clients[0].0.send(b"to all twenty\n");
    for (client, _) in &mut clients {
        read_until(client, &format!("[{nick}] to all twenty\r\n"));
    }
}

#[test]
fn the_chat_can_keep_joins_quiet() {
    let server = chat(&["--property", "join_notices=0"]);
    let (mut a, _) = join(&server);
    let (mut b, nick_b) = join(&server);
    b.send(b"first\n");
    // No JOIN line before it.
    assert_eq!(a.read_line(), format!("[{nick_b}] first\r\n"));
}
