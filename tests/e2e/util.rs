//! Running the real `netserver-host` and talking to it over real sockets.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_netserver-host");

/// The longest a test waits for the server to do something it must do
/// (start, log a line): a bound against hanging, not a timing assertion.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// The hooks of one client on a fresh instance, in Net::Server's order, as
/// the hook-trace guest logs them (`hook NAME`).
pub const HOOKS_IN_ORDER: [&str; 7] = [
    "child-init-hook",
    "post-accept-hook",
    "allow-deny-hook",
    "process-request",
    "post-process-request-hook",
    "post-client-connection-hook",
    "child-finish-hook",
];

/// How often [`eventually`] looks again.
const POLL: Duration = Duration::from_millis(10);

/// Guests built by host/build.rs.
// Generated: a constant per guest, not every one used here.
#[allow(dead_code)]
pub mod guests {
    include!(concat!(env!("OUT_DIR"), "/guests.rs"));
}

/// Runs `netserver-host` with `args` to completion (for `--check` and for
/// start-up errors).
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run netserver-host")
}

/// A running `netserver-host`, killed (by PID) when dropped; its log is
/// printed then, so a failing test shows it.
pub struct Server {
    child: Child,
    /// The address it bound, read from its log.
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
    lines: Receiver<String>,
}

impl Server {
    /// Starts the server on 127.0.0.1, port 0, with `args`, and waits for its
    /// `Binding to TCP port N` line.
    pub fn start(args: &[&str]) -> Self {
        Self::start_on("127.0.0.1:0", args)
    }

    /// Starts the server listening on `port_spec` with `args`.
    pub fn start_on(port_spec: &str, args: &[&str]) -> Self {
        let mut command = Command::new(BIN);
        command
            .args(["--port", port_spec, "--log-level", "4"])
            .args(args);
        Self::spawn(command)
    }

    /// Starts the server with exactly `args` (and `--log-level 4`): the
    /// ports come from them, or from the conf file they name.
    pub fn start_args(args: &[&str]) -> Self {
        let mut command = Command::new(BIN);
        command.args(["--log-level", "4"]).args(args);
        Self::spawn(command)
    }

    /// Starts the server on 127.0.0.1, port 0, through `sh -c SCRIPT`,
    /// where the script ends with `exec "$0" "$@"` (to set limits first).
    pub fn start_through_shell(script: &str, args: &[&str]) -> Self {
        let mut command = Command::new("sh");
        command
            .args([
                "-c",
                script,
                BIN,
                "--port",
                "127.0.0.1:0",
                "--log-level",
                "4",
            ])
            .args(args);
        Self::spawn(command)
    }

    /// Starts `command` (a `netserver-host`, perhaps through a shell) and
    /// waits for its `Binding to TCP port N` line.
    pub fn spawn(command: Command) -> Self {
        Self::spawn_logging(command, None)
    }

    /// Starts `command`, whose log goes to the file `log_file` (followed
    /// across renames, as `tail -F` does) as well as to stderr, and waits
    /// for its `Binding to TCP port N` line.
    pub fn spawn_logging(command: Command, log_file: Option<&std::path::Path>) -> Self {
        Self::spawn_until(command, log_file, "TCP")
    }

    /// Starts `command` (its log also in `log_file`, when given) and waits
    /// for its first `Binding to PROTO port N` line (`TCP`, `SSL`, `UDP`),
    /// whose address becomes [`Server::addr`].
    pub fn spawn_until(command: Command, log_file: Option<&std::path::Path>, proto: &str) -> Self {
        let mut server = Self::spawn_unbound(command, log_file);
        server.wait_bound(proto);
        server
    }

