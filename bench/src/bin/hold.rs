//! `hold`: opens many idle connections to a loopback line-echo server, to
//! measure what the server holds per connection.
//!
//! ```text
//! hold --addr 127.0.0.1:20203 --connections 1000 --seconds 30
//! ```
//!
//! Each connection does one round trip (so the server has made its
//! instance and the guest waits in its read), then stays open and idle.
//! Once every connection is open it prints `holding N` on stdout and waits
//! until stdin closes or `--seconds` pass, whichever comes first; then it
//! closes them all and exits.

use std::io::Write;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use netserver_bench::loadgen::client::{Exchange, connect};
use netserver_bench::loadgen::source_addresses;
use netserver_bench::loopback::parse_loopback;
use netserver_bench::protocol::reply;
use tokio::io::AsyncReadExt;

/// Opens `connections` idle connections (one round trip each) and holds
/// them.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The server, IP:PORT; only loopback addresses are accepted.
    #[arg(long, value_parser = parse_loopback)]
    addr: std::net::SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// The longest they are held, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Source addresses to take turns with (127.0.0.1 to 127.0.0.N).
    #[arg(long, default_value_t = 16)]
    source_ips: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = netserver_bench::runtime(Some(1))?;
    runtime.block_on(async {
        let exchange = Exchange {
            request: b"hello\r\n".to_vec(),
            expected: reply(b"hello"),
        };
        let sources = source_addresses(args.addr, args.source_ips);
        let mut held = Vec::with_capacity(args.connections);
        for i in 0..args.connections {
            let source = sources[i % sources.len()];
            let mut connection = connect(args.addr, source)
                .await
                .map_err(|(_, why)| anyhow::anyhow!("connection {i}: {why}"))?;
            tokio::time::timeout(Duration::from_secs(5), connection.round_trip(&exchange))
                .await
                .with_context(|| format!("connection {i}: no reply within 5 s"))?
                .map_err(|(_, why)| anyhow::anyhow!("connection {i}: {why}"))?;
            held.push(connection);
        }
        if held.len() != args.connections {
            bail!("opened {} of {} connections", held.len(), args.connections);
        }
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "holding {}", held.len())?;
        stdout.flush()?;
        drop(stdout);
        let mut stdin = tokio::io::stdin();
        let mut sink = [0u8; 64];
        let until_stdin_closes =
            async { while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {} };
        let _ = tokio::time::timeout(Duration::from_secs(args.seconds), until_stdin_closes).await;
        drop(held);
        Ok(())
    })
}
