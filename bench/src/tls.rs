//! TLS for the harness (issue 21): rustls with the ring provider, for the
//! load generator's clients and the native echo server.
//!
//! The client trusts exactly the certificate(s) of a PEM file (the run's
//! throwaway self-signed certificate: pinned, see `Pinned`) and keeps a
//! session cache shared by all its connections when asked to resume
//! sessions; otherwise resumption is disabled and every handshake is a full
//! one. The server resumes sessions as netserver-host does: stateless
//! tickets (rustls' ring `Ticketer`, two sent after each TLS 1.3
//! handshake) and an in-memory session store of 4,096 entries (TLS 1.2
//! session IDs).

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{Resumption, verify_server_name};
use rustls::crypto::{
    CryptoProvider, WebPkiSupportedAlgorithms, verify_tls12_signature, verify_tls13_signature,
};
use rustls::server::{ParsedCertificate, ServerSessionMemoryCache};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls::{ClientConfig, ProtocolVersion, ServerConfig, SupportedProtocolVersion};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// A TLS version to force (both are offered when none is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TlsVersion {
    /// TLS 1.2 only.
    #[value(name = "1.2")]
    Tls12,
    /// TLS 1.3 only.
    #[value(name = "1.3")]
    Tls13,
}

/// The ring provider, the one crypto provider of the workspace.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn versions(version: Option<TlsVersion>) -> &'static [&'static SupportedProtocolVersion] {
    const TLS12: &[&SupportedProtocolVersion] = &[&rustls::version::TLS12];
    const TLS13: &[&SupportedProtocolVersion] = &[&rustls::version::TLS13];
    match version {
        None => rustls::DEFAULT_VERSIONS,
        Some(TlsVersion::Tls12) => TLS12,
        Some(TlsVersion::Tls13) => TLS13,
    }
}

/// A client configuration that trusts the certificates in the PEM file
/// `ca` (and nothing else: `Pinned`), offers `version` (or both), and
/// resumes sessions when `resume` is set: an in-memory session cache shared
/// by every connection made with this configuration. Without `resume`,
/// [`Resumption::disabled`]: no session is stored or offered, so every
/// handshake is a full one.
pub fn client_config(
    ca: &Path,
    version: Option<TlsVersion>,
    resume: bool,
) -> anyhow::Result<ClientConfig> {
    let certs = CertificateDer::pem_file_iter(ca)
        .with_context(|| format!("read the certificates of {}", ca.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("a certificate of {}", ca.display()))?;
    if certs.is_empty() {
        bail!("{}: no certificate", ca.display());
    }
    for cert in &certs {
        ParsedCertificate::try_from(cert)
            .with_context(|| format!("a certificate of {}", ca.display()))?;
    }
    let provider = provider();
    let pinned = Pinned {
        certs,
        algorithms: provider.signature_verification_algorithms,
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions(version))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(pinned))
        .with_no_client_auth();
    config.resumption = if resume {
        Resumption::in_memory_sessions(256)
    } else {
        Resumption::disabled()
    };
    Ok(config)
}

/// The client's trust: the server's certificate must be one of `certs`,
/// byte for byte, and valid for the name the client asked for; the
/// handshake's signature is checked with its key as usual.
///
/// Against webpki's verifier (what `with_root_certificates` would do with
/// the certificate as its own trust anchor) this skips checking the
/// certificate's own signature and dates: an ECDSA verification per full
/// handshake, which made the client's handshake dearer than the server's
/// (on loopback the load generator's CPU bounds the rate).
#[derive(Debug)]
struct Pinned {
    certs: Vec<CertificateDer<'static>>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if !self.certs.iter().any(|c| c.as_ref() == end_entity.as_ref()) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ));
        }
        verify_server_name(&ParsedCertificate::try_from(end_entity)?, server_name)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The sessions a server keeps for TLS 1.2 session IDs (netserver-host's
/// number).
const SESSION_CACHE: usize = 4096;

/// A server configuration presenting the certificate chain of the PEM file
/// `cert` with the private key of the PEM file `key`, TLS 1.2 and 1.3, and
/// session resumption as netserver-host sets it: a session store of
/// [`SESSION_CACHE`] entries and stateless tickets.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("read the certificates of {}", cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("a certificate of {}", cert.display()))?;
    if chain.is_empty() {
        bail!("{}: no certificate", cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("read the private key of {}", key.display()))?;
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(versions(None))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and key")?;
    config.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE);
    config.ticketer = rustls::crypto::ring::Ticketer::new().context("session tickets")?;
    Ok(config)
}

/// `TLS 1.3`, `TLS 1.2`, … for a negotiated version.
pub fn version_name(version: ProtocolVersion) -> &'static str {
    match version {
        ProtocolVersion::TLSv1_3 => "TLS 1.3",
        ProtocolVersion::TLSv1_2 => "TLS 1.2",
        _ => "other",
    }
}
