//! Port specifications: `PORT`, `HOST:PORT`, `[V6]:PORT`, `*:PORT`, each
//! optionally followed by `/tcp` and by `/IPv4`, `/IPv6` or `/IPv*`
//! (any case), as in Net::Server's `port` option.

use std::fmt;
use std::net::IpAddr;

use serde::Serialize;

/// Which IP versions a listener binds (Net::Server's `ipv`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum Ipv {
    /// IPv4 only.
    #[serde(rename = "4")]
    V4,
    /// IPv6 only.
    #[serde(rename = "6")]
    V6,
    /// Whatever the host resolves to; for `*`, every address of both families.
    #[serde(rename = "*")]
    Any,
}

impl Ipv {
    /// Parses `4`, `6`, `*`, with or without an `IPv` prefix, any case.
    pub fn parse(text: &str) -> Option<Self> {
        let lower = text.to_ascii_lowercase();
        match lower.strip_prefix("ipv").unwrap_or(&lower) {
            "4" => Some(Self::V4),
            "6" => Some(Self::V6),
            "*" => Some(Self::Any),
            _ => None,
        }
    }

    /// Whether an address of this family may be bound.
    pub fn admits(self, ip: &IpAddr) -> bool {
        match self {
            Self::V4 => ip.is_ipv4(),
            Self::V6 => ip.is_ipv6(),
            Self::Any => true,
        }
    }
}

impl fmt::Display for Ipv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::V4 => "4",
            Self::V6 => "6",
            Self::Any => "*",
        })
    }
}

/// One parsed port specification, before name resolution.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Listener {
    /// The host as written, or `*` for every address.
    pub host: String,
    /// The port; 0 asks the kernel for a free one.
    pub port: u16,
    /// The protocol, lower case. Only `tcp` is served so far.
    pub proto: String,
    /// The IP versions to bind.
    pub ipv: Ipv,
}

/// The defaults a port spec falls back on (`host`, `ipv` options).
#[derive(Clone, Debug)]
pub struct PortDefaults {
    /// The host when the spec names none.
    pub host: String,
    /// The IP versions when the spec names none.
    pub ipv: Ipv,
}

/// Parses one port specification.
pub fn parse(spec: &str, defaults: &PortDefaults) -> Result<Listener, String> {
    let mut parts = spec.trim().split('/');
    let address = parts.next().unwrap_or_default();
    let mut proto = None;
    let mut ipv = None;
    for part in parts {
        if let Some(found) = Ipv::parse(part) {
            set_once(&mut ipv, found, "IP version")?;
        } else if part.eq_ignore_ascii_case("tcp") {
            set_once(&mut proto, "tcp".to_owned(), "protocol")?;
        } else if is_known_proto(part) {
            return Err(format!("protocol '{part}' is not supported yet (only tcp)"));
        } else {
            return Err(format!("unknown protocol or IP version '{part}'"));
        }
    }
    let (host, port) = split_host_port(address)?;
    let listener = Listener {
        host: host.unwrap_or(&defaults.host).to_owned(),
        port: parse_port(port)?,
        proto: proto.unwrap_or_else(|| "tcp".to_owned()),
        ipv: ipv.unwrap_or(defaults.ipv),
    };
    check_family(&listener)?;
    Ok(listener)
}

fn set_once<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), String> {
    if slot.replace(value).is_some() {
        return Err(format!("{what} given twice"));
    }
    Ok(())
}

fn is_known_proto(part: &str) -> bool {
    ["udp", "unix", "unixdgram", "ssl", "tls", "ssleay"]
        .iter()
        .any(|p| part.eq_ignore_ascii_case(p))
}

/// Splits `HOST:PORT`, `[V6]:PORT` or `PORT`.
fn split_host_port(address: &str) -> Result<(Option<&str>, &str), String> {
    if let Some(rest) = address.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in host".to_owned())?;
        let port = tail
            .strip_prefix(':')
            .ok_or_else(|| "expected ':PORT' after ']'".to_owned())?;
        return Ok((Some(host), port));
    }
    match address.rsplit_once(':') {
        Some((host, _)) if host.contains(':') => {
            Err("an IPv6 address must be written in brackets: [ADDR]:PORT".to_owned())
        }
        Some((host, port)) if !host.is_empty() => Ok((Some(host), port)),
        Some((_, _)) => Err("empty host before ':'".to_owned()),
        None => Ok((None, address)),
    }
}

