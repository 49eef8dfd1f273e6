//! The process model: every `server_type` serves the echo; prefork keeps
//! its spare children, children are replaced after `max_requests`; QUIT
//! drains, TERM stops, HUP restarts without losing a client, TTIN and TTOU
//! change the number of children; inetd serves the connection on stdin.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::util::{
    BIN, Client, PATIENCE, Server, SteadyLoad, children, guests, kill, per_personality,
};

/// Waits (at most [`PATIENCE`]) until the server's children satisfy
/// `want`; returns them.
fn wait_children(server: &Server, what: &str, want: impl Fn(&[u32]) -> bool) -> Vec<u32> {
    server.eventually(&format!("the children to become {what}"), || {
        let now = children(server.pid());
        if want(&now) {
            Ok(now)
        } else {
            Err(format!("children {now:?}"))
        }
    })
}

fn echo_session(client: &mut Client) {
    client.send(b"hello\r\nquit\r\n");
    assert_eq!(client.read_all(), "You said 'hello'\r\nYou said 'quit'\r\n");
}

fn every_personality_serves_the_echo(personality: &str, extra: &[&str]) {
    let args = [&["--server-type", personality][..], extra].concat();
    let server = Server::start(&args);
    for _ in 0..3 {
        echo_session(&mut server.connect());
    }
    // Two clients at once are both served (one waits its turn in the
    // sequential personalities).
    let mut a = server.connect();
    let mut b = server.connect();
    a.send(b"a\r\nquit\r\n");
    b.send(b"b\r\nquit\r\n");
    assert_eq!(
        a.read_all(),
        "You said 'a'\r\nYou said 'quit'\r\n",
        "{args:?}"
    );
    assert_eq!(
        b.read_all(),
        "You said 'b'\r\nYou said 'quit'\r\n",
        "{args:?}"
    );
}
per_personality!(every_personality_serves_the_echo:
    single(&[]),
    fork(&[]),
    prefork_simple(&["--max-servers", "2"]),
    prefork(&["--min-servers", "2", "--max-servers", "4"]),
    multiplex(&[]),
    multiplex_2_workers as multiplex(&["--workers", "2"]),
);

/// Runs `netserver-host --server-type inetd ARGS` on one accepted
/// connection, as inetd does, sends `request` and returns the reply, whether
/// the server exited 0, and its log.
fn inetd(args: &[&str], request: &[u8]) -> (String, bool, String) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.set_read_timeout(Some(PATIENCE)).unwrap();
    let (accepted, _) = listener.accept().unwrap();
    let out = accepted.try_clone().unwrap();
    let mut server = Command::new(BIN)
        .args(["--server-type", "inetd"])
        .args(args)
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(accepted)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(out)))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    client.write_all(request).unwrap();
    let mut reply = String::new();
    client.read_to_string(&mut reply).unwrap();
    let status = server.wait().unwrap();
    let mut log = String::new();
    server
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    (reply, status.success(), log)
}

