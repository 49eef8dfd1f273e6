//! A test guest for the mux world: the host's end-to-end tests drive every
//! callback and every `connections` call through it.
//!
//! A line protocol; every reply ends `\r\n`:
//!
//! | line | what it does |
//! | --- | --- |
//! | `/crash` | panics (the instance traps) |
//! | `/spin` | loops forever (the CPU limit stops it) |
//! | `/alloc M` | allocates and touches M MiB, keeps it; `ALLOCATED M` |
//! | `/flood N` | writes N bytes of `x` in 64 KiB writes, up to the first refused; logs `flood wrote B bytes` or `flood stopped after B bytes` |
//! | `/close` | `CLOSING`, then closes the connection |
//! | `/shutdown` | `SHUTDOWN`, then shuts down the writing side |
//! | `/timeout S` | sets the connection's timeout to S seconds (`none` clears it); `OK` |
//! | `/timer S` | sets the instance's timer to S seconds (`none` clears it); `OK` |
//! | `/list` | `LIST K`: the open connections |
//! | `/info` | `INFO PROTO PEERADDR SERVICE TLS` of the current client (`-` when unknown, TLS `none` without TLS) |
//! | `/count` | `COUNT N`: the connections this instance has seen |
//! | `/dequeues` | `DEQUEUES K`: the times `dequeue` ran on this instance |
//! | `/all TEXT` | writes `ALL TEXT` to every open connection |
//! | anything else, L | `ECHO L` |
//!
//! A connection is greeted `HELLO N` (N counts this instance's connections
//! from 1), or, when property `deny` is `all`, told `DENIED` and refused.
//! A connection's timeout writes `TIMEOUT` to it, the instance's timer
//! `TIMER` to every open connection. Logged at notice: `mux instance
//! started`, `eof conn=ID left=LEN` (what the client left unconsumed; a
//! partial last line is not answered), `close conn=ID`, `dequeue ran with
//! K connections`.

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::time::Duration;

use netserver_sdk::mux::{Connection, broadcast, connections, lines, set_timer};
use netserver_sdk::{ClientInfo, MuxHandler, client, log, property, tls};

/// One `/flood` write: 64 KiB.
const FLOOD_CHUNK: usize = 64 * 1024;

thread_local! {
    /// The connections this instance has seen (`mux_connection` calls).
    static SEEN: Cell<u64> = const { Cell::new(0) };
    /// The times `dequeue` ran on this instance.
    static DEQUEUES: Cell<u64> = const { Cell::new(0) };
    /// What `/alloc` allocated: kept for the life of the instance.
    static KEPT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// The handler. Its state is in the statics above.
struct MuxProbe;

impl MuxHandler for MuxProbe {
    fn child_init_hook() {
        log::notice("mux instance started");
    }

    fn mux_connection(conn: Connection, _client: &ClientInfo) -> bool {
        let seen = SEEN.get() + 1;
        SEEN.set(seen);
        if property("deny").as_deref() == Some("all") {
            say(conn, "DENIED");
            return false;
        }
        say(conn, &format!("HELLO {seen}"));
        true
    }

    fn mux_input(conn: Connection, data: &[u8]) -> usize {
        let mut lines = lines(data);
        for line in lines.by_ref() {
            command(conn, &String::from_utf8_lossy(line));
        }
        lines.consumed()
    }

    fn mux_eof(conn: Connection, data: &[u8]) {
        log::notice(format_args!("eof conn={conn} left={}", data.len()));
    }

    fn mux_close(conn: Connection) {
        log::notice(format_args!("close conn={conn}"));
    }

    fn mux_timeout(conn: Option<Connection>) {
        match conn {
            Some(conn) => say(conn, "TIMEOUT"),
            None => {
                broadcast("TIMER\r\n");
            }
        }
    }

    fn dequeue() {
        DEQUEUES.set(DEQUEUES.get() + 1);
        log::notice(format_args!(
            "dequeue ran with {} connections",
            connections().len()
        ));
    }
}

/// Writes `line` and `\r\n` to `conn`.
fn say(conn: Connection, line: &str) {
    conn.write(format!("{line}\r\n"));
}

/// Runs the command `line` from `conn`.
fn command(conn: Connection, line: &str) {
    let (word, arg) = line.split_once(' ').unwrap_or((line, ""));
    match word {
        "/crash" => panic!("mux-probe: /crash"),
        "/spin" => spin(),
        "/alloc" => match arg.parse::<usize>() {
            Ok(mib) => {
                allocate(mib);
                say(conn, &format!("ALLOCATED {mib}"));
            }
            Err(_) => say(conn, "ERROR usage: /alloc MIB"),
        },
        "/flood" => match arg.parse::<usize>() {
            Ok(bytes) => flood(conn, bytes),
            Err(_) => say(conn, "ERROR usage: /flood BYTES"),
        },
        "/close" => {
            say(conn, "CLOSING");
            conn.close();
        }
        "/shutdown" => {
            say(conn, "SHUTDOWN");
            conn.shutdown_write();
        }
        "/timeout" => match seconds(arg) {
            Ok(timeout) => {
                conn.set_timeout(timeout);
                say(conn, "OK");
            }
            Err(()) => say(conn, "ERROR usage: /timeout SECONDS|none"),
        },
        "/timer" => match seconds(arg) {
            Ok(timeout) => {
                set_timer(timeout);
                say(conn, "OK");
            }
            Err(()) => say(conn, "ERROR usage: /timer SECONDS|none"),
        },
        "/list" => say(conn, &format!("LIST {}", connections().len())),
        "/info" => say(conn, &info()),
        "/count" => say(conn, &format!("COUNT {}", SEEN.get())),
        "/dequeues" => say(conn, &format!("DEQUEUES {}", DEQUEUES.get())),
        "/all" => {
            broadcast(format!("ALL {arg}\r\n"));
        }
        _ => say(conn, &format!("ECHO {line}")),
    }
}

/// Computes forever: only the host's CPU limit ends it.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = black_box(n.wrapping_add(1));
    }
}

/// Allocates `mib` MiB, writes every byte, and keeps it.
fn allocate(mib: usize) {
    let block = black_box(vec![1u8; mib.saturating_mul(1024 * 1024)]);
    KEPT.with_borrow_mut(|kept| kept.push(block));
}

/// Writes `bytes` bytes of `x` to `conn` in 64 KiB writes, stopping at the
/// first one refused, and logs how far it got.
fn flood(conn: Connection, bytes: usize) {
    let chunk = vec![b'x'; FLOOD_CHUNK.min(bytes)];
    let mut written = 0;
    while written < bytes {
        let len = chunk.len().min(bytes - written);
        if !conn.write(&chunk[..len]) {
            log::notice(format_args!("flood stopped after {written} bytes"));
            return;
        }
        written += len;
    }
    log::notice(format_args!("flood wrote {written} bytes"));
}

/// `none`, or a number of seconds (fractional allowed).
fn seconds(arg: &str) -> Result<Option<Duration>, ()> {
    if arg == "none" {
        return Ok(None);
    }
    let seconds: f64 = arg.parse().map_err(|_| ())?;
    Duration::try_from_secs_f64(seconds)
        .map(Some)
        .map_err(|_| ())
}

/// `INFO PROTO PEERADDR SERVICE TLS` for the current callback's client.
fn info() -> String {
    let tls = tls().map_or_else(|| "none".to_owned(), |t| t.version);
    match client() {
        Some(c) => format!("INFO {} {} {} {tls}", c.proto, c.peer_addr, c.service),
        None => format!("INFO - - - {tls}"),
    }
}

netserver_sdk::export_mux!(MuxProbe);
