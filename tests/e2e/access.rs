//! Access rules, per-address limits and the PROXY protocol, end to end:
//! clients connect from different 127.0.0.0/8 source addresses (and ::1),
//! directly or through a real HAProxy.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::util::{
    Client, Haproxy, Server, eventually, free_port, guests, per_personality, require_command,
};

/// What `hook-trace` answers a served client, and a refused one.
#[derive(Debug, PartialEq)]
enum Seen {
    Served,
    Denied,
}

/// One session from `source` to `server`: `hook-trace` greets, then echoes
/// (served) or says `denied` (refused).
fn session(server: &Server, source: &str) -> (Seen, String) {
    let source: IpAddr = source.parse().unwrap();
    let target = SocketAddr::new(
        if source.is_ipv4() {
            "127.0.0.1".parse().unwrap()
        } else {
            "::1".parse().unwrap()
        },
        server.addr.port(),
    );
    let mut client = Client::connect_from(source, target);
    client.send(b"ping\nquit\n");
    let reply = client.read_all();
    let seen = if reply.contains("You said 'ping'") {
        Seen::Served
    } else {
        assert!(reply.ends_with("denied\r\nbye\r\n"), "{reply:?}");
        Seen::Denied
    };
    (seen, reply)
}

/// The four lists, in Net::Server's order, whole-match patterns, and an
/// IPv4-mapped CIDR rule.
const RULES: &[&str] = &[
    "--deny",
    r"127\.0\.0\.5",
    "--cidr-deny",
    "127.0.0.16/28",
    "--allow",
    r"127\.0\.0\.(1|5|20)",
    "--cidr-allow",
    "::ffff:127.0.0.64/122",
];

const IPV4_CASES: &[(&str, Seen, &str)] = &[
    ("127.0.0.1", Seen::Served, r"allow"),
    ("127.0.0.5", Seen::Denied, r"denied by deny 127\.0\.0\.5"),
    (
        "127.0.0.20",
        Seen::Denied,
        "denied by cidr_deny 127.0.0.16/28",
    ),
    ("127.0.0.70", Seen::Served, "cidr_allow"),
    (
        "127.0.0.10",
        Seen::Denied,
        "denied by matching no allow or cidr_allow rule",
    ),
    (
        "127.0.0.3",
        Seen::Denied,
        "denied by matching no allow or cidr_allow rule",
    ),
];

fn check_table(server: &mut Server, cases: &[(&str, Seen, &str)]) {
    for (source, want, why) in cases {
        let (seen, reply) = session(server, source);
        assert_eq!(&seen, want, "client {source}: {reply:?}");
        let peer = format!("peer={source}:");
        assert!(reply.starts_with(&peer), "{reply:?}");
        if *want == Seen::Denied {
            server.wait_for_log_all(&[&peer, why]);
        }
    }
    // A refused client never reaches process-request, and the rules ran
    // before allow-deny-hook, which refused clients do not reach either.
    let log = server.log();
    let served = cases.iter().filter(|c| c.1 == Seen::Served).count();
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    assert_eq!(count("hook process-request"), served);
    assert_eq!(count("hook allow-deny-hook"), served);
    assert_eq!(count("hook request-denied-hook"), cases.len() - served);
}

#[test]
fn four_lists_for_ipv4_peers() {
    let mut args = vec!["--module", guests::HOOK_TRACE];
    args.extend_from_slice(RULES);
    let mut server = Server::start(&args);
    check_table(&mut server, IPV4_CASES);
}

#[test]
fn four_lists_for_ipv4_mapped_peers() {
    // A dual-stack IPv6 socket sees IPv4 clients as ::ffff:a.b.c.d; the
    // same rules apply to them as IPv4 addresses.
    let mut args = vec!["--module", guests::HOOK_TRACE];
    args.extend_from_slice(RULES);
    let mut server = Server::start_on("*:0", &args);
    assert!(server.addr.is_ipv6(), "{:?}", server.log());
    server.wait_for_log("serves IPv4 too");
    check_table(&mut server, IPV4_CASES);
}

#[test]
fn four_lists_for_ipv6_peers() {
    let table: &[(&[&str], Seen, &str)] = &[
        (&["--allow", "::1"], Seen::Served, ""),
        (&["--allow", r"::2|::1"], Seen::Served, ""),
        (&["--allow", r"::"], Seen::Denied, "matching no allow"),
        (&["--cidr-allow", "::/64"], Seen::Served, ""),
        (
            &["--cidr-deny", "::1/128", "--allow", "::1"],
            Seen::Denied,
            "denied by cidr_deny ::1/128",
        ),
        (
            &["--deny", "::1", "--cidr-allow", "::1/128"],
            Seen::Denied,
            "denied by deny ::1",
        ),
        (
            &["--cidr-allow", "127.0.0.0/8"],
            Seen::Denied,
            "matching no allow",
        ),
    ];
    for (rules, want, why) in table {
        let mut args = vec!["--module", guests::HOOK_TRACE];
        args.extend_from_slice(rules);
        let mut server = Server::start_on("[::1]:0", &args);
        let (seen, reply) = session(&server, "::1");
        assert_eq!(&seen, want, "{rules:?}: {reply:?}");
        if !why.is_empty() {
            server.wait_for_log(why);
        }
    }
}

