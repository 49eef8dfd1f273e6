//! Running the server for operators: systemd's readiness messages
//! (`NOTIFY_SOCKET`) across a HUP and a stop, the process titles `ps`
//! shows, and `term_drains`.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::Command;

use crate::util::{BIN, PATIENCE, Server, children, fresh_dir, per_personality};

/// The socket systemd would listen on, made by the test: the server finds
/// it in `NOTIFY_SOCKET` and sends its messages there.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
    /// Every message received, in order.
    seen: Vec<String>,
}

impl NotifySocket {
    fn new(name: &str) -> Self {
        let path = fresh_dir("operations", name).join("notify");
        let socket = UnixDatagram::bind(&path).unwrap();
        // The server sends as the user it becomes (nobody, started as
        // root), as systemd's own socket lets any process of the service.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        socket.set_read_timeout(Some(PATIENCE)).unwrap();
        Self {
            socket,
            path,
            seen: Vec::new(),
        }
    }

    /// Waits (at most [`PATIENCE`]) for the next message with the line
    /// `line`, and returns its lines.
    fn next_with(&mut self, line: &str) -> Vec<String> {
        let mut buf = [0u8; 4096];
        loop {
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(err) => panic!(
                    "no message with {line:?} ({err}); received so far: {:?}",
                    self.seen
                ),
            };
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            self.seen.push(message.clone());
            let lines: Vec<String> = message.lines().map(str::to_owned).collect();
            if lines.iter().any(|l| l == line) {
                return lines;
            }
        }
    }
}

/// The value of `KEY=` among a message's `lines`.
fn field<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

/// A server in `personality` whose configuration is the file `conf`, with
/// `NOTIFY_SOCKET` naming `notify`'s socket.
fn start_notifying(personality: &str, conf: &std::path::Path, notify: &NotifySocket) -> Server {
    let mut command = Command::new(BIN);
    command
        .args(["--conf-file", conf.to_str().unwrap()])
        .args(["--port", "127.0.0.1:0", "--server-type", personality])
        .env("NOTIFY_SOCKET", &notify.path);
    Server::spawn(command)
}

/// systemd hears READY=1 (with the main pid and the counts) once the
/// workers run, the counts as they change, RELOADING=1 at a HUP and READY=1
/// again from the new master — or, when the configuration does not load,
/// READY=1 with a status saying the reload failed — and STOPPING=1 at QUIT.
fn notify_tells_systemd_ready_reloading_and_stopping(personality: &str, workers: &str) {
    let mut notify = NotifySocket::new(&format!("notify-{personality}"));
    let conf = notify.path.with_file_name("server.conf");
    let settings = "log_level 4\nworkers 2\nmin_servers 2\nmax_servers 2\n";
    std::fs::write(&conf, settings).unwrap();
    let mut server = start_notifying(personality, &conf, &notify);
    let pid = server.pid().to_string();
    let ready = notify.next_with("READY=1");
    assert_eq!(field(&ready, "MAINPID"), Some(pid.as_str()), "{ready:?}");
    let status = format!("workers {workers}, busy 0, served 0");
    assert_eq!(field(&ready, "STATUS"), Some(status.as_str()), "{ready:?}");
    // A client served: the status says so, a little later.
    let mut client = server.connect();
    client.send(b"hello\r\nquit\r\n");
    client.read_all();
    notify.next_with(&format!("STATUS=workers {workers}, busy 0, served 1"));

    // A HUP whose configuration does not load: still ready, as before.
    std::fs::write(&conf, format!("{settings}log_levle 3\n")).unwrap();
    server.signal("HUP");
    let reloading = notify.next_with("RELOADING=1");
    let usec = field(&reloading, "MONOTONIC_USEC").map(str::parse::<u64>);
    assert!(matches!(usec, Some(Ok(_))), "{reloading:?}");
    let again = notify.next_with("READY=1");
    let status = field(&again, "STATUS").unwrap_or_default();
    assert!(status.starts_with("reload failed"), "{again:?}");
    server.wait_for_log("the configuration does not load");

    // A HUP that restarts: the new master (the same pid) is ready.
    std::fs::write(&conf, settings).unwrap();
    server.signal("HUP");
    notify.next_with("RELOADING=1");
    let ready = notify.next_with("READY=1");
    assert_eq!(field(&ready, "MAINPID"), Some(pid.as_str()), "{ready:?}");
    assert!(
        field(&ready, "STATUS").is_some_and(|s| s.starts_with(&format!("workers {workers},"))),
        "{ready:?}"
    );
    server.wait_for_log("inherited across a restart");
    let mut client = server.connect();
    client.send(b"after\r\nquit\r\n");
    assert_eq!(client.read_all(), "You said 'after'\r\nYou said 'quit'\r\n");

    server.signal("QUIT");
    let stopping = notify.next_with("STOPPING=1");
    assert!(field(&stopping, "STATUS").is_some(), "{stopping:?}");
    assert_eq!(server.wait_exit(), Some(0));
}
per_personality!(notify_tells_systemd_ready_reloading_and_stopping:
    multiplex("2"),
    prefork("2"),
);