#[test]
fn inetd_serves_the_connection_on_stdin() {
    let (reply, success, log) = inetd(&[], b"over inetd\r\nquit\r\n");
    assert_eq!(reply, "You said 'over inetd'\r\nYou said 'quit'\r\n");
    assert!(success, "{log}");

    // A guest computing forever is stopped at its CPU limit here too.
    let (reply, _, log) = inetd(
        &["--module", guests::MISBEHAVE, "--cpu-limit", "1"],
        b"spin\n",
    );
    assert_eq!(reply, "");
    assert!(log.contains("CPU limit exceeded"), "{log}");

    // Not started by inetd: one clear line, exit 2.
    let out = Command::new(BIN)
        .args(["--server-type", "inetd"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("stdin and stdout are neither a connected socket nor pipes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn prefork_keeps_idle_children_within_the_spare_bounds() {
    let server = Server::start(&[
        "--server-type",
        "prefork",
        "--min-servers",
        "1",
        "--max-servers",
        "8",
        "--min-spare-servers",
        "1",
        "--max-spare-servers",
        "2",
        "--check-for-waiting",
        "0.1",
        "--check-for-spawn",
        "0.1",
        "--min-child-ttl",
        "0.1",
    ]);
    wait_children(&server, "at least 1", |c| !c.is_empty());
    // A burst: four clients held open keep four children busy; the parent
    // adds idle ones until at least one is spare.
    let mut clients: Vec<Client> = (0..4)
        .map(|i| {
            let mut client = server.connect();
            client.send(format!("c{i}\r\n").as_bytes());
            assert_eq!(client.read_line(), format!("You said 'c{i}'\r\n"));
            client
        })
        .collect();
    let busy = wait_children(&server, "4 busy + 1 spare", |c| c.len() >= 5);
    assert!(busy.len() <= 8, "{busy:?}");
    for client in &mut clients {
        client.send(b"quit\r\n");
        assert_eq!(client.read_all(), "You said 'quit'\r\n");
    }
    // All idle now: the parent retires the extra ones down to the spare
    // bound (at most max_spare_servers idle, at least min_servers).
    let after = wait_children(&server, "at most 2", |c| (1..=2).contains(&c.len()));
    assert!(after.len() <= 2);
    echo_session(&mut server.connect());
}

#[test]
fn max_requests_replaces_a_child() {
    let server = Server::start(&[
        "--server-type",
        "prefork-simple",
        "--max-servers",
        "1",
        "--max-requests",
        "2",
    ]);
    let first = wait_children(&server, "one", |c| c.len() == 1);
    echo_session(&mut server.connect());
    echo_session(&mut server.connect());
    let second = wait_children(&server, "replaced", |c| c.len() == 1 && c != first);
    echo_session(&mut server.connect());
    assert_ne!(first, second);
}

#[test]
fn ttin_and_ttou_change_the_number_of_children() {
    let mut server = Server::start(&["--server-type", "prefork-simple", "--max-servers", "2"]);
    wait_children(&server, "2", |c| c.len() == 2);
    server.signal("TTIN");
    server.wait_for_log("Received TTIN: increasing max_servers to 3");
    wait_children(&server, "3", |c| c.len() == 3);
    server.signal("TTOU");
    server.wait_for_log("Received TTOU: decreasing max_servers to 2");
    wait_children(&server, "2", |c| c.len() == 2);
    echo_session(&mut server.connect());
}

/// A drain (`signal`: QUIT, or TERM with `term_drains`) lets an open
/// conversation finish instead of cutting it; the server then exits 0.
pub fn a_drain_lets_an_open_conversation_finish(personality: &str, signal: &str, args: &[&str]) {
    let all = [&["--server-type", personality][..], args].concat();
    let mut server = Server::start(&all);
    let mut client = server.connect();
    client.send(b"before\r\n");
    assert_eq!(client.read_line(), "You said 'before'\r\n");
    server.signal(signal);
    server.wait_for_log(&format!(
        "Received {signal}: finishing open connections, then closing"
    ));
    client.send(b"after\r\nquit\r\n");
    assert_eq!(
        client.read_all(),
        "You said 'after'\r\nYou said 'quit'\r\n",
        "{personality}"
    );
    assert_eq!(server.wait_exit(), Some(0), "{personality}");
}
fn quit_lets_an_open_conversation_finish(personality: &str) {
    a_drain_lets_an_open_conversation_finish(personality, "QUIT", &["--max-servers", "2"]);
}
per_personality!(quit_lets_an_open_conversation_finish: multiplex, prefork_simple, fork);

fn term_ends_an_open_conversation(personality: &str) {
    let mut server = Server::start(&["--server-type", personality]);
    let mut client = server.connect();
    client.send(b"before\r\n");
    assert_eq!(client.read_line(), "You said 'before'\r\n");
    server.signal("TERM");
    // The connection ends without another reply.
    assert_eq!(client.read_all(), "", "{personality}");
    server.wait_exit();
}
per_personality!(term_ends_an_open_conversation: multiplex, prefork, fork);

/// Starts `personality` with at most two children (`prefork` keeps one or
/// two), and `extra`.
fn start_small(personality: &str, extra: &[&str]) -> Server {
    let pool = ["--min-servers", "1", "--max-servers", "2"];
    Server::start(&[&["--server-type", personality][..], &pool, extra].concat())
}

/// Sends signal `name` to each of the server's children, and waits until
/// they are gone: a child still exiting could otherwise accept the next
/// client and take it down with it.
fn stop_children(server: &Server, name: &str) {
    let stopped = children(server.pid());
    for &pid in &stopped {
        // A child may have ended meanwhile: a failed kill is no fault.
        let _ = kill(name, pid);
    }
    wait_children(server, "free of the stopped ones", |now| {
        !now.iter().any(|pid| stopped.contains(pid))
    });
}

/// In the personalities that serve one connection per process, the
/// guest's read sleeps in its client's socket. A stop signal sent to the
/// children alone still ends such a child at once, and the master goes on
/// serving with new children. The idle timeout is an hour, so only the
/// signal can end the wait (the client's read gives up after PATIENCE).
fn a_stop_signal_wakes_a_child_sleeping_in_its_clients_read(personality: &str, signal: &str) {
    let what = format!("{personality}, {signal}");
    let mut server = start_small(personality, &["--idle-timeout", "3600"]);
    let mut client = server.connect();
    client.send(b"before\r\n");
    assert_eq!(client.read_line(), "You said 'before'\r\n", "{what}");
    stop_children(&server, signal);
    // The connection ends without another reply.
    assert_eq!(client.read_all(), "", "{what}");
    assert!(server.is_running(), "{what}");
    echo_session(&mut server.connect());
}
per_personality!(a_stop_signal_wakes_a_child_sleeping_in_its_clients_read:
    prefork("TERM"),
    prefork_simple("INT"),
    fork("TERM"),
    single("INT"),
);

/// With two sockets the children take turns waiting in accept behind the
/// lock file (`serialize flock`, the default), the wait running on the
/// runtime's blocking pool. Clients of both ports are served, and a stop
/// signal still wakes a child sleeping in its client's read while another
/// waits for the lock.
fn two_ports_are_served_in_turn_and_a_stop_signal_still_wakes_a_reader(personality: &str) {
    let mut server = start_small(
        personality,
        &["--port", "127.0.0.2:0", "--idle-timeout", "3600"],
    );
    let addrs = server.bound_addrs(2);
    assert_ne!(addrs[0], addrs[1], "{personality}");
    for addr in &addrs {
        echo_session(&mut Client::connect(*addr));
    }
    let mut held = Client::connect(addrs[1]);
    held.send(b"held\r\n");
    assert_eq!(held.read_line(), "You said 'held'\r\n", "{personality}");
    stop_children(&server, "TERM");
    assert_eq!(held.read_all(), "", "{personality}");
    for addr in &addrs {
        echo_session(&mut Client::connect(*addr));
    }
}
per_personality!(two_ports_are_served_in_turn_and_a_stop_signal_still_wakes_a_reader:
    prefork,
    prefork_simple,
);

/// A client that sends faster than the guest reads, and reads every reply
/// at once, keeps the guest's socket full: its reads never sleep and its
/// writes never wait. A stop signal sent to the child must end it all the
/// same, long before the client has sent everything.
fn a_stop_signal_ends_a_child_whose_client_floods_it(personality: &str) {
    let mut server = start_small(personality, &[]);
    let mut client = server.connect();
    let mut writer = client.try_clone();
    // Bounded in lines and in time; it stops at the first error (the
    // child is gone).
    let flood = std::thread::spawn(move || {
        let started = Instant::now();
        let lines = b"flood\n".repeat(1000);
        for _ in 0..10_000 {
            if started.elapsed() > PATIENCE {
                return false;
            }
            if writer.try_send(&lines).is_err() {
                return true;
            }
        }
        false
    });
    let received = Arc::new(AtomicU64::new(0));
    let reader = std::thread::spawn({
        let received = received.clone();
        move || {
            // Every reply as it comes, until the connection ends.
            let mut buf = vec![0; 64 * 1024];
            while let Ok(n @ 1..) = client.try_read(&mut buf) {
                received.fetch_add(n as u64, Ordering::Relaxed);
            }
        }
    });
    let reply = "You said 'flood'\r\n".len() as u64;
    server.eventually(&format!("{personality}: replies to the flood"), || {
        received.load(Ordering::Relaxed) >= 1000 * reply
    });
    stop_children(&server, "TERM");
    reader.join().unwrap();
    assert!(
        flood.join().unwrap(),
        "{personality}: the child went on reading the flood"
    );
    assert!(server.is_running(), "{personality}");
    echo_session(&mut server.connect());
}
per_personality!(a_stop_signal_ends_a_child_whose_client_floods_it: prefork, fork);

/// The epoch ticker counts its process's CPU time: a connection that waits
/// for its client keeps an instance, and so the ticker, alive, yet the
/// process is not woken for ticks while it waits (on a wall clock, a
/// hundred times a second).
fn a_process_whose_client_is_silent_is_not_woken_by_the_ticker(personality: &str) {
    let server = Server::start(&["--server-type", personality, "--idle-timeout", "3600"]);
    let mut client = server.connect();
    client.send(b"hello\r\n");
    assert_eq!(client.read_line(), "You said 'hello'\r\n", "{personality}");
    // (The serving child's threads are listed through /proc, which may
    // miss them for a moment while the child starts: look again.)
    let tickers = |what: &str| {
        server.eventually(&format!("{personality}: a ticker {what}"), || {
            let found = ticker_wakeups(server.pid());
            (!found.is_empty()).then(|| found.values().sum::<u64>())
        })
    };
    let before = tickers("before");
    // A window to count wake-ups in (a measurement, not a wait for
    // something to happen).
    std::thread::sleep(Duration::from_secs(1));
    let woken = tickers("after") - before;
    // A wall-clock ticker would be woken about a hundred times; the
    // margin is for the ticks of the reply's own CPU time.
    assert!(
        woken < 20,
        "{personality}: tickers woken {woken} times in 1 s"
    );
    client.send(b"again\r\n");
    assert_eq!(client.read_line(), "You said 'again'\r\n", "{personality}");
}
per_personality!(a_process_whose_client_is_silent_is_not_woken_by_the_ticker: multiplex, prefork);

/// The voluntary context switches of every epoch ticker thread among the
/// children of `pid`, by thread id.
fn ticker_wakeups(pid: u32) -> std::collections::BTreeMap<String, u64> {
    let mut found = std::collections::BTreeMap::new();
    for child in children(pid) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{child}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let dir = task.path();
            let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
            if comm.trim() != "netserver-epoch" {
                continue;
            }
            let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
            let switches = status
                .lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok());
            if let Some(switches) = switches {
                found.insert(dir.display().to_string(), switches);
            }
        }
    }
    found
}