    /// Starts `command` (its log also in `log_file`, when given) without
    /// waiting for anything; [`Server::wait_bound`] learns its address.
    pub fn spawn_unbound(mut command: Command, log_file: Option<&std::path::Path>) -> Self {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn netserver-host");
        let stderr = child.stderr.take().expect("stderr");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = channel();
        let exited = Arc::new(std::sync::atomic::AtomicBool::new(false));
        if let Some(path) = log_file {
            let (sink, tx, exited) = (log.clone(), tx.clone(), exited.clone());
            let path = path.to_owned();
            std::thread::spawn(move || {
                follow(&path, &exited, |line| {
                    sink.lock().unwrap().push(line.clone());
                    let _ = tx.send(line);
                })
            });
        }
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line.clone());
                let _ = tx.send(line);
            }
            exited.store(true, std::sync::atomic::Ordering::SeqCst);
        });
        Self {
            child,
            addr: "0.0.0.0:0".parse().unwrap(),
            log,
            lines,
        }
    }

    /// Waits for the first `Binding to PROTO port` line (`TCP`, `SSL`,
    /// `UDP`), whose address becomes [`Server::addr`].
    pub fn wait_bound(&mut self, proto: &str) {
        let line = self.wait_for_log(&format!("Binding to {proto} port"));
        self.addr = parse_binding(&line);
    }

    /// The addresses of the server's first `n` listening sockets, from its
    /// `Binding to TCP port N` lines.
    pub fn bound_addrs(&mut self, n: usize) -> Vec<SocketAddr> {
        let lines = self.wait_for_log_lines("Binding to TCP port", n);
        lines
            .iter()
            .take(n)
            .map(|line| parse_binding(line))
            .collect()
    }

    /// The addresses of the server's first `n` sockets of `proto` (`TCP`,
    /// `UDP`), from its `Binding to PROTO port N` lines.
    pub fn bound_of(&mut self, proto: &str, n: usize) -> Vec<SocketAddr> {
        let needle = format!("Binding to {proto} port");
        let lines = self.wait_for_log_lines(&needle, n);
        lines.iter().take(n).map(|l| parse_binding(l)).collect()
    }

    /// The first address service `name` is served on, from its `Serving
    /// … as service NAME on ADDR` line.
    pub fn service_addr(&mut self, name: &str) -> SocketAddr {
        let line = self.wait_for_log(&format!("as service {name} on "));
        let addr = line.rsplit(" on ").next().unwrap();
        addr.split(", ").next().unwrap().parse().unwrap()
    }

    /// Waits until the log has a line containing `needle` and returns it.
    pub fn wait_for_log(&mut self, needle: &str) -> String {
        let what = format!("a log line containing {needle:?}");
        self.wait_for_lines(&what, 1, |l| l.contains(needle))
            .swap_remove(0)
    }

    /// Waits until the log has a line containing every one of `needles`
    /// and returns it.
    pub fn wait_for_log_all(&mut self, needles: &[&str]) -> String {
        let what = format!("a log line containing all of {needles:?}");
        self.wait_for_lines(&what, 1, |l| needles.iter().all(|n| l.contains(n)))
            .swap_remove(0)
    }

    /// Waits until `n` log lines contain `needle` and returns them.
    pub fn wait_for_log_lines(&mut self, needle: &str, n: usize) -> Vec<String> {
        let what = format!("{n} log lines containing {needle:?}");
        self.wait_for_lines(&what, n, |l| l.contains(needle))
    }

    /// Waits until `n` log lines satisfy `hit` and returns them, in order;
    /// panics with the log, as [`Server::eventually`] does, after
    /// [`PATIENCE`] or when the log ends first. It needs no polling: it
    /// wakes at each new line.
    fn wait_for_lines(&mut self, what: &str, n: usize, hit: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let hits: Vec<String> = self.log().into_iter().filter(|l| hit(l)).collect();
            if hits.len() >= n {
                return hits;
            }
            // Each line is in `log()` before it is sent here.
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => timed_out(what, None, Some(&self.log())),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the server's log ended (it exited) before {what}; log:\n{}",
                    self.log().join("\n")
                ),
            }
        }
    }

    /// Every log line so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// How many log lines so far contain `needle`.
    pub fn log_count(&self, needle: &str) -> usize {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains(needle))
            .count()
    }

    /// Connects a client.
    pub fn connect(&self) -> Client {
        Client::connect(self.addr)
    }

    /// The server's (master's) process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new client of the built-in echo sends `line` and `quit` and gets
    /// both answered, then the end of the connection (`what` names the
    /// case in a failure).
    pub fn assert_echoes(&self, line: &str, what: &str) {
        let mut client = self.connect();
        client.send(format!("{line}\nquit\n").as_bytes());
        let want = format!("You said '{line}'\r\nYou said 'quit'\r\n");
        assert_eq!(client.read_all(), want, "{what}");
    }

    /// Sends signal `name` (`TERM`, `INT`, …) to the server, by PID.
    pub fn signal(&self, name: &str) {
        assert!(kill(name, self.child.id()), "kill -{name} failed");
    }

    /// Waits (at most [`PATIENCE`]) for the server to exit and returns its
    /// exit code (`None` when a signal killed it). Its stderr reaching end
    /// of file says it exited.
    pub fn wait_exit(&mut self) -> Option<i32> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    timed_out("the server to exit", None, Some(&self.log()))
                }
            }
        }
        self.child.wait().expect("wait").code()
    }

    /// Whether the server process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// [`eventually`], with the server's log in the panic: waits until
    /// `condition` holds and returns what it found.
    pub fn eventually<O: Outcome>(&self, what: &str, condition: impl FnMut() -> O) -> O::Value {
        poll(what, condition, || Some(self.log()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("--- netserver-host log ---\n{}", self.log().join("\n"));
        }
    }
}

