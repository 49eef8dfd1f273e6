//! `attack`: the hostile tenant of the isolation benchmark (issue 24).
//! Keeps `--connections` connections to a service serving the `misbehave`
//! test guest, each asking it to misbehave in one way, for `--seconds`;
//! a connection the server ends is opened again at once, so the attack
//! never lets up.
//!
//! ```text
//! attack --addr 127.0.0.1:N --attack spin --connections 64 --seconds 20
//! ```
//!
//! | attack | each connection |
//! | --- | --- |
//! | `spin` | asks the guest to compute forever (until `cpu_limit` ends it) |
//! | `grab` | asks it to allocate `--mib` MiB and hold them; then waits |
//! | `recurse` | asks it to recurse until its stack runs out, again and again |
//! | `trap` | asks it to trap, again and again |
//! | `flood` | asks it to write forever, and reads all of it |
//! | `no-read` | asks it to write forever, and never reads |
//! | `hold` | opens the connection and sends nothing |
//!
//! At the end it prints one JSON line: connections opened, refused (or
//! ended before the attack began) and bytes read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How each connection misbehaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Attack {
    Spin,
    Grab,
    Recurse,
    Trap,
    Flood,
    NoRead,
    Hold,
}

#[derive(Parser, Debug)]
#[command(about = "the hostile tenant of the isolation benchmark")]
struct Args {
    /// The attacked service (loopback only).
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long, value_enum)]
    attack: Attack,
    /// Connections kept open at once.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// `grab`: MiB each connection asks for.
    #[arg(long, default_value_t = 16)]
    mib: u32,
    /// How long the attack lasts.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
}

#[derive(Default)]
struct Counts {
    opened: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        args.addr.ip().is_loopback(),
        "--addr must be a loopback address"
    );
    let end = Instant::now() + Duration::from_secs_f64(args.seconds);
    let counts = Arc::new(Counts::default());
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let counts = counts.clone();
        let args = (args.addr, args.attack, args.mib);
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                let left = end.saturating_duration_since(Instant::now());
                let one = tokio::time::timeout(left, attack_once(args, &counts)).await;
                if matches!(one, Ok(Err(_))) {
                    counts.failed.fetch_add(1, Ordering::Relaxed);
                    // Refused: not a busy loop against the server.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    println!(
        "{{\"attack\":\"{:?}\",\"connections\":{},\"opened\":{},\"failed\":{},\"bytes\":{}}}",
        args.attack,
        args.connections,
        counts.opened.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
        counts.bytes.load(Ordering::Relaxed)
    );
    Ok(())
}

/// One connection's attack, until the server ends it (or the time is
/// up, when the caller drops it).
async fn attack_once(
    (addr, attack, mib): (SocketAddr, Attack, u32),
    counts: &Counts,
) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    counts.opened.fetch_add(1, Ordering::Relaxed);
    let line = match attack {
        Attack::Spin => "spin\n".to_owned(),
        Attack::Grab => format!("hold {mib}\n"),
        Attack::Recurse => "recurse\n".to_owned(),
        Attack::Trap => "trap\n".to_owned(),
        Attack::Flood | Attack::NoRead => "flood\n".to_owned(),
        Attack::Hold => String::new(),
    };
    if !line.is_empty() {
        stream.write_all(line.as_bytes()).await?;
    }
    if matches!(attack, Attack::NoRead | Attack::Hold) {
        // Never read: wait until the time is up (the caller drops us).
        std::future::pending::<()>().await;
    }
    // Read (and drop) whatever comes until the server closes.
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        counts.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }
}
