//! TLS: a service's certificates read and checked, and its rustls server
//! configuration built, once, before anything is bound (and so by
//! `--check`, and by the check a HUP runs before it restarts); and what a
//! finished handshake tells the guest ([`info`]).
//!
//! The handshake itself is the transport's (`transport::tls`): it needs a
//! socket.

mod files;
pub mod info;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ServerSessionMemoryCache, WebPkiClientVerifier};

use crate::config::ServiceConfig;
use crate::config::port::Proto;
use crate::config::tls::{NamePattern, TlsSettings, TlsVersion, Verify};

/// Session IDs a worker remembers for resumption (TLS 1.2 clients that do
/// not take tickets).
const SESSION_CACHE: usize = 4096;

/// A service's TLS: its rustls configuration and how its ports route.
pub struct Tls {
    /// The rustls server configuration: certificate, client verification,
    /// versions, suites, ALPN, session tickets.
    pub config: Arc<ServerConfig>,
    /// `server_name`: the SNI names it answers on a shared port.
    pub names: Vec<NamePattern>,
    /// `sni_default`: it takes the shared port's unmatched clients.
    pub sni_default: bool,
    /// From connecting to the end of the handshake, at most.
    pub handshake_timeout: Duration,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("names", &self.names)
            .field("sni_default", &self.sni_default)
            .field("handshake_timeout", &self.handshake_timeout)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// Whether a client that sent server name `name` (or none) is this
    /// service's, when it is alone on its port: a name it lists, or any
    /// name when it lists none or is the port's default.
    pub fn accepts(&self, name: Option<&str>) -> bool {
        crate::config::tls::pick(name, &[&self.names], &[self.sni_default]).is_some()
    }
}

/// The TLS of `service`, when it has an `ssl` port: its files read and
/// checked, its configuration built. An error is one line naming the
/// option, the file and what is wrong with it.
pub fn load(service: &ServiceConfig) -> Result<Option<Arc<Tls>>> {
    if !service.listeners.iter().any(|l| l.proto == Proto::Ssl) {
        return Ok(None);
    }
    let settings = &service.tls;
    let origin = |key: &str, path: &std::path::Path| files::origin(service, key, path);
    let (Some(cert_file), Some(key_file)) = (&settings.cert_file, &settings.key_file) else {
        // The resolution refuses an ssl port without them.
        return Err(anyhow!(
            "service '{}': an ssl port needs SSL_cert_file and SSL_key_file",
            service.name
        ));
    };
    let chain = files::certificates(cert_file)
        .map_err(|why| anyhow!("{}: {why}", origin("ssl_cert_file", cert_file)))?;
    files::check_validity(&chain[0])
        .map_err(|why| anyhow!("{}: {why}", origin("ssl_cert_file", cert_file)))?;
    let key = files::private_key(key_file)
        .map_err(|why| anyhow!("{}: {why}", origin("ssl_key_file", key_file)))?;
    if settings.min_version == TlsVersion::V1_3
        && !settings.ciphers.is_empty()
        && !settings
            .ciphers
            .iter()
            .any(|name| name.starts_with("TLS13_"))
    {
        return Err(anyhow!(
            "{}: names no TLS 1.3 suite, and SSL_version {} serves TLS 1.3 only",
            origin(
                "ssl_cipher_list",
                std::path::Path::new(&settings.ciphers.join(":"))
            ),
            settings.min_version.name()
        ));
    }
    let provider = Arc::new(provider(settings));
    let versions: &[&'static rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::V1_2 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::V1_3 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| {
            anyhow!(
                "service '{}': SSL_cipher_list {} leaves no suite for the versions SSL_version {} allows: {e}",
                service.name,
                settings.ciphers.join(":"),
                settings.min_version.name()
            )
        })?;
    let builder = match settings.verify {
        Verify::None => builder.with_no_client_auth(),
        verify => {
            let roots = files::trusted(settings)
                .map_err(|(key, path, why)| anyhow!("{}: {why}", origin(key, &path)))?;
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
            let verifier = match verify {
                Verify::IfSent => verifier.allow_unauthenticated(),
                _ => verifier,
            };
            let verifier = verifier.build().map_err(|e| {
                anyhow!(
                    "service '{}': cannot verify client certificates: {e}",
                    service.name
                )
            })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(|e| {
        let why = match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                format!("does not match the certificate of {}", cert_file.display())
            }
            other => other.to_string(),
        };
        anyhow!("{}: {why}", origin("ssl_key_file", key_file))
    })?;
    config.alpn_protocols = settings
        .alpn
        .iter()
        .map(|p| p.as_bytes().to_vec())
        .collect();
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    // Made before the workers fork: every worker takes every worker's
    // tickets, so a resuming client may land on any of them.
    config.ticketer = rustls::crypto::ring::Ticketer::new()
        .map_err(|e| anyhow!("service '{}': session tickets: {e}", service.name))?;
    Ok(Some(Arc::new(Tls {
        config: Arc::new(config),
        names: settings.server_names.clone(),
        sni_default: settings.sni_default,
        handshake_timeout: settings.handshake_timeout,
    })))
}

/// The TLS of every service of `services`, in order.
pub fn load_all(services: &[ServiceConfig]) -> Result<Vec<Option<Arc<Tls>>>> {
    services.iter().map(load).collect()
}

/// rustls's ring provider, its suites cut to `SSL_cipher_list`'s (in its
/// order of preference) when one is given.
fn provider(settings: &TlsSettings) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    if !settings.ciphers.is_empty() {
        let all = std::mem::take(&mut provider.cipher_suites);
        provider.cipher_suites = settings
            .ciphers
            .iter()
            .filter_map(|name| all.iter().find(|s| suite_name(s) == *name).copied())
            .collect();
    }
    provider
}

/// A suite's rustls name (as `SSL_cipher_list` takes it).
pub fn suite_name(suite: &rustls::SupportedCipherSuite) -> String {
    format!("{:?}", suite.suite())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tls::CIPHER_SUITES;

    #[test]
    fn every_suite_name_is_one_of_rustls() {
        let offered: Vec<String> = rustls::crypto::ring::default_provider()
            .cipher_suites
            .iter()
            .map(suite_name)
            .collect();
        let named: Vec<String> = CIPHER_SUITES.iter().map(|(n, _)| n.to_string()).collect();
        let mut offered_sorted = offered.clone();
        offered_sorted.sort();
        let mut named_sorted = named.clone();
        named_sorted.sort();
        assert_eq!(offered_sorted, named_sorted);
    }
}
