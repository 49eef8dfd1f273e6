//! Daemon mode, for real (as root; as another user these tests are
//! skipped): the pid file's life, `background` and `setsid`.
//!
//! A daemon is not the test's child: it is found by the pid it wrote, and
//! only that pid is ever signalled.

use std::net::{SocketAddr, TcpListener};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::privileges::{NOBODY, ids};
use crate::util::{
    BIN, Client, PATIENCE, Server, eventually, free_port, per_personality, require_root, run,
};

/// A fresh directory in /tmp (which the server's user can reach), owned
/// by `owner`: nobody may remove a pid file from it, root's may not.
fn scratch(name: &str, owner: u32) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("netserver-daemon-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::os::unix::fs::chown(&dir, Some(owner), Some(owner)).unwrap();
    dir
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn echo(addr: SocketAddr, line: &str) {
    let mut client = Client::connect(addr);
    client.send(format!("{line}\nquit\n").as_bytes());
    assert_eq!(
        client.read_all(),
        format!("You said '{line}'\r\nYou said 'quit'\r\n")
    );
}

/// Fields 3 to 7 of /proc/PID/stat: state, ppid, pgrp, session, tty_nr.
fn stat(pid: u32) -> (char, i32, i32, i32, i32) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &text[text.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let n = |i: usize| fields[i].parse().unwrap();
    (fields[0].chars().next().unwrap(), n(1), n(2), n(3), n(4))
}

/// Where descriptor `fd` of process `pid` points.
fn fd_target(pid: u32, fd: u32) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap()
}

/// Each way the master ends removes it: TERM, INT, QUIT, in both kinds of
/// master.
fn pid_file_lifecycle(server_type: &str, stop: &str) {
    if !require_root() {
        return;
    }
    let dir = scratch(&format!("lifecycle-{server_type}"), NOBODY);
    let pid_file = dir.join("server.pid");
    let path = pid_file.to_str().unwrap();
    // A stale file (no process has that pid) is overwritten.
    std::fs::write(&pid_file, "999999999\n").unwrap();
    let mut server = Server::start(&["--server-type", server_type, "--pid-file", path]);
    // Written before root is dropped.
    server.wait_for_log("Setting uid to");
    assert_eq!(read_pid(&pid_file), Some(server.pid()), "{server_type}");
    // Written as root, before root was dropped; it stays root's.
    let meta = std::fs::metadata(&pid_file).unwrap();
    assert_eq!((meta.uid(), meta.mode() & 0o777), (0, 0o644));
    // A second server refuses, naming the file and the live pid,
    // before binding anything.
    let out = run(&["--port", "127.0.0.1:0", "--pid-file", path]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!(
            "netserver-host: pid_file {path}: process {} named there is running",
            server.pid()
        )),
        "{err}"
    );
    echo(server.addr, "before HUP");
    // Kept across HUP: the same process, re-executed as nobody, finds
    // its own pid there.
    server.signal("HUP");
    server.wait_for_log("inherited across a restart");
    echo(server.addr, "after HUP");
    assert_eq!(read_pid(&pid_file), Some(server.pid()));
    assert_eq!(ids(server.pid()).0, vec![NOBODY; 4]);
    // Removed as the master ends.
    server.signal(stop);
    assert_eq!(server.wait_exit(), Some(0), "{server_type} {stop}");
    assert!(!pid_file.exists(), "{server_type} {stop}");
    std::fs::remove_dir_all(&dir).unwrap();
}
per_personality!(pid_file_lifecycle: multiplex("TERM"), prefork("INT"), fork("QUIT"));

