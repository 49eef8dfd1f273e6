//! A hostile test guest. `process_request` reads lines and misbehaves as
//! each asks:
//!
//! | line | what the guest does |
//! | --- | --- |
//! | `trap` | executes `unreachable` |
//! | `panic` | panics with "guest panicked on request" |
//! | `spin` | computes forever |
//! | `alloc` | allocates 1 MiB after 1 MiB until memory runs out |
//! | `exit` | exits with status 3 |
//! | `err` | returns an error: "handler reported an error" |
//! | `stderr` | writes 100 lines to stderr |
//! | anything else | answers `ok <line>` |

use std::io::{BufRead, Write, stdin, stdout};

use netserver_sdk::{Error, Handler};

struct Misbehave;

impl Handler for Misbehave {
    fn process_request() -> Result<(), Error> {
        let mut out = stdout().lock();
        for line in stdin().lock().lines() {
            let line = line?;
            match line.as_str() {
                "trap" => trap(),
                "panic" => panic!("guest panicked on request"),
                "spin" => spin(),
                "alloc" => alloc(),
                "exit" => std::process::exit(3),
                "err" => return Err("handler reported an error".into()),
                "stderr" => (0..100).for_each(|i| eprintln!("line {i}")),
                other => {
                    write!(out, "ok {other}\r\n")?;
                    out.flush()?;
                }
            }
        }
        Ok(())
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

/// Allocates and touches 1 MiB blocks, keeping them all, until the host's
/// memory cap stops the guest.
fn alloc() -> ! {
    let mut blocks = Vec::new();
    loop {
        let block = vec![1u8; 1 << 20];
        blocks.push(std::hint::black_box(block));
    }
}

netserver_sdk::export!(Misbehave);
