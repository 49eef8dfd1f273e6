//! A hostile test guest. `process_request` reads lines and misbehaves as
//! each asks:
//!
//! | line | what the guest does |
//! | --- | --- |
//! | `trap` | executes `unreachable` |
//! | `panic` | panics with "guest panicked on request" |
//! | `spin` | computes forever |
//! | `alloc` | allocates 1 MiB after 1 MiB until memory runs out |
//! | `hold N` | allocates and touches N MiB more, keeps them for the rest of the connection, answers `held T` (T: MiB held in all) |
//! | `flood` | writes 4 KiB blocks of `x` forever, whatever the writes return |
//! | `recurse` | calls itself until its stack runs out |
//! | `exit` | exits with status 3 |
//! | `err` | returns an error: "handler reported an error" |
//! | `stderr` | writes 100 lines to stderr |
//! | `read PATH` | reads a file: `read N bytes`, or `read error KIND` |
//! | `write PATH` | creates a file: `wrote`, or `write error KIND` |
//! | `env KEY` | `env KEY=VALUE`, or `env KEY unset` |
//! | `connect ADDR` | opens a TCP connection: `connected`, or `connect error KIND` |
//! | anything else | answers `ok <line>` |
//!
//! The probes (`read`, `write`, `env`, `connect`) show what the sandbox
//! grants: nothing, unless the service's `grant_*` options say so.
//!
//! With the property `allow_deny=refuse` its `allow_deny_hook` refuses every
//! client; with `allow_deny=lie` it refuses too, but first tells the host
//! that the hook does nothing (`hook-hints.does-nothing`), which the host
//! takes at its word for this service's later clients.
//!
//! With the property `mode=oneline` it instead answers only the first line
//! (`got <line>`) and returns, leaving whatever else the client sent unread
//! in its buffered stdin — which must never reach the next client of the
//! same instance (`instance per-worker`).

use std::io::{BufRead, Write, stdin, stdout};

use netserver_sdk::bindings::netserver::handler::hook_hints;
use netserver_sdk::{Error, Handler};

struct Misbehave;

impl Handler for Misbehave {
    fn allow_deny_hook() -> bool {
        match netserver_sdk::property("allow_deny").as_deref() {
            Some("refuse") => false,
            Some("lie") => {
                hook_hints::does_nothing(hook_hints::Hook::AllowDenyHook);
                false
            }
            _ => true,
        }
    }

    fn process_request() -> Result<(), Error> {
        let mut out = stdout().lock();
        if netserver_sdk::property("mode").as_deref() == Some("oneline") {
            let mut line = String::new();
            stdin().lock().read_line(&mut line)?;
            write!(out, "got {}\r\n", line.trim_end())?;
            out.flush()?;
            return Ok(());
        }
        for line in stdin().lock().lines() {
            let line = line?;
            match line.as_str() {
                "trap" => trap(),
                "panic" => panic!("guest panicked on request"),
                "spin" => spin(),
                "alloc" => alloc(),
                "recurse" => {
                    recurse(0);
                }
                "exit" => std::process::exit(3),
                "err" => return Err("handler reported an error".into()),
                "stderr" => (0..100).for_each(|i| eprintln!("line {i}")),
                "flood" => flood(&mut out),
                hold if hold.starts_with("hold ") => {
                    let held = self::hold(&hold["hold ".len()..]);
                    write!(out, "held {held}\r\n")?;
                    out.flush()?;
                }
                probe if probe.contains(' ') => {
                    write!(out, "{}\r\n", self::probe(probe))?;
                    out.flush()?;
                }
                other => {
                    write!(out, "ok {other}\r\n")?;
                    out.flush()?;
                }
            }
        }
        Ok(())
    }
}

/// Tries what `line` asks and says what happened.
fn probe(line: &str) -> String {
    let (what, arg) = line.split_once(' ').unwrap_or((line, ""));
    match what {
        "read" => match std::fs::read(arg) {
            Ok(bytes) => format!("read {} bytes", bytes.len()),
            Err(e) => format!("read error {:?}", e.kind()),
        },
        "write" => match std::fs::write(arg, b"x") {
            Ok(()) => "wrote".to_owned(),
            Err(e) => format!("write error {:?}", e.kind()),
        },
        "env" => match std::env::var(arg) {
            Ok(value) => format!("env {arg}={value}"),
            Err(_) => format!("env {arg} unset"),
        },
        "connect" => match arg.parse::<std::net::SocketAddr>() {
            Ok(addr) => match std::net::TcpStream::connect(addr) {
                Ok(_) => "connected".to_owned(),
                Err(e) => format!("connect error {:?}", e.kind()),
            },
            Err(_) => "connect error bad address".to_owned(),
        },
        _ => format!("ok {line}"),
    }
}

/// Traps with wasm's `unreachable` instruction.
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    std::process::abort();
}

/// Loops forever; `black_box` keeps the loop from being optimised away.
fn spin() -> ! {
    let mut n = 0u64;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

thread_local! {
    /// What `hold` allocated: kept until the instance ends.
    static HELD: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Allocates and touches `mib` MiB more (a whole number; none if it is
/// not one) and keeps them; the MiB held in all.
fn hold(mib: &str) -> usize {
    let mib: usize = mib.trim().parse().unwrap_or(0);
    HELD.with_borrow_mut(|held| {
        for _ in 0..mib {
            held.push(std::hint::black_box(vec![1u8; 1 << 20]));
        }
        held.len()
    })
}

/// Writes forever, whatever the writes return (a write refused does not
/// stop it): only the host can end the connection.
fn flood(out: &mut impl Write) -> ! {
    let block = [b'x'; 4096];
    loop {
        let _ = out.write_all(&block);
        let _ = out.flush();
    }
}

/// Allocates and touches 1 MiB blocks, keeping them all, until the host's
/// memory cap stops the guest.
fn alloc() -> ! {
    let mut blocks = Vec::new();
    loop {
        let block = vec![1u8; 1 << 20];
        blocks.push(std::hint::black_box(block));
    }
}

/// Calls itself with a frame that cannot be optimised away, until the
/// guest's stack runs out.
#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth; 64]);
    recurse(depth + 1).wrapping_add(frame[(depth % 64) as usize])
}

netserver_sdk::export!(Misbehave);
