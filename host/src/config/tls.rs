//! TLS settings of a service (`SSL_*` options, Net::Server's names), as
//! given and checked, without I/O: the certificate files are read, and the
//! rustls configuration built, by the host's `tls` module.
//!
//! Also here, because they are pure: the cipher suite names
//! `SSL_cipher_list` takes, the minimum version `SSL_version` names, and
//! the `server_name` patterns SNI routing matches.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// A service's TLS settings, used on its `ssl` ports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// `SSL_cert_file`: the certificate chain (PEM), the server's first.
    pub cert_file: Option<PathBuf>,
    /// `SSL_key_file`: its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// `SSL_ca_file`: certificates trusted for client certificates (PEM).
    pub ca_file: Option<PathBuf>,
    /// `SSL_ca_path`: a directory of such certificates.
    pub ca_path: Option<PathBuf>,
    /// `SSL_verify_mode`: whether a client certificate is asked for.
    pub verify: Verify,
    /// `SSL_version`: the lowest version served.
    pub min_version: TlsVersion,
    /// `SSL_cipher_list`: the suites allowed, by their rustls names (empty:
    /// every suite rustls offers).
    pub ciphers: Vec<&'static str>,
    /// `SSL_alpn`: the application protocols offered, in order of
    /// preference.
    pub alpn: Vec<String>,
    /// `server_name`: the names (SNI) this service answers on a TLS port
    /// it shares with other services.
    pub server_names: Vec<NamePattern>,
    /// `sni_default`: this service takes the port's clients whose name
    /// matches no service.
    pub sni_default: bool,
    /// `ssl_handshake_timeout`: how long a client may take from connecting
    /// to the end of its handshake.
    pub handshake_timeout: Duration,
}

/// `SSL_verify_mode`: IO::Socket::SSL's `SSL_VERIFY_*` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// 0 (`SSL_VERIFY_NONE`): no client certificate is asked for.
    None,
    /// 1 (`SSL_VERIFY_PEER`): one is asked for, and verified if sent.
    IfSent,
    /// 3 (`SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT`): one is
    /// required.
    Required,
}

impl Verify {
    /// The mode of an `SSL_verify_mode` value: 0, 1 or 3, decimal or `0x`
    /// hexadecimal (2 alone asks for nothing in OpenSSL: refused).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let n = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
            Some(hex) => u8::from_str_radix(hex, 16).ok(),
            None => text.parse::<u8>().ok(),
        };
        match n {
            Some(0) => Ok(Self::None),
            Some(1) => Ok(Self::IfSent),
            Some(3) => Ok(Self::Required),
            Some(2) => Err(
                "2 (SSL_VERIFY_FAIL_IF_NO_PEER_CERT) alone asks for no certificate: use 3 to require one"
                    .to_owned(),
            ),
            _ => Err(
                "must be 0 (no client certificate), 1 (verify one if sent) or 3 (require one)"
                    .to_owned(),
            ),
        }
    }

    /// The number IO::Socket::SSL gives it.
    pub fn bits(self) -> u8 {
        match self {
            Self::None => 0,
            Self::IfSent => 1,
            Self::Required => 3,
        }
    }
}

/// The lowest TLS version served (rustls serves TLS 1.2 and 1.3 only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2 and 1.3.
    V1_2,
    /// TLS 1.3 only.
    V1_3,
}