#[test]
fn host_names_only_with_reverse_lookups() {
    // /etc/hosts names 127.0.0.1 `localhost`; 127.0.0.2 has no name.
    let table: &[(&[&str], &str, Seen, &str)] = &[
        (
            &["--allow", "localhost"],
            "127.0.0.1",
            Seen::Denied,
            "host=-",
        ),
        (
            &["--allow", "localhost", "--reverse-lookups", "1"],
            "127.0.0.1",
            Seen::Served,
            "host=localhost",
        ),
        (
            &["--allow", "localhost", "--reverse-lookups", "1"],
            "127.0.0.2",
            Seen::Denied,
            "host=-",
        ),
        (
            &["--allow", "local", "--reverse-lookups", "1"],
            "127.0.0.1",
            Seen::Denied,
            "host=localhost",
        ),
        (
            &["--deny", "localhost", "--cidr-allow", "127.0.0.0/8"],
            "127.0.0.1",
            Seen::Served,
            "host=-",
        ),
        (
            &[
                "--deny",
                "localhost",
                "--cidr-allow",
                "127.0.0.0/8",
                "--double-reverse-lookups",
                "1",
            ],
            "127.0.0.1",
            Seen::Denied,
            "host=localhost",
        ),
    ];
    for (rules, source, want, host) in table {
        let mut args = vec!["--module", guests::HOOK_TRACE];
        args.extend_from_slice(rules);
        let server = Server::start(&args);
        let (seen, reply) = session(&server, source);
        assert_eq!(&seen, want, "{rules:?} from {source}: {reply:?}");
        assert!(reply.contains(host), "{rules:?}: {reply:?}");
    }
}

#[test]
fn bad_rules_are_refused_when_the_configuration_loads() {
    for (args, needle) in [
        (&["--allow", "127.(0"][..], "allow"),
        (&["--deny", "[z-a]"][..], "deny"),
        (&["--cidr-allow", "10.0.0.0/33"][..], "cidr_allow"),
        (&["--cidr-deny", "not-a-net"][..], "cidr_deny"),
        (&["--proxy-from", "10.0.0.1/99"][..], "proxy_from"),
        (&["--max-conn-per-ip", "-1"][..], "max_conn_per_ip"),
    ] {
        let out = crate::util::run(&[&["--port", "0"][..], args].concat());
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        let named = err.contains(needle) || err.contains(&needle.replace('_', "-"));
        assert!(named && err.contains(args[1]), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!err.contains("Binding"), "{err}");
    }
}

#[test]
fn concurrent_connections_per_address_are_limited() {
    let mut server = Server::start(&["--max-conn-per-ip", "2"]);
    let addr = server.addr;
    let from = |source: &str| Client::connect_from(source.parse().unwrap(), addr);
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut client = from("127.0.0.1");
        client.send(b"hi\n");
        assert_eq!(client.read_line(), "You said 'hi'\r\n");
        open.push(client);
    }
    // A third from the same address is closed before any guest runs ...
    let mut third = from("127.0.0.1");
    assert!(third.read_until_closed().is_empty());
    server.wait_for_log("127.0.0.1 already has 2 connections open (max_conn_per_ip 2)");
    // ... another address is served ...
    let mut other = from("127.0.0.2");
    other.send(b"quit\n");
    assert_eq!(other.read_all(), "You said 'quit'\r\n");
    // ... and a closed connection gives its place back.
    let mut first = open.remove(0);
    first.send(b"quit\n");
    first.read_all();
    server.wait_for_log("peer=127.0.0.1:");
    server.eventually("the first connection to end", || {
        server
            .log()
            .iter()
            .any(|l| l.contains("connection ended") && l.contains("peer=127.0.0.1:"))
    });
    let mut again = from("127.0.0.1");
    again.send(b"quit\n");
    assert_eq!(again.read_all(), "You said 'quit'\r\n");
}

