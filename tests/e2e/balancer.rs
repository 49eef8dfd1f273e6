//! Two `netserver-host` instances behind a real HAProxy (PROXY v2, health
//! checks), the layout of docs/operations.md: under a steady load of
//! complete client sessions each instance in turn is taken out of
//! HAProxy's rotation, drained (QUIT), waited for, started again on its
//! port and put back, and no session fails; the access rules of both see
//! the original client.
//!
//! Taking it out of the rotation first matters: QUIT closes the listening
//! sockets at once, and the kernel resets the connections still waiting in
//! their accept queue — connections HAProxy has already made and sent the
//! client's bytes on, which it cannot retry in `mode tcp`. Without that
//! step, about one session in each drain failed here (`SD` in HAProxy's
//! log) at a thousand sessions a second.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{
    Haproxy, PATIENCE, Server, eventually, free_port, fresh_dir, guests, require_command,
};

/// The load's clients: served ones, and one refused by `cidr_deny`.
const SERVED_FROM: &str = "127.0.0.2";
const DENIED_FROM: &str = "127.0.0.3";

/// Client threads of the load, and the bounds of each.
const SERVED_THREADS: usize = 3;
const MOST_SESSIONS_PER_THREAD: usize = 20_000;

/// The HAProxy configuration of docs/operations.md (`{FRONT}`, `{A}`, `{B}`:
/// ports on 127.0.0.1), with a log of every session for a failure's report.
const HAPROXY_CFG: &str = "\
global
    maxconn 1000
    log stderr format raw daemon
    # The runtime API: `set server netserver/a state drain|ready`.
    stats socket {DIR}/admin.sock mode 600 level admin

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 1s
    timeout client 30s
    timeout server 30s
    # A connection an instance refuses (it is draining or stopped) is
    # tried again at once on the other instance.
    retries 3
    option redispatch 1

frontend front
    bind 127.0.0.1:{FRONT}
    default_backend netserver

backend netserver
    balance roundrobin
    option tcp-check
    tcp-check send \"quit\\r\\n\"
    tcp-check expect string \"You said 'quit'\"
    # PROXY v2 to each instance (its health checks send a LOCAL header);
    # a check every 200 ms, one failure marks an instance down, one
    # success up again.
    default-server send-proxy-v2 check inter 200ms fall 1 rise 1
    server a 127.0.0.1:{A}
    server b 127.0.0.1:{B}
";

/// One instance, named `name` (its greeting says `prop greeting=NAME`, so
/// a client knows who served it), on `port_spec`: it trusts PROXY headers
/// from 127.0.0.1 (HAProxy) and refuses clients from 127.0.0.3.
fn instance(name: &str, port_spec: &str) -> Server {
    Server::start_on(
        port_spec,
        &[
            "--module",
            guests::HOOK_TRACE,
            "--proxy-from",
            "127.0.0.1",
            "--cidr-allow",
            "127.0.0.0/8",
            "--cidr-deny",
            "127.0.0.3/32",
            "--property",
            &format!("greeting={name}"),
            // Info: one line per connection, not debug's many.
            "--log-level",
            "3",
        ],
    )
}

/// What a session saw: which instance answered, and whether it refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Answer {
    instance: String,
    denied: bool,
}

/// One complete session from `source` through `front`: connect, send a
/// line and `quit`, read the whole answer, close. Checks that the
/// instance saw the client's own address and port; an error says what
/// went wrong instead of failing the test.
fn session(source: IpAddr, front: SocketAddr) -> Result<Answer, String> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).map_err(|e| e.to_string())?;
    socket
        .bind(&SocketAddr::new(source, 0).into())
        .map_err(|e| format!("bind: {e}"))?;
    socket
        .connect_timeout(&front.into(), Duration::from_secs(5))
        .map_err(|e| format!("connect: {e}"))?;
    let mut stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let port = stream.local_addr().unwrap().port();
    stream
        .write_all(b"ping\nquit\n")
        .map_err(|e| format!("send: {e}"))?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .map_err(|e| format!("read: {e} after {reply:?}"))?;
    let mut lines = reply.split("\r\n");
    let peer = lines.next().unwrap_or_default();
    if !peer.starts_with(&format!("peer={source}:{port} ")) {
        return Err(format!("not the client's address: {reply:?}"));
    }
    let Some(instance) = lines.next().and_then(|l| l.strip_prefix("prop greeting=")) else {
        return Err(format!("no greeting: {reply:?}"));
    };
    let rest: Vec<&str> = lines.collect();
    let denied = match rest[..] {
        ["You said 'ping'", "You said 'quit'", "bye", ""] => false,
        ["denied", "bye", ""] => true,
        _ => return Err(format!("unexpected answer: {reply:?}")),
    };
    Ok(Answer {
        instance: instance.to_owned(),
        denied,
    })
}

/// What the load's clients saw.
#[derive(Default)]
struct Tally {
    answers: HashMap<Answer, usize>,
    failures: Vec<String>,
}

