//! `hold`: opens many idle connections to a loopback line server, to
//! measure what the server holds per connection, and (chat) how long one
//! message takes to reach them all.
//!
//! ```text
//! hold --addr 127.0.0.1:20203 --connections 1000 --seconds 30
//! hold --addr 127.0.0.1:20203 --connections 10000 --protocol chat --broadcast 20
//! ```
//!
//! `--protocol echo` (the default): each connection does one round trip
//! (so the server has made its instance and the guest waits in its read),
//! then stays open and idle.
//!
//! `--protocol chat` (issue 23's chat): each connection, once open, reads
//! its welcome line (up to `\n`) and is then held. Whatever else arrives
//! (`JOIN:` notices of later clients, chat lines) is read and discarded
//! continuously, by one task per connection reading into a 256-byte buffer
//! (bytes are kept only while a line spans two reads), so no kernel buffer
//! fills up, whether or not the server announces joins. Once all are open,
//! it waits (at most `--settle` seconds) until nothing arrived for
//! `--quiet-ms`, so the server is measured idle, with nothing in flight.
//!
//! Once every connection is open (and settled) it prints `holding N` on
//! stdout and waits until stdin closes or `--seconds` pass, whichever comes
//! first; then it closes them all and exits. With `--broadcast K` (chat),
//! a line `broadcast` on stdin makes connection 0 send K lines
//! `bcast-I-NONCE`, one after the other: the next once every other
//! connection read the line carrying the last, or after `--timeout`
//! seconds. It then prints one JSON line ([`BroadcastSummary`]): the time
//! from sending until each other connection read the line, p50, p99 and
//! max in ms over all (receiver, message) samples, and how many missed a
//! message.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Parser, ValueEnum};
use netserver_bench::chat::{
    BroadcastSummary, LineScanner, broadcast_index, broadcast_line, nonce, quantile,
};
use netserver_bench::loadgen::client::{Exchange, connect, connect_tcp};
use netserver_bench::loadgen::source_addresses;
use netserver_bench::loopback::parse_loopback;
use netserver_bench::protocol::reply;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::{mpsc, oneshot};

/// What the connections speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Protocol {
    /// The line echo: one round trip each, then idle.
    Echo,
    /// The chat: read the welcome line, then idle, discarding what arrives.
    Chat,
}

/// Opens `connections` idle connections and holds them.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// The server, IP:PORT; only loopback addresses are accepted.
    #[arg(long, value_parser = parse_loopback)]
    addr: SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    connections: usize,
    /// The longest they are held, in seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Source addresses to take turns with (127.0.0.1 to 127.0.0.N).
    #[arg(long, default_value_t = 16)]
    source_ips: usize,
    /// What the connections speak.
    #[arg(long, value_enum, default_value_t = Protocol::Echo)]
    protocol: Protocol,
    /// Chat: on a line `broadcast` on stdin, send this many messages from
    /// connection 0 and print their delivery times as JSON.
    #[arg(long, value_name = "K")]
    broadcast: Option<u32>,
    /// Chat: the longest each broadcast message is waited for, s.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Chat: the longest to wait, once all are open, for nothing to arrive
    /// for --quiet-ms (e.g. join notices still in flight), s.
    #[arg(long, default_value_t = 60.0)]
    settle: f64,
    /// Chat: how long nothing must arrive for the connections to count as
    /// idle, ms.
    #[arg(long, default_value_t = 500)]
    quiet_ms: u64,
}

/// What every chat connection's reader shares.
struct Shared {
    began: Instant,
    /// When a byte last arrived, µs since `began`.
    last_byte_us: AtomicU64,
    /// Lines read and discarded after the welcomes.
    lines: AtomicU64,
    nonce: String,
    /// (connection, message index, when read) of each broadcast line.
    receipts: mpsc::UnboundedSender<(usize, u32, Instant)>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.broadcast.is_some() && args.protocol != Protocol::Chat {
        bail!("--broadcast is for --protocol chat");
    }
    let timeout_ok = args.timeout > 0.0 && args.timeout <= 600.0;
    if !timeout_ok || !(0.0..=3600.0).contains(&args.settle) {
        bail!("--timeout must be in (0, 600] and --settle in [0, 3600] seconds");
    }
    let runtime = netserver_bench::runtime(Some(1))?;
    runtime.block_on(async {
        match args.protocol {
            Protocol::Echo => hold_echo(&args).await,
            Protocol::Chat => hold_chat(&args).await,
        }
    })
}