#[test]
fn a_pid_file_nobody_may_remove_is_left_with_a_warning() {
    if !require_root() {
        return;
    }
    // /tmp-like: root's directory; after the drop the server cannot
    // unlink its (root's) pid file there.
    let dir = scratch("kept", 0);
    let pid_file = dir.join("server.pid");
    let mut server = Server::start(&["--pid-file", pid_file.to_str().unwrap()]);
    echo(server.addr, "before TERM");
    server.signal("TERM");
    assert_eq!(server.wait_exit(), Some(0));
    assert_eq!(read_pid(&pid_file), Some(server.pid()));
    let log = server.log().join("\n");
    assert!(
        log.contains(&format!(
            "pid_file {}: cannot remove it (Permission denied (os error 13)); \
             its directory must be writable by uid {NOBODY}",
            pid_file.display()
        )),
        "{log}"
    );
    // Stale now: the next server starts, and takes the file.
    let mut server = Server::start(&["--pid-file", pid_file.to_str().unwrap()]);
    server.wait_for_log("Setting uid to");
    assert_eq!(read_pid(&pid_file), Some(server.pid()));
    drop(server);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A daemon the test started: its pid, from its pid file. Killed (by that
/// pid) if the test fails before stopping it.
struct Daemon {
    pid: u32,
    pid_file: PathBuf,
    addr: SocketAddr,
    /// What the process started from the terminal wrote to stderr (and,
    /// without a log file or `setsid`, the daemon after it).
    stderr: PathBuf,
}

impl Daemon {
    /// Runs `netserver-host` with `args`, a pid file and a port chosen
    /// here, in `dir`; checks that the process started exits 0 at once,
    /// having waited for the daemon's pid file.
    fn start(dir: &Path, args: &[&str]) -> Self {
        let pid_file = dir.join("server.pid");
        let stderr = dir.join("launcher.err");
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()).into();
        let mut launcher = Command::new(BIN)
            .args(["--port", &addr.to_string(), "--log-level", "4"])
            .arg("--pid-file")
            .arg(&pid_file)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .expect("start netserver-host");
        let started = Instant::now();
        let status = launcher.wait().unwrap();
        assert!(
            status.success(),
            "{status}: {}",
            std::fs::read_to_string(&stderr).unwrap()
        );
        assert!(started.elapsed() < PATIENCE);
        // The pid file is there as soon as the launcher returns.
        let pid = read_pid(&pid_file).expect("a pid file when the launcher returns");
        assert_ne!(pid, launcher.id());
        Self {
            pid,
            pid_file,
            addr,
            stderr,
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid as i32), signal).unwrap();
    }

    /// Whether it is gone (or a zombie: not the test's to reap).
    fn ended(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) {
            Ok(_) => stat(self.pid).0 == 'Z',
            Err(_) => true,
        }
    }

    /// TERM, then waits for it to remove its pid file and end.
    fn stop(self) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        eventually("the pid file to go", || !self.pid_file.exists());
        eventually("the daemon to end", || self.ended());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() && !self.ended() {
            self.signal(nix::sys::signal::Signal::SIGKILL);
        }
    }
}

fn own_session() -> i32 {
    nix::unistd::getsid(None).unwrap().as_raw()
}