/// What a condition given to [`eventually`] returns: `bool`; `Option<T>`,
/// to hand back what it found; or `Result<T, E>`, whose error says what it
/// saw instead (and is shown if it never comes).
pub trait Outcome {
    /// What [`eventually`] returns.
    type Value;
    /// The value once the condition holds; otherwise what was seen, if
    /// anything is worth telling.
    fn ready(self) -> Result<Self::Value, Option<String>>;
}

impl Outcome for bool {
    type Value = ();
    fn ready(self) -> Result<(), Option<String>> {
        if self { Ok(()) } else { Err(None) }
    }
}

impl<T> Outcome for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, Option<String>> {
        self.ok_or(None)
    }
}

impl<T, E: std::fmt::Display> Outcome for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, Option<String>> {
        self.map_err(|seen| Some(seen.to_string()))
    }
}

/// Waits until `condition` holds, looking again every few milliseconds,
/// and returns what it found; after [`PATIENCE`] (a bound against hanging,
/// not a timing assertion), panics saying it was waiting for `what`.
/// Where a server is involved, [`Server::eventually`] adds its log.
pub fn eventually<O: Outcome>(what: &str, condition: impl FnMut() -> O) -> O::Value {
    poll(what, condition, || None)
}

fn poll<O: Outcome>(
    what: &str,
    mut condition: impl FnMut() -> O,
    log: impl FnOnce() -> Option<Vec<String>>,
) -> O::Value {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let seen = match condition().ready() {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if Instant::now() >= deadline {
            timed_out(what, seen, log().as_deref());
        }
        std::thread::sleep(POLL);
    }
}

/// The panic of a wait that ran out of [`PATIENCE`]: what it waited for,
/// what it saw last, and the server's log.
fn timed_out(what: &str, seen: Option<String>, log: Option<&[String]>) -> ! {
    let seen = seen.map_or(String::new(), |seen| format!(" (last seen: {seen})"));
    let log = log.map_or(String::new(), |log| format!("; log:\n{}", log.join("\n")));
    panic!("timed out after {PATIENCE:?} waiting for {what}{seen}{log}");
}

