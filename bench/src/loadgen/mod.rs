//! The load generator: `clients` concurrent clients sending line requests to
//! a loopback server (TCP, TLS over TCP, or a unix stream socket), or
//! datagrams to a UDP server, for a warm-up and then a measured duration,
//! checking every reply byte for byte.
//!
//! Every loop ends: no request starts after the measured duration, each one
//! is bounded by a per-request timeout, and the whole run is cut off a
//! second after the longest it can take.

pub mod client;
mod stats;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::bail;
use serde::{Deserialize, Serialize};
use tokio::task::JoinSet;

pub use client::{Exchange, Tls};
pub use stats::{ErrorCounts, ErrorKind, Handshake, Latency, Stats, Window};

use crate::loopback::check_loopback;
use crate::protocol::{is_sendable, reply};
use crate::tls::{TlsVersion, client_config};

/// Where the server listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A loopback IP address and port (TCP, or UDP in [`Mode::Udp`]).
    Ip(SocketAddr),
    /// A unix stream socket's path.
    Unix(PathBuf),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Ip(addr) => addr.fmt(f),
            Target::Unix(path) => path.display().fmt(f),
        }
    }
}

/// The kind of socket the clients talk over.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// TCP (the connect and round-trip modes to an IP address).
    #[default]
    Tcp,
    /// UDP ([`Mode::Udp`]).
    Udp,
    /// A unix stream socket (the connect and round-trip modes to a path).
    Unix,
    /// TLS over TCP (the connect and round-trip modes to an IP address).
    Tls,
}

/// How the clients use connections.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A new TCP connection per request: connect, send, read one reply, close.
    /// Over TLS, each connection makes a full handshake (no session is
    /// resumed).
    Connect,
    /// The connect mode over TLS with sessions resumed: the clients share a
    /// session cache, and each connection resumes a session when it can
    /// (`--mode connect --tls-resume`).
    #[serde(rename = "connect-resumed")]
    #[value(skip)]
    ConnectResumed,
    /// One persistent connection per client doing request/reply round trips.
    Roundtrip,
    /// One UDP socket per client, connected to the server: a datagram
    /// `LINE-CLIENT-SEQ` per request, answered `You said "LINE-CLIENT-SEQ"`
    /// (Net::Server's default UDP answer); a datagram without an answer in
    /// time counts as a timeout and the client goes on with the next.
    Udp,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The server (loopback only).
    pub target: Target,
    /// How the clients use connections.
    pub mode: Mode,
    /// Concurrent clients.
    pub clients: usize,
    /// Warm-up before measuring.
    pub warmup: Duration,
    /// The measured duration.
    pub duration: Duration,
    /// The longest one request (connect included) may take.
    pub request_timeout: Duration,
    /// The request line, without line end.
    pub line: Vec<u8>,
    /// How many source addresses (127.0.0.1, 127.0.0.2, …) the clients take
    /// turns with, for an IPv4 target; 1 lets the kernel choose.
    pub source_ips: usize,
    /// Speak TLS to an IP target (the connect and round-trip modes).
    pub tls: Option<TlsSettings>,
    /// Round-trip mode: the time from one request's start to the next
    /// one's, per client (a steady load); `None` sends the next request as
    /// soon as the reply arrives.
    pub pace: Option<Duration>,
}

/// How the clients speak TLS.
#[derive(Debug, Clone)]
pub struct TlsSettings {
    /// A PEM file of the certificates to trust, pinned: the server's own
    /// must be one of them, byte for byte (see [`crate::tls::client_config`]).
    pub ca: PathBuf,
    /// The server's name: sent as SNI, checked against the certificate.
    pub name: String,
    /// The version to force; both 1.2 and 1.3 are offered when none is.
    pub version: Option<TlsVersion>,
}

/// The most source addresses [`Config::source_ips`] may ask for.
pub const MAX_SOURCE_IPS: usize = 254;

/// The source addresses clients take turns with: `127.0.0.1` to
/// `127.0.0.N` for an IPv4 target and `n > 1`, else one `None` (the
/// kernel's choice).
///
/// Linux reuses a loopback source port in TIME_WAIT only after a second,
/// and `connect` draws from half of the ephemeral range: with one source
/// address, new connections top out near 14,000/s whatever the server.
/// Each further source address has ports of its own.
///
/// ```
/// use netserver_bench::loadgen::source_addresses;
/// let v4 = source_addresses("127.0.0.1:7".parse().unwrap(), 3);
/// assert_eq!(v4.last(), Some(&Some("127.0.0.3".parse().unwrap())));
/// assert_eq!(source_addresses("[::1]:7".parse().unwrap(), 3), vec![None]);
/// ```
pub fn source_addresses(target: SocketAddr, n: usize) -> Vec<Option<IpAddr>> {
    if n <= 1 || !target.is_ipv4() {
        return vec![None];
    }
    (1..=n.min(MAX_SOURCE_IPS))
        .map(|i| Some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, i as u8))))
        .collect()
}

