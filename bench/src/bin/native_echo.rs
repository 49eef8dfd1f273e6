//! `native-echo`: the line-echo protocol on plain tokio, the no-sandbox
//! limit the benchmarks compare against.
//!
//! It logs `Binding to TCP port N on host H with IPvX` on stderr once bound,
//! as netserver-host does, so scripts read the port the same way.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use clap::Parser;
use tokio::net::TcpListener;

/// Answers each line `L` with `You said 'L'\r\n`; a line containing `quit`
/// is answered, then the connection closes.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The loopback address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The port to bind; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Runtime threads (default: one per CPU this process may use).
    #[arg(long)]
    threads: Option<usize>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.host.is_loopback() {
        bail!("--host {}: only loopback addresses may be bound", args.host);
    }
    let runtime = netserver_bench::runtime(args.threads)?;
    runtime.block_on(async {
        let addr = SocketAddr::new(args.host, args.port);
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("bind {addr}"))?;
        let bound = listener.local_addr()?;
        let version = if bound.is_ipv4() { 4 } else { 6 };
        let mut stderr = std::io::stderr().lock();
        writeln!(
            stderr,
            "Binding to TCP port {} on host {} with IPv{version}",
            bound.port(),
            bound.ip()
        )?;
        stderr.flush()?;
        drop(stderr);
        netserver_bench::echo_server::serve(listener).await?;
        Ok(())
    })
}
