//! The chat of issue 23 (Net::Server::Multiplex's example, the mux world's
//! `chat.wasm`): on connect a client gets `Welcome, you are number N to
//! connect. You are guestN.\r\n` and the others `JOIN: guestN\r\n`; a line
//! `TEXT` from a client makes every client, the sender included, get
//! `[guestN] TEXT\r\n`.
//!
//! Here: the native tokio chat of `native-echo --chat` (the no-sandbox
//! baseline for the broadcast latency), what `hold --protocol chat` reads
//! (a [`LineScanner`] that keeps no buffer between lines) and the broadcast
//! lines it sends and recognizes (`bcast-I-NONCE`), and the summary it
//! prints ([`BroadcastSummary`]).

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::protocol::{MAX_LINE, strip_line_end};

/// The welcome line client number `number` gets.
///
/// ```
/// assert_eq!(
///     netserver_bench::chat::welcome(3),
///     b"Welcome, you are number 3 to connect. You are guest3.\r\n"
/// );
/// ```
pub fn welcome(number: u64) -> Vec<u8> {
    format!("Welcome, you are number {number} to connect. You are guest{number}.\r\n").into_bytes()
}

/// The broadcast line number `index` of a run with `nonce`, with its line
/// end: `bcast-INDEX-NONCE\r\n`.
pub fn broadcast_line(index: u32, nonce: &str) -> Vec<u8> {
    format!("bcast-{index}-{nonce}\r\n").into_bytes()
}

/// The index of the broadcast line of this run (`nonce`) that `line`
/// carries, wherever in the line it is (the chat prefixes `[NICK] `), or
/// `None`. The nonce must end the line (before `\r\n`, `\n` or the end).
///
/// ```
/// use netserver_bench::chat::broadcast_index;
/// assert_eq!(broadcast_index(b"[guest1] bcast-7-ab12\r\n", "ab12"), Some(7));
/// assert_eq!(broadcast_index(b"[guest1] bcast-7-ab12x\r\n", "ab12"), None);
/// assert_eq!(broadcast_index(b"[guest1] bcast-7-cd34\r\n", "ab12"), None);
/// assert_eq!(broadcast_index(b"JOIN: guest2\r\n", "ab12"), None);
/// ```
pub fn broadcast_index(line: &[u8], nonce: &str) -> Option<u32> {
    const MARK: &[u8] = b"bcast-";
    let text = strip_line_end(line);
    let at = text.windows(MARK.len()).rposition(|w| w == MARK)?;
    let rest = &text[at + MARK.len()..];
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let (number, tail) = rest.split_at(digits);
    let tail = tail.strip_prefix(b"-")?;
    if tail != nonce.as_bytes() {
        return None;
    }
    std::str::from_utf8(number).ok()?.parse().ok()
}

/// A nonce for one run's broadcast lines: hex of the clock and the PID, so
/// that lines of another run are not taken for this one's.
pub fn nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("{:x}", nanos ^ (u64::from(std::process::id()) << 40))
}

/// Splits a byte stream read in small pieces into lines, holding bytes
/// only while a line spans two reads (and at most [`LineScanner::MAX`] of
/// them: the rest of a longer line is skipped).
#[derive(Debug, Default)]
pub struct LineScanner {
    partial: Vec<u8>,
    skipping: bool,
}

impl LineScanner {
    /// The most bytes of an unfinished line kept.
    pub const MAX: usize = 4096;

    /// Calls `line` with each line that `data` completes (with its `\n`).
    pub fn feed(&mut self, mut data: &[u8], mut line: impl FnMut(&[u8])) {
        while let Some(end) = data.iter().position(|&b| b == b'\n') {
            let (piece, rest) = data.split_at(end + 1);
            if std::mem::take(&mut self.skipping) {
                // The end of a line too long to keep.
            } else if self.partial.is_empty() {
                line(piece);
            } else {
                self.partial.extend_from_slice(piece);
                line(&self.partial);
                self.partial.clear();
                if self.partial.capacity() > 512 {
                    self.partial.shrink_to(0);
                }
            }
            data = rest;
        }
        if data.is_empty() || self.skipping {
            return;
        }
        if self.partial.len() + data.len() > Self::MAX {
            self.partial = Vec::new();
            self.skipping = true;
        } else {
            self.partial.extend_from_slice(data);
        }
    }

    /// Bytes held of an unfinished line.
    pub fn held(&self) -> usize {
        self.partial.len()
    }
}

/// What `hold --broadcast K` prints: the time from sending each broadcast
/// line on connection 0 until each other connection read the line carrying
/// it, over all (receiver, message) samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BroadcastSummary {
    /// Connections held.
    pub connections: usize,
    /// Messages sent (one after the other).
    pub messages: u32,
    /// Receivers of each message: the connections but the sender.
    pub receivers: usize,
    /// (receiver, message) pairs that arrived in time.
    pub samples: usize,
    /// Median, ms (`None` without samples).
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Slowest, ms.
    pub max_ms: Option<f64>,
    /// (receiver, message) pairs that did not arrive within the timeout.
    pub missed: usize,
    /// Receivers that missed at least one message.
    pub receivers_missed: usize,
    /// The time each message was given, s.
    pub timeout_s: f64,
    /// Lines other than the welcome read (and discarded) while connecting
    /// and settling, e.g. `JOIN:` notices.
    pub lines_while_connecting: u64,
}

