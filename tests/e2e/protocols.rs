//! UDP, unix stream and unix datagram sockets beside TCP (issue 22): what a
//! client of each sees, the amplification cap, `allow_uid`, socket files,
//! `inetd` on a unix socket and on pipes, and a handler built against the
//! first released contract (`netserver:handler@0.1.0`).

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixDatagram, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{
    self, BIN, HOOKS_IN_ORDER, Server, eventually, fresh_dir, guests, per_personality,
};

/// How long a client waits for a datagram reply: a bound, not a timing
/// assertion (a reply that must not come is waited for this long too).
const REPLY_WAIT: Duration = Duration::from_secs(5);

/// How long a test waits to be sure no reply comes.
const NO_REPLY_WAIT: Duration = Duration::from_millis(700);

fn udp_client(to: SocketAddr) -> UdpSocket {
    let any: SocketAddr = if to.is_ipv4() {
        "127.0.0.1:0".parse().unwrap()
    } else {
        "[::1]:0".parse().unwrap()
    };
    let socket = UdpSocket::bind(any).unwrap();
    socket.connect(to).unwrap();
    socket.set_read_timeout(Some(REPLY_WAIT)).unwrap();
    socket
}

/// Sends `request` and returns the reply datagram.
fn ask(socket: &UdpSocket, request: &[u8]) -> Vec<u8> {
    socket.send(request).unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = socket
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no reply to {} bytes: {e}", request.len()));
    buf.truncate(n);
    buf
}