fn parse_port(port: &str) -> Result<u16, String> {
    if port.is_empty() {
        return Err("no port given".to_owned());
    }
    port.parse::<u16>().map_err(|_| {
        if port.bytes().all(|b| b.is_ascii_digit()) {
            format!("port {port} is out of range (0-65535)")
        } else {
            format!("port '{port}' is not a number")
        }
    })
}

fn check_family(listener: &Listener) -> Result<(), String> {
    match listener.host.parse::<IpAddr>() {
        Ok(ip) if !listener.ipv.admits(&ip) => {
            Err(format!("host {ip} is not an IPv{} address", listener.ipv))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> PortDefaults {
        PortDefaults {
            host: "*".to_owned(),
            ipv: Ipv::Any,
        }
    }

    #[test]
    fn valid_specs() {
        let cases: &[(&str, &str, u16, Ipv)] = &[
            ("20203", "*", 20203, Ipv::Any),
            ("0", "*", 0, Ipv::Any),
            ("127.0.0.1:8080", "127.0.0.1", 8080, Ipv::Any),
            ("localhost:80", "localhost", 80, Ipv::Any),
            ("*:20203", "*", 20203, Ipv::Any),
            ("[::1]:20203", "::1", 20203, Ipv::Any),
            ("[::]:0/IPv6", "::", 0, Ipv::V6),
            ("20203/tcp", "*", 20203, Ipv::Any),
            ("20203/TCP/ipv4", "*", 20203, Ipv::V4),
            ("127.0.0.1:1/tcp/IPv*", "127.0.0.1", 1, Ipv::Any),
            ("65535", "*", 65535, Ipv::Any),
            (" 7 ", "*", 7, Ipv::Any),
        ];
        for &(spec, host, port, ipv) in cases {
            let got = parse(spec, &defaults()).unwrap_or_else(|e| panic!("{spec}: {e}"));
            assert_eq!(
                (got.host.as_str(), got.port, got.ipv, got.proto.as_str()),
                (host, port, ipv, "tcp"),
                "{spec}"
            );
        }
    }

    #[test]
    fn invalid_specs() {
        let cases: &[(&str, &str)] = &[
            ("", "no port given"),
            ("65536", "port 65536 is out of range (0-65535)"),
            ("http", "port 'http' is not a number"),
            ("host:", "no port given"),
            (":80", "empty host before ':'"),
            (
                "::1:80",
                "an IPv6 address must be written in brackets: [ADDR]:PORT",
            ),
            ("[::1:80", "unclosed '[' in host"),
            ("[::1]80", "expected ':PORT' after ']'"),
            ("80/udp", "protocol 'udp' is not supported yet (only tcp)"),
            ("80/bogus", "unknown protocol or IP version 'bogus'"),
            ("80/tcp/tcp", "protocol given twice"),
            ("80/ipv4/ipv6", "IP version given twice"),
            ("127.0.0.1:80/IPv6", "host 127.0.0.1 is not an IPv6 address"),
            ("[::1]:80/IPv4", "host ::1 is not an IPv4 address"),
        ];
        for &(spec, message) in cases {
            assert_eq!(parse(spec, &defaults()), Err(message.to_owned()), "{spec}");
        }
    }

    #[test]
    fn defaults_fill_in() {
        let defaults = PortDefaults {
            host: "127.0.0.1".to_owned(),
            ipv: Ipv::V4,
        };
        let got = parse("0", &defaults).unwrap();
        assert_eq!((got.host.as_str(), got.ipv), ("127.0.0.1", Ipv::V4));
        assert_eq!(
            parse("[::1]:0", &defaults),
            Err("host ::1 is not an IPv4 address".to_owned())
        );
    }
}