/// Calls `each` with every line written to the file at `path`, following
/// it when it is renamed and created again, until `exited` is set (and
/// what was written before that is read).
fn follow(
    path: &std::path::Path,
    exited: &std::sync::atomic::AtomicBool,
    mut each: impl FnMut(String),
) {
    use std::os::unix::fs::MetadataExt;
    let mut open: Option<(std::fs::File, u64)> = None;
    let mut partial = String::new();
    loop {
        let last = exited.load(std::sync::atomic::Ordering::SeqCst);
        if open.is_none() {
            open = std::fs::File::open(path)
                .ok()
                .and_then(|f| Some((f.metadata().ok()?.ino(), f)))
                .map(|(ino, f)| (f, ino));
        }
        if let Some((file, ino)) = &mut open {
            let mut more = String::new();
            let _ = file.read_to_string(&mut more);
            partial.push_str(&more);
            while let Some(end) = partial.find('\n') {
                let line: String = partial.drain(..=end).collect();
                each(line.trim_end().to_owned());
            }
            // Renamed away and created again: read the new one.
            if std::fs::metadata(path).is_ok_and(|m| m.ino() != *ino) {
                open = None;
                continue;
            }
        }
        if last {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends signal `name` (`TERM`, `INT`, …) to process `pid`; whether it was
/// sent.
pub fn kill(name: &str, pid: u32) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill")
        .success()
}

/// `... Binding to TCP port N on host H with IPvX` → H:N.
fn parse_binding(line: &str) -> SocketAddr {
    let rest = line.split(" port ").nth(1).expect("binding line");
    let mut words = rest.split_whitespace();
    let port: u16 = words.next().unwrap().parse().unwrap();
    let host = words.nth(2).expect("host");
    let ip: std::net::IpAddr = host.parse().expect("bound host");
    SocketAddr::new(ip, port)
}

/// A client connection with read and write timeouts (bounds, not assertions).
pub struct Client {
    stream: TcpStream,
}

impl Client {
    /// Connects to `addr`.
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        Self { stream }
    }

    /// Connects to `addr` from the local address `source` (any port), for
    /// clients at different 127.0.0.0/8 addresses.
    pub fn connect_from(source: std::net::IpAddr, addr: SocketAddr) -> Self {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
        socket
            .bind(&SocketAddr::new(source, 0).into())
            .expect("bind the client's source address");
        socket.connect(&addr.into()).expect("connect");
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(PATIENCE)).unwrap();
        stream.set_write_timeout(Some(PATIENCE)).unwrap();
        Self { stream }
    }

    /// The client's own port.
    pub fn local_port(&self) -> u16 {
        self.stream.local_addr().expect("local address").port()
    }

    /// A second handle on the same connection (to write from another
    /// thread while this one reads).
    pub fn try_clone(&self) -> Self {
        Self {
            stream: self.stream.try_clone().expect("clone the client's socket"),
        }
    }

    /// Sends `bytes`.
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends `bytes`, returning the error instead of failing the test.
    pub fn try_send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// One read of what has come, returning the error instead of failing
    /// the test.
    pub fn try_read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.stream.read(buf)
    }

    /// Reads until the server closes the connection.
    pub fn read_to_end(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        self.stream.read_to_end(&mut got).expect("read to end");
        got
    }

    /// Reads until the server closes the connection, or resets it (as a
    /// server closing with unread input does).
    pub fn read_until_closed(&mut self) -> Vec<u8> {
        let mut got = Vec::new();
        match self.stream.read_to_end(&mut got) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
            Err(e) => panic!("read: {e}"),
        }
        got
    }

    /// Reads until the server closes, as text.
    pub fn read_all(&mut self) -> String {
        String::from_utf8(self.read_to_end()).expect("utf-8 reply")
    }

    /// Reads one line, up to and including `\n`.
    pub fn read_line(&mut self) -> String {
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        while line.last() != Some(&b'\n') {
            match self.stream.read(&mut byte).expect("read line") {
                0 => break,
                _ => line.push(byte[0]),
            }
        }
        String::from_utf8(line).expect("utf-8 line")
    }

    /// Half-closes the sending side.
    pub fn shutdown_write(&mut self) {
        self.stream.shutdown(std::net::Shutdown::Write).unwrap();
    }
}

/// A port on 127.0.0.1 that was free a moment ago, for a test that must
/// name the port itself (a daemon's log is not the test's to read; a proxy
/// in front of the server needs its port before it starts).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Set to `1` (as `.ci/run` does), a test that cannot run here fails
/// instead of being skipped.
const TEST_ALL: &str = "NETSERVER_TEST_ALL";

/// Whether the running test may go on: it needs root (to drop privileges,
/// chroot, bind low ports, give files to nobody). As another user it says
/// so in one line on stderr and returns false (the test then returns
/// early), unless `NETSERVER_TEST_ALL=1`, where it fails.
pub fn require_root() -> bool {
    nix::unistd::geteuid().is_root() || skip("needs root")
}