#[test]
fn connection_rate_per_address_is_limited() {
    let mut server = Server::start(&["--max-rate-per-ip", "2"]);
    let mut served = 0;
    let mut refused = 0;
    for _ in 0..6 {
        let mut client = Client::connect_from("127.0.0.1".parse().unwrap(), server.addr);
        let _ = client.try_send(b"quit\n");
        match String::from_utf8(client.read_until_closed())
            .unwrap()
            .as_str()
        {
            "You said 'quit'\r\n" => served += 1,
            "" => refused += 1,
            other => panic!("unexpected reply {other:?}"),
        }
    }
    // The allowance is 2 at once, refilled at 2 per second: six quick
    // connections cannot all pass.
    assert!(
        served >= 2 && refused >= 1,
        "{served} served, {refused} refused"
    );
    server.wait_for_log("opens connections faster than max_rate_per_ip 2 per second");
    let mut other = Client::connect_from("127.0.0.2".parse().unwrap(), server.addr);
    other.send(b"quit\n");
    assert_eq!(other.read_all(), "You said 'quit'\r\n");
}

/// A PROXY v2 header for a TCP/IPv4 client.
fn proxy_v2(command: u8, client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.push(0x20 | command);
    let (SocketAddr::V4(c), SocketAddr::V4(s)) = (client, server) else {
        panic!("IPv4 only here");
    };
    if command == 0 {
        h.extend_from_slice(&[0x00, 0, 0]);
        return h;
    }
    h.push(0x11);
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&c.ip().octets());
    h.extend_from_slice(&s.ip().octets());
    h.extend_from_slice(&c.port().to_be_bytes());
    h.extend_from_slice(&s.port().to_be_bytes());
    h
}

/// Sends `header` (in two pieces when `split`), then a session, from
/// `source`; returns the reply.
fn through_proxy(server: &Server, source: &str, header: &[u8], split: bool) -> String {
    let mut client = Client::connect_from(source.parse().unwrap(), server.addr);
    if split {
        let (a, b) = header.split_at(header.len() / 2);
        client.send(a);
        std::thread::sleep(Duration::from_millis(20));
        client.send(b);
    } else {
        client.send(header);
    }
    client.send(b"ping\nquit\n");
    client.read_all()
}

#[test]
fn proxy_headers_are_trusted_from_proxy_from_only() {
    let mut server = Server::start(&[
        "--module",
        guests::HOOK_TRACE,
        "--proxy-from",
        "127.0.0.2/32",
        "--deny",
        r"192\.0\.2\.66",
        "--cidr-allow",
        "0.0.0.0/0",
    ]);
    let far: SocketAddr = "192.0.2.7:4000".parse().unwrap();
    let front: SocketAddr = "198.51.100.1:25".parse().unwrap();
    // v1 and v2, whole or split: rules, log and guest see the client.
    for (header, split) in [
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 4000 25\r\n".to_vec(),
            false,
        ),
        (
            b"PROXY TCP4 192.0.2.7 198.51.100.1 4000 25\r\n".to_vec(),
            true,
        ),
        (proxy_v2(1, far, front), false),
        (proxy_v2(1, far, front), true),
    ] {
        let reply = through_proxy(&server, "127.0.0.2", &header, split);
        assert!(
            reply.starts_with("peer=192.0.2.7:4000 local=198.51.100.1:25 "),
            "{reply:?}"
        );
        assert!(reply.contains("You said 'ping'"), "{reply:?}");
    }
    server.wait_for_log("peer=192.0.2.7:4000}: connection ended");
    // A deny rule applies to the client behind the proxy.
    let denied = proxy_v2(1, "192.0.2.66:4000".parse().unwrap(), front);
    let reply = through_proxy(&server, "127.0.0.2", &denied, false);
    assert!(reply.ends_with("denied\r\nbye\r\n"), "{reply:?}");
    server.wait_for_log(r"denied by deny 192\.0\.2\.66");
    // LOCAL (a health check): the proxy's own address stands.
    let reply = through_proxy(&server, "127.0.0.2", &proxy_v2(0, far, front), false);
    assert!(reply.starts_with("peer=127.0.0.2:"), "{reply:?}");
    // From anyone else a header is just data, never trusted.
    let reply = through_proxy(
        &server,
        "127.0.0.3",
        b"PROXY TCP4 192.0.2.7 198.51.100.1 4000 25\r\n",
        false,
    );
    assert!(reply.starts_with("peer=127.0.0.3:"), "{reply:?}");
    assert!(
        reply.contains("You said 'PROXY TCP4 192.0.2.7 198.51.100.1 4000 25'"),
        "{reply:?}"
    );
}