impl Config {
    /// The socket the clients talk over: UDP in [`Mode::Udp`], else TCP
    /// (TLS when [`Config::tls`] is set) or unix by the target.
    pub fn transport(&self) -> Transport {
        match (self.mode, &self.target) {
            (Mode::Udp, _) => Transport::Udp,
            (_, Target::Ip(_)) if self.tls.is_some() => Transport::Tls,
            (_, Target::Ip(_)) => Transport::Tcp,
            (_, Target::Unix(_)) => Transport::Unix,
        }
    }
}

/// The result of a run, as `--json` prints it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// How the clients used connections.
    pub mode: Mode,
    /// The socket the clients talked over.
    #[serde(default)]
    pub transport: Transport,
    /// The server: IP:PORT, or a unix socket's path.
    pub addr: String,
    /// Concurrent clients.
    pub clients: usize,
    /// Source addresses the clients took turns with.
    pub source_ips: usize,
    /// Warm-up, seconds.
    pub warmup_s: f64,
    /// Measured duration, seconds.
    pub duration_s: f64,
    /// Successful requests in the measured duration.
    pub requests: u64,
    /// Successful requests per second.
    pub requests_per_s: f64,
    /// Errors in the measured duration (all kinds).
    pub errors: u64,
    /// Errors by kind.
    pub error_kinds: ErrorCounts,
    /// The first error seen, if any.
    pub first_error: Option<String>,
    /// Latency of the successful requests, microseconds.
    pub latency_us: Latency,
    /// Over TLS: what the handshakes came to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsSummary>,
    /// The load generator's own CPU time over the measured duration, in
    /// CPUs (1.0: one CPU all the time; near it with `--threads 1`, the
    /// load generator bounds the rate, not the server). Linux only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_cpu: Option<f64>,
}

/// What the TLS handshakes of a run came to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsSummary {
    /// The version negotiated (`TLS 1.3`, `TLS 1.2`), when a handshake
    /// succeeded.
    pub version: Option<String>,
    /// Of the successful requests in the measured duration, those whose
    /// connection resumed a session (the connect modes; 0 when resumption
    /// is disabled).
    pub resumed: u64,
}