impl Tally {
    fn count(&self, instance: &str, denied: bool) -> usize {
        let answer = Answer {
            instance: instance.to_owned(),
            denied,
        };
        self.answers.get(&answer).copied().unwrap_or(0)
    }

    fn sessions(&self) -> usize {
        self.answers.values().sum::<usize>() + self.failures.len()
    }

    fn summary(&self) -> String {
        let mut seen: Vec<String> = self
            .answers
            .iter()
            .map(|(a, n)| {
                format!(
                    "{}{}: {n}",
                    a.instance,
                    if a.denied { " denied" } else { "" }
                )
            })
            .collect();
        seen.sort();
        format!(
            "{} sessions ({}), {} failed",
            self.sessions(),
            seen.join(", "),
            self.failures.len()
        )
    }
}

/// Starts a client thread running sessions from `source` until `stop`,
/// at most [`MOST_SESSIONS_PER_THREAD`] of them and for [`PATIENCE`].
fn load_thread(
    source: &str,
    front: SocketAddr,
    stop: &Arc<AtomicBool>,
    tally: &Arc<Mutex<Tally>>,
) -> std::thread::JoinHandle<()> {
    let source: IpAddr = source.parse().unwrap();
    let (stop, tally) = (stop.clone(), tally.clone());
    std::thread::spawn(move || {
        let started = Instant::now();
        for _ in 0..MOST_SESSIONS_PER_THREAD {
            if stop.load(Ordering::SeqCst) || started.elapsed() > PATIENCE {
                break;
            }
            let at = started.elapsed();
            let outcome = session(source, front);
            let mut tally = tally.lock().unwrap();
            match outcome {
                Ok(answer) => *tally.answers.entry(answer).or_default() += 1,
                Err(e) => tally
                    .failures
                    .push(format!("{source} at {:.3}s: {e}", at.as_secs_f64())),
            }
        }
    })
}

