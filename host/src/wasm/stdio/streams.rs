//! The guest's stdin and stdout as WASI streams: each call reaches the
//! attached client's [`ClientSocket`](crate::transport::ClientSocket), or,
//! detached, reads end of file and discards what is written.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use wasmtime_wasi::cli::{IsTerminal, StdinStream, StdoutStream};
use wasmtime_wasi::p2::{InputStream, OutputStream, Pollable, StreamError, StreamResult};

use super::GuestIo;
use crate::transport::CHUNK;

/// The guest's stdin: reads the attached client.
#[derive(Clone, Debug)]
pub struct GuestStdin(pub(super) GuestIo);

/// The guest's stdout: writes to the attached client.
#[derive(Clone, Debug)]
pub struct GuestStdout(pub(super) GuestIo);

impl IsTerminal for GuestStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl IsTerminal for GuestStdout {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for GuestStdin {
    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }
}

impl StdoutStream for GuestStdout {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStdin {
    async fn ready(&mut self) {
        if let Some(client) = self.0.client() {
            // An error means the stream is readable (it will report the error).
            let _ = self.0.wait_for(client.readable()).await;
        }
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for GuestStdin {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        match self.0.client() {
            Some(client) => client.read(size),
            None => Err(StreamError::Closed),
        }
    }

    /// `blocking-read`, the call behind every read of Rust's `std::io::stdin`:
    /// the default would look the client up twice per read.
    async fn blocking_read(&mut self, size: usize) -> StreamResult<Bytes> {
        let Some(client) = self.0.client() else {
            return Err(StreamError::Closed);
        };
        self.0.wait_for(client.read_blocking(size)).await
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GuestStdout {
    async fn ready(&mut self) {
        if let Some(client) = self.0.client() {
            self.0.wait_for(client.drain()).await;
        }
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for GuestStdout {
    /// `blocking-write-and-flush`, the call behind the SDK's `reply()`: one
    /// send, and no wait unless the socket is full. The default would wait
    /// for readiness twice and check for room three times per call.
    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        let Some(client) = self.0.client() else {
            return Ok(());
        };
        self.0.wait_for(client.write_and_flush(bytes)).await
    }

    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        match self.0.client() {
            Some(client) => client.write(bytes),
            None => Ok(()),
        }
    }

    fn flush(&mut self) -> StreamResult<()> {
        // Completion is observed through `ready`, which waits for the drain.
        match self.0.client() {
            Some(client) => client.flush(),
            None => Ok(()),
        }
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        match self.0.client() {
            Some(client) => client.check_write(),
            None => Ok(CHUNK),
        }
    }
}

impl AsyncRead for GuestStdin {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.0.client() {
            Some(client) => client.poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for GuestStdout {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Some(client) = self.0.client() else {
            return Poll::Ready(Ok(buf.len()));
        };
        std::task::ready!(client.poll_drained(cx))?;
        client
            .write(Bytes::copy_from_slice(buf))
            .map_err(io::Error::other)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.0.client() {
            Some(client) => {
                // A datagram reply is cut at the first poll; later polls
                // find nothing more to cut.
                client.flush().map_err(io::Error::other)?;
                client.poll_drained(cx)
            }
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}