/// Checks `config` and runs it.
pub async fn run(config: Config) -> anyhow::Result<Summary> {
    if let Target::Ip(addr) = config.target {
        check_loopback(addr)?;
    }
    if config.clients == 0 {
        bail!("--clients must be at least 1");
    }
    if config.duration.is_zero() {
        bail!("--duration must be more than 0");
    }
    if config.request_timeout.is_zero() {
        bail!("--timeout must be more than 0");
    }
    if config.source_ips == 0 || config.source_ips > MAX_SOURCE_IPS {
        bail!("--source-ips must be 1 to {MAX_SOURCE_IPS}");
    }
    if !is_sendable(&config.line) {
        bail!("the request line must not contain CR, LF or `quit`, and must be short");
    }
    let tls = match (&config.tls, config.mode, &config.target) {
        (None, Mode::ConnectResumed, _) => {
            bail!("resuming TLS sessions (--tls-resume) needs --tls")
        }
        (None, _, _) => None,
        (Some(_), Mode::Udp, _) => bail!("--mode udp does not speak TLS"),
        (Some(_), _, Target::Unix(_)) => bail!("--tls needs an IP address (--addr)"),
        (Some(settings), mode, Target::Ip(_)) => {
            let resume = mode == Mode::ConnectResumed;
            let tls_config = client_config(&settings.ca, settings.version, resume)?;
            Some(Tls::new(tls_config, &settings.name)?)
        }
    };
    if config.mode == Mode::Udp && config.line.windows(4).any(|w| w == b"dump") {
        // Net::Server answers a datagram containing `dump` with a dump of
        // its server object.
        bail!("the UDP request must not contain `dump`");
    }
    let mut request = config.line.clone();
    request.extend_from_slice(b"\r\n");
    let exchange = Exchange {
        request,
        expected: reply(&config.line),
    };
    let start = Instant::now();
    let window = Window {
        measure_from: start + config.warmup,
        until: start + config.warmup + config.duration,
    };
    let hard_stop = window.until + config.request_timeout + Duration::from_secs(1);

    let sources = match (&config.target, config.transport()) {
        (Target::Ip(addr), Transport::Tcp | Transport::Tls) => {
            source_addresses(*addr, config.source_ips)
        }
        _ => vec![None],
    };
    let mut clients = JoinSet::new();
    for i in 0..config.clients {
        let client = Client {
            target: config.target.clone(),
            sources: sources.clone(),
            first_source: i,
            exchange: exchange.clone(),
            window,
            timeout: config.request_timeout,
            tls: tls.clone(),
            pace: config.pace,
        };
        match (config.mode, &config.target) {
            (Mode::Connect | Mode::ConnectResumed, _) => {
                clients.spawn(client.connect_per_request())
            }
            (Mode::Roundtrip, _) => clients.spawn(client.round_trips()),
            (Mode::Udp, Target::Ip(addr)) => {
                clients.spawn(client.datagrams(*addr, config.line.clone(), i))
            }
            (Mode::Udp, Target::Unix(_)) => {
                bail!("--mode udp needs an IP address (--addr), not a unix socket")
            }
        };
    }
    let duration = config.duration;
    let cpu_probe = tokio::spawn(async move {
        tokio::time::sleep_until(window.measure_from.into()).await;
        let start = process_cpu_seconds()?;
        tokio::time::sleep_until(window.until.into()).await;
        Some((process_cpu_seconds()? - start) / duration.as_secs_f64())
    });
    let mut total = Stats::default();
    let mut cut_off = false;
    while !clients.is_empty() {
        match tokio::time::timeout_at(hard_stop.into(), clients.join_next()).await {
            Ok(Some(Ok(stats))) => total.merge(&stats),
            Ok(Some(Err(e))) => bail!("a client task failed: {e}"),
            Ok(None) => break,
            Err(_) => {
                cut_off = true;
                clients.abort_all();
                break;
            }
        }
    }
    if cut_off {
        eprintln!("loadgen: clients still busy at the hard stop were cut off");
    }
    // The probe ends with the measured duration, before the clients do.
    let client_cpu = match tokio::time::timeout(Duration::from_secs(1), cpu_probe).await {
        Ok(Ok(cpu)) => cpu,
        _ => None,
    };
    Ok(Summary {
        client_cpu,
        ..summarize(&config, sources.len(), &total)
    })
}

/// The CPU time (user and system, every thread) this process has used so
/// far, in seconds: `/proc/self/stat`, in clock ticks of 1/100 s (Linux's
/// USER_HZ).
fn process_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the command name in parentheses: state is field 3 of the
    // line, utime and stime fields 14 and 15.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i - 3)?.parse::<u64>().ok();
    Some((ticks(14)? + ticks(15)?) as f64 / 100.0)
}

fn summarize(config: &Config, source_ips: usize, total: &Stats) -> Summary {
    let errors = total.errors();
    Summary {
        mode: config.mode,
        transport: config.transport(),
        addr: config.target.to_string(),
        clients: config.clients,
        source_ips,
        warmup_s: config.warmup.as_secs_f64(),
        duration_s: config.duration.as_secs_f64(),
        requests: total.ok(),
        requests_per_s: total.ok() as f64 / config.duration.as_secs_f64(),
        errors: errors.total(),
        error_kinds: errors,
        first_error: total.first_error().map(str::to_owned),
        latency_us: total.latency(),
        tls: config.tls.as_ref().map(|_| TlsSummary {
            version: total.tls_version().map(str::to_owned),
            resumed: total.resumed(),
        }),
        client_cpu: None,
    }
}

/// After an error, a client waits this long before its next request, so a
/// server that refuses connections is not hammered in a tight loop.
const ERROR_PAUSE: Duration = Duration::from_millis(1);

/// One client: where it connects from and to, what it sends, and when.
struct Client {
    target: Target,
    sources: Vec<Option<IpAddr>>,
    first_source: usize,
    exchange: Exchange,
    window: Window,
    timeout: Duration,
    tls: Option<Tls>,
    pace: Option<Duration>,
}

impl Client {
    /// The source address of this client's `n`th connection.
    fn source(&self, n: usize) -> Option<IpAddr> {
        self.sources[(self.first_source + n) % self.sources.len()]
    }