/// The `q` quantile (0 to 1) of sorted `values`, nearest rank.
///
/// ```
/// use netserver_bench::chat::quantile;
/// let v = [1.0, 2.0, 3.0, 4.0];
/// assert_eq!(quantile(&v, 0.5), Some(2.0));
/// assert_eq!(quantile(&v, 0.99), Some(4.0));
/// assert_eq!(quantile(&[], 0.5), None);
/// ```
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// The native chat's room: every member's queue of lines to write.
#[derive(Debug, Default)]
struct Room {
    next: AtomicU64,
    members: Mutex<HashMap<u64, mpsc::UnboundedSender<Arc<[u8]>>>>,
}

impl Room {
    /// Queues `line` for every member.
    fn broadcast(&self, line: &[u8]) {
        let line: Arc<[u8]> = Arc::from(line);
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner());
        for member in members.values() {
            let _ = member.send(line.clone());
        }
    }
}

/// Serves the chat on `listener` until the process is stopped: each
/// connection in a task of its own (reading lines through a [`BufReader`],
/// as the native echo does), writing what is queued for it. Without
/// `join_notices`, no `JOIN:` lines are sent (the welcome and the chat
/// lines are).
pub async fn serve_chat(listener: TcpListener, join_notices: bool) -> io::Result<()> {
    let room = Arc::new(Room {
        next: AtomicU64::new(1),
        ..Room::default()
    });
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let room = room.clone();
                tokio::spawn(async move {
                    let _ = member(stream, &room, join_notices).await;
                });
            }
            Err(err) => {
                eprintln!("native-echo: accept: {err}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn member(stream: TcpStream, room: &Room, join_notices: bool) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let number = room.next.fetch_add(1, Ordering::Relaxed);
    let nick = format!("guest{number}");
    let (queue, mut queued) = mpsc::unbounded_channel::<Arc<[u8]>>();
    let _ = queue.send(Arc::from(welcome(number)));
    if join_notices {
        room.broadcast(format!("JOIN: {nick}\r\n").as_bytes());
    }
    room.members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(number, queue);
    let (read, mut write) = stream.into_split();
    let writer = async move {
        let mut out = Vec::new();
        while let Some(line) = queued.recv().await {
            out.extend_from_slice(&line);
            while let Ok(line) = queued.try_recv() {
                out.extend_from_slice(&line);
            }
            write.write_all(&out).await?;
            out.clear();
        }
        io::Result::Ok(())
    };
    let reader = async {
        let mut reader = BufReader::new(read);
        let mut line = Vec::new();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
        loop {
            line.clear();
            if (&mut reader)
                .take(limit)
                .read_until(b'\n', &mut line)
                .await?
                == 0
            {
                return io::Result::Ok(());
            }
            let mut said = format!("[{nick}] ").into_bytes();
            said.extend_from_slice(strip_line_end(&line));
            said.extend_from_slice(b"\r\n");
            room.broadcast(&said);
        }
    };
    let ended = tokio::select! {
        ended = reader => ended,
        ended = writer => ended,
    };
    room.members
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&number);
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines_of(pieces: &[&[u8]]) -> Vec<Vec<u8>> {
        let mut scanner = LineScanner::default();
        let mut lines = Vec::new();
        for piece in pieces {
            scanner.feed(piece, |l| lines.push(l.to_vec()));
        }
        lines
    }

    #[test]
    fn scans_lines_across_reads() {
        assert_eq!(
            lines_of(&[b"a\r\nb", b"c\n", b"", b"d\ne\n"]),
            [&b"a\r\n"[..], b"bc\n", b"d\n", b"e\n"]
        );
        // A line longer than MAX is skipped to its end.
        let long = vec![b'x'; LineScanner::MAX + 1];
        assert_eq!(
            lines_of(&[b"ok\nxx", &long, b"yy\nnext\n"]),
            [&b"ok\n"[..], b"next\n"]
        );
        let mut scanner = LineScanner::default();
        scanner.feed(b"abc", |_| {});
        assert_eq!(scanner.held(), 3);
        scanner.feed(b"\n", |_| {});
        assert_eq!(scanner.held(), 0);
    }

    #[test]
    fn broadcast_lines_round_trip() {
        let nonce = nonce();
        let line = broadcast_line(12, &nonce);
        assert_eq!(broadcast_index(&line, &nonce), Some(12));
        let mut said = b"[guest1] ".to_vec();
        said.extend_from_slice(&line);
        assert_eq!(broadcast_index(&said, &nonce), Some(12));
        assert_eq!(broadcast_index(b"bcast--x", "x"), None);
    }

    #[tokio::test]
    async fn native_chat_welcomes_announces_and_broadcasts() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_chat(listener, true));
        let mut first = BufReader::new(TcpStream::connect(addr).await.unwrap());
        let mut line = String::new();
        first.read_line(&mut line).await.unwrap();
        assert_eq!(line.as_bytes(), welcome(1));
        let mut second = BufReader::new(TcpStream::connect(addr).await.unwrap());
        line.clear();
        second.read_line(&mut line).await.unwrap();
        assert_eq!(line.as_bytes(), welcome(2));
        line.clear();
        first.read_line(&mut line).await.unwrap();
        assert_eq!(line, "JOIN: guest2\r\n");
        second.get_mut().write_all(b"hi all\n").await.unwrap();
        for reader in [&mut first, &mut second] {
            line.clear();
            reader.read_line(&mut line).await.unwrap();
            assert_eq!(line, "[guest2] hi all\r\n");
        }
        server.abort();
    }
}