/// Sends `request` and returns every reply datagram that comes.
fn ask_all(socket: &UdpSocket, request: &[u8]) -> Vec<String> {
    let mut replies = vec![String::from_utf8(ask(socket, request)).unwrap()];
    socket.set_read_timeout(Some(NO_REPLY_WAIT)).unwrap();
    let mut buf = vec![0u8; 70_000];
    while let Ok(n) = socket.recv(&mut buf) {
        replies.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    socket.set_read_timeout(Some(REPLY_WAIT)).unwrap();
    replies
}

/// Sends `request` and checks that no reply comes.
fn ask_unanswered(socket: &UdpSocket, request: &[u8]) {
    socket.send(request).unwrap();
    no_more_replies(socket);
}

/// Checks that no (further) reply comes.
fn no_more_replies(socket: &UdpSocket) {
    socket.set_read_timeout(Some(NO_REPLY_WAIT)).unwrap();
    let mut buf = [0u8; 256];
    match socket.recv(&mut buf) {
        Ok(n) => panic!("unexpected reply {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{e}"
        ),
    }
    socket.set_read_timeout(Some(REPLY_WAIT)).unwrap();
}

fn said(data: &[u8]) -> Vec<u8> {
    [&b"You said \""[..], data, b"\""].concat()
}

/// A server with a TCP port (for the harness) and the UDP port `udp`.
fn udp_server(udp: &str, args: &[&str]) -> (Server, SocketAddr) {
    let mut all = vec!["--port", udp];
    all.extend_from_slice(args);
    let mut server = Server::start(&all);
    let addr = server.bound_of("UDP", 1)[0];
    (server, addr)
}

#[test]
fn udp_echo_answers_several_clients_at_once() {
    let (_server, addr) = udp_server("127.0.0.1:0/udp", &[]);
    let clients: Vec<_> = (0..8)
        .map(|c| {
            std::thread::spawn(move || {
                let socket = udp_client(addr);
                for i in 0..20 {
                    let request = format!("client {c} datagram {i}");
                    assert_eq!(ask(&socket, request.as_bytes()), said(request.as_bytes()));
                }
            })
        })
        .collect();
    for client in clients {
        client.join().unwrap();
    }
}

#[test]
fn udp_empty_full_and_truncated_datagrams() {
    let (mut server, addr) = udp_server("127.0.0.1:0/udp", &["--udp-recv-len", "100"]);
    let socket = udp_client(addr);
    assert_eq!(ask(&socket, b""), said(b""));
    let full = vec![b'a'; 100];
    assert_eq!(ask(&socket, &full), said(&full));
    // A longer one is cut to udp_recv_len, as Net::Server's recv cuts it.
    let long = vec![b'b'; 150];
    assert_eq!(ask(&socket, &long), said(&long[..100]));
    server.wait_for_log("was longer than udp_recv_len 100: cut to it");
}

#[test]
fn udp_from_a_denied_source_gets_no_reply_and_costs_no_instance() {
    let (mut server, addr) = udp_server("127.0.0.1:0/udp", &["--cidr-deny", "127.0.0.0/8"]);
    let socket = udp_client(addr);
    ask_unanswered(&socket, b"hello");
    server.wait_for_log("dropped a datagram: denied by cidr_deny 127.0.0.0/8");
    assert!(
        !server.log().iter().any(|l| l.contains("echo serves")),
        "no instance ran"
    );
}

#[test]
fn a_guest_that_refuses_a_datagram_sends_no_reply() {
    // hook-trace says "denied" in request-denied-hook: that reply is dropped.
    let (mut server, addr) = udp_server(
        "127.0.0.1:0/udp",
        &[
            "--module",
            guests::HOOK_TRACE,
            "--property",
            "deny=yes",
            "--udp-amplification",
            "0",
        ],
    );
    let socket = udp_client(addr);
    // What post-accept-hook wrote goes (each of its flushes a datagram);
    // what follows the refusal is dropped.
    let replies = ask_all(&socket, b"hello");
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert!(replies[0].starts_with("peer=127.0.0.1:"), "{replies:?}");
    assert_eq!(replies[1], "prop greeting=-\r\n");
    server.wait_for_log("denied by allow-deny-hook");
}

#[test]
fn udp_replies_are_capped_against_amplification() {
    // "hello" is 33 bytes on the wire; `You said "hello"` 44.
    let (mut capped, addr) = udp_server("127.0.0.1:0/udp", &["--udp-amplification", "1"]);
    ask_unanswered(&udp_client(addr), b"hello");
    capped.wait_for_log("dropped by the amplification cap (udp_amplification 1)");
    capped.wait_for_log("reply capped");
    let (_allowed, addr) = udp_server("127.0.0.1:0/udp", &["--udp-amplification", "2"]);
    assert_eq!(ask(&udp_client(addr), b"hello"), said(b"hello"));
    let (_uncapped, addr) = udp_server("127.0.0.1:0/udp", &["--udp-amplification", "0"]);
    assert_eq!(ask(&udp_client(addr), b""), said(b""));
}

#[test]
fn udp_over_ipv6() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback here");
        return;
    }
    let (_server, addr) = udp_server("[::1]:0/udp", &[]);
    assert!(addr.is_ipv6());
    assert_eq!(ask(&udp_client(addr), b"over six"), said(b"over six"));
}

#[test]
fn a_command_guest_reads_the_datagram_on_stdin() {
    let (_server, addr) = udp_server(
        "127.0.0.1:0/udp",
        &["--module", guests::COMMAND_ENV, "--udp-amplification", "0"],
    );
    let socket = udp_client(addr);
    // The guest flushes after each line: a datagram each.
    let replies = ask_all(&socket, b"one\ntwo\n");
    let port = socket.local_addr().unwrap().port();
    assert_eq!(
        replies,
        [
            format!(
                "UDPREMOTEIP=127.0.0.1 UDPREMOTEPORT={port} UDPLOCALIP=127.0.0.1 UDPLOCALPORT={} PROTO=UDP\r\n",
                addr.port()
            ),
            "echo: one\r\n".to_owned(),
            "echo: two\r\n".to_owned(),
        ]
    );
}

/// A path for a socket file in a fresh directory.
fn socket_path(test: &str, name: &str) -> PathBuf {
    fresh_dir("protocols", test).join(name)
}

