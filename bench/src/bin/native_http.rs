//! `native-http`: the no-sandbox limit of bench/http. hyper on plain tokio
//! (HTTP/1.1, kept-alive), answering `GET /` exactly as the
//! `guest-examples/http-hello` component does: 200, `content-type:
//! text/plain`, `Hello from a wasi:http component!\n`; any other path 404.
//!
//! Once bound it logs on stderr `Binding to TCP port N on host H with IPvX`,
//! in Net::Server's words as netserver-host does.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use anyhow::{Context, bail};
use clap::Parser;
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

/// The body of `GET /`.
const HELLO: &str = "Hello from a wasi:http component!\n";

/// Serves http-hello's `GET /` natively.
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
    netserver_bench::runtime(args.threads)?.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(SocketAddr::new(args.host, args.port))
        .await
        .context("binding")?;
    netserver_bench::binding::ip("TCP", listener.local_addr()?)?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .serve_connection(TokioIo::new(stream), hyper::service::service_fn(hello))
                .await;
        });
    }
}

async fn hello(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, body) = if request.uri().path() == "/" {
        (StatusCode::OK, HELLO)
    } else {
        (StatusCode::NOT_FOUND, "")
    };
    Ok(Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a static response is valid"))
}
