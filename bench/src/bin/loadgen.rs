//! `loadgen`: a load generator for line protocols (TCP, TLS over TCP or a
//! unix stream socket) and UDP request/reply, loopback targets only.
//!
//! ```text
//! loadgen --addr 127.0.0.1:20203 --mode roundtrip --clients 32 --duration 5 --json
//! loadgen --unix /tmp/echo.sock --mode roundtrip --clients 8
//! loadgen --addr 127.0.0.1:20203 --mode udp --clients 32
//! loadgen --addr 127.0.0.1:20203 --tls --tls-ca cert.pem --mode connect --tls-resume
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use netserver_bench::loadgen::{self, Config, Mode, Summary, Target, TlsSettings, Transport};
use netserver_bench::loopback::parse_loopback;
use netserver_bench::tls::TlsVersion;

/// Sends `LINE\r\n` requests to a loopback line-echo server and checks that
/// each reply is exactly `You said 'LINE'\r\n` (in UDP mode: datagrams
/// `LINE-CLIENT-SEQ`, each answered `You said "LINE-CLIENT-SEQ"`); reports
/// requests/s, errors and latency percentiles.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The server, IP:PORT; only loopback addresses are accepted.
    #[arg(long, value_parser = parse_loopback, required_unless_present = "unix")]
    addr: Option<std::net::SocketAddr>,
    /// The server's unix stream socket, instead of --addr (connect and
    /// roundtrip modes).
    #[arg(long, value_name = "PATH", conflicts_with = "addr")]
    unix: Option<PathBuf>,
    /// Speak TLS to --addr (connect and roundtrip modes): each connection
    /// starts with a TLS handshake. Needs --tls-ca.
    #[arg(long, requires = "tls_ca", conflicts_with = "unix")]
    tls: bool,
    /// A PEM file of the certificate(s) to trust over TLS, pinned: the
    /// server's certificate must be one of them, byte for byte, and valid
    /// for --tls-name (a CA's certificate does not do).
    #[arg(long, value_name = "FILE", requires = "tls")]
    tls_ca: Option<PathBuf>,
    /// The server's name over TLS: sent as SNI and checked against its
    /// certificate.
    #[arg(long, value_name = "NAME", default_value = "localhost")]
    tls_name: String,
    /// Resume TLS sessions (connect mode): the clients share one session
    /// cache, and a connection resumes a session when there is one. Without
    /// it resumption is disabled, and every handshake is a full one.
    #[arg(long, requires = "tls")]
    tls_resume: bool,
    /// Force the TLS version (both are offered otherwise).
    #[arg(long, value_enum, value_name = "VERSION", requires = "tls")]
    tls_version: Option<TlsVersion>,
    /// `connect`: a new connection per request (over TLS, a handshake
    /// each); `roundtrip`: persistent connections doing request/reply round
    /// trips; `udp`: a UDP socket per client, one datagram per request.
    #[arg(long, value_enum, default_value = "roundtrip")]
    mode: Mode,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of warm-up before measuring.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Seconds measured; no request starts after them.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds one request (connect included) may take before it counts as
    /// a timeout.
    #[arg(long, default_value_t = 2.0)]
    timeout: f64,
    /// The request line (no CR, LF or `quit`; in UDP mode, what each
    /// datagram starts with, and no `dump`).
    #[arg(long, default_value = "hello")]
    line: String,
    /// Source addresses to take turns with (127.0.0.1 to 127.0.0.N, IPv4
    /// TCP targets): each has its own ephemeral ports, so TIME_WAIT does not
    /// cap the connect mode; 1 lets the kernel choose.
    #[arg(long, default_value_t = 16)]
    source_ips: usize,
    /// Runtime threads (default: one per CPU this process may use; 1 runs
    /// everything on one thread).
    #[arg(long)]
    threads: Option<usize>,
    /// Round-trip mode: requests per second per client, a steady load
    /// (each client starts a request every 1/RATE s, or when the last
    /// reply came if that is later); 0 sends each as soon as the last reply
    /// arrives.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Print the summary as one JSON object.
    #[arg(long)]
    json: bool,
}

fn seconds(value: f64, name: &str) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(value).with_context(|| format!("--{name} {value}: not a duration"))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = match (args.addr, args.unix) {
        (Some(addr), _) => Target::Ip(addr),
        (None, Some(path)) => Target::Unix(path),
        (None, None) => anyhow::bail!("--addr or --unix is needed"),
    };
    let mode = match (args.mode, args.tls_resume) {
        (mode, false) => mode,
        (Mode::Connect, true) => Mode::ConnectResumed,
        (_, true) => anyhow::bail!("--tls-resume is for --mode connect"),
    };
    let tls = match (args.tls, args.tls_ca) {
        (false, _) => None,
        (true, Some(ca)) => Some(TlsSettings {
            ca,
            name: args.tls_name,
            version: args.tls_version,
        }),
        (true, None) => anyhow::bail!("--tls needs --tls-ca FILE"),
    };
    let config = Config {
        target,
        mode,
        clients: args.clients,
        warmup: seconds(args.warmup, "warmup")?,
        duration: seconds(args.duration, "duration")?,
        request_timeout: seconds(args.timeout, "timeout")?,
        line: args.line.into_bytes(),
        source_ips: args.source_ips,
        pace: (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate)),
        tls,
    };
    let summary = netserver_bench::runtime(args.threads)?.block_on(loadgen::run(config))?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        writeln!(out, "{}", serde_json::to_string(&summary)?)
    } else {
        print_human(&mut out, &summary)
    };
    // A reader that went away (`| head -1`) is not an error of the run.
    match written.and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn print_human(out: &mut impl Write, s: &Summary) -> std::io::Result<()> {
    let over = match s.transport {
        Transport::Unix => " over a unix socket",
        Transport::Tls => " over TLS",
        Transport::Tcp | Transport::Udp => "",
    };
    writeln!(
        out,
        "{:?}{over} x{} against {}: {} requests in {:.1} s = {:.0} requests/s",
        s.mode, s.clients, s.addr, s.requests, s.duration_s, s.requests_per_s
    )?;
    let l = &s.latency_us;
    writeln!(
        out,
        "latency us: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        l.p50, l.p90, l.p99, l.max
    )?;
    let e = &s.error_kinds;
    writeln!(
        out,
        "errors: {} (connect {}, io {}, mismatch {}, timeout {})",
        s.errors, e.connect, e.io, e.mismatch, e.timeout
    )?;
    if let Some(tls) = &s.tls {
        writeln!(
            out,
            "TLS: {}, {} of {} requests on resumed sessions",
            tls.version.as_deref().unwrap_or("no handshake"),
            tls.resumed,
            s.requests
        )?;
    }
    if let Some(first) = &s.first_error {
        writeln!(out, "first error: {first}")?;
    }
    Ok(())
}