/// Sends `line` and `quit` over the unix socket at `path`; what came back
/// before the server closed. A server that refuses the client may close
/// before the request is written or read (a reset): that is an empty
/// reply, not a failure.
fn unix_round_trip(path: &Path, line: &str) -> String {
    let mut client = UnixStream::connect(path).unwrap();
    client.set_read_timeout(Some(REPLY_WAIT)).unwrap();
    let request = format!("{line}\r\nquit\r\n");
    let reset = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
        )
    };
    match client.write_all(request.as_bytes()) {
        Err(e) if reset(&e) => return String::new(),
        other => other.unwrap(),
    }
    let mut reply = Vec::new();
    match client.read_to_end(&mut reply) {
        Err(e) if reset(&e) => {}
        other => {
            other.unwrap();
        }
    }
    String::from_utf8(reply).unwrap()
}

#[test]
fn unix_stream_echo_and_the_guest_sees_the_peers_uid() {
    let path = socket_path("unix-uid", "s.sock");
    let spec = format!("{}|unix", path.display());
    let mut server = Server::start(&["--port", &spec, "--module", guests::HOOK_TRACE]);
    server.wait_for_log(&format!(
        "Binding to UNIX socket file \"{}\"",
        path.display()
    ));
    let reply = unix_round_trip(&path, "hello");
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let pid = std::process::id();
    assert!(
        reply.contains(&format!("uid={uid} gid={gid} pid={pid}\r\n")),
        "{reply:?}"
    );
    assert!(reply.contains("proto=unix"), "{reply:?}");
    assert!(reply.contains("You said 'hello'\r\n"), "{reply:?}");
}

#[test]
fn allow_uid_accepts_and_refuses_unix_clients() {
    if !util::require_root() {
        return;
    }
    let path = socket_path("allow-uid", "s.sock");
    let spec = format!("{}|unix", path.display());
    // The test runs as root: uid 0 is allowed, and refused where only
    // nobody is.
    let mut allowed = Server::start(&["--port", &spec, "--allow-uid", "root"]);
    allowed.wait_for_log("Serving built-in echo");
    assert_eq!(
        unix_round_trip(&path, "hi"),
        "You said 'hi'\r\nYou said 'quit'\r\n"
    );
    // Stopped in order: its workers end, and the file goes with them.
    allowed.signal("TERM");
    allowed.wait_exit();
    let mut refused = Server::start(&["--port", &spec, "--allow-uid", "nobody"]);
    refused.wait_for_log("Serving built-in echo");
    assert_eq!(unix_round_trip(&path, "hi"), "");
    refused.wait_for_log("denied by allow_uid (uid 0 is not listed)");
}

#[test]
fn a_stale_socket_file_is_replaced() {
    let path = socket_path("stale", "s.sock");
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists(), "the file stays after its socket closed");
    let spec = format!("{}|unix", path.display());
    let mut server = Server::start(&["--port", &spec]);
    server.wait_for_log("Serving built-in echo");
    server.wait_for_log(&format!(
        "removed the stale socket file {} (no process listened on it)",
        path.display()
    ));
    assert_eq!(
        unix_round_trip(&path, "x"),
        "You said 'x'\r\nYou said 'quit'\r\n"
    );
}

#[test]
fn a_regular_file_or_a_live_socket_at_the_path_is_refused() {
    let file = socket_path("not-a-socket", "file");
    std::fs::write(&file, "keep me").unwrap();
    let live = socket_path("live", "s.sock");
    let _listener = UnixListener::bind(&live).unwrap();
    let cases = [
        (&file, "exists and is not a socket (not removed)"),
        (
            &live,
            "is a socket a running process listens on (another server?)",
        ),
    ];
    for (path, why) in cases {
        for proto in ["unix", "unixdgram"] {
            let spec = format!("{}|{proto}", path.display());
            let out = util::run(&["--port", "127.0.0.1:0", "--port", &spec]);
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{stderr}");
            assert!(stderr.contains(&format!("{}", path.display())), "{stderr}");
            assert!(stderr.contains(why), "{stderr}");
        }
    }
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep me");
    assert!(
        UnixStream::connect(&live).is_ok(),
        "the live socket still works"
    );
}