/// The path of `program`, found on `PATH`; when it is not there, the
/// running test says so in one line on stderr and gets `None` (and returns
/// early), unless `NETSERVER_TEST_ALL=1`, where it fails.
pub fn require_command(program: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(program))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        skip(&format!("needs {program}, which is not on PATH"));
    }
    found
}

/// The path of a guest in another language (a `guests` constant that is
/// `None` when its toolchain was not installed at build time); when it was
/// not built, the running test says so on stderr and gets `None` (and
/// returns early), unless `NETSERVER_TEST_ALL=1`, where it fails.
pub fn require_guest(guest: Option<&'static str>, toolchain: &str) -> Option<&'static str> {
    if guest.is_none() {
        skip(&format!(
            "needs a guest built with {toolchain}, which was not installed when the host was built"
        ));
    }
    guest
}

/// Skips the running test, saying `why` on stderr, or fails it when
/// `NETSERVER_TEST_ALL=1`; returns false.
fn skip(why: &str) -> bool {
    // libtest names each test's thread after the test.
    let current = std::thread::current();
    let test = current.name().unwrap_or("a test");
    if std::env::var_os(TEST_ALL).is_some_and(|v| v == "1") {
        panic!("{test} {why}, and {TEST_ALL}=1 makes that a failure");
    }
    // Straight to stderr: libtest captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {test} {why} (run .ci/run, or set {TEST_ALL}=1 to make this a failure)"
    );
    false
}

/// One `#[test]` per personality, each calling a shared body function with
/// the personality's name (`prefork_simple` gives `"prefork-simple"`) and
/// the arguments given in parentheses, if any:
///
/// ```text
/// fn body(personality: &str) { … }
/// per_personality!(body: multiplex, prefork_simple);
///
/// fn other(personality: &str, signal: &str) { … }
/// per_personality!(other: fork("TERM"), two_workers as multiplex("INT"));
/// ```
///
/// makes the tests `body::multiplex`, calling `body("multiplex")`,
/// `body::prefork_simple`, calling `body("prefork-simple")`,
/// `other::fork`, calling `other("fork", "TERM")`, and
/// `other::two_workers`, calling `other("multiplex", "INT")`. So a failure
/// names its personality, and the cases run in parallel. The arguments are
/// evaluated inside the module the macro makes: name the test module's
/// items through `super::`.
macro_rules! per_personality {
    ($body:ident: $($case:ident $(as $personality:ident)? $(($($arg:expr),* $(,)?))?),+ $(,)?) => {
        mod $body {
            $(
                #[test]
                fn $case() {
                    super::$body(
                        &$crate::util::per_personality!(@name $case $($personality)?)
                            .replace('_', "-")
                        $($(, $arg)*)?
                    );
                }
            )+
        }
    };
    (@name $case:ident) => { stringify!($case) };
    (@name $case:ident $personality:ident) => { stringify!($personality) };
}
pub(crate) use per_personality;

/// A child process, killed (by PID) if it is dropped still running.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Runs `program ARGS` in `dir` to its end (at most [`PATIENCE`]: it is
/// killed, and the test fails, if it runs longer).
pub fn run_in(dir: &Path, program: &str, args: &[&str]) -> Output {
    let child = Command::new(program)
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run netserver-host");
    let mut running = Running(Some(child));
    let child = running.0.as_mut().unwrap();
    eventually(&format!("{program} {args:?} to exit"), || {
        child.try_wait().unwrap().is_some()
    });
    running.0.take().unwrap().wait_with_output().unwrap()
}

/// The pids of the processes whose parent is `pid`, from /proc.
pub fn children(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // `pid (comm) state ppid …`: comm may hold spaces; split after it.
        let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        let ppid: u32 = fields.next().and_then(|p| p.parse().ok()).unwrap_or(0);
        if ppid == pid && state != "Z" {
            found.push(child);
        }
    }
    found.sort_unstable();
    found
}

/// The threads of process `pid`: each one's `/proc` directory and name
/// (`comm`: at most 15 bytes).
fn threads(pid: u32) -> Vec<(std::path::PathBuf, String)> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .map(|task| {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            (task.path(), name.trim().to_owned())
        })
        .collect()
}