#[test]
fn background_detaches_and_keeps_its_pid_across_hup() {
    if !require_root() {
        return;
    }
    let dir = scratch("background", NOBODY);
    let log_file = dir.join("server.log");
    let daemon = Daemon::start(
        &dir,
        &[
            "--background",
            "1",
            "--log-file",
            log_file.to_str().unwrap(),
        ],
    );
    echo(daemon.addr, "detached");
    let (_, ppid, _, session, _) = stat(daemon.pid);
    assert_ne!(ppid as u32, std::process::id(), "not the test's child");
    assert_eq!(session, own_session(), "background alone keeps the session");
    // With a log file: input and output on /dev/null, errors to the log.
    assert_eq!(fd_target(daemon.pid, 0), Path::new("/dev/null"));
    assert_eq!(fd_target(daemon.pid, 1), Path::new("/dev/null"));
    assert_eq!(fd_target(daemon.pid, 2), log_file);
    // The master (and so its workers) dropped root.
    assert_eq!(ids(daemon.pid).0, vec![NOBODY; 4]);
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert!(
        log.contains(&format!("Process backgrounded (pid {})", daemon.pid)),
        "{log}"
    );
    assert_eq!(std::fs::read_to_string(&daemon.stderr).unwrap(), "");
    // HUP re-executes the daemon in place: no second fork, same pid file.
    daemon.signal(nix::sys::signal::Signal::SIGHUP);
    eventually("the restart", || {
        std::fs::read_to_string(&log_file)
            .unwrap()
            .contains("inherited across a restart")
    });
    echo(daemon.addr, "after HUP");
    assert_eq!(read_pid(&daemon.pid_file), Some(daemon.pid));
    let log = std::fs::read_to_string(&log_file).unwrap();
    assert_eq!(log.matches("Process backgrounded").count(), 1, "{log}");
    daemon.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn background_without_a_log_file_keeps_logging_to_the_terminal() {
    if !require_root() {
        return;
    }
    let dir = scratch("background-stderr", NOBODY);
    let daemon = Daemon::start(&dir, &["--background", "1"]);
    echo(daemon.addr, "detached");
    // Net::Server redirects nothing here: the log still reaches the
    // launcher's standard error.
    assert_eq!(fd_target(daemon.pid, 2), daemon.stderr);
    let log = std::fs::read_to_string(&daemon.stderr).unwrap();
    assert!(
        log.contains(&format!("Process backgrounded (pid {})", daemon.pid)),
        "{log}"
    );
    daemon.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn setsid_leads_a_new_session_with_stdio_on_dev_null() {
    if !require_root() {
        return;
    }
    let dir = scratch("setsid", NOBODY);
    let daemon = Daemon::start(&dir, &["--setsid", "1"]);
    echo(daemon.addr, "session leader");
    let (_, ppid, group, session, tty) = stat(daemon.pid);
    assert_ne!(ppid as u32, std::process::id());
    assert_eq!(session, daemon.pid as i32, "session leader");
    assert_eq!(group, daemon.pid as i32, "process group leader");
    assert_ne!(session, own_session());
    assert_eq!(tty, 0, "no controlling terminal");
    // No log file: all three on /dev/null (the log is lost, as in
    // Net::Server).
    for fd in 0..=2 {
        assert_eq!(fd_target(daemon.pid, fd), Path::new("/dev/null"), "fd {fd}");
    }
    // What was logged before leaving the terminal reached it; nothing
    // after.
    let log = std::fs::read_to_string(&daemon.stderr).unwrap();
    assert!(log.contains("Process backgrounded"), "{log}");
    assert!(!log.contains("Setting uid"), "{log}");
    daemon.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn start_errors_of_a_daemon_reach_the_terminal() {
    if !require_root() {
        return;
    }
    let dir = scratch("errors", NOBODY);
    // A port in use: reported before forking.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let out = run(&["--port", &port, "--background", "1"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("Address already in use"), "{err}");
    assert!(!err.contains("Process backgrounded"), "{err}");
    drop(taken);
    // After forking: the daemon cannot write its pid file (a symbolic
    // link is not followed); the process started from the terminal says
    // why and exits 2, and the daemon is gone (its port is free again).
    let pid_file = dir.join("server.pid");
    std::os::unix::fs::symlink(dir.join("elsewhere"), &pid_file).unwrap();
    let port = free_port();
    let out = run(&[
        "--port",
        &format!("127.0.0.1:{port}"),
        "--setsid",
        "1",
        "--pid-file",
        pid_file.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim().lines().last().unwrap(),
        format!(
            "netserver-host: pid_file {}: cannot write it: Too many levels of symbolic links (os error 40)",
            pid_file.display()
        )
    );
    assert!(!dir.join("elsewhere").exists());
    eventually("the port to be free", || {
        TcpListener::bind(("127.0.0.1", port)).is_ok()
    });
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_daemon_takes_signals_as_soon_as_it_is_ready() {
    if !require_root() {
        return;
    }
    // TERM the moment the launcher returns: caught (the pid file is
    // removed, which the default action would not do) and logged.
    for round in 0..3 {
        let dir = scratch(&format!("at-once-{round}"), NOBODY);
        let log_file = dir.join("server.log");
        let daemon = Daemon::start(
            &dir,
            &["--setsid", "1", "--log-file", log_file.to_str().unwrap()],
        );
        daemon.stop();
        let log = std::fs::read_to_string(&log_file).unwrap();
        assert!(log.contains("Received TERM: server closing"), "{log}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[test]
fn in_a_chroot_the_pid_file_is_removed_when_it_is_inside() {
    if !require_root() {
        return;
    }
    let jail = scratch("jail", NOBODY);
    let outside = scratch("outside", NOBODY);
    for (pid_file, removed) in [
        (jail.join("server.pid"), true),
        (outside.join("server.pid"), false),
    ] {
        let mut server = Server::start(&[
            "--chroot",
            jail.to_str().unwrap(),
            "--pid-file",
            pid_file.to_str().unwrap(),
        ]);
        echo(server.addr, "jailed");
        assert_eq!(read_pid(&pid_file), Some(server.pid()));
        if !removed {
            server.wait_for_log(&format!(
                "pid_file {} is outside chroot {}: it will not be removed at exit",
                pid_file.display(),
                jail.display()
            ));
        }
        server.signal("TERM");
        assert_eq!(server.wait_exit(), Some(0));
        assert_eq!(pid_file.exists(), !removed, "{}", pid_file.display());
    }
    std::fs::remove_dir_all(&jail).unwrap();
    std::fs::remove_dir_all(&outside).unwrap();
}