#[test]
fn socket_files_get_their_mode_and_are_removed_at_exit() {
    let path = socket_path("mode", "s.sock");
    // A sticky directory, as /tmp is: there only a file's owner may remove
    // it, and the server gives its socket files to the user it becomes.
    let dir = path.parent().unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
    let spec = format!("{}|unix", path.display());
    let mut server = Server::start(&[
        "--port",
        &spec,
        "--socket-mode",
        "0660",
        "--socket-group",
        "root",
    ]);
    let root = nix::unistd::geteuid().is_root();
    // The file is the user's before the server becomes that user.
    server.wait_for_log(if root {
        "Setting uid to"
    } else {
        "Serving built-in echo"
    });
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o660);
    if root {
        use std::os::unix::fs::MetadataExt;
        let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
        assert_eq!(
            meta.uid(),
            nobody.uid.as_raw(),
            "given to the server's user"
        );
        // socket_group, not the user's group (nogroup).
        assert_eq!(meta.gid(), 0, "socket_group root");
    }
    // Served: the master has its signal handlers (a TERM before them
    // ends the process without its clean-up, as any program's default).
    assert_eq!(
        unix_round_trip(&path, "x"),
        "You said 'x'\r\nYou said 'quit'\r\n"
    );
    server.signal("TERM");
    server.wait_exit();
    assert!(!path.exists(), "removed at exit");
}

/// A unix datagram client bound to a path in `dir` the server (running
/// as nobody when started as root) may send to.
fn unix_dgram_client(dir: &Path) -> UnixDatagram {
    let path = dir.join("client.sock");
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777)).unwrap();
    socket.set_read_timeout(Some(REPLY_WAIT)).unwrap();
    socket
}

#[test]
fn unix_datagram_echo_and_an_unnamed_sender() {
    let path = socket_path("unixdgram", "d.sock");
    let spec = format!("{}|unixdgram", path.display());
    let mut server = Server::start(&["--port", &spec]);
    server.wait_for_log(&format!(
        "Binding to UNIXDGRAM socket file \"{}\"",
        path.display()
    ));
    let client = unix_dgram_client(path.parent().unwrap());
    client.send_to(b"hello", &path).unwrap();
    let mut buf = [0u8; 256];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], said(b"hello").as_slice());
    // A sender with no address is served, and answered by nobody.
    let unnamed = UnixDatagram::unbound().unwrap();
    unnamed.send_to(b"anyone?", &path).unwrap();
    let uid = nix::unistd::geteuid().as_raw();
    server.wait_for_log("a sender with no address: no reply can reach it");
    server.wait_for_log_all(&[&format!("peer=unix:uid={uid}"), "0 bytes out: served"]);
    if nix::unistd::geteuid().is_root() {
        // A sender whose socket the server's user (nobody) may not write
        // to: its reply fails, logged, and the next sender is answered.
        let private = fresh_dir("protocols", "unixdgram-private");
        std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
        let closed = UnixDatagram::bind(private.join("c.sock")).unwrap();
        closed.send_to(b"to no one", &path).unwrap();
        server.wait_for_log("cannot send the reply: permission denied");
        client.send_to(b"again", &path).unwrap();
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], said(b"again").as_slice());
    }
}

