//! wasi:http guests (the `wasi:http/proxy` world, as `wasmtime serve`
//! serves it): where their outgoing requests may go — only to the
//! service's `grant_connect` networks — and what is handed to an instance
//! for one incoming request.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use ipnet::IpNet;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use super::http_send::Sent;

use crate::config::Grants;

pub use wasmtime_wasi_http::p2::bindings::http::types::{ErrorCode, Scheme};
pub use wasmtime_wasi_http::p2::body::{HyperIncomingBody, HyperOutgoingBody};

/// The export that makes a component a wasi:http guest.
pub const INCOMING_HANDLER_PREFIX: &str = "wasi:http/incoming-handler@0.2";

/// What a guest's response is sent through: its response, or the error
/// code it gave instead.
pub type Respond =
    tokio::sync::oneshot::Sender<Result<hyper::Response<HyperOutgoingBody>, ErrorCode>>;

/// Where one instance's outgoing requests may go: the hooks wasi:http
/// calls to send one.
#[derive(Clone, Debug)]
pub struct Outgoing {
    nets: Arc<[IpNet]>,
}

impl Outgoing {
    /// Requests to `grants.connect` only (none without it).
    pub fn new(grants: &Grants) -> Self {
        Self {
            nets: grants.connect.clone().into(),
        }
    }
}

impl WasiHttpHooks for Outgoing {
    fn send_request(
        &mut self,
        request: hyper::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<Sent, Error>> + Send> {
        drop(fut);
        let nets = self.nets.clone();
        let host = target(request.uri()).map(|(host, _)| host);
        Box::new(async move {
            let addrs = destination(request.uri()).await?;
            if let Some(refused) = addrs.iter().find(|a| !granted(&nets, **a)) {
                tracing::warn!(
                    "refused an outgoing request to {} ({refused}): not in grant_connect",
                    request.uri()
                );
                return Err(Error::HttpRequestDenied);
            }
            // To the addresses checked, not to a second lookup's.
            super::http_send::send(&addrs, &host?, request, options).await
        })
    }
}

/// The addresses a request's authority names (a name is looked up).
fn destination(
    uri: &hyper::Uri,
) -> impl Future<Output = Result<Vec<SocketAddr>, Error>> + Send + 'static {
    let target = target(uri);
    async move {
        let (host, port) = target?;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| Error::DnsError {
                rcode: Some(e.to_string()),
                info_code: None,
            })?
            .collect();
        if addrs.is_empty() {
            return Err(Error::DestinationNotFound);
        }
        Ok(addrs)
    }
}

/// The host and port `uri` names (the scheme's port when it names none).
fn target(uri: &hyper::Uri) -> Result<(String, u16), Error> {
    let host = uri.host().ok_or(Error::HttpRequestUriInvalid)?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    Ok((host.to_owned(), port))
}

/// Whether `grant_connect` networks `nets` hold `addr`.
fn granted(nets: &[IpNet], addr: SocketAddr) -> bool {
    super::grants::permits(nets, addr, SocketAddrUse::TcpConnect)
}

#[cfg(test)]
mod tests {
    use http_body_util::BodyExt;

    use super::*;

    fn request(uri: &str) -> hyper::Request<WasiBody> {
        let body = http_body_util::Empty::new()
            .map_err(|never| match never {})
            .boxed_unsync();
        hyper::Request::builder().uri(uri).body(body).unwrap()
    }

    #[tokio::test]
    async fn destinations_and_grants() {
        let dest = destination(request("http://127.0.0.1:8080/x").uri())
            .await
            .unwrap();
        assert_eq!(dest, vec!["127.0.0.1:8080".parse().unwrap()]);
        let dest = destination(request("https://[::1]/").uri()).await.unwrap();
        assert_eq!(dest, vec!["[::1]:443".parse().unwrap()]);
        let nets: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(granted(&nets, "127.0.0.1:80".parse().unwrap()));
        assert!(!granted(&nets, "10.0.0.1:80".parse().unwrap()));
        assert!(!granted(&[], "127.0.0.1:80".parse().unwrap()));
    }

    #[tokio::test]
    async fn ungranted_requests_are_refused_unsent() {
        let mut outgoing = Outgoing::new(&Grants::default());
        let sent = outgoing.send_request(
            request("http://127.0.0.1:9/"),
            None,
            Box::new(async { Ok(()) }),
        );
        let result = Box::into_pin(sent).await;
        assert!(matches!(result, Err(Error::HttpRequestDenied)));
    }
}
