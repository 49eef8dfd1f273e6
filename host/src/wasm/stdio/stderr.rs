//! The guest's stderr: each line it writes becomes a log line, tagged with
//! the connection being served.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

use crate::transport::CHUNK;
use crate::wasm::log_rate::LogRate;

/// The longest line of guest stderr logged as one line.
const MAX_LOG_LINE: usize = 4096;

/// The guest's stderr: each line becomes a log line at `notice`, inside the
/// connection's span (so tagged with the service and the client), as the
/// service's log rate lets it.
#[derive(Clone, Debug)]
pub struct GuestStderr {
    /// What the guest wrote past its last whole line.
    rest: Arc<Mutex<Vec<u8>>>,
    rate: Arc<LogRate>,
}

impl GuestStderr {
    /// A guest's stderr, whose lines count against `rate`.
    pub fn new(rate: Arc<LogRate>) -> Self {
        Self {
            rest: Arc::default(),
            rate,
        }
    }

    fn take_lines(&self, bytes: &[u8]) {
        let mut buf = self.rest.lock().unwrap_or_else(|p| p.into_inner());
        buf.extend_from_slice(bytes);
        while let Some(end) = line_end(&buf) {
            self.log_line(&buf[..end]);
            buf.drain(..end);
        }
    }

    fn log_line(&self, line: &[u8]) {
        // A line the log level filters out costs no token.
        if tracing::enabled!(target: "guest", tracing::Level::INFO) && self.rate.admit() {
            log_line(line);
        }
    }
}

fn log_line(line: &[u8]) {
    let text = String::from_utf8_lossy(line);
    tracing::info!(target: "guest", "stderr: {}", text.trim_end_matches(['\r', '\n']));
}

/// Where the first log line in `buf` ends: after a newline, or at
/// [`MAX_LOG_LINE`] bytes.
fn line_end(buf: &[u8]) -> Option<usize> {
    match buf.iter().position(|&b| b == b'\n') {
        Some(i) => Some(i + 1),
        None if buf.len() >= MAX_LOG_LINE => Some(MAX_LOG_LINE),
        None => None,
    }
}

impl Drop for GuestStderr {
    fn drop(&mut self) {
        // The last handle logs what is left of an unterminated line.
        if Arc::strong_count(&self.rest) == 1 {
            let rest = self.rest.lock().unwrap_or_else(|p| p.into_inner());
            if !rest.is_empty() {
                self.log_line(&rest);
            }
        }
    }
}

impl IsTerminal for GuestStderr {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestStderr {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStderr {
    async fn ready(&mut self) {}
}

impl OutputStream for GuestStderr {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take_lines(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(CHUNK)
    }
}

impl AsyncWrite for GuestStderr {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.take_lines(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_split_at_newline_or_length() {
        let long = vec![b'x'; MAX_LOG_LINE + 10];
        let cases: &[(&[u8], Option<usize>)] = &[
            (b"", None),
            (b"partial", None),
            (b"one\n", Some(4)),
            (b"one\ntwo\n", Some(4)),
            (b"\n", Some(1)),
            (&long, Some(MAX_LOG_LINE)),
        ];
        for &(buf, want) in cases {
            assert_eq!(line_end(buf), want, "{:?}", String::from_utf8_lossy(buf));
        }
    }
}