/// A unix datagram client that asks for a flood and never reads fills its
/// queue; the kernel then refuses the replies, which wait (tried again
/// later and later) until `idle_timeout` ends that request. Another client
/// is answered meanwhile and after.
#[test]
fn a_unix_datagram_client_that_does_not_read_holds_only_its_own_reply() {
    let path = socket_path("unixdgram-full", "d.sock");
    let spec = format!("{}|unixdgram", path.display());
    let mut server = Server::start(&[
        "--module",
        guests::MISBEHAVE,
        "--port",
        &spec,
        "--udp-amplification",
        "0",
        "--idle-timeout",
        "2",
    ]);
    server.wait_for_log(&format!(
        "Binding to UNIXDGRAM socket file \"{}\"",
        path.display()
    ));
    let flooded = unix_dgram_client(&fresh_dir("protocols", "unixdgram-full-a"));
    flooded.send_to(b"flood", &path).unwrap();
    let other = unix_dgram_client(&fresh_dir("protocols", "unixdgram-full-b"));
    let mut buf = [0u8; 256];
    for _ in 0..3 {
        other.send_to(b"hello", &path).unwrap();
        let n = other.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"ok hello\r\n");
    }
    let line = server.wait_for_log_all(&["peer=unix:", "idle timeout: no data for 2s"]);
    assert!(line.contains("unixdgram-full-a"), "{line}");
    other.send_to(b"after", &path).unwrap();
    let n = other.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"ok after\r\n");
    // What the flooded client's queue took is the flood's `x`s.
    flooded.set_nonblocking(true).unwrap();
    let mut big = vec![0u8; 70_000];
    let mut queued = 0;
    while let Ok(n) = flooded.recv(&mut big) {
        assert!(n > 0 && big[..n].iter().all(|&b| b == b'x'), "{n} bytes");
        queued += 1;
    }
    assert!(queued > 0, "the flooded client's queue took nothing");
}

/// One server of `personality` serving TCP, UDP, a unix stream socket and
/// a unix datagram socket at once: each answers the echo.
fn all_four_kinds_at_once(personality: &str) {
    let dir = fresh_dir("protocols", &format!("four-{personality}"));
    let stream = dir.join("s.sock");
    let dgram = dir.join("d.sock");
    let stream_spec = format!("{}|unix", stream.display());
    let dgram_spec = format!("{}|unixdgram", dgram.display());
    let mut server = Server::start(&[
        "--server-type",
        personality,
        "--port",
        "127.0.0.1:0/udp",
        "--port",
        &stream_spec,
        "--port",
        &dgram_spec,
        "--min-servers",
        "2",
    ]);
    let udp = server.bound_of("UDP", 1)[0];
    server.wait_for_log("Serving built-in echo");
    for round in 0..3 {
        let line = format!("round {round}");
        server.assert_echoes(&line, "tcp");
        assert_eq!(
            ask(&udp_client(udp), line.as_bytes()),
            said(line.as_bytes())
        );
        assert_eq!(
            unix_round_trip(&stream, &line),
            format!("You said '{line}'\r\nYou said 'quit'\r\n")
        );
        let client = unix_dgram_client(&dir);
        client.send_to(line.as_bytes(), &dgram).unwrap();
        let mut buf = [0u8; 256];
        let n = client.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], said(line.as_bytes()).as_slice());
    }
}

per_personality!(all_four_kinds_at_once: multiplex, prefork, prefork_simple, single, fork);

#[test]
fn inetd_serves_a_unix_socket_and_pipes() {
    // A unix stream socket on stdin and stdout (systemd Accept=yes on a
    // ListenStream= path).
    let (ours, theirs) = UnixStream::pair().unwrap();
    let stdin = theirs.try_clone().unwrap();
    let mut child = Command::new(BIN)
        .args(["--server-type", "inetd", "--module", guests::HOOK_TRACE])
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(stdin)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut ours = ours;
    ours.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    ours.write_all(b"hi\r\nquit\r\n").unwrap();
    let mut reply = String::new();
    ours.read_to_string(&mut reply).unwrap();
    assert!(reply.contains("proto=unix"), "{reply:?}");
    assert!(reply.contains("You said 'hi'\r\n"), "{reply:?}");
    let uid = nix::unistd::geteuid().as_raw();
    assert!(reply.contains(&format!("uid={uid} ")), "{reply:?}");
    assert!(child.wait().unwrap().success());
    // Pipes: a client with no address.
    let mut child = Command::new(BIN)
        .args(["--server-type", "inetd"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"through a pipe\r\n")
        .unwrap();
    eventually("inetd on pipes to exit", || {
        child.try_wait().unwrap().is_some()
    });
    let mut reply = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut reply)
        .unwrap();
    assert_eq!(reply, "You said 'through a pipe'\r\n");
}

