//! What an adversarial sweep of the binary found (issue 20): each case as
//! an operator or an attacker would meet it, ended with one clear line and
//! exit 2, or served, and never a hang, a panic or unbounded memory.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::util::{BIN, Client, Server, children, per_personality, run_in};

/// A scratch directory of this test's own.
fn scratch(name: &str) -> PathBuf {
    crate::util::fresh_dir("hardening", name)
}

/// Runs `netserver-host ARGS` in `dir` (bounded), and returns its exit
/// status and standard error.
fn refused(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String) {
    let out = run_in(dir, BIN, args);
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_fifo_or_a_device_is_refused_not_waited_on_or_read_forever() {
    let dir = scratch("fifo");
    nix::unistd::mkfifo(&dir.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--check", "--module", "fifo"],
            "--module: invalid value 'fifo': is a fifo, not a regular file",
        ),
        (
            &["--module", "fifo"],
            "--module: invalid value 'fifo': is a fifo, not a regular file",
        ),
        (
            &["--check", "--conf-file", "fifo"],
            "--conf-file fifo: cannot read: is a fifo, not a regular file",
        ),
        (
            &["--check", "--log-file", "fifo"],
            "--log-file: invalid value 'fifo': is a fifo, not a regular file",
        ),
        (
            &["--log-file", "fifo"],
            "--log-file: invalid value 'fifo': is a fifo, not a regular file",
        ),
        (
            &["--check", "--module", "/dev/zero"],
            "--module: invalid value '/dev/zero': is a device, not a regular file",
        ),
        (
            &["--check", "--conf-file", "/dev/zero"],
            "--conf-file /dev/zero: cannot read: is a device, not a regular file",
        ),
    ];
    for (args, want) in cases {
        let (code, stderr) = refused(&dir, args);
        assert_eq!(code, Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr, format!("netserver-host: {want}\n"), "{args:?}");
    }
}