impl TlsVersion {
    /// IO::Socket::SSL's spelling.
    pub fn name(self) -> &'static str {
        match self {
            Self::V1_2 => "TLSv1_2",
            Self::V1_3 => "TLSv1_3",
        }
    }

    /// The lowest version an `SSL_version` value allows: `TLSv1_2` or
    /// `TLSv1_3` (also `TLSv1.2`, `TLSv12`, any case), or an
    /// IO::Socket::SSL version string such as `SSLv23:!SSLv3:!TLSv1_1`
    /// (`SSLv23`, `TLS` or `ANY` for every version, `!X` to leave one
    /// out). Versions below TLS 1.2 are never served.
    pub fn parse(text: &str) -> Result<Self, String> {
        const HOW: &str = "must be TLSv1_2 or TLSv1_3 (the lowest version served), or an IO::Socket::SSL version string such as SSLv23:!TLSv1_2";
        let mut allowed = [true, true]; // 1.2, 1.3
        let mut named: Option<[bool; 2]> = None;
        for word in text.split([':', ' ', ',']).filter(|w| !w.is_empty()) {
            let (not, name) = match word.strip_prefix('!') {
                Some(name) => (true, name),
                None => (false, word),
            };
            let versions = match name.to_ascii_lowercase().replace(['.', '_'], "").as_str() {
                "sslv23" | "tls" | "any" | "sslv2/3" => [true, true],
                "sslv2" | "sslv3" | "tlsv1" | "tlsv10" | "tlsv11" => [false, false],
                "tlsv12" => [true, false],
                "tlsv13" => [false, true],
                _ => return Err(format!("unknown version '{name}': {HOW}")),
            };
            if not {
                for (a, v) in allowed.iter_mut().zip(versions) {
                    *a &= !v;
                }
            } else {
                // A version named alone is the lowest served.
                let lowest = match versions {
                    [true, _] => [true, true],
                    [false, true] => [false, true],
                    [false, false] => {
                        return Err(format!(
                            "{name} is not served (rustls serves TLS 1.2 and 1.3): {HOW}"
                        ));
                    }
                };
                let seen = named.get_or_insert([false, false]);
                for (s, v) in seen.iter_mut().zip(lowest) {
                    *s |= v;
                }
            }
        }
        let named = named.unwrap_or([true, true]);
        match [allowed[0] && named[0], allowed[1] && named[1]] {
            [true, _] => Ok(Self::V1_2),
            [false, true] => Ok(Self::V1_3),
            [false, false] => Err(format!("leaves no version to serve: {HOW}")),
        }
    }
}

/// The cipher suites rustls (with the ring provider) offers, by its names,
/// each with the IANA or OpenSSL names `SSL_cipher_list` also takes.
pub const CIPHER_SUITES: &[(&str, &[&str])] = &[
    ("TLS13_AES_256_GCM_SHA384", &["TLS_AES_256_GCM_SHA384"]),
    ("TLS13_AES_128_GCM_SHA256", &["TLS_AES_128_GCM_SHA256"]),
    (
        "TLS13_CHACHA20_POLY1305_SHA256",
        &["TLS_CHACHA20_POLY1305_SHA256"],
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
        &["ECDHE-ECDSA-AES256-GCM-SHA384"],
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        &["ECDHE-ECDSA-AES128-GCM-SHA256"],
    ),
    (
        "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
        &["ECDHE-ECDSA-CHACHA20-POLY1305"],
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
        &["ECDHE-RSA-AES256-GCM-SHA384"],
    ),
    (
        "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
        &["ECDHE-RSA-AES128-GCM-SHA256"],
    ),
    (
        "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
        &["ECDHE-RSA-CHACHA20-POLY1305"],
    ),
];

/// The suites an `SSL_cipher_list` value names (separated by `:`, `,` or
/// spaces; rustls, IANA or OpenSSL names, any case), by their rustls
/// names, in the order given. An unknown name — an OpenSSL cipher string
/// such as `HIGH:!aNULL` among them — is an error.
pub fn parse_cipher_list(text: &str) -> Result<Vec<&'static str>, String> {
    let mut suites = Vec::new();
    for word in text.split([':', ',', ' ', '\t']).filter(|w| !w.is_empty()) {
        let Some((name, _)) = CIPHER_SUITES.iter().find(|(name, aliases)| {
            name.eq_ignore_ascii_case(word) || aliases.iter().any(|a| a.eq_ignore_ascii_case(word))
        }) else {
            return Err(format!(
                "unknown cipher suite '{word}' (name suites, e.g. TLS13_AES_128_GCM_SHA256 or ECDHE-RSA-AES128-GCM-SHA256; OpenSSL cipher strings are not understood)"
            ));
        };
        if !suites.contains(name) {
            suites.push(*name);
        }
    }
    if suites.is_empty() {
        return Err("names no cipher suite".to_owned());
    }
    Ok(suites)
}

/// The protocols an `SSL_alpn` value names (separated by `,`, `:` or
/// spaces), each 1 to 255 bytes.
pub fn parse_alpn(text: &str) -> Result<Vec<String>, String> {
    let protocols: Vec<String> = text
        .split([',', ':', ' ', '\t'])
        .filter(|w| !w.is_empty())
        .map(str::to_owned)
        .collect();
    if protocols.is_empty() {
        return Err("names no protocol (e.g. h2,http/1.1)".to_owned());
    }
    if let Some(long) = protocols.iter().find(|p| p.len() > 255) {
        return Err(format!("protocol '{long}' is longer than 255 bytes"));
    }
    Ok(protocols)
}