#[test]
fn a_handler_built_against_0_1_0_keeps_working() {
    // Built from guest-examples/hook-trace when the contract was
    // netserver:handler@0.1.0, and kept as it was built.
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/hook-trace-0.1.0.wasm"
    );
    let mut server = Server::start(&["--module", fixture, "--property", "greeting=hi"]);
    let mut client = server.connect();
    client.send(b"hello\r\nquit\r\n");
    let reply = client.read_all();
    let port = client.local_port();
    assert_eq!(
        reply,
        format!(
            "peer=127.0.0.1:{port} local={} proto=tcp service=hook-trace-0.1.0 host=-\r\nprop greeting=hi\r\nYou said 'hello'\r\nYou said 'quit'\r\nbye\r\n",
            server.addr
        )
    );
    server.wait_for_log("hook child-finish-hook");
    let hooks: Vec<String> = server
        .log()
        .iter()
        .filter_map(|l| l.split(": hook ").nth(1).map(str::to_owned))
        .collect();
    assert_eq!(hooks, HOOKS_IN_ORDER);
}

#[test]
fn bad_datagram_and_socket_file_options_are_refused() {
    let cases = [
        (
            "--udp-recv-flags=2",
            "only MSG_TRUNC (32) and MSG_DONTWAIT (64) may be given",
        ),
        (
            "--udp-recv-len=0",
            "--udp-recv-len: invalid value '0': must be a whole number from 1 to 65535",
        ),
        (
            "--socket-mode=999",
            "--socket-mode: invalid value '999': must be an octal file mode",
        ),
        (
            "--udp-amplification=-1",
            "--udp-amplification: invalid value '-1': must be a whole number from 0 to 1000",
        ),
    ];
    for (arg, want) in cases {
        let out = util::run(&["--check", arg]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{arg}: {stderr}");
        assert!(stderr.contains(want), "{arg}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{arg}: {stderr}");
    }
}

#[test]
fn hup_keeps_udp_and_unix_sockets_and_their_files() {
    let dir = fresh_dir("protocols", "hup");
    let stream = dir.join("s.sock");
    let spec = format!("{}|unix", stream.display());
    let mut server = Server::start(&["--port", "127.0.0.1:0/udp", "--port", &spec]);
    let udp = server.bound_of("UDP", 1)[0];
    server.wait_for_log("Serving built-in echo");
    assert_eq!(ask(&udp_client(udp), b"before"), said(b"before"));
    server.signal("HUP");
    server.wait_for_log_lines("(inherited across a restart)", 3);
    server.wait_for_log_lines("Serving built-in echo", 2);
    // The same port and the same file serve on: the file was not removed.
    assert_eq!(ask(&udp_client(udp), b"after"), said(b"after"));
    assert_eq!(
        unix_round_trip(&stream, "after"),
        "You said 'after'\r\nYou said 'quit'\r\n"
    );
    let bound = server.bound_of("UDP", 2);
    assert_eq!(bound[1], udp, "the UDP socket was taken over");
}

#[test]
fn systemd_hands_over_udp_and_unix_sockets() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = fresh_dir("protocols", "systemd");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp_addr = udp.local_addr().unwrap();
    let stream = dir.join("s.sock");
    let unix = UnixListener::bind(&stream).unwrap();
    let dgram = dir.join("d.sock");
    let unix_dgram = UnixDatagram::bind(&dgram).unwrap();
    let fds = [
        tcp.as_raw_fd(),
        udp.as_raw_fd(),
        unix.as_raw_fd(),
        unix_dgram.as_raw_fd(),
    ];
    let mut command = Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ LISTEN_FDS=4 exec \"$0\" \"$@\""])
        .arg(BIN)
        .args(["--log-level", "4", "--server-type", "prefork"]);
    // SAFETY: between fork and exec only async-signal-safe calls: each
    // socket is moved out of the way, then to descriptors 3 to 6 as
    // systemd passes them, their close-on-exec flags cleared.
    unsafe {
        command.pre_exec(move || {
            for (i, fd) in fds.iter().enumerate() {
                if nix::libc::dup2(*fd, 200 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            for i in 0..fds.len() as i32 {
                if nix::libc::dup2(200 + i, 3 + i) < 0
                    || nix::libc::fcntl(3 + i, nix::libc::F_SETFD, 0) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                nix::libc::close(200 + i);
            }
            Ok(())
        });
    }
    let mut server = Server::spawn(command);
    server.wait_for_log_lines("inherited from systemd", 4);
    server.wait_for_log("Serving built-in echo");
    drop((tcp, udp, unix, unix_dgram));
    server.assert_echoes("tcp", "the TCP socket");
    assert_eq!(ask(&udp_client(udp_addr), b"udp"), said(b"udp"));
    assert_eq!(
        unix_round_trip(&stream, "unix"),
        "You said 'unix'\r\nYou said 'quit'\r\n"
    );
    let client = unix_dgram_client(&dir);
    client.send_to(b"dgram", &dgram).unwrap();
    let mut buf = [0u8; 64];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], said(b"dgram").as_slice());
    // systemd's socket files are systemd's to remove.
    server.signal("TERM");
    server.wait_exit();
    assert!(stream.exists() && dgram.exists());
}

