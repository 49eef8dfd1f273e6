//! The conformance kit for handler authors: checks that any handler
//! module, in any language, keeps the contract of `wit/handler.wit` as
//! seen from a client and from the server log. The tests of every language
//! (`languages.rs`) call it with their modules; point it at yours the same
//! way:
//!
//! ```text
//! conformance::echoes_like_rust(MODULE, "multiplex");  // an echo handler
//! conformance::hook_order(MODULE, "prefork");          // a hook-trace handler
//! conformance::refuses_through_allow_deny(MODULE);     // a hook-trace handler
//! ```
//!
//! An echo handler answers as Net::Server's default `process_request`
//! (and the built-in Rust echo) does. A hook-trace handler speaks the
//! protocol of `guest-examples/hook-trace`: it logs `hook NAME` at notice
//! in every hook, greets with `peer=… local=… proto=… service=… host=…`
//! and `prop greeting=…` in `post-accept-hook`, refuses when property
//! `deny` is `yes` (saying `denied` in `request-denied-hook`), echoes in
//! `process-request` after writing `stderr from hook-trace` to stderr, and
//! says `bye` in `post-process-request-hook`.

use std::collections::BTreeSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::Mutex;
use std::time::Duration;

use crate::util::{HOOKS_IN_ORDER, Server, run};

/// The modules compiled into the module cache by this test process.
static WARM: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// Compiles `module` into the module cache (`--check` does), once per
/// test process and one module at a time: the servers of the tests then
/// load it compiled. A Python or JavaScript handler is a whole interpreter
/// (12 to 18 MB); several tests compiling it at once on a busy machine
/// could outlast the wait for a server's start.
pub fn warm(module: &str) {
    let mut warm = WARM.lock().unwrap_or_else(|p| p.into_inner());
    if warm.contains(module) {
        return;
    }
    let out = run(&["--check", "--module", module]);
    assert!(
        out.status.success(),
        "{module}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    warm.insert(module.to_owned());
}

/// What is sent to an echo handler, and what Net::Server's echo answers:
/// (what the case shows, bytes sent, the reply, whether the client closes
/// its writing side after sending).
type Conversation = (&'static str, Vec<u8>, Vec<u8>, bool);

fn conversations() -> Vec<Conversation> {
    let long = "x".repeat(100_000);
    vec![
        (
            "lines, crlf and bare lf, quit",
            b"hello\r\nbare\n\r\n  spaced  \r\ntab\there\r\nquit\r\n".to_vec(),
            b"You said 'hello'\r\nYou said 'bare'\r\nYou said ''\r\nYou said '  spaced  '\r\n\
              You said 'tab\there'\r\nYou said 'quit'\r\n"
                .to_vec(),
            false,
        ),
        (
            "quit mid-line stops reading",
            b"one\nplease quit now\nnever answered\n".to_vec(),
            b"You said 'one'\r\nYou said 'please quit now'\r\n".to_vec(),
            false,
        ),
        (
            "QUIT is not quit; the last line without a newline at end of input",
            b"QUIT\nQuit\nlast".to_vec(),
            b"You said 'QUIT'\r\nYou said 'Quit'\r\nYou said 'last'\r\n".to_vec(),
            true,
        ),
        (
            "utf-8, bytes that are not, only one cr stripped",
            b"\xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9\n\xff\xfe\x00bin\r\nx\r\r\n".to_vec(),
            b"You said '\xc3\xbcn\xc3\xafc\xc3\xb6d\xc3\xa9'\r\nYou said '\xff\xfe\x00bin'\r\n\
              You said 'x\r'\r\n"
                .to_vec(),
            true,
        ),
        (
            "a line longer than one read",
            format!("{long}\r\nquit\n").into_bytes(),
            format!("You said '{long}'\r\nYou said 'quit'\r\n").into_bytes(),
            false,
        ),
    ]
}

/// What a client of `server` gets for `bytes`.
fn talk(server: &Server, bytes: &[u8], close_write: bool) -> Vec<u8> {
    let mut client = server.connect();
    client.send(bytes);
    if close_write {
        client.shutdown_write();
    }
    client.read_until_closed()
}

/// The reply datagram to `request`.
fn ask_udp(to: SocketAddr, request: &[u8]) -> Vec<u8> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(to).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket.send(request).unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = socket.recv(&mut buf).expect("a reply datagram");
    buf.truncate(n);
    buf
}

/// `module`, served under `personality` on a TCP and a UDP port, answers
/// every conversation (and a datagram) byte for byte as the built-in Rust
/// echo does, which answers as Net::Server's echo does.
pub fn echoes_like_rust(module: &str, personality: &str) {
    let start = |module: Option<&str>| {
        let mut args = vec!["--server-type", personality, "--port", "127.0.0.1:0/udp"];
        if let Some(module) = module {
            args.extend(["--module", module]);
        }
        let mut server = Server::start(&args);
        let udp = server.bound_of("UDP", 1)[0];
        (server, udp)
    };
    warm(module);
    let (rust, rust_udp) = start(None);
    let (theirs, their_udp) = start(Some(module));
    for (what, sent, want, close_write) in conversations() {
        let from_rust = talk(&rust, &sent, close_write);
        assert_eq!(
            String::from_utf8_lossy(&from_rust),
            String::from_utf8_lossy(&want),
            "the Rust echo, {what}"
        );
        let got = talk(&theirs, &sent, close_write);
        assert!(
            got == from_rust,
            "{module} under {personality}, {what}: answered {:?}, the Rust echo {:?}",
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&from_rust)
        );
    }
    let datagram = b"one datagram\nof two lines";
    let from_rust = ask_udp(rust_udp, datagram);
    assert_eq!(from_rust, b"You said \"one datagram\nof two lines\"");
    assert_eq!(
        String::from_utf8_lossy(&ask_udp(their_udp, datagram)),
        String::from_utf8_lossy(&from_rust),
        "{module} under {personality}, a datagram"
    );
}