fn say_holding(n: usize) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "holding {n}")?;
    stdout.flush()?;
    Ok(())
}

async fn hold_echo(args: &Args) -> anyhow::Result<()> {
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
    say_holding(held.len())?;
    let mut stdin = tokio::io::stdin();
    let mut sink = [0u8; 64];
    let until_stdin_closes = async { while stdin.read(&mut sink).await.is_ok_and(|n| n > 0) {} };
    let _ = tokio::time::timeout(Duration::from_secs(args.seconds), until_stdin_closes).await;
    drop(held);
    Ok(())
}

/// One chat connection's reader: the first line goes to `welcome`, every
/// later line is discarded, but for the broadcast lines of this run, whose
/// arrival goes to `shared.receipts`.
async fn read_chat(
    conn: usize,
    mut read: OwnedReadHalf,
    welcome: oneshot::Sender<Result<(), String>>,
    shared: Arc<Shared>,
) {
    let mut buf = [0u8; 256];
    let mut scanner = LineScanner::default();
    let mut welcome = Some(welcome);
    loop {
        let n = match read.read(&mut buf).await {
            Ok(0) => {
                if let Some(w) = welcome.take() {
                    let _ = w.send(Err("the server closed before the welcome line".into()));
                }
                return;
            }
            Ok(n) => n,
            Err(e) => {
                if let Some(w) = welcome.take() {
                    let _ = w.send(Err(format!("read: {e}")));
                }
                return;
            }
        };
        let at = Instant::now();
        let since = u64::try_from(at.duration_since(shared.began).as_micros()).unwrap_or(u64::MAX);
        shared.last_byte_us.fetch_max(since, Ordering::Relaxed);
        scanner.feed(&buf[..n], |line| {
            if let Some(w) = welcome.take() {
                let _ = w.send(Ok(()));
                return;
            }
            shared.lines.fetch_add(1, Ordering::Relaxed);
            if let Some(index) = broadcast_index(line, &shared.nonce) {
                let _ = shared.receipts.send((conn, index, at));
            }
        });
    }
}

