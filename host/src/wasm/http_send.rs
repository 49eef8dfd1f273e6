//! Sending a wasi:http guest's outgoing request to the addresses that were
//! checked against `grant_connect`, and to no other: the name is looked up
//! once, by the caller, so a name that resolves to a granted address when
//! checked and to another when connected (DNS rebinding) reaches nothing
//! it was not granted. HTTP/1.1, over TLS for `https` (the Web PKI's roots,
//! the name the request gave), with the timeouts the guest's request
//! options set (600 s each by default, as `wasmtime serve`).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody};

/// The response of a request sent, and the future of its connection's
/// end (what [`wasmtime_wasi_http::WasiHttpHooks::send_request`] returns).
pub type Sent = (
    hyper::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

/// The timeout of each step when the guest's request sets none.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// A stream hyper's client speaks over: TCP, or TLS over it.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Sends `request` to the first of `addrs` that accepts a connection;
/// `host` is the name (or address) the request named, which TLS verifies
/// the server's certificate against.
pub async fn send(
    addrs: &[SocketAddr],
    host: &str,
    mut request: hyper::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> Result<Sent, Error> {
    let timeout = |pick: fn(&RequestOptions) -> Option<Duration>| {
        options.as_ref().and_then(pick).unwrap_or(DEFAULT_TIMEOUT)
    };
    let connect_timeout = timeout(|o| o.connect_timeout);
    let first_byte_timeout = timeout(|o| o.first_byte_timeout);
    let between_bytes_timeout = timeout(|o| o.between_bytes_timeout).max(Duration::from_nanos(1));
    let tls = request.uri().scheme_str() == Some("https");

    let tcp = tokio::time::timeout(connect_timeout, TcpStream::connect(addrs))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let stream: Box<dyn Io> = if tls {
        let name = server_name(host)?;
        let connect = connector().connect(name, tcp);
        Box::new(
            tokio::time::timeout(connect_timeout, connect)
                .await
                .map_err(|_| Error::ConnectionTimeout)?
                .map_err(Error::Tls)?,
        )
    } else {
        Box::new(tcp)
    };
    let (mut sender, conn) = tokio::time::timeout(
        connect_timeout,
        hyper::client::conn::http1::handshake(TokioIo::new(stream)),
    )
    .await
    .map_err(|_| Error::ConnectionTimeout)??;
    // The request line names the path only (the authority is in `host`).
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    *request.uri_mut() = path.parse().map_err(|_| Error::HttpRequestUriInvalid)?;

    // hyper's connection is driven while the response comes, then handed
    // back to be driven while its body does.
    let mut conn = Some(conn);
    let mut response = Box::pin(tokio::time::timeout(
        first_byte_timeout,
        sender.send_request(request),
    ));
    let response = std::future::poll_fn(|cx| {
        if let Poll::Ready(result) = response.as_mut().poll(cx) {
            return Poll::Ready(
                result
                    .map_err(|_| Error::ConnectionReadTimeout)?
                    .map_err(Error::from),
            );
        }
        if let Some(driving) = conn.as_mut()
            && let Poll::Ready(result) = Pin::new(driving).poll(cx)
        {
            conn = None;
            if let Err(err) = result {
                return Poll::Ready(Err(Error::from(err)));
            }
        }
        Poll::Pending
    })
    .await?;
    let mut between = tokio::time::interval(between_bytes_timeout);
    between.reset();
    let response = response.map(|incoming| Timed { incoming, between }.boxed_unsync());
    let end = async move {
        match conn {
            Some(conn) => conn.await.map_err(|err| {
                if err.is_timeout() {
                    Error::HttpResponseTimeout
                } else {
                    Error::from(err)
                }
            }),
            None => Ok(()),
        }
    };
    Ok((response, Box::new(end)))
}

/// The TLS client: the Web PKI's roots, ring, TLS 1.2 and 1.3.
fn connector() -> tokio_rustls::TlsConnector {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        Arc::new(
            rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring supports the default versions")
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    });
    tokio_rustls::TlsConnector::from(config.clone())
}

/// The name TLS verifies: an address, or a DNS name.
fn server_name(host: &str) -> Result<ServerName<'static>, Error> {
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Ok(ServerName::from(ip)),
        Err(_) => ServerName::try_from(host.to_owned()).map_err(|_| Error::HttpRequestUriInvalid),
    }
}

/// A response body that fails when no byte comes for
/// `between_bytes_timeout`.
struct Timed {
    incoming: hyper::body::Incoming,
    between: tokio::time::Interval,
}

impl Body for Timed {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        match Pin::new(&mut self.incoming).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                self.between.reset();
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(err))) if err.is_timeout() => {
                Poll::Ready(Some(Err(Error::HttpResponseTimeout)))
            }
            Poll::Ready(Some(Err(err))) => Poll::Ready(Some(Err(Error::from(err)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match self.between.poll_tick(cx) {
                Poll::Ready(_) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.incoming.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.incoming.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// The request goes to the address given, never to a lookup of the
    /// name (`.invalid` resolves nowhere): path only on the request line,
    /// the response and its body back.
    #[tokio::test]
    async fn a_request_goes_to_the_address_checked_not_to_the_name() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut head = Vec::new();
            let mut buf = [0; 1024];
            while !head.ends_with(b"\r\n\r\n") {
                let n = stream.read(&mut buf).await.unwrap();
                assert!(n > 0);
                head.extend_from_slice(&buf[..n]);
            }
            stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await
                .unwrap();
            String::from_utf8(head).unwrap()
        });
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = hyper::Request::builder()
            .uri(format!("http://rebound.invalid:{}/path?q=1", addr.port()))
            .header("host", "rebound.invalid")
            .body(body)
            .unwrap();
        let (response, end) = send(&[addr], "rebound.invalid", request, None)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
        let head = server.await.unwrap();
        assert!(head.starts_with("GET /path?q=1 HTTP/1.1\r\n"), "{head}");
        assert!(head.contains("host: rebound.invalid\r\n"), "{head}");
        drop(Box::into_pin(end));
    }

    #[tokio::test]
    async fn a_refused_connection_and_a_bad_name_are_errors() {
        // A port nothing listens on (bound, then closed).
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        let request = hyper::Request::builder()
            .uri(format!("http://127.0.0.1:{}/", addr.port()))
            .body(body)
            .unwrap();
        let sent = send(&[addr], "127.0.0.1", request, None).await;
        assert!(matches!(sent, Err(Error::Connect(_))));
        assert!(server_name("127.0.0.1").is_ok());
        assert!(server_name("example.com").is_ok());
        assert!(server_name("not a name").is_err());
    }
}