/// Sends `command` to HAProxy's runtime API on `socket` and returns its
/// answer.
fn admin(socket: &Path, command: &str) -> String {
    let mut stream = UnixStream::connect(socket).expect("connect to haproxy's admin socket");
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(format!("{command}\n").as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    answer
}

/// Field `index` of `server`'s line in HAProxy's statistics (4: `scur`,
/// its open sessions; 17: `status`, `UP`, `DOWN`, `DRAIN`, …), or what
/// they said instead.
fn stat(socket: &Path, server: &str, index: usize) -> Result<String, String> {
    let stat = admin(socket, "show stat netserver 4 -1");
    stat.lines()
        .map(|line| line.split(',').collect::<Vec<_>>())
        .find(|fields| fields.len() > index && fields[0] == "netserver" && fields[1] == server)
        .map(|fields| fields[index].to_owned())
        .ok_or(stat)
}

/// Waits until HAProxy's statistics say `want` in field `index` for
/// `server`.
fn wait_stat(socket: &Path, server: &str, index: usize, want: &str, what: &str) {
    eventually(&format!("haproxy to see {server} {what}"), || {
        match stat(socket, server, index)? {
            seen if seen == want => Ok(()),
            seen => Err(seen),
        }
    });
}

/// The last lines of HAProxy's log (its stderr, in `dir`), for a failure.
fn haproxy_log(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

#[test]
fn two_instances_behind_haproxy_drain_in_turn_without_losing_a_session() {
    // .ci/run installs it (apt-get install -y haproxy).
    let Some(haproxy) = require_command("haproxy") else {
        return;
    };
    let started = Instant::now();
    let mut a = instance("a1", "127.0.0.1:0");
    let mut b = instance("b1", "127.0.0.1:0");
    let (port_a, port_b) = (a.addr.port(), b.addr.port());

    let dir = fresh_dir("balancer", "drain");
    let front = free_port();
    let config = HAPROXY_CFG
        .replace("{FRONT}", &front.to_string())
        .replace("{A}", &port_a.to_string())
        .replace("{B}", &port_b.to_string());
    let socket = dir.join("admin.sock");
    // A unix socket's path has room for 107 bytes.
    assert!(socket.as_os_str().len() < 100, "{socket:?} is too long");
    let config = config.replace("{DIR}", dir.to_str().unwrap());
    let cfg = dir.join("haproxy.cfg");
    std::fs::write(&cfg, config).unwrap();
    let log = std::fs::File::create(dir.join("haproxy.log")).unwrap();
    let _proxy = Haproxy::start(&haproxy, &cfg, Some(log));
    let front: SocketAddr = ([127, 0, 0, 1], front).into();
    let client: IpAddr = SERVED_FROM.parse().unwrap();
    // HAProxy listens, and both instances answer through it.
    let mut seen = Vec::new();
    eventually("both instances to answer through haproxy", || {
        if let Ok(answer) = session(client, front)
            && !seen.contains(&answer.instance)
        {
            seen.push(answer.instance);
        }
        if seen.len() == 2 {
            Ok(())
        } else {
            Err(format!(
                "answered: {seen:?}; haproxy: {}",
                haproxy_log(&dir)
            ))
        }
    });

    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Mutex::new(Tally::default()));
    // The load: bounded in sessions and time (see `load_thread`).
    let mut threads: Vec<_> = (0..SERVED_THREADS)
        .map(|_| load_thread(SERVED_FROM, front, &stop, &tally))
        .collect();
    threads.push(load_thread(DENIED_FROM, front, &stop, &tally));
    let load_started = Instant::now();
    // Waits until `instance` has served and refused some clients of the
    // load.
    let wait_serving = |instance: &str| {
        eventually(&format!("{instance} to serve the load"), || {
            let tally = tally.lock().unwrap();
            if tally.count(instance, false) >= 50 && tally.count(instance, true) >= 5 {
                Ok(())
            } else {
                Err(tally.summary())
            }
        })
    };
    wait_serving("a1");
    wait_serving("b1");

    // Each in turn: out of HAProxy's rotation, drained (QUIT), started
    // again on its port, back into the rotation.
    let mut drained = Vec::new();
    for (old, server, name, port) in [(&mut a, "a", "a2", port_a), (&mut b, "b", "b2", port_b)] {
        // HAProxy opens no new connection to it (health checks go on).
        let answer = admin(
            &socket,
            &format!("set server netserver/{server} state drain"),
        );
        assert_eq!(answer.trim(), "", "haproxy's answer to drain {server}");
        // Once HAProxy has no session on it, no connection of a client
        // waits in its accept queue: QUIT refuses nobody.
        wait_stat(&socket, server, 4, "0", "without sessions");
        old.signal("QUIT");
        assert_eq!(old.wait_exit(), Some(0), "a drained instance exits 0");
        // Its health checks fail: down (as a restart that takes longer
        // than `inter` would be).
        wait_stat(&socket, server, 17, "DOWN", "down");
        let new = instance(name, &format!("127.0.0.1:{port}"));
        // Back into the rotation: HAProxy sends it clients as soon as a
        // health check finds it up.
        let answer = admin(
            &socket,
            &format!("set server netserver/{server} state ready"),
        );
        assert_eq!(answer.trim(), "", "haproxy's answer to ready {server}");
        wait_stat(&socket, server, 17, "UP", "up");
        wait_serving(name);
        drained.push(std::mem::replace(old, new));
    }
    stop.store(true, Ordering::SeqCst);
    for thread in threads {
        thread.join().unwrap();
    }
    let load_time = load_started.elapsed();

    let tally = tally.lock().unwrap();
    eprintln!(
        "balancer: {} in {:.2}s of load, {:.2}s in all",
        tally.summary(),
        load_time.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        tally.failures.is_empty(),
        "{}: {:?}\nhaproxy's log:\n{}",
        tally.summary(),
        &tally.failures[..tally.failures.len().min(10)],
        haproxy_log(&dir)
    );
    // HAProxy never had to retry a connection: none reached an instance
    // that was draining or stopped. Its session lines (`option tcplog`)
    // end with `actconn/feconn/beconn/srv_conn/retries srv_queue/backend_queue`.
    // (It logs a session as it ends, a moment after the client's end.)
    let log = eventually("haproxy to log every session", || {
        let log = std::fs::read_to_string(dir.join("haproxy.log")).unwrap();
        let logged = log.lines().filter(|l| l.starts_with("127.0.0.")).count();
        if logged >= tally.sessions() {
            Ok(log)
        } else {
            Err(format!("{logged} of {} sessions logged", tally.sessions()))
        }
    });
    let sessions: Vec<&str> = log.lines().filter(|l| l.starts_with("127.0.0.")).collect();
    let retried: Vec<&&str> = sessions
        .iter()
        .filter(|l| {
            let counts = l.split_whitespace().rev().nth(1).unwrap_or_default();
            counts.rsplit('/').next() != Some("0")
        })
        .collect();
    assert!(retried.is_empty(), "retried: {retried:?}");
    // HAProxy's health checks reached the handler (through a PROXY v2
    // LOCAL header: the proxy's own address) and were served: they marked
    // the restarted instances up.
    for server in [&mut a, &mut b] {
        server.wait_for_log_all(&["peer=127.0.0.1:", "connection ended"]);
    }
    // Every instance, before and after its drain, logged the clients by
    // their own addresses: served from one, refused from the other.
    for server in drained.iter().chain([&a, &b]) {
        let log = server.log();
        let served = format!("peer={SERVED_FROM}:");
        let denied = format!("peer={DENIED_FROM}:");
        assert!(
            log.iter().any(|l| l.contains(&served)
                && l.contains("connection ended")
                && l.ends_with("served")),
            "no client served from {SERVED_FROM}: {}",
            log.join("\n")
        );
        assert!(
            log.iter()
                .any(|l| l.contains(&denied) && l.contains("denied by cidr_deny 127.0.0.3/32")),
            "no client refused from {DENIED_FROM}: {}",
            log.join("\n")
        );
    }
}
