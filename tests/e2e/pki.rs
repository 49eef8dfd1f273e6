//! Certificates for the TLS tests, made fresh with rcgen: a CA, a server
//! certificate for `localhost`, `a.test`, `b.test` and 127.0.0.1, a client
//! certificate the CA signed, and another CA with its own client.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair,
};

use crate::util::fresh_dir;

/// The files of a test PKI, in a directory of their own.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    /// A fresh PKI in `tls/NAME-N` under the tests' scratch space (`N`
    /// tells apart the PKIs of tests that run at once under one name).
    pub fn new(name: &str) -> Self {
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        Self::write_into(fresh_dir("tls", &format!("{name}-{n}")))
    }

    /// A fresh PKI's files written into `dir` (`ca.pem`, `server.pem`,
    /// `server.key`, `client.pem`, `client.key`, `other-ca.pem`,
    /// `other-client.pem`, `other-client.key`, `wrong.key`, `expired.pem`,
    /// `expired.key`).
    pub fn write_into(dir: PathBuf) -> Self {
        let ca = issuer("Test CA");
        let other = issuer("Other CA");
        let (cert, key) = leaf(
            &ca,
            "localhost",
            &["localhost", "a.test", "b.test", "*.b.test", "127.0.0.1"],
            false,
        );
        write(&dir, "ca.pem", &ca.pem());
        write(&dir, "server.pem", &cert);
        write(&dir, "server.key", &key);
        let (cert, key) = leaf(&ca, "alice", &[], true);
        write(&dir, "client.pem", &cert);
        write(&dir, "client.key", &key);
        write(&dir, "other-ca.pem", &other.pem());
        let (cert, key) = leaf(&other, "mallory", &[], true);
        write(&dir, "other-client.pem", &cert);
        write(&dir, "other-client.key", &key);
        // Made at once by the same CA: a second server key that matches
        // no certificate here.
        let (_, key) = leaf(&ca, "unused", &["localhost"], false);
        write(&dir, "wrong.key", &key);
        let (cert, key) = expired(&ca);
        write(&dir, "expired.pem", &cert);
        write(&dir, "expired.key", &key);
        Self { dir }
    }

    /// The path of file `name` of this PKI, as text.
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).display().to_string()
    }

    /// `--SSL_cert_file`, `--SSL_key_file` of the server certificate.
    pub fn server_args(&self) -> Vec<String> {
        vec![
            "--SSL_cert_file".into(),
            self.path("server.pem"),
            "--SSL_key_file".into(),
            self.path("server.key"),
        ]
    }
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).unwrap();
}

fn named(cn: &str) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, cn);
    dn.push(DnType::OrganizationName, "netserver tests");
    dn
}

fn issuer(cn: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name = named(cn);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A certificate for `names` (or a client's, `client`) that `ca` signed,
/// and its key, both PEM.
fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    names: &[&str],
    client: bool,
) -> (String, String) {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params.distinguished_name = named(cn);
    params.extended_key_usages = vec![if client {
        ExtendedKeyUsagePurpose::ClientAuth
    } else {
        ExtendedKeyUsagePurpose::ServerAuth
    }];
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A server certificate that expired at the start of 2020.
fn expired(ca: &CertifiedIssuer<'static, KeyPair>) -> (String, String) {
    let mut params = CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
    params.distinguished_name = named("expired");
    params.not_before = rcgen::date_time_ymd(2019, 1, 1);
    params.not_after = rcgen::date_time_ymd(2020, 1, 1);
    let key = KeyPair::generate().unwrap();
    let cert = params.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}