/// The slices the threads of process `pid` ask for, by thread name, where
/// the kernel says (`se.slice` in `/proc/PID/task/TID/sched`, Linux 6.6+
/// built with scheduler debugging); empty where it does not.
pub fn thread_slices(pid: u32) -> Vec<(String, u64)> {
    threads(pid)
        .into_iter()
        .filter_map(|(dir, name)| {
            let sched = std::fs::read_to_string(dir.join("sched")).unwrap_or_default();
            let slice = sched
                .lines()
                .find(|l| l.starts_with("se.slice"))
                .and_then(|l| l.split(':').nth(1))
                .and_then(|v| v.trim().parse().ok())?;
            Some((name, slice))
        })
        .collect()
}

/// The names of the threads of process `pid` (`comm`: at most 15 bytes).
pub fn thread_names(pid: u32) -> Vec<String> {
    threads(pid).into_iter().map(|(_, name)| name).collect()
}

/// A fresh, empty directory `group/name` under the tests' scratch space.
pub fn fresh_dir(group: &str, name: &str) -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(group)
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A HAProxy started by a test, killed (by PID) when dropped.
pub struct Haproxy(Child);

impl Haproxy {
    /// Starts `program` in the foreground on the configuration `cfg`, its
    /// log going to `log` (or nowhere).
    pub fn start(program: &Path, cfg: &Path, log: Option<std::fs::File>) -> Self {
        let stderr = log.map_or_else(Stdio::null, Stdio::from);
        let child = Command::new(program)
            .args(["-db", "-f"])
            .arg(cfg)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start haproxy");
        Self(child)
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Writes a conf file named `name` (its extension says its format) in
/// the tests' scratch directory and returns its path.
pub fn conf(name: &str, text: &str) -> String {
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conf");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

/// A steady load of short exchanges from a thread of its own, as clients
/// that keep coming across a restart: `exchange(i)` makes the i-th (a
/// connection, a request, its reply) and says what was wrong with it, if
/// anything; one that panics (a connection refused or reset) fails too.
/// Bounded: at most 100,000 exchanges and [`PATIENCE`].
pub struct SteadyLoad {
    stop: Arc<std::sync::atomic::AtomicBool>,
    served: Arc<std::sync::atomic::AtomicU64>,
    thread: std::thread::JoinHandle<Vec<String>>,
}

impl SteadyLoad {
    /// Starts the load.
    pub fn start(exchange: impl Fn(u64) -> Result<(), String> + Send + 'static) -> Self {
        use std::sync::atomic::Ordering;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let thread = {
            let (stop, served) = (stop.clone(), served.clone());
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut failures = Vec::new();
                for i in 0..100_000u64 {
                    if stop.load(Ordering::SeqCst) || started.elapsed() > PATIENCE {
                        break;
                    }
                    // A failed exchange leaves nothing half-done behind: it is
                    // only counted.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| exchange(i))) {
                        Ok(Ok(())) => {
                            served.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(Err(wrong)) => failures.push(format!("#{i}: {wrong}")),
                        Err(_) => failures.push(format!("#{i}: connection failed")),
                    }
                }
                failures
            })
        };
        Self {
            stop,
            served,
            thread,
        }
    }

    /// How many exchanges went right so far.
    pub fn served(&self) -> u64 {
        self.served.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Waits until `more` further exchanges went right (`server`'s log in
    /// the panic if they do not).
    pub fn wait_for_more(&self, server: &Server, what: &str, more: u64) {
        let at_least = self.served() + more;
        server.eventually(what, || {
            let served = self.served();
            if served >= at_least {
                Ok(())
            } else {
                Err(format!("served {served}, waiting for {at_least}"))
            }
        });
    }

    /// Stops the load and asserts that no exchange failed.
    pub fn stop_and_check(self, what: &str) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let served = self.served();
        let failures = self.thread.join().unwrap();
        assert!(
            failures.is_empty(),
            "{what}: {} of {} exchanges failed: {:?}",
            failures.len(),
            served + failures.len() as u64,
            &failures[..failures.len().min(5)]
        );
    }
}