/// A `server_name` pattern: a DNS name, or `*.` and a name (any one label
/// in place of the `*`), matched without regard to case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamePattern {
    /// One name, lower case.
    Exact(String),
    /// `*.example.com`: the suffix `.example.com`, lower case.
    Wildcard(String),
}

impl NamePattern {
    /// The pattern `text` spells, or why it is not one.
    pub fn parse(text: &str) -> Result<Self, String> {
        let lower = text.trim().trim_end_matches('.').to_ascii_lowercase();
        let (wild, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower.as_str()),
        };
        let label_ok = |l: &str| {
            (1..=63).contains(&l.len())
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
            return Err(
                "must be a DNS name (letters, digits, '-', dots) or *. and one (e.g. *.example.com)"
                    .to_owned(),
            );
        }
        Ok(if wild {
            Self::Wildcard(format!(".{name}"))
        } else {
            Self::Exact(name.to_owned())
        })
    }

    /// Whether `name` (lower case) is one this pattern matches exactly.
    pub fn is_exactly(&self, name: &str) -> bool {
        matches!(self, Self::Exact(exact) if exact == name)
    }

    /// Whether `name` (lower case) is one label and this wildcard's
    /// suffix; the length of the suffix when it is (longer is closer).
    pub fn wildcard_match(&self, name: &str) -> Option<usize> {
        let Self::Wildcard(suffix) = self else {
            return None;
        };
        let label = name.strip_suffix(suffix.as_str())?;
        (!label.is_empty() && !label.contains('.')).then_some(suffix.len())
    }
}

