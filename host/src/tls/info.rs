//! What a finished handshake tells the guest: version, suite, server name,
//! ALPN, and the client certificate's subject, issuer and fingerprint.

use rustls::ServerConnection;
use sha2::{Digest, Sha256};

use crate::client::{ClientCert, TlsInfo};

/// What `conn`'s finished handshake settled.
pub fn of(conn: &ServerConnection) -> TlsInfo {
    let version = match conn.protocol_version() {
        Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
        Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
        _ => "unknown",
    };
    TlsInfo {
        version,
        cipher: conn
            .negotiated_cipher_suite()
            .map(|s| super::suite_name(&s))
            .unwrap_or_default(),
        server_name: conn.server_name().map(str::to_ascii_lowercase),
        alpn: conn
            .alpn_protocol()
            .map(|p| String::from_utf8_lossy(p).into_owned()),
        client_cert: conn
            .peer_certificates()
            .and_then(|chain| chain.first())
            .and_then(|cert| client_cert(cert)),
    }
}

/// A client certificate's names and fingerprint.
fn client_cert(der: &[u8]) -> Option<ClientCert> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(ClientCert {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        sha256: hex(&Sha256::digest(der)),
    })
}

/// Lower-case hex digits of `bytes`.
fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_digits() {
        assert_eq!(super::hex(&[0, 0xab, 0x10]), "00ab10");
    }
}
