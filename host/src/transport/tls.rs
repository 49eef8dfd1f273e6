//! The TLS handshake on an accepted socket, in two steps so that the
//! host can decide between them: the ClientHello is read first (no
//! cryptography yet: its server name picks the service on a shared port,
//! and the access rules run before any work is spent on a client they
//! refuse), then the handshake is finished with the service's
//! configuration. Both within one deadline from the accept.

use std::sync::Arc;
use std::time::Instant;

use rustls::server::Acceptor;
use tokio_rustls::{LazyConfigAcceptor, StartHandshake};

use super::stream::{AsyncStream, RawStream};
use crate::client::{Local, Peer, TlsInfo};
use crate::tls::{Tls, info};

/// A TLS client whose ClientHello was read.
pub struct Hello {
    start: StartHandshake<RawStream>,
    /// The server name it asked for (SNI), if any.
    pub server_name: Option<String>,
    /// When its handshake must be over.
    pub deadline: Instant,
}

impl std::fmt::Debug for Hello {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hello")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

/// A client of a TLS port several services share, whose ClientHello was
/// read to pick its service (after its PROXY header, when one came).
#[derive(Debug)]
pub struct Greeted {
    /// Its ClientHello.
    pub hello: Box<Hello>,
    /// The client's end (from the PROXY header, when one came).
    pub peer: Peer,
    /// The server's end.
    pub local: Local,
}

/// Why a handshake ended the connection, as its log line says (`step`
/// empty, or starting with a space).
fn failed(step: &str, err: &std::io::Error) -> String {
    // rustls's errors come wrapped in an I/O error: say rustls's own.
    match err.get_ref() {
        Some(inner) => format!("TLS handshake failed{step}: {inner}"),
        None if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            format!("TLS handshake failed{step}: the client closed the connection")
        }
        None => format!("TLS handshake failed{step}: {err}"),
    }
}

/// Reads the ClientHello of `stream`, by `deadline`.
pub async fn read_hello(stream: RawStream, deadline: Instant) -> Result<Box<Hello>, String> {
    let acceptor = LazyConfigAcceptor::new(Acceptor::default(), stream);
    match tokio::time::timeout_at(deadline.into(), acceptor).await {
        Err(_) => Err("TLS handshake timed out: no ClientHello".to_owned()),
        Ok(Err(err)) => Err(failed(" reading the ClientHello", &err)),
        Ok(Ok(start)) => {
            let server_name = start
                .client_hello()
                .server_name()
                .map(str::to_ascii_lowercase);
            Ok(Box::new(Hello {
                start,
                server_name,
                deadline,
            }))
        }
    }
}

impl Hello {
    /// Finishes the handshake with `tls`'s configuration, by the deadline:
    /// the encrypted stream, and what the handshake settled.
    pub async fn finish(
        self: Box<Self>,
        tls: &Tls,
    ) -> Result<(Box<dyn AsyncStream>, TlsInfo), String> {
        let accept = self.start.into_stream(Arc::clone(&tls.config));
        match tokio::time::timeout_at(self.deadline.into(), accept).await {
            Err(_) => Err("TLS handshake timed out".to_owned()),
            Ok(Err(err)) => Err(failed("", &err)),
            Ok(Ok(stream)) => {
                let info = info::of(stream.get_ref().1);
                Ok((Box::new(stream), info))
            }
        }
    }
}