/// Without `NOTIFY_SOCKET`, or with one nobody listens on, the server
/// serves as ever: a notification it cannot send is logged once.
#[test]
fn a_notify_socket_nobody_listens_on_is_no_error() {
    let dir = fresh_dir("operations", "nobody-listens");
    let mut command = Command::new(BIN);
    command
        .args(["--port", "127.0.0.1:0", "--log-level", "4"])
        .env("NOTIFY_SOCKET", dir.join("gone"));
    let mut server = Server::spawn(command);
    server.wait_for_log("cannot notify systemd at");
    server.assert_echoes("hi", "with a dead NOTIFY_SOCKET");
    server.signal("TERM");
    assert_eq!(server.wait_exit(), Some(0));
    let warned = server.log_count("cannot notify systemd");
    assert_eq!(warned, 1, "logged once");
}

/// What `ps` shows of process `pid`: its `/proc/PID/cmdline`, exactly (a
/// title is one string and its NUL).
fn cmdline(pid: u32) -> String {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The titles of `server`'s children now.
fn child_titles(server: &Server) -> Vec<String> {
    children(server.pid()).into_iter().map(cmdline).collect()
}

/// Waits until the children's titles satisfy `want`; returns them.
fn wait_titles(server: &Server, what: &str, want: impl Fn(&[String]) -> bool) -> Vec<String> {
    server.eventually(&format!("the children's titles to show {what}"), || {
        let titles = child_titles(server);
        if want(&titles) {
            Ok(titles)
        } else {
            Err(format!("{titles:?}"))
        }
    })
}

/// The master and each worker say in their titles what they do: idle at
/// first, busy with the client held (one client taken), idle again once it
/// has gone (still one taken).
fn titles_show_the_master_and_each_workers_state(personality: &str) {
    let pool: &[&str] = match personality {
        "prefork" => &["--min-servers", "1", "--max-servers", "2"],
        _ => &[],
    };
    let server = Server::start(&[&["--server-type", personality][..], pool].concat());
    let master = "netserver-host: master\0";
    server.eventually("the master's title", || cmdline(server.pid()) == master);
    let idle = "netserver-host: worker echo idle 0 served\0";
    wait_titles(&server, "idle workers", |t| {
        !t.is_empty() && t.iter().all(|t| t == idle)
    });
    let mut client = server.connect();
    client.send(b"hello\r\n");
    assert_eq!(client.read_line(), "You said 'hello'\r\n");
    let busy = "netserver-host: worker echo busy 1 served\0";
    let titles = wait_titles(&server, "one busy worker", |t| {
        t.iter().filter(|t| *t == busy).count() == 1
    });
    assert!(
        titles.iter().all(|t| t == busy || t == idle),
        "{personality}: {titles:?}"
    );
    client.send(b"quit\r\n");
    client.read_all();
    let done = "netserver-host: worker echo idle 1 served\0";
    wait_titles(&server, "the worker idle again", |t| {
        t.iter().any(|t| t == done) && !t.iter().any(|t| t == busy)
    });
    assert_eq!(cmdline(server.pid()), master);
}
per_personality!(titles_show_the_master_and_each_workers_state: multiplex, prefork);

/// A `fork` child serving its client says so.
#[test]
fn a_fork_childs_title_names_its_service() {
    let server = Server::start(&["--server-type", "fork"]);
    let mut client = server.connect();
    client.send(b"hello\r\n");
    assert_eq!(client.read_line(), "You said 'hello'\r\n");
    wait_titles(&server, "the busy child", |t| {
        t == ["netserver-host: child echo busy\0"]
    });
    assert_eq!(cmdline(server.pid()), "netserver-host: master\0");
}

/// A HUP re-executes the server with the arguments it started with, not
/// with its title: the new master serves the same ports, and shows the
/// same titles.
#[test]
fn a_hup_restarts_with_the_arguments_not_the_title() {
    let mut server = Server::start(&["--workers", "2"]);
    server.eventually("the master's title", || {
        cmdline(server.pid()) == "netserver-host: master\0"
    });
    server.signal("HUP");
    server.wait_for_log("inherited across a restart");
    server.assert_echoes("after", "after the HUP");
    wait_titles(&server, "two idle workers", |t| {
        t.len() == 2
            && t.iter()
                .all(|t| t.starts_with("netserver-host: worker echo idle"))
    });
    let restarted = server.log_count("Binding to TCP port");
    assert_eq!(restarted, 2, "bound once, then inherited once");
}

/// With `term_drains`, TERM lets an open conversation finish (QUIT's
/// drain) instead of cutting it; the server then exits 0.
fn term_drains_lets_an_open_conversation_finish(personality: &str, pool: &[&str]) {
    let args = [&["--term-drains"][..], pool].concat();
    crate::personalities::a_drain_lets_an_open_conversation_finish(personality, "TERM", &args);
}
per_personality!(term_drains_lets_an_open_conversation_finish:
    multiplex(&[]),
    prefork(&["--min-servers", "1", "--max-servers", "2"]),
    fork(&["--max-servers", "2"]),
);

/// `term_drains` leaves INT as it is: the open conversation ends at once.
#[test]
fn with_term_drains_int_still_stops_at_once() {
    let mut server = Server::start(&["--term-drains"]);
    let mut client = server.connect();
    client.send(b"before\r\n");
    assert_eq!(client.read_line(), "You said 'before'\r\n");
    server.signal("INT");
    assert_eq!(client.read_all(), "");
    assert_eq!(server.wait_exit(), Some(0));
    server.wait_for_log("Received INT: server closing");
}