#[test]
fn a_missing_or_malformed_proxy_header_closes_the_connection() {
    let mut server = Server::start(&["--module", guests::HOOK_TRACE, "--proxy-from", "127.0.0.2"]);
    for (bytes, why) in [
        (&b"ping\r\n"[..], "not a PROXY header"),
        (
            &b"PROXY TCP4 192.0.2.999 10.0.0.1 1 2\r\n"[..],
            "invalid IP address for the source",
        ),
        (
            &b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x04abcd"[..],
            "bad PROXY v2 header",
        ),
    ] {
        let mut client = Client::connect_from("127.0.0.2".parse().unwrap(), server.addr);
        client.send(bytes);
        assert!(client.read_until_closed().is_empty(), "{bytes:?}");
        let line = server.wait_for_log(why);
        assert!(
            line.contains("closed the connection from proxy 127.0.0.2:"),
            "{line}"
        );
    }
    // A proxy that connects and closes without a header.
    let mut client = Client::connect_from("127.0.0.2".parse().unwrap(), server.addr);
    client.shutdown_write();
    assert!(client.read_until_closed().is_empty());
    server.wait_for_log("closed before a whole PROXY header");
    // The worker is unharmed: a trusted proxy with a good header is served.
    let reply = through_proxy(&server, "127.0.0.2", b"PROXY UNKNOWN\r\n", false);
    assert!(reply.contains("You said 'ping'"), "{reply:?}");
    assert!(server.is_running());
}

/// The guest sees the client's address and port and the address the client
/// reached, whether the listener is bound to one address (known from the
/// listener) or to a wildcard (asked of the kernel per connection), in the
/// personality that accepts many connections and in one that accepts one at
/// a time.
fn the_guest_sees_both_ends_of_its_connection(server_type: &str) {
    for (spec, reached) in [("127.0.0.1:0", "127.0.0.1"), ("0.0.0.0:0", "127.0.0.2")] {
        let server = Server::start_on(
            spec,
            &["--module", guests::HOOK_TRACE, "--server-type", server_type],
        );
        let local = SocketAddr::new(reached.parse().unwrap(), server.addr.port());
        let mut client = Client::connect_from("127.0.0.3".parse().unwrap(), local);
        let port = client.local_port();
        client.send(b"ping\nquit\n");
        let reply = client.read_all();
        assert!(
            reply.starts_with(&format!("peer=127.0.0.3:{port} local={local} ")),
            "{server_type} on {spec}: {reply:?}"
        );
        assert!(reply.contains("You said 'ping'"), "{reply:?}");
    }
}
per_personality!(the_guest_sees_both_ends_of_its_connection: multiplex, prefork);

#[test]
fn behind_a_real_haproxy_sending_proxy_v2() {
    // .ci/run installs it (apt-get install -y haproxy).
    let Some(haproxy) = require_command("haproxy") else {
        return;
    };
    let mut server = Server::start(&[
        "--module",
        guests::HOOK_TRACE,
        "--proxy-from",
        "127.0.0.1",
        "--deny",
        r"127\.0\.0\.9",
        "--cidr-allow",
        "127.0.0.0/8",
    ]);
    let dir = tempdir();
    let front = free_port();
    let config = format!(
        "global\n    maxconn 100\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 60s\n    timeout server 60s\n\
         frontend front\n    bind 127.0.0.1:{front}\n    default_backend netserver\n\
         backend netserver\n    server ns 127.0.0.1:{} send-proxy-v2\n",
        server.addr.port()
    );
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, config).unwrap();
    let _proxy = Haproxy::start(&haproxy, &cfg, None);
    let front: SocketAddr = ([127, 0, 0, 1], front).into();
    eventually("haproxy to listen", || {
        std::net::TcpStream::connect(front).is_ok()
    });
    // A client at 127.0.0.2: the guest sees its address and port.
    let mut client = Client::connect_from("127.0.0.2".parse().unwrap(), front);
    let port = client.local_port();
    client.send(b"ping\nquit\n");
    let reply = client.read_all();
    assert!(
        reply.starts_with(&format!(
            "peer=127.0.0.2:{port} local=127.0.0.1:{} ",
            front.port()
        )),
        "{reply:?}"
    );
    assert!(reply.contains("You said 'ping'"), "{reply:?}");
    // The log names the client, not the proxy.
    server.wait_for_log(&format!("peer=127.0.0.2:{port}}}: connection ended"));
    // A client at 127.0.0.9 is refused by the deny rule.
    let mut client = Client::connect_from("127.0.0.9".parse().unwrap(), front);
    let port = client.local_port();
    client.send(b"ping\nquit\n");
    let reply = client.read_all();
    assert!(reply.ends_with("denied\r\nbye\r\n"), "{reply:?}");
    let line = server.wait_for_log(r"denied by deny 127\.0\.0\.9");
    assert!(line.contains(&format!("peer=127.0.0.9:{port}")), "{line}");
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "netserver-access-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