    /// Connect mode: a new connection per request (with a TLS handshake
    /// over TLS), until the window ends.
    async fn connect_per_request(self) -> Stats {
        let (window, timeout) = (self.window, self.timeout);
        let mut stats = Stats::default();
        let mut n = 0;
        while Instant::now() < window.until {
            let request = client::connect_once(
                &self.target,
                self.source(n),
                self.tls.as_ref(),
                &self.exchange,
            );
            n += 1;
            let began = Instant::now();
            let result = tokio::time::timeout(timeout, request).await;
            let ended = Instant::now();
            match result {
                Ok(Ok(handshake)) => {
                    stats.handshake_success(&window, ended, ended - began, handshake)
                }
                Ok(Err((kind, detail))) => {
                    stats.error(&window, ended, kind, detail);
                    tokio::time::sleep(ERROR_PAUSE).await;
                }
                Err(_) => stats.error(&window, ended, ErrorKind::Timeout, timed_out(timeout)),
            }
        }
        stats
    }

    /// Round-trip mode: one connection (reopened after an error) doing
    /// round trips until the window ends.
    async fn round_trips(self) -> Stats {
        let (window, timeout) = (self.window, self.timeout);
        let mut stats = Stats::default();
        let mut connection = None;
        let mut n = 0;
        while Instant::now() < window.until {
            let began = Instant::now();
            let Some(conn) = connection.as_mut() else {
                let opening = client::connect_to(&self.target, self.source(n), self.tls.as_ref());
                n += 1;
                match tokio::time::timeout(timeout, opening).await {
                    Ok(Ok(conn)) => {
                        if let Some(handshake) = conn.handshake() {
                            stats.tls_handshake(handshake);
                        }
                        connection = Some(conn)
                    }
                    Ok(Err((kind, detail))) => {
                        stats.error(&window, Instant::now(), kind, detail);
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                    Err(_) => stats.error(
                        &window,
                        Instant::now(),
                        ErrorKind::Timeout,
                        timed_out(timeout),
                    ),
                }
                continue;
            };
            let result = tokio::time::timeout(timeout, conn.round_trip(&self.exchange)).await;
            let ended = Instant::now();
            match result {
                Ok(Ok(())) => {
                    stats.success(&window, ended, ended - began);
                    if let Some(pace) = self.pace {
                        tokio::time::sleep_until((began + pace).into()).await;
                    }
                }
                Ok(Err((kind, detail))) => {
                    stats.error(&window, ended, kind, detail);
                    connection = None;
                }
                Err(_) => {
                    stats.error(&window, ended, ErrorKind::Timeout, timed_out(timeout));
                    connection = None;
                }
            }
        }
        stats
    }

    /// UDP mode: datagrams to `addr` from a socket of this client's own
    /// (client number `id`), each sent when the last was answered or timed
    /// out, until the window ends.
    async fn datagrams(self, addr: SocketAddr, line: Vec<u8>, id: usize) -> Stats {
        let (window, timeout) = (self.window, self.timeout);
        let mut stats = Stats::default();
        let mut socket = None;
        while Instant::now() < window.until {
            let Some(datagrams) = socket.as_mut() else {
                match client::Datagrams::open(addr, &line, id).await {
                    Ok(opened) => socket = Some(opened),
                    Err((kind, detail)) => {
                        stats.error(&window, Instant::now(), kind, detail);
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
                continue;
            };
            let began = Instant::now();
            let result = tokio::time::timeout(timeout, datagrams.request()).await;
            let ended = Instant::now();
            match result {
                Ok(Ok(())) => {
                    stats.success(&window, ended, ended - began);
                }
                Ok(Err((kind, detail))) => {
                    stats.error(&window, ended, kind, detail);
                    if kind == ErrorKind::Io {
                        // Such as ECONNREFUSED: nothing listens (yet).
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                }
                Err(_) => stats.error(&window, ended, ErrorKind::Timeout, timed_out(timeout)),
            }
        }
        stats
    }
}

fn timed_out(timeout: Duration) -> String {
    format!("no reply within {timeout:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_cpu_time() {
        if !cfg!(target_os = "linux") {
            return;
        }
        let before = process_cpu_seconds().expect("/proc/self/stat");
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        let used = process_cpu_seconds().unwrap() - before;
        assert!((0.1..2.0).contains(&used), "{used}");
    }
}
