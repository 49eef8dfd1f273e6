//! `native-echo`: the line-echo protocol on plain tokio, the no-sandbox
//! limit the benchmarks compare against; over TCP (the default), TLS
//! (`--tls-cert CERT --tls-key KEY`: rustls, ring provider, session
//! resumption as netserver-host sets it), a unix stream socket (`--unix PATH`) or UDP (`--udp`: `You
//! said "D"` per datagram, Net::Server's default UDP answer).
//!
//! Once bound it logs on stderr, in Net::Server's words as netserver-host
//! does, so scripts read the port or path the same way:
//! `Binding to TCP port N on host H with IPvX`,
//! `Binding to SSL port N on host H with IPvX`,
//! `Binding to UDP port N on host H with IPvX` or
//! `Binding to UNIX socket file "PATH"`.
//!
//! With `--chat` it serves the chat of issue 23 over TCP instead (the
//! native baseline of the mux world's `chat.wasm`): a welcome line on
//! connect, `JOIN: guestN` to the others (not with `--no-join-notices`),
//! and each line `TEXT` sent to every client as `[guestN] TEXT`.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use clap::Parser;
use netserver_bench::{binding, chat, echo_server, tls};
use tokio::net::{TcpListener, UdpSocket, UnixListener};
use tokio_rustls::TlsAcceptor;

/// Answers each line `L` with `You said 'L'\r\n`; a line containing `quit`
/// is answered, then the connection closes (over TLS too, with
/// `--tls-cert` and `--tls-key`). With `--udp`, answers each datagram `D`
/// with the datagram `You said "D"`.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The loopback address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    /// The port to bind; 0 picks a free one.
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// Serve UDP (one task: `recv_from`, `send_to`) instead of TCP.
    #[arg(long, conflicts_with = "unix")]
    udp: bool,
    /// Serve the line protocol on a unix stream socket created at PATH
    /// (which must not exist) instead of TCP.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["host", "port"])]
    unix: Option<PathBuf>,
    /// Serve the line protocol over TLS on the TCP port, presenting the
    /// certificate chain of this PEM file (with --tls-key).
    #[arg(long, value_name = "CERT", requires = "tls_key", conflicts_with_all = ["udp", "unix"])]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, value_name = "KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Serve the chat of issue 23 on the TCP port instead of the echo.
    #[arg(long, conflicts_with_all = ["udp", "unix", "tls_cert"])]
    chat: bool,
    /// With --chat: send no `JOIN:` lines (as the chat guest's property
    /// `join_notices=0` asks).
    #[arg(long, requires = "chat")]
    no_join_notices: bool,
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
    let addr = SocketAddr::new(args.host, args.port);
    let acceptor = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => {
            Some(TlsAcceptor::from(Arc::new(tls::server_config(cert, key)?)))
        }
        _ => None,
    };
    runtime.block_on(async {
        if let Some(path) = &args.unix {
            let listener =
                UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
            binding::unix(path)?;
            echo_server::serve_unix(listener).await?;
        } else if args.udp {
            let socket = UdpSocket::bind(addr)
                .await
                .with_context(|| format!("bind {addr}/udp"))?;
            binding::ip("UDP", socket.local_addr()?)?;
            echo_server::serve_udp(socket).await?;
        } else if let Some(acceptor) = acceptor {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind {addr}"))?;
            binding::ip("SSL", listener.local_addr()?)?;
            echo_server::serve_tls(listener, acceptor).await?;
        } else {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("bind {addr}"))?;
            binding::ip("TCP", listener.local_addr()?)?;
            if args.chat {
                chat::serve_chat(listener, !args.no_join_notices).await?;
            } else {
                echo_server::serve(listener).await?;
            }
        }
        Ok(())
    })
}