impl fmt::Display for NamePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(name) => f.write_str(name),
            Self::Wildcard(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Which of several services' `server_name` lists a client's SNI `name`
/// picks: an exact name before any wildcard, a longer wildcard before a
/// shorter, the first service listed on a tie; otherwise the default (the
/// service with `sni_default`, else the one that lists no name), if any.
/// `names[i]` and `defaults[i]` are service `i`'s.
pub fn pick(name: Option<&str>, names: &[&[NamePattern]], defaults: &[bool]) -> Option<usize> {
    if let Some(name) = name {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(i) = names
            .iter()
            .position(|list| list.iter().any(|p| p.is_exactly(&name)))
        {
            return Some(i);
        }
        let best = names
            .iter()
            .enumerate()
            .filter_map(|(i, list)| {
                list.iter()
                    .filter_map(|p| p.wildcard_match(&name))
                    .max()
                    .map(|len| (len, i))
            })
            // The longest suffix; the first service on a tie.
            .max_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
        if let Some((_, i)) = best {
            return Some(i);
        }
    }
    defaults
        .iter()
        .position(|&d| d)
        .or_else(|| names.iter().position(|list| list.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `got` is `want`: the same value, or an error starting with it.
    fn expect<T: PartialEq + fmt::Debug>(
        got: Result<T, String>,
        want: Result<T, &str>,
        text: &str,
    ) {
        match (got, want) {
            (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
            (Err(got), Err(want)) => assert!(got.starts_with(want), "{text}: {got}"),
            (got, _) => panic!("{text}: {got:?}"),
        }
    }

    #[test]
    fn verify_modes() {
        let cases = [
            ("0", Ok(Verify::None)),
            ("1", Ok(Verify::IfSent)),
            ("3", Ok(Verify::Required)),
            ("0x03", Ok(Verify::Required)),
            (" 0x1 ", Ok(Verify::IfSent)),
            ("2", Err("2 (SSL_VERIFY_FAIL_IF_NO_PEER_CERT)")),
            ("4", Err("must be 0")),
            ("peer", Err("must be 0")),
            ("", Err("must be 0")),
        ];
        for (text, want) in cases {
            expect(Verify::parse(text), want, text);
        }
    }

    #[test]
    fn versions() {
        use TlsVersion::*;
        let cases = [
            ("TLSv1_2", Ok(V1_2)),
            ("tlsv1_3", Ok(V1_3)),
            ("TLSv1.3", Ok(V1_3)),
            ("TLSv12", Ok(V1_2)),
            ("SSLv23", Ok(V1_2)),
            ("SSLv23:!SSLv3:!TLSv1:!TLSv1_1", Ok(V1_2)),
            ("SSLv23:!TLSv1_2", Ok(V1_3)),
            ("!TLSv1_2", Ok(V1_3)),
            ("TLSv1_2:!TLSv1_2", Ok(V1_3)),
            ("TLSv1_2:!TLSv1_2:!TLSv1_3", Err("leaves no version")),
            ("TLSv1_3:!TLSv1_3", Err("leaves no version")),
            ("TLSv1_1", Err("TLSv1_1 is not served")),
            ("SSLv3", Err("SSLv3 is not served")),
            ("TLSv2", Err("unknown version 'TLSv2'")),
            ("", Ok(V1_2)),
        ];
        for (text, want) in cases {
            expect(TlsVersion::parse(text), want, text);
        }
    }

    #[test]
    fn cipher_lists() {
        let cases: [(&str, Result<&[&str], &str>); 7] = [
            (
                "TLS13_AES_128_GCM_SHA256",
                Ok(&["TLS13_AES_128_GCM_SHA256"]),
            ),
            (
                "tls_aes_256_gcm_sha384:ECDHE-RSA-AES128-GCM-SHA256",
                Ok(&[
                    "TLS13_AES_256_GCM_SHA384",
                    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                ]),
            ),
            (
                "TLS13_AES_128_GCM_SHA256, TLS_AES_128_GCM_SHA256",
                Ok(&["TLS13_AES_128_GCM_SHA256"]),
            ),
            ("HIGH:!aNULL", Err("unknown cipher suite 'HIGH'")),
            ("RC4-SHA", Err("unknown cipher suite 'RC4-SHA'")),
            ("", Err("names no cipher suite")),
            (" : ", Err("names no cipher suite")),
        ];
        for (text, want) in cases {
            expect(parse_cipher_list(text), want.map(<[_]>::to_vec), text);
        }
    }

    #[test]
    fn alpn_lists() {
        assert_eq!(parse_alpn("h2,http/1.1").unwrap(), ["h2", "http/1.1"]);
        assert_eq!(parse_alpn(" smtp ").unwrap(), ["smtp"]);
        assert!(parse_alpn(" , ").is_err());
        assert!(parse_alpn(&"x".repeat(256)).is_err());
    }

    #[test]
    fn name_patterns() {
        let ok = [
            ("example.com", NamePattern::Exact("example.com".into())),
            ("Example.COM.", NamePattern::Exact("example.com".into())),
            (
                "*.example.com",
                NamePattern::Wildcard(".example.com".into()),
            ),
            ("localhost", NamePattern::Exact("localhost".into())),
            (
                "xn--bcher-kva.example",
                NamePattern::Exact("xn--bcher-kva.example".into()),
            ),
        ];
        for (text, want) in ok {
            assert_eq!(NamePattern::parse(text).unwrap(), want, "{text}");
            assert_eq!(
                want.to_string(),
                text.trim_end_matches('.').to_ascii_lowercase()
            );
        }
        for bad in [
            "", "*", "*.", "a..b", "a.*.com", "foo*.com", "-a.com", "a_b.com", "a b",
        ] {
            assert!(NamePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn picking_a_service_by_name() {
        let p = |t: &str| NamePattern::parse(t).unwrap();
        let a = [p("a.example"), p("*.example")];
        let b = [p("*.b.example"), p("b.example")];
        let c: [NamePattern; 0] = [];
        let names: [&[NamePattern]; 3] = [&a, &b, &c];
        let no_default = [false, false, false];
        let cases = [
            (Some("a.example"), 0),
            (Some("A.Example."), 0),
            (Some("b.example"), 1),
            (Some("x.b.example"), 1),
            (Some("x.example"), 0),
            // Two labels: no wildcard matches; the one without names.
            (Some("y.x.example"), 2),
            (Some("other.test"), 2),
            (None, 2),
        ];
        for (name, want) in cases {
            assert_eq!(pick(name, &names, &no_default), Some(want), "{name:?}");
        }
        // sni_default wins over the service without names.
        assert_eq!(
            pick(Some("other.test"), &names, &[false, true, false]),
            Some(1)
        );
        // With names everywhere and no default: refused.
        let named: [&[NamePattern]; 2] = [&a, &b];
        assert_eq!(pick(Some("other.test"), &named, &[false, false]), None);
        assert_eq!(pick(None, &named, &[false, false]), None);
        // An exact name anywhere beats a wildcard listed earlier.
        let w = [p("*.example")];
        let e = [p("z.example")];
        let names: [&[NamePattern]; 2] = [&w, &e];
        assert_eq!(pick(Some("z.example"), &names, &[false, false]), Some(1));
    }
}