/// A scratch copy of a guest that a test may replace.
fn module_copy(name: &str, from: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hup");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::copy(from, &path).unwrap();
    path
}

/// Replaces the file at `path` with `from`, atomically.
fn replace(path: &PathBuf, from: &str) {
    let next = path.with_extension("next");
    std::fs::copy(from, &next).unwrap();
    std::fs::rename(&next, path).unwrap();
}

fn hup_under_load_loses_no_client_and_serves_the_new_module(personality: &str) {
    let module = module_copy(&format!("{personality}.wasm"), guests::ECHO);
    let mut server = Server::start(&[
        "--server-type",
        personality,
        "--module",
        module.to_str().unwrap(),
        "--min-servers",
        "2",
    ]);
    let addr = server.addr;
    let pid = server.pid();
    let new_replies = Arc::new(AtomicU64::new(0));
    // A continuous load of short connections.
    let load = {
        let new_replies = new_replies.clone();
        SteadyLoad::start(move |_| {
            let mut client = Client::connect(addr);
            client.send(b"ping\nquit\n");
            let reply = client.read_all();
            // The echo ends with the quit line, the tracer says `bye`
            // after it.
            if !reply.contains("You said 'ping'\r\nYou said 'quit'\r\n") {
                return Err(format!("{reply:?}"));
            }
            if reply.contains("peer=") {
                new_replies.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
    };
    load.wait_for_more(&server, &format!("{personality}: load before HUP"), 20);
    // The new module: the hook tracer, whose replies say `peer=`.
    replace(&module, guests::HOOK_TRACE);
    server.signal("HUP");
    server.wait_for_log("Received HUP: restarting");
    server.wait_for_log("(inherited across a restart)");
    server.eventually(&format!("{personality}: the new module to answer"), || {
        let new = new_replies.load(Ordering::SeqCst);
        if new >= 20 {
            Ok(())
        } else {
            Err(format!("new {new}, children {:?}", children(pid)))
        }
    });
    load.wait_for_more(&server, &format!("{personality}: load after HUP"), 20);
    load.stop_and_check(&format!("{personality}: connections across HUP"));
}
per_personality!(hup_under_load_loses_no_client_and_serves_the_new_module: multiplex, prefork);

#[test]
fn hup_with_a_broken_configuration_keeps_serving() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("hup");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("broken.conf");
    std::fs::write(&conf, "log_level 4\n").unwrap();
    let mut server = Server::start(&["--conf-file", conf.to_str().unwrap()]);
    echo_session(&mut server.connect());
    std::fs::write(&conf, "log_level 4\nlog_levle 3\n").unwrap();
    server.signal("HUP");
    server.wait_for_log("the configuration does not load; still serving the old one");
    echo_session(&mut server.connect());
}

fn per_worker_instance_runs_child_init_once_and_finish_at_the_end(personality: &str) {
    let mut server = Server::start(&[
        "--server-type",
        personality,
        "--module",
        guests::HOOK_TRACE,
        "--instance",
        "per-worker",
    ]);
    for _ in 0..3 {
        let mut client = server.connect();
        client.send(b"ping\nquit\n");
        assert!(client.read_all().contains("You said 'ping'"));
    }
    server.wait_for_log("hook post-client-connection-hook");
    server.signal("QUIT");
    assert_eq!(server.wait_exit(), Some(0));
    let count = |hook: &str| {
        server
            .log()
            .iter()
            .filter(|l| l.ends_with(&format!("hook {hook}")))
            .count()
    };
    assert_eq!(count("child-init-hook"), 1, "{personality}");
    assert_eq!(count("post-accept-hook"), 3, "{personality}");
    assert_eq!(count("child-finish-hook"), 1, "{personality}");
}
per_personality!(per_worker_instance_runs_child_init_once_and_finish_at_the_end: single, multiplex);

fn no_byte_of_one_client_reaches_the_next_on_a_shared_instance(personality: &str) {
    let server = Server::start(&[
        "--server-type",
        personality,
        "--module",
        guests::MISBEHAVE,
        "--property",
        "mode=oneline",
        "--instance",
        "per-worker",
    ]);
    for round in 0..5 {
        // One write: the guest's buffered stdin holds the secret when
        // it returns after the first line.
        let mut first = server.connect();
        first.send(format!("first{round}\nsecret{round}\nmore secret\n").as_bytes());
        assert_eq!(first.read_all(), format!("got first{round}\r\n"));
        let mut next = server.connect();
        next.send(format!("next{round}\n").as_bytes());
        assert_eq!(
            next.read_all(),
            format!("got next{round}\r\n"),
            "{personality}: a client's unread bytes reached the next client"
        );
    }
}
per_personality!(no_byte_of_one_client_reaches_the_next_on_a_shared_instance: single, multiplex);

/// Every personality with a master runs the guest's `dequeue` in a process
/// of its own every `check_for_dequeue` seconds, while it serves clients.
fn dequeue_runs_every_check_for_dequeue_seconds_beside_the_clients(personality: &str) {
    let mut server = Server::start(&[
        "--server-type",
        personality,
        "--module",
        guests::HOOK_TRACE,
        "--check-for-dequeue",
        "0.2",
    ]);
    server.wait_for_log("hook dequeue");
    echo_session_traced(&mut server.connect());
    // And again, in a new process each time.
    let runs = || server.log_count("dequeue{service=hook_trace}: hook dequeue");
    server.eventually(&format!("{personality}: dequeue to run 3 times"), || {
        let runs = runs();
        if runs >= 3 {
            Ok(())
        } else {
            Err(format!("it ran {runs} times"))
        }
    });
}
per_personality!(dequeue_runs_every_check_for_dequeue_seconds_beside_the_clients:
    multiplex,
    prefork,
    fork,
);

fn echo_session_traced(client: &mut Client) {
    client.send(b"hi\nquit\n");
    assert!(
        client
            .read_all()
            .contains("You said 'hi'\r\nYou said 'quit'\r\n")
    );
}

#[test]
fn systemd_socket_activation_serves_the_handed_socket() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let fd = listener.as_raw_fd();
    let mut command = Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""])
        .arg(BIN)
        .args([
            "--log-level",
            "4",
            "--server-type",
            "prefork-simple",
            "--max-servers",
            "2",
        ]);
    // SAFETY: between fork and exec only async-signal-safe calls: dup2
    // puts the listening socket at descriptor 3, as systemd does, and the
    // close-on-exec flag is cleared (dup2 onto itself would keep it).
    unsafe {
        command.pre_exec(move || {
            if fd != 3 && nix::libc::dup2(fd, 3) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if nix::libc::fcntl(3, nix::libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = Server::spawn(command);
    assert_eq!(server.addr, addr, "it serves the socket it was given");
    drop(listener);
    echo_session(&mut server.connect());
    echo_session(&mut server.connect());
    assert!(
        !server.log().iter().any(|l| l.contains("port 20203")),
        "no port of its own was bound"
    );
    server.wait_for_log("inherited from systemd");
}

/// `sig_passthrough`: the master passes the signal on to its workers,
/// which have no use for it and go on serving. A conversation is held open
/// throughout, so that `fork`, whose children live only while they serve a
/// client, has a worker to pass it to. `pool`: the number of children the
/// personality keeps with `args`, where it is fixed.
fn sig_passthrough_passes_signals_to_the_workers(
    personality: &str,
    args: &[&str],
    pool: Option<usize>,
) {
    let passthrough = [
        "--server-type",
        personality,
        "--sig-passthrough",
        "USR2,WINCH",
    ];
    let mut server = Server::start(&[&passthrough[..], args].concat());
    let mut held = server.connect();
    held.send(b"before\r\n");
    assert_eq!(held.read_line(), "You said 'before'\r\n", "{personality}");
    if let Some(pool) = pool {
        wait_children(&server, &pool.to_string(), |c| c.len() == pool);
    }
    server.signal("USR2");
    let line = server.wait_for_log("passing USR2 to ");
    let passed: usize = line
        .split_once("passing USR2 to ")
        .and_then(|(_, rest)| rest.split_once(" workers"))
        .and_then(|(n, _)| n.parse().ok())
        .unwrap_or_else(|| panic!("{personality}: no number of workers in {line:?}"));
    match pool {
        Some(pool) => assert_eq!(passed, pool, "{personality}: {line}"),
        None => assert!(passed >= 1, "{personality}: {line}"),
    }
    // The workers have no use for it and go on serving, the held
    // conversation too.
    echo_session(&mut server.connect());
    held.send(b"after\r\nquit\r\n");
    assert_eq!(
        held.read_all(),
        "You said 'after'\r\nYou said 'quit'\r\n",
        "{personality}"
    );
    if let Some(pool) = pool {
        assert_eq!(children(server.pid()).len(), pool, "{personality}");
    }
}
per_personality!(sig_passthrough_passes_signals_to_the_workers:
    prefork_simple(&["--max-servers", "2"], Some(2)),
    prefork(&["--min-servers", "1", "--max-servers", "2"], None),
    multiplex(&[], None),
    fork(&[], None),
);

#[test]
fn leave_children_open_on_hup_keeps_the_old_workers() {
    let mut server = Server::start(&[
        "--server-type",
        "prefork-simple",
        "--max-servers",
        "2",
        "--leave-children-open-on-hup",
        "1",
    ]);
    let old = wait_children(&server, "2", |c| c.len() == 2);
    server.signal("HUP");
    server.wait_for_log("leaving the previous workers");
    // The old workers run on beside the new ones (until max_requests).
    let now = wait_children(&server, "old and new", |c| c.len() == 4);
    assert!(old.iter().all(|pid| now.contains(pid)));
    echo_session(&mut server.connect());
}

/// Sent at once or a little later, the stop signal lands while the old
/// master checks the configuration, as it re-executes itself, or while the
/// new master starts: wherever, it is the new master's to act on, and the
/// server ends as that signal says (status 0), not killed by it.
fn a_stop_signal_right_after_hup_stops_the_server_cleanly(personality: &str, stop: &str) {
    for delay_ms in [0, 10, 40, 120] {
        let mut server = Server::start(&["--server-type", personality]);
        echo_session(&mut server.connect());
        server.signal("HUP");
        // Where the signal lands (the test passes wherever it does).
        std::thread::sleep(Duration::from_millis(delay_ms));
        server.signal(stop);
        let status = server.wait_exit();
        assert_eq!(
            status,
            Some(0),
            "{personality}, {stop} {delay_ms} ms after HUP; log:\n{}",
            server.log().join("\n")
        );
    }
}
per_personality!(a_stop_signal_right_after_hup_stops_the_server_cleanly:
    multiplex("TERM"),
    prefork("INT"),
    fork("QUIT"),
);