async fn hold_chat(args: &Args) -> anyhow::Result<()> {
    let n = args.connections;
    let (receipts, mut receipts_rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        began: Instant::now(),
        last_byte_us: AtomicU64::new(0),
        lines: AtomicU64::new(0),
        nonce: nonce(),
        receipts,
    });
    let sources: Vec<Option<IpAddr>> = source_addresses(args.addr, args.source_ips);
    let mut writers: Vec<OwnedWriteHalf> = Vec::with_capacity(n);
    let mut readers = tokio::task::JoinSet::new();
    for i in 0..n {
        let stream = connect_tcp(args.addr, sources[i % sources.len()])
            .await
            .map_err(|(_, why)| anyhow::anyhow!("connection {i}: {why}"))?;
        let (read, write) = stream.into_split();
        let (welcome, welcomed) = oneshot::channel();
        readers.spawn(read_chat(i, read, welcome, shared.clone()));
        tokio::time::timeout(Duration::from_secs(5), welcomed)
            .await
            .with_context(|| format!("connection {i}: no welcome line within 5 s"))?
            .map_err(|_| anyhow::anyhow!("connection {i}: its reader ended"))?
            .map_err(|why| anyhow::anyhow!("connection {i}: {why}"))?;
        writers.push(write);
    }
    // Settle: nothing arrived for quiet_ms (bounded by --settle).
    let connected = shared.began.elapsed();
    let quiet = Duration::from_millis(args.quiet_ms);
    let settle_until = Instant::now() + Duration::from_secs_f64(args.settle);
    let settled = loop {
        let last = Duration::from_micros(shared.last_byte_us.load(Ordering::Relaxed));
        let idle_for = shared.began.elapsed().saturating_sub(last);
        if idle_for >= quiet {
            break true;
        }
        if Instant::now() >= settle_until {
            break false;
        }
        tokio::time::sleep((quiet - idle_for).min(Duration::from_millis(100))).await;
    };
    let lines_while_connecting = shared.lines.load(Ordering::Relaxed);
    eprintln!(
        "hold: {n} chat connections open in {:.1} s; {lines_while_connecting} other lines read \
         and discarded; {}",
        connected.as_secs_f64(),
        if settled {
            format!("quiet for {} ms", args.quiet_ms)
        } else {
            format!("still receiving after {} s of settling", args.settle)
        }
    );
    say_holding(writers.len())?;

    let session = async {
        let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut done = false;
        while let Ok(Some(line)) = stdin.next_line().await {
            if line.trim() != "broadcast" {
                continue;
            }
            let Some(messages) = args.broadcast else {
                eprintln!("hold: `broadcast` without --broadcast K: ignored");
                continue;
            };
            if std::mem::replace(&mut done, true) {
                eprintln!("hold: the broadcast ran already: ignored");
                continue;
            }
            while receipts_rx.try_recv().is_ok() {}
            let mut summary = broadcast(
                &mut writers,
                &mut receipts_rx,
                &shared.nonce,
                messages,
                Duration::from_secs_f64(args.timeout),
            )
            .await?;
            summary.lines_while_connecting = lines_while_connecting;
            let mut stdout = std::io::stdout().lock();
            writeln!(stdout, "{}", serde_json::to_string(&summary)?)?;
            stdout.flush()?;
        }
        anyhow::Ok(())
    };
    match tokio::time::timeout(Duration::from_secs(args.seconds), session).await {
        Ok(result) => result?,
        Err(_) => eprintln!("hold: {} s passed: letting go", args.seconds),
    }
    readers.abort_all();
    drop(writers);
    Ok(())
}

/// Sends `messages` broadcast lines on `writers[0]`, each once every other
/// connection read the last or after `timeout`, and gathers the delivery
/// times.
async fn broadcast(
    writers: &mut [OwnedWriteHalf],
    receipts: &mut mpsc::UnboundedReceiver<(usize, u32, Instant)>,
    nonce: &str,
    messages: u32,
    timeout: Duration,
) -> anyhow::Result<BroadcastSummary> {
    let n = writers.len();
    let receivers = n.saturating_sub(1);
    let mut samples = Vec::with_capacity(receivers * messages as usize);
    let mut missed = 0;
    let mut ever_missed = vec![false; n];
    let Some(sender) = writers.first_mut() else {
        bail!("no connection to send from");
    };
    for index in 0..messages {
        let mut got = vec![false; n];
        let mut count = 0;
        let line = broadcast_line(index, nonce);
        let sent = Instant::now();
        let deadline = sent + timeout;
        tokio::time::timeout_at(deadline.into(), sender.write_all(&line))
            .await
            .context("connection 0: the broadcast line could not be written in time")?
            .context("connection 0: write")?;
        while count < receivers {
            match tokio::time::timeout_at(deadline.into(), receipts.recv()).await {
                Ok(Some((conn, i, at))) => {
                    // Late arrivals of an earlier message are not samples.
                    if i == index && conn != 0 && !got[conn] {
                        got[conn] = true;
                        count += 1;
                        samples.push(at.duration_since(sent).as_secs_f64() * 1e3);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        missed += receivers - count;
        for conn in 1..n {
            ever_missed[conn] |= !got[conn];
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(BroadcastSummary {
        connections: n,
        messages,
        receivers,
        samples: samples.len(),
        p50_ms: quantile(&samples, 0.5),
        p99_ms: quantile(&samples, 0.99),
        max_ms: samples.last().copied(),
        missed,
        receivers_missed: ever_missed.iter().filter(|&&m| m).count(),
        timeout_s: timeout.as_secs_f64(),
        lines_while_connecting: 0,
    })
}
