//! Reading what the `SSL_*` options name: certificate chains, private
//! keys, trusted certificates; each problem said in one phrase (the caller
//! names the option and the file).

use std::path::{Path, PathBuf};

use rustls::RootCertStore;
use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ServiceConfig;
use crate::config::files::io_reason;
use crate::config::tls::TlsSettings;

/// Where option `key` named `path`: `file:line: SSL_cert_file PATH` or
/// `--SSL_cert_file PATH`.
pub(super) fn origin(service: &ServiceConfig, key: &str, path: &Path) -> String {
    service.origin(key, &path.display().to_string())
}

/// Why a PEM file cannot be read.
fn pem_reason(err: pem::Error) -> String {
    match err {
        pem::Error::Io(err) => io_reason(&err),
        pem::Error::NoItemsFound => "holds no PEM item".to_owned(),
        other => format!("is not valid PEM: {other:?}"),
    }
}

/// Reads the file once, as the server's user can, so that a missing or
/// unreadable one is said plainly.
fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| io_reason(&e))
}

/// Every certificate of a PEM file, in order; at least one.
pub(super) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = read(path)?;
    let chain = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem_reason)?;
    if chain.is_empty() {
        return Err("holds no certificate (PEM: -----BEGIN CERTIFICATE-----)".to_owned());
    }
    for cert in &chain {
        x509_parser::parse_x509_certificate(cert)
            .map_err(|e| format!("holds a certificate that does not parse: {e}"))?;
    }
    Ok(chain)
}

/// A certificate that is valid now: not expired, not yet to come.
pub(super) fn check_validity(cert: &CertificateDer<'_>) -> Result<(), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("holds a certificate that does not parse: {e}"))?;
    let validity = parsed.validity();
    let now = x509_parser::time::ASN1Time::now();
    if validity.not_after < now {
        return Err(format!(
            "the certificate of {} expired on {}",
            parsed.subject(),
            validity.not_after
        ));
    }
    if validity.not_before > now {
        return Err(format!(
            "the certificate of {} is not valid before {}",
            parsed.subject(),
            validity.not_before
        ));
    }
    if validity.not_after.timestamp() - now.timestamp() < 30 * 86_400 {
        tracing::warn!(
            "the certificate of {} expires on {}",
            parsed.subject(),
            validity.not_after
        );
    }
    Ok(())
}

/// The private key of a PEM file: PKCS#8, PKCS#1 or SEC1.
pub(super) fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = read(path)?;
    if bytes
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
    {
        return Err(
            "holds an encrypted private key, which needs a passphrase: decrypt it (openssl pkey -in KEY -out PLAIN.key) and keep that file readable by root only"
                .to_owned(),
        );
    }
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        pem::Error::NoItemsFound => {
            "holds no private key (PEM: PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)".to_owned()
        }
        other => pem_reason(other),
    })
}

/// The certificates trusted to sign client certificates: those of
/// `SSL_ca_file`, and of every file in `SSL_ca_path`. An error names the
/// option and the file at fault.
pub(super) fn trusted(
    settings: &TlsSettings,
) -> Result<RootCertStore, (&'static str, PathBuf, String)> {
    let mut roots = RootCertStore::empty();
    let mut add = |key: &'static str, path: &Path, certs: Vec<CertificateDer<'static>>| {
        for cert in certs {
            roots.add(cert).map_err(|e| {
                (
                    key,
                    path.to_owned(),
                    format!("cannot trust a certificate: {e}"),
                )
            })?;
        }
        Ok(())
    };
    if let Some(file) = &settings.ca_file {
        let certs = certificates(file).map_err(|why| ("ssl_ca_file", file.clone(), why))?;
        add("ssl_ca_file", file, certs)?;
    }
    if let Some(dir) = &settings.ca_path {
        let fault = |why: String| ("ssl_ca_path", dir.clone(), why);
        let mut found = 0;
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| fault(io_reason(&e)))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| path.is_file())
            .collect();
        entries.sort();
        for path in entries {
            // OpenSSL's hashed directories hold other files too: take the
            // certificates of every file that has some.
            let Ok(bytes) = std::fs::read(&path) else {
                continue;
            };
            let certs: Vec<_> = CertificateDer::pem_slice_iter(&bytes)
                .filter_map(Result::ok)
                .collect();
            found += certs.len();
            add("ssl_ca_path", &path, certs)?;
        }
        if found == 0 {
            return Err(fault("holds no file with a PEM certificate".to_owned()));
        }
    }
    Ok(roots)
}