/// The kernel's count of datagrams it dropped for the UDP socket on
/// 127.0.0.1:`port` (the last column of /proc/net/udp).
fn kernel_drops(port: u16) -> u64 {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let local = format!("0100007F:{port:04X}");
    table
        .lines()
        .find(|line| line.split_whitespace().nth(1) == Some(local.as_str()))
        .and_then(|line| line.split_whitespace().last()?.parse().ok())
        .unwrap_or(0)
}

/// A process's resident memory, in KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

#[test]
fn a_burst_beyond_the_workers_is_dropped_by_the_kernel_not_queued_in_the_host() {
    // One place, taken by a guest that computes until its CPU limit: the
    // worker receives nothing more meanwhile.
    let (server, addr) = udp_server(
        "127.0.0.1:0/udp",
        &[
            "--module",
            guests::MISBEHAVE,
            "--max-instances",
            "1",
            "--cpu-limit",
            "3",
            "--udp-amplification",
            "0",
        ],
    );
    let socket = udp_client(addr);
    assert_eq!(ask(&socket, b"hello\n"), b"ok hello\r\n");
    let worker = eventually("the worker", || {
        util::children(server.pid()).first().copied()
    });
    let before = rss_kib(worker);
    socket.send(b"spin\n").unwrap();
    // 20,000 datagrams of 1 KB: 80 MB of receive buffers, were the host to
    // take them all.
    let filler = vec![b'x'; 1000];
    for _ in 0..20_000 {
        let _ = socket.send(&filler);
    }
    eventually("the kernel to drop what the worker did not take", || {
        kernel_drops(addr.port()) > 0
    });
    let grown = rss_kib(worker).saturating_sub(before);
    eprintln!(
        "kernel drops {}, worker grew {grown} KiB",
        kernel_drops(addr.port())
    );
    assert!(
        grown < 16 * 1024,
        "the worker grew by {grown} KiB during the burst"
    );
}