#[test]
fn a_huge_conf_file_is_refused_before_it_is_read() {
    let dir = scratch("huge");
    let file = std::fs::File::create(dir.join("huge.conf")).unwrap();
    // Sparse: it takes no room, yet reading it all would take 5 GiB.
    file.set_len(5 << 30).unwrap();
    let (code, stderr) = refused(&dir, &["--check", "--conf-file", "huge.conf"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(
        stderr,
        "netserver-host: --conf-file huge.conf: cannot read: is larger than 4 MiB\n"
    );
}

#[test]
fn signals_that_cannot_be_caught_are_refused_by_check() {
    let dir = scratch("signals");
    for signal in ["KILL", "STOP", "SEGV", "sigill", "FPE"] {
        for check in [true, false] {
            let mut args = vec!["--sig-passthrough", signal];
            if check {
                args.push("--check");
            }
            let (code, stderr) = refused(&dir, &args);
            assert_eq!(code, Some(2), "{args:?}: {stderr}");
            assert!(
                stderr.starts_with(&format!(
                    "netserver-host: --sig-passthrough: invalid value '{signal}': signal "
                )) && stderr
                    .ends_with("cannot be passed on (it cannot be caught, or means a crash)\n"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn check_into_a_closed_pipe_is_no_panic() {
    let mut child = Command::new(BIN)
        .arg("--check")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away at once, as `head -1` does after its line.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn odd_values_give_one_short_line() {
    let dir = scratch("odd");
    // A million digits: too long for a command line, not for a conf file.
    let huge = format!("log_level {}\n", "8".repeat(1 << 20));
    std::fs::write(dir.join("huge.conf"), huge).unwrap();
    let (code, stderr) = refused(&dir, &["--check", "--conf-file", "huge.conf"]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr:.300}");
    assert!(stderr.len() < 1000, "{} bytes: {stderr:.300}", stderr.len());
    assert!(stderr.contains("more bytes)"), "{stderr:.300}");

    let (code, stderr) = refused(&dir, &["--check", "--service", "a\nb"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "netserver-host: --service: invalid value 'a\\nb': must be at most 64 letters, digits, '.', '_' or '-'\n"
    );

    std::fs::write(
        dir.join("bom.conf"),
        "\u{feff}log_level 3\nport 127.0.0.1:0\n",
    )
    .unwrap();
    let out = run_in(&dir, BIN, &["--check", "--conf-file", "bom.conf"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["options"]["log_level"]["value"], 3);

    std::fs::write(dir.join("port.toml"), "port = true\n").unwrap();
    let (code, stderr) = refused(&dir, &["--check", "--conf-file", "port.toml"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        stderr,
        "netserver-host: port.toml:1: port: invalid value true: expected a string or number (true and false are for on/off options)\n"
    );
}

/// CPU time (user and system) the processes `pids` used so far, in clock
/// ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .map(|stat| {
            let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
            let fields: Vec<&str> = rest.split_whitespace().collect();
            // utime and stime: fields 14 and 15 of stat, 12 and 13 after comm.
            fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
        })
        .sum()
}

#[test]
fn a_proxy_v1_header_split_after_a_space_is_read_whole() {
    let server = Server::start(&["--proxy-from", "127.0.0.1/32"]);
    let mut client = server.connect();
    client.send(b"PROXY TCP4 192.0.2.7 10.0.0.1 1111 ");
    // The server reads what came before the rest does.
    std::thread::sleep(Duration::from_millis(50));
    client.send(b"2222\r\nhello\r\nquit\r\n");
    assert_eq!(client.read_all(), "You said 'hello'\r\nYou said 'quit'\r\n");
}

#[test]
fn partial_proxy_headers_wait_without_computing() {
    let server = Server::start(&["--proxy-from", "127.0.0.1/32"]);
    // Many connections from the trusted proxy, each with the start of a
    // header and no more.
    let clients: Vec<Client> = (0..200)
        .map(|_| {
            let mut client = server.connect();
            client.send(b"PROXY TCP4 192.0.2.");
            client
        })
        .collect();
    let workers = server.eventually("the worker to start", || {
        Some(children(server.pid())).filter(|c| !c.is_empty())
    });
    std::thread::sleep(Duration::from_millis(300));
    let before = cpu_ticks(&workers);
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(&workers) - before;
    // Waiting for 200 headers costs nothing; peeking at each every
    // millisecond took most of a core (tens of ticks a second).
    assert!(used <= 5, "the workers computed {used} ticks in 1 s");
    drop(clients);
    // Their ends were seen (no header comes after a client's end), and the
    // next client of the proxy is served.
    let mut client = server.connect();
    client.send(b"PROXY TCP4 192.0.2.7 10.0.0.1 1111 2222\r\nafter\nquit\n");
    assert_eq!(client.read_all(), "You said 'after'\r\nYou said 'quit'\r\n");
}

/// A child told to QUIT while it serves a client closes its listening
/// socket at once: nobody takes a client that connects during the drain
/// (the kernel refuses it), and the server ends when the open client is
/// done, not at `quit_timeout`.
fn quit_stops_accepting_before_the_open_client_is_done(personality: &str) {
    let mut server = Server::start(&[
        "--server-type",
        personality,
        "--min-servers",
        "1",
        "--max-servers",
        "1",
        "--min-spare-servers",
        "0",
        "--max-spare-servers",
        "1",
    ]);
    let mut open = server.connect();
    open.send(b"before\r\n");
    assert_eq!(open.read_line(), "You said 'before'\r\n");
    server.signal("QUIT");
    server.wait_for_log("Received QUIT");
    let addr = server.addr;
    server.eventually("new clients to be refused during the drain", || {
        matches!(
            std::net::TcpStream::connect(addr),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
        )
    });
    open.send(b"after\r\nquit\r\n");
    assert_eq!(open.read_all(), "You said 'after'\r\nYou said 'quit'\r\n");
    assert_eq!(server.wait_exit(), Some(0));
}

per_personality!(quit_stops_accepting_before_the_open_client_is_done: prefork_simple, prefork, single, multiplex, fork);

/// With the defaults (`max_instances` 1000 per worker), one address that
/// holds 2,000 silent connections does not keep a client from another
/// address waiting: its own idle connections make room. (The idle timeout
/// is an hour here, so that only eviction can make room in time.)
#[test]
fn one_address_holding_every_place_does_not_lock_others_out() {
    let mut server = Server::start(&["--idle-timeout", "3600"]);
    let target = server.addr;
    let attacker: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let held: Vec<Client> = (0..2000)
        .map(|_| Client::connect_from(attacker, target))
        .collect();
    server.wait_for_log("all 1000 places of this worker are taken");
    let started = std::time::Instant::now();
    let mut client = Client::connect_from("127.0.0.3".parse().unwrap(), target);
    client.send(b"hello\r\nquit\r\n");
    assert_eq!(client.read_all(), "You said 'hello'\r\nYou said 'quit'\r\n");
    eprintln!(
        "served beside 2,000 connections of one address after {:.1?}",
        started.elapsed()
    );
    server.wait_for_log("making room from the connections of 127.0.0.2, which holds");
    drop(held);
}

/// Resident memory of process `pid`, in bytes.
fn resident(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib << 10
}

/// Instances that grew to their `max_memory` give it back when they end:
/// the worker's resident memory does not keep 64 MiB per finished
/// connection until a batch of 64 is full.
#[test]
fn memory_of_finished_instances_is_given_back() {
    let server = Server::start(&["--module", crate::util::guests::MISBEHAVE]);
    let worker = server.eventually("the worker to start", || {
        children(server.pid()).first().copied()
    });
    let before = resident(worker);
    for _ in 0..40 {
        let mut client = server.connect();
        client.send(b"alloc\n");
        // The guest traps at its memory limit; the connection ends.
        client.read_until_closed();
    }
    let grown = 40 * (64 << 20);
    server.eventually("the worker to give the memory back", || {
        let now = resident(worker);
        let kept = now.saturating_sub(before);
        eprintln!(
            "worker resident: {} MiB ({} MiB more)",
            now >> 20,
            kept >> 20
        );
        // Far below 40 instances of 64 MiB: what one batch may hold.
        Ok::<_, String>(()).and_then(|()| {
            if kept < grown / 8 {
                Ok(())
            } else {
                Err(format!("{} MiB kept", kept >> 20))
            }
        })
    });
}