/// `module`, a hook-trace handler served under `personality`, runs its
/// hooks in Net::Server's order for each of two clients, with the client
/// info and a property, and its stderr is logged tagged with the service
/// and the client.
pub fn hook_order(module: &str, personality: &str) {
    warm(module);
    let mut server = Server::start(&[
        "--module",
        module,
        "--server-type",
        personality,
        "--property",
        "greeting=hi there",
        "--service",
        "tracer",
    ]);
    let local = server.addr.port();
    let mut client = server.connect();
    let peer_port = client.local_port();
    client.send(b"ping\nquit\n");
    assert_eq!(
        client.read_all(),
        format!(
            "peer=127.0.0.1:{peer_port} local=127.0.0.1:{local} proto=tcp service=tracer host=-\r\n\
             prop greeting=hi there\r\n\
             You said 'ping'\r\nYou said 'quit'\r\n\
             bye\r\n"
        ),
        "{module} under {personality}"
    );
    server.wait_for_log("hook child-finish-hook");
    let mut client = server.connect();
    client.send(b"quit\n");
    assert!(client.read_all().ends_with("You said 'quit'\r\nbye\r\n"));
    server.wait_for_log_lines("hook child-finish-hook", 2);
    let order: Vec<String> = server
        .log()
        .iter()
        .filter_map(|l| l.split("hook ").nth(1).map(str::to_owned))
        .collect();
    assert_eq!(
        order,
        [HOOKS_IN_ORDER, HOOKS_IN_ORDER].concat(),
        "{module} under {personality}"
    );
    let stderr = server.wait_for_log("stderr from hook-trace");
    assert!(
        stderr.contains("service=tracer") && stderr.contains("peer=127.0.0.1:"),
        "{stderr}"
    );
}

/// `module`, a hook-trace handler given property `deny=yes`, refuses the
/// client in `allow-deny-hook`: `request-denied-hook` runs instead of
/// `process-request`, and the client reads no echo.
pub fn refuses_through_allow_deny(module: &str) {
    warm(module);
    let mut server = Server::start(&["--module", module, "--property", "deny=yes"]);
    let mut client = server.connect();
    client.send(b"ping\n");
    let reply = client.read_all();
    assert!(reply.ends_with("denied\r\nbye\r\n"), "{module}: {reply:?}");
    assert!(!reply.contains("You said"), "{module}: {reply:?}");
    server.wait_for_log("denied by allow-deny-hook");
    server.wait_for_log("hook child-finish-hook");
    let order: Vec<String> = server
        .log()
        .iter()
        .filter_map(|l| l.split("hook ").nth(1).map(str::to_owned))
        .collect();
    assert_eq!(
        order,
        [
            "child-init-hook",
            "post-accept-hook",
            "allow-deny-hook",
            "request-denied-hook",
            "post-process-request-hook",
            "post-client-connection-hook",
            "child-finish-hook",
        ],
        "{module}"
    );
}
