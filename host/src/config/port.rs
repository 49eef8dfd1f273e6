//! Port specifications, the whole grammar of Net::Server's `port` option,
//! parsed without any name resolution or I/O:
//!
//! - `PORT`, `HOST:PORT`, `[HOST]:PORT`, `*:PORT`; PORT is a number
//!   (0-65535) or a service name kept as written (see [`resolve_service`]);
//! - followed, in any order, by a protocol (`tcp`, `udp`, `unix`,
//!   `unixdgram`, `ssl`, `tls`, `ssleay`, any case, or Net::Server's class
//!   for it: `Net::Server::Proto::TCP`, `…::UDP`, `…::UNIX`,
//!   `…::UNIXDGRAM`, `…::SSL`, `…::SSLEAY`, spelled as its module file is)
//!   and IP versions (`IPv4`, `IPv6`, `IPv*`, any case; `IPv46` is both);
//!   `IPv4` with `IPv6` makes two listeners, one per family (both must
//!   bind);
//! - IP versions may also stand between the host and the port
//!   (`[localhost]:IPv6:20201`, `localhost/IPv4:80`), as Net::Server takes
//!   them out wherever they follow a separator;
//! - parts separated by `:`, `/`, `,`, `|` or white space, in any mix
//!   (`localhost, 20203, tcp, IPv*`); the host and the port come first, and
//!   only `:`, `,`, `|` and white space separate them (a `/` introduces a
//!   protocol or IP version, as in Net::Server);
//! - an IPv6 address is written in brackets (`[::1]:80`); without them it
//!   is accepted only when a `,`, `|` or white space sets it apart from the
//!   port (`::1 | 80`), and is an error otherwise;
//! - unix sockets: `PATH|unix`, `PATH|unixdgram`, `PATH|sock_stream|unix`,
//!   `PATH|sock_dgram|unix` (the type in any case; `sock_dgram` makes the
//!   protocol `unixdgram`; a socket type without a protocol implies `unix`).
//!   Their host is `*` and their port the path, kept whole.
//!
//! Protocols print lower case as `tcp`, `udp`, `unix`, `unixdgram` and
//! `ssl`: `tls`, `ssleay` and the class names are read as these. The `ipv`
//! option's value is looser ([`parse_ipv_list`]: `v4v6`, `IPv4v6`, `46`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

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
    /// Parses one word of an `ipv` option value, any case: versions (`4`,
    /// `6`, `*`), each with or without an `IPv` or `v` prefix, one or
    /// several run together (`IPv4`, `v6`, `IPv4v6`, `v4v6`, `46`). The
    /// versions in the order written, repeats kept (the caller refuses
    /// them).
    fn parse_run(text: &str) -> Option<Vec<Self>> {
        let lower = text.to_ascii_lowercase();
        let mut rest = lower.as_str();
        let mut ipvs = Vec::new();
        while !rest.is_empty() {
            rest = rest
                .strip_prefix("ipv")
                .or_else(|| rest.strip_prefix('v'))
                .unwrap_or(rest);
            let mut chars = rest.chars();
            ipvs.push(Self::from_char(chars.next()?)?);
            rest = chars.as_str();
        }
        (!ipvs.is_empty()).then_some(ipvs)
    }

    /// Parses the form a port specification (or a `host` or `proto` value)
    /// carries: `IPv` (any case) then one or more of `4`, `6`, `*` —
    /// `IPv4`, `IPv6`, `IPv*`, and `IPv46` for both, as Net::Server's
    /// `IPv([*\d]+)` reads them.
    fn parse_tagged(text: &str) -> Option<Vec<Self>> {
        let prefix = text.get(..3)?;
        if !prefix.eq_ignore_ascii_case("ipv") || text.len() == 3 {
            return None;
        }
        text[3..].chars().map(Self::from_char).collect()
    }

    fn from_char(c: char) -> Option<Self> {
        match c {
            '4' => Some(Self::V4),
            '6' => Some(Self::V6),
            '*' => Some(Self::Any),
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

/// The protocol of a listener (Net::Server's `proto`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// `tcp`, the default.
    Tcp,
    /// `udp`.
    Udp,
    /// `unix`: a stream socket on a path.
    Unix,
    /// `unixdgram`: a datagram socket on a path.
    UnixDgram,
    /// `ssl`, also written `tls` or `ssleay`.
    Ssl,
}

impl Proto {
    /// Parses a protocol name, any case (`tls` and `ssleay` are `ssl`), or
    /// Net::Server's class for it, spelled as its module file is
    /// (`Net::Server::Proto::TCP`, `…::UDP`, `…::SSL`, `…::SSLEAY`,
    /// `…::UNIX`, `…::UNIXDGRAM`).
    pub fn parse(text: &str) -> Option<Self> {
        if let Some(class) = text.strip_prefix(PROTO_CLASS) {
            return Some(match class {
                "TCP" => Self::Tcp,
                "UDP" => Self::Udp,
                "UNIX" => Self::Unix,
                "UNIXDGRAM" => Self::UnixDgram,
                "SSL" | "SSLEAY" => Self::Ssl,
                _ => return None,
            });
        }
        Some(match text.to_ascii_lowercase().as_str() {
            "tcp" => Self::Tcp,
            "udp" => Self::Udp,
            "unix" => Self::Unix,
            "unixdgram" => Self::UnixDgram,
            "ssl" | "tls" | "ssleay" => Self::Ssl,
            _ => return None,
        })
    }

    /// The name printed and serialized, lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Unix => "unix",
            Self::UnixDgram => "unixdgram",
            Self::Ssl => "ssl",
        }
    }

    /// Whether the port is a path rather than a number or service.
    pub fn is_unix(self) -> bool {
        matches!(self, Self::Unix | Self::UnixDgram)
    }

    /// The protocol column of /etc/services for this protocol's ports, if
    /// it has any.
    pub fn service_proto(self) -> Option<&'static str> {
        match self {
            Self::Tcp | Self::Ssl => Some("tcp"),
            Self::Udp => Some("udp"),
            Self::Unix | Self::UnixDgram => None,
        }
    }
}

/// The package Net::Server's protocol classes live in.
const PROTO_CLASS: &str = "Net::Server::Proto::";

/// Whether `word` names a class in Net::Server's protocol package, in any
/// case (only the module files' spelling is a protocol).
fn is_proto_class(word: &str) -> bool {
    word.get(..PROTO_CLASS.len())
        .is_some_and(|prefix| prefix.eq_ignore_ascii_case(PROTO_CLASS))
}

/// The error for a protocol that is not known: a class of Net::Server's
/// that does not exist (or is spelled in another case) is named as one.
fn unknown_proto(word: &str) -> String {
    if is_proto_class(word) {
        format!(
            "unknown protocol class '{word}' (known: {PROTO_CLASS}TCP, UDP, SSL, SSLEAY, UNIX, UNIXDGRAM)"
        )
    } else {
        format!("unknown protocol '{word}'")
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The port of a listener. Serializes as a number, or the service name or
/// path as a string.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Port {
    /// A port number; 0 asks the kernel for a free one.
    Number(u16),
    /// A service name, and its number once resolved (see
    /// [`resolve_service`]); the parser leaves it `None`.
    Service {
        /// The name as written.
        name: String,
        /// The port it resolved to, if it has been.
        number: Option<u16>,
    },
    /// The path of a unix socket.
    Path(String),
}

impl Port {
    /// A service name, not resolved yet.
    pub fn service(name: impl Into<String>) -> Self {
        Self::Service {
            name: name.into(),
            number: None,
        }
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Service { name, .. } => f.write_str(name),
            Self::Path(path) => f.write_str(path),
        }
    }
}

impl Serialize for Port {
    /// A number as a number; a service name or a path as the string.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Number(n) => s.serialize_u16(*n),
            Self::Service { name, .. } => s.serialize_str(name),
            Self::Path(path) => s.serialize_str(path),
        }
    }
}

/// One parsed port specification, before name resolution.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Listener {
    /// The host as written (without brackets), or `*` for every address;
    /// always `*` for unix sockets.
    pub host: String,
    /// The port number, service name or socket path.
    pub port: Port,
    /// The protocol.
    pub proto: Proto,
    /// The IP versions to bind (`*` for unix sockets).
    pub ipv: Ipv,
}

impl fmt::Display for Listener {
    /// The listener as a port spec: `host:port/proto` (an IPv6 host in
    /// brackets, `/IPv4` or `/IPv6` when only one version is bound), or
    /// `path|proto` for a unix socket.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.proto.is_unix() {
            return write!(f, "{}|{}", self.port, self.proto);
        }
        if self.host.contains(':') {
            write!(f, "[{}]:{}/{}", self.host, self.port, self.proto)?;
        } else {
            write!(f, "{}:{}/{}", self.host, self.port, self.proto)?;
        }
        match self.ipv {
            Ipv::Any => Ok(()),
            ipv => write!(f, "/IPv{ipv}"),
        }
    }
}

/// The defaults a port spec falls back on (the `host`, `proto` and `ipv`
/// options).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortDefaults {
    /// The host when the spec names none.
    pub host: String,
    /// The protocol when the spec names none.
    pub proto: Proto,
    /// The IP versions when the spec names none: one listener each (empty
    /// means `*`).
    pub ipv: Vec<Ipv>,
}

impl Default for PortDefaults {
    /// Net::Server's: host `*`, proto `tcp`, ipv `*`.
    fn default() -> Self {
        Self {
            host: "*".to_owned(),
            proto: Proto::Tcp,
            ipv: vec![Ipv::Any],
        }
    }
}

/// Parses one port specification into its listeners: one, or one per IP
/// version when several are given (`IPv4/IPv6`).
pub fn parse_listeners(spec: &str, defaults: &PortDefaults) -> Result<Vec<Listener>, String> {
    let text = spec.trim();
    if text.is_empty() {
        return Err("no port given".to_owned());
    }
    let mut rest = text;
    let mut proto = None;
    let mut ipvs = Vec::new();
    let mut sock_type = None;
    // Strip protocol, IP versions and socket type from the end.
    while let Some((at, word)) = last_part(rest) {
        let head = rest[..at].trim_end_matches(is_separator);
        if word.is_empty() || head.is_empty() {
            break;
        }
        let unix_seen = proto.is_some_and(Proto::is_unix);
        if let Some(found) = SockType::parse(word) {
            set_once(&mut sock_type, found, "socket type")?;
        } else if unix_seen {
            // The rest is the socket's path.
            break;
        } else if let Some(found) = Ipv::parse_tagged(word) {
            // Collected from the end: reversed below.
            for ipv in found.into_iter().rev() {
                push_ipv(&mut ipvs, ipv)?;
            }
        } else if let Some(found) = Proto::parse(word) {
            set_once(&mut proto, found, "protocol")?;
        } else if is_proto_class(word) {
            return Err(unknown_proto(word));
        } else {
            break;
        }
        rest = head;
    }
    ipvs.reverse();
    check_ipvs(&ipvs)?;
    let proto = match (proto, sock_type) {
        (None, None) => defaults.proto,
        (Some(proto), None) => proto,
        (None, Some(SockType::Stream)) => Proto::Unix,
        (None, Some(SockType::Dgram)) => Proto::UnixDgram,
        (Some(Proto::Unix), Some(SockType::Stream)) => Proto::Unix,
        (Some(Proto::Unix | Proto::UnixDgram), Some(SockType::Dgram)) => Proto::UnixDgram,
        (Some(proto), Some(sock_type)) => {
            return Err(format!(
                "socket type {sock_type} does not go with protocol {proto}"
            ));
        }
    };
    if proto.is_unix() {
        if !ipvs.is_empty() {
            return Err("an IP version does not apply to a unix socket".to_owned());
        }
        return Ok(vec![Listener {
            host: "*".to_owned(),
            port: Port::Path(rest.to_owned()),
            proto,
            ipv: Ipv::Any,
        }]);
    }
    // IP versions between the host and the port come first.
    let (address, mut inner) = strip_inner_ipvs(rest)?;
    for ipv in ipvs {
        push_ipv(&mut inner, ipv)?;
    }
    let mut ipvs = inner;
    check_ipvs(&ipvs)?;
    let (host, port) = split_host_port(&address)?;
    let host = match host {
        Some(host) => host.to_owned(),
        None => defaults.host.clone(),
    };
    let port = parse_port(port)?;
    if ipvs.is_empty() {
        ipvs = defaults.ipv.clone();
    }
    if ipvs.is_empty() {
        ipvs.push(Ipv::Any);
    }
    ipvs.into_iter()
        .map(|ipv| {
            let listener = Listener {
                host: host.clone(),
                port: port.clone(),
                proto,
                ipv,
            };
            check_family(&listener)?;
            Ok(listener)
        })
        .collect()
}

/// Splits a `host` option value that may carry IP versions
/// (`localhost/IPv*`, `localhost IPv4 IPv6`, `*/IPv*`, `[::1]`) into the
/// host (without brackets) and the IP versions, if any.
pub fn split_host_value(value: &str) -> Result<(String, Option<Vec<Ipv>>), String> {
    let (head, ipvs) = strip_ipvs(value.trim())?;
    let host = match head.strip_prefix('[') {
        Some(inner) => inner
            .strip_suffix(']')
            .ok_or_else(|| "unclosed '[' in host".to_owned())?,
        None => head,
    };
    if host.is_empty() || Ipv::parse_tagged(host).is_some() {
        return Err("no host given".to_owned());
    }
    if host.parse::<IpAddr>().is_err() {
        check_host_name(host)?;
    }
    let ipvs = (!ipvs.is_empty()).then_some(ipvs);
    if let (Some(list), Ok(ip)) = (&ipvs, host.parse::<IpAddr>()) {
        for &ipv in list {
            if !ipv.admits(&ip) {
                return Err(format!("host {ip} is not an IPv{ipv} address"));
            }
        }
    }
    Ok((host.to_owned(), ipvs))
}

/// Splits a `proto` option value that may carry IP versions (`tcp`,
/// `tcp/IPv6`, `TCP IPv4 IPv6`) into the protocol and the IP versions, if
/// any.
pub fn split_proto_value(value: &str) -> Result<(Proto, Option<Vec<Ipv>>), String> {
    let (head, ipvs) = strip_ipvs(value.trim())?;
    if head.is_empty() {
        return Err("no protocol given".to_owned());
    }
    let proto = Proto::parse(head).ok_or_else(|| unknown_proto(head))?;
    Ok((proto, (!ipvs.is_empty()).then_some(ipvs)))
}

/// Parses an `ipv` option value: `4`, `6`, `*`, `IPv4`, `v6`, ..., or
/// several, separated as in port specifications (`IPv4 IPv6`, `4,6`) or
/// run together (`IPv4v6`, `v4v6`, `46`).
pub fn parse_ipv_list(value: &str) -> Result<Vec<Ipv>, String> {
    let mut ipvs = Vec::new();
    for word in value.split(is_separator).filter(|w| !w.is_empty()) {
        let run = Ipv::parse_run(word).ok_or_else(|| format!("unknown IP version '{word}'"))?;
        for ipv in run {
            push_ipv(&mut ipvs, ipv)?;
        }
    }
    if ipvs.is_empty() {
        return Err("no IP version given".to_owned());
    }
    check_ipvs(&ipvs)?;
    Ok(ipvs)
}

/// Looks a service name up in /etc/services for a protocol (`tcp`, `udp`).
/// This one reads a file; the parser is [`parse_services`].
pub fn resolve_service(name: &str, proto: &str) -> Option<u16> {
    let text = std::fs::read_to_string("/etc/services").ok()?;
    parse_services(&text, name, proto)
}

/// Finds a service's port in the text of an /etc/services file: lines of
/// `name port/proto [aliases...]`, `#` comments. Names and aliases match
/// exactly (case-sensitive, as getservbyname); the first match wins.
pub fn parse_services(text: &str, name: &str, proto: &str) -> Option<u16> {
    text.lines().find_map(|line| {
        let line = line.split('#').next().unwrap_or_default();
        let mut fields = line.split_whitespace();
        let service = fields.next()?;
        let (port, line_proto) = fields.next()?.split_once('/')?;
        let named = service == name || fields.any(|alias| alias == name);
        if named && line_proto.eq_ignore_ascii_case(proto) {
            port.parse().ok()
        } else {
            None
        }
    })
}

/// `sock_stream` or `sock_dgram` in a unix socket's specification.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SockType {
    Stream,
    Dgram,
}

impl SockType {
    fn parse(text: &str) -> Option<Self> {
        if text.eq_ignore_ascii_case("sock_stream") {
            Some(Self::Stream)
        } else if text.eq_ignore_ascii_case("sock_dgram") {
            Some(Self::Dgram)
        } else {
            None
        }
    }
}

impl fmt::Display for SockType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Stream => "sock_stream",
            Self::Dgram => "sock_dgram",
        })
    }
}

/// Every separator of a port specification's parts.
fn is_separator(c: char) -> bool {
    matches!(c, ':' | '/' | ',' | '|') || c.is_ascii_whitespace()
}

/// The separators between host and port (not `/`).
fn is_host_separator(c: char) -> bool {
    matches!(c, ':' | ',' | '|') || c.is_ascii_whitespace()
}

/// The separators that cannot occur in an IPv6 address.
fn is_strong_separator(c: char) -> bool {
    matches!(c, ',' | '|') || c.is_ascii_whitespace()
}

/// The last part of a specification and the index of the separator before
/// it: the word after the last separator, or a Net::Server protocol class
/// (`…/Net::Server::Proto::TCP`), whose `::` do not separate.
fn last_part(text: &str) -> Option<(usize, &str)> {
    // Lower case keeps every byte offset (the class is ASCII).
    let lower = text.to_ascii_lowercase();
    if let Some(start) = lower.rfind(&PROTO_CLASS.to_ascii_lowercase()) {
        let class = &text[start..];
        let name = &class[PROTO_CLASS.len()..];
        let word = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if word && start > 0 && text[..start].ends_with(is_separator) {
            return Some((start - 1, class));
        }
    }
    let at = text.rfind(is_separator)?;
    Some((at, &text[at + 1..]))
}

/// Adds an IP version, refusing a repeat.
fn push_ipv(ipvs: &mut Vec<Ipv>, ipv: Ipv) -> Result<(), String> {
    if ipvs.contains(&ipv) {
        return Err("IP version given twice".to_owned());
    }
    ipvs.push(ipv);
    Ok(())
}

/// Takes out the IP versions written between the host and the port, as
/// Net::Server does (`[localhost]:IPv6:20201`, `localhost/IPv4/IPv6:80`):
/// an `IPv…` word after a separator that is neither at the start nor the
/// last part. Returns the rest and the versions, in order.
fn strip_inner_ipvs(text: &str) -> Result<(String, Vec<Ipv>), String> {
    let mut out = String::with_capacity(text.len());
    let mut ipvs = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(is_separator) {
        let after = rest[at..].trim_start_matches(is_separator);
        let word_len = after.find(is_separator).unwrap_or(after.len());
        let (word, tail) = after.split_at(word_len);
        let more = !tail.trim_start_matches(is_separator).is_empty();
        let separators = &rest[at..rest.len() - after.len()];
        match Ipv::parse_tagged(word) {
            Some(found) if at > 0 || !out.is_empty() => {
                if !more {
                    break;
                }
                for ipv in found {
                    push_ipv(&mut ipvs, ipv)?;
                }
                out.push_str(&rest[..at]);
            }
            _ => {
                out.push_str(&rest[..at]);
                out.push_str(separators);
                out.push_str(word);
            }
        }
        rest = tail;
    }
    out.push_str(rest);
    Ok((out, ipvs))
}

fn set_once<T>(slot: &mut Option<T>, value: T, what: &str) -> Result<(), String> {
    if slot.replace(value).is_some() {
        return Err(format!("{what} given twice"));
    }
    Ok(())
}

fn check_ipvs(ipvs: &[Ipv]) -> Result<(), String> {
    if ipvs.len() > 1 && ipvs.contains(&Ipv::Any) {
        return Err("IPv* cannot be combined with IPv4 or IPv6".to_owned());
    }
    Ok(())
}

/// Strips trailing `IPv4`, `IPv6`, `IPv*`, `IPv46` words (in text order).
fn strip_ipvs(text: &str) -> Result<(&str, Vec<Ipv>), String> {
    let mut rest = text;
    let mut ipvs = Vec::new();
    while let Some(at) = rest.rfind(is_separator) {
        let Some(found) = Ipv::parse_tagged(&rest[at + 1..]) else {
            break;
        };
        for ipv in found.into_iter().rev() {
            push_ipv(&mut ipvs, ipv)?;
        }
        rest = rest[..at].trim_end_matches(is_separator);
    }
    ipvs.reverse();
    check_ipvs(&ipvs)?;
    Ok((rest, ipvs))
}

/// Splits the host and port part: `PORT`, `HOST:PORT`, `[HOST]:PORT`, or
/// `HOST PORT` with any of `:`, `,`, `|` and white space between.
fn split_host_port(address: &str) -> Result<(Option<&str>, &str), String> {
    if let Some(inner) = address.strip_prefix('[') {
        let (host, tail) = inner
            .split_once(']')
            .ok_or_else(|| "unclosed '[' in host".to_owned())?;
        if host.is_empty() {
            return Err("empty host in '[]'".to_owned());
        }
        if host.contains(|c: char| (is_separator(c) && c != ':') || c == '[') {
            return Err(format!("invalid host '{host}'"));
        }
        let port = tail.trim_start_matches(is_host_separator);
        if port.len() == tail.len() {
            return Err(if tail.is_empty() {
                "no port given".to_owned()
            } else {
                "expected ':PORT' after ']'".to_owned()
            });
        }
        check_no_slash(port)?;
        check_single(port)?;
        return Ok((Some(host), port));
    }
    check_no_slash(address)?;
    // An IPv6 address set apart by a strong separator: `::1 | 80`.
    if let Some((first, second)) = address.split_once(is_strong_separator) {
        let port = second.trim_start_matches(is_strong_separator);
        if first.parse::<Ipv6Addr>().is_ok() && !port.contains(is_host_separator) {
            return Ok((Some(first), port));
        }
    }
    let first_field = address
        .split(is_strong_separator)
        .next()
        .unwrap_or_default();
    let looks_ipv6 = first_field.matches(':').count() >= 2
        && first_field
            .chars()
            .all(|c| c.is_ascii_hexdigit() || matches!(c, ':' | '.' | '%'));
    if looks_ipv6 {
        return Err("an IPv6 address must be written in brackets: [ADDR]:PORT".to_owned());
    }
    if let Some(c) = address.chars().next().filter(|&c| is_host_separator(c)) {
        return Err(format!("empty host before '{c}'"));
    }
    let mut words = address.split(is_host_separator).filter(|w| !w.is_empty());
    let first = words.next().unwrap_or_default();
    let Some(second) = words.next() else {
        if address.ends_with(is_host_separator) {
            return Err("no port given".to_owned());
        }
        return Ok((None, first));
    };
    if let Some(extra) = words.next() {
        return Err(format!("unknown protocol or IP version '{extra}'"));
    }
    if address.ends_with(is_host_separator) {
        return Err("port specification ends with a separator".to_owned());
    }
    if first != "*" {
        check_host_name(first)?;
    }
    Ok((Some(first), second))
}

/// A `/` left in the host and port part follows an unknown protocol.
fn check_no_slash(text: &str) -> Result<(), String> {
    match text.rsplit_once('/') {
        Some((_, "")) => Err("empty protocol or IP version after '/'".to_owned()),
        Some((_, word)) => Err(format!("unknown protocol or IP version '{word}'")),
        None => Ok(()),
    }
}

/// The port after `[HOST]` is one word.
fn check_single(port: &str) -> Result<(), String> {
    match port.split(is_host_separator).find(|w| !w.is_empty()) {
        Some(word) if word.len() < port.len() => {
            let extra = port[word.len()..].trim_start_matches(is_host_separator);
            if extra.is_empty() {
                Err("port specification ends with a separator".to_owned())
            } else {
                Err(format!("unknown protocol or IP version '{extra}'"))
            }
        }
        _ => Ok(()),
    }
}

fn check_host_name(host: &str) -> Result<(), String> {
    let valid = host == "*"
        || host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
    if valid {
        Ok(())
    } else {
        Err(format!("invalid host '{host}'"))
    }
}

fn parse_port(port: &str) -> Result<Port, String> {
    if port.is_empty() {
        return Err("no port given".to_owned());
    }
    if port.bytes().all(|b| b.is_ascii_digit()) {
        return port
            .parse::<u16>()
            .map(Port::Number)
            .map_err(|_| format!("port {port} is out of range (0-65535)"));
    }
    let service = port
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+'));
    if service {
        Ok(Port::service(port))
    } else {
        Err(format!("invalid port '{port}'"))
    }
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
    use proptest::prelude::*;

    fn defaults() -> PortDefaults {
        PortDefaults::default()
    }

    fn tcp(host: &str, port: u16, ipv: Ipv) -> Listener {
        Listener {
            host: host.to_owned(),
            port: Port::Number(port),
            proto: Proto::Tcp,
            ipv,
        }
    }

    fn with_proto(mut listener: Listener, proto: Proto) -> Listener {
        listener.proto = proto;
        listener
    }

    fn unix(path: &str, proto: Proto) -> Listener {
        Listener {
            host: "*".to_owned(),
            port: Port::Path(path.to_owned()),
            proto,
            ipv: Ipv::Any,
        }
    }

    fn service(host: &str, name: &str) -> Listener {
        Listener {
            host: host.to_owned(),
            port: Port::service(name),
            proto: Proto::Tcp,
            ipv: Ipv::Any,
        }
    }

    /// Every port string of the reference's `port`, `host` and `ipv`
    /// sections, with the defaults (host `*`, proto tcp, ipv `*`).
    #[test]
    fn reference_port_strings() {
        use Ipv::{Any, V4, V6};
        let cases: Vec<(&str, Vec<Listener>)> = vec![
            // `port`
            ("20203", vec![tcp("*", 20203, Any)]),
            ("localhost:20203", vec![tcp("localhost", 20203, Any)]),
            ("localhost:http", vec![service("localhost", "http")]),
            ("localhost:20203/tcp", vec![tcp("localhost", 20203, Any)]),
            (
                "localhost:20203/tcp/IPv*",
                vec![tcp("localhost", 20203, Any)],
            ),
            (
                "localhost, 20203, tcp, IPv*",
                vec![tcp("localhost", 20203, Any)],
            ),
            (
                "localhost | 20203 | tcp | IPv*",
                vec![tcp("localhost", 20203, Any)],
            ),
            ("localhost:20203/IPv*", vec![tcp("localhost", 20203, Any)]),
            (
                "localhost:20203/IPv4/IPv6",
                vec![tcp("localhost", 20203, V4), tcp("localhost", 20203, V6)],
            ),
            ("*:20203", vec![tcp("*", 20203, Any)]),
            ("20204", vec![tcp("*", 20204, Any)]),
            ("[::1]:80", vec![tcp("::1", 80, Any)]),
            ("socket_file|unix", vec![unix("socket_file", Proto::Unix)]),
            (
                "socket_file|SOCK_DGRAM|unix",
                vec![unix("socket_file", Proto::UnixDgram)],
            ),
            (
                "socket_file|SOCK_STREAM|unix",
                vec![unix("socket_file", Proto::Unix)],
            ),
            // `ipv`
            ("localhost:20203:IPv*", vec![tcp("localhost", 20203, Any)]),
            ("localhost:20203:IPv6", vec![tcp("localhost", 20203, V6)]),
            ("[::1]:20203", vec![tcp("::1", 20203, Any)]),
            ("localhost:20203:IPv4", vec![tcp("localhost", 20203, V4)]),
            ("127.0.0.1:20203", vec![tcp("127.0.0.1", 20203, Any)]),
            (
                "localhost:20203:IPv4:IPv6",
                vec![tcp("localhost", 20203, V4), tcp("localhost", 20203, V6)],
            ),
            // the perl one-liners (port 20203 and 8080 with the default host)
            ("8080", vec![tcp("*", 8080, Any)]),
        ];
        for (spec, expected) in cases {
            assert_eq!(parse_listeners(spec, &defaults()), Ok(expected), "{spec}");
        }
    }

    #[test]
    fn more_valid_specs() {
        use Ipv::{Any, V4, V6};
        let cases: Vec<(&str, Vec<Listener>)> = vec![
            ("0", vec![tcp("*", 0, Any)]),
            ("65535", vec![tcp("*", 65535, Any)]),
            (" 7 ", vec![tcp("*", 7, Any)]),
            ("127.0.0.1:8080", vec![tcp("127.0.0.1", 8080, Any)]),
            ("[::]:0/IPv6", vec![tcp("::", 0, V6)]),
            ("[localhost]:80", vec![tcp("localhost", 80, Any)]),
            ("[*]:80", vec![tcp("*", 80, Any)]),
            ("[::1] 80", vec![tcp("::1", 80, Any)]),
            ("20203/TCP/ipv4", vec![tcp("*", 20203, V4)]),
            ("20203/ipv4/tcp", vec![tcp("*", 20203, V4)]),
            ("127.0.0.1:1/tcp/IPv*", vec![tcp("127.0.0.1", 1, Any)]),
            ("localhost 80", vec![tcp("localhost", 80, Any)]),
            (
                "localhost,80,udp",
                vec![with_proto(tcp("localhost", 80, Any), Proto::Udp)],
            ),
            ("localhost :, 80 /| tcp", vec![tcp("localhost", 80, Any)]),
            ("::1 | 80", vec![tcp("::1", 80, Any)]),
            ("::1, 80, IPv6", vec![tcp("::1", 80, V6)]),
            ("fe80::1 80/tcp", vec![tcp("fe80::1", 80, Any)]),
            ("80/IPv6/IPv4", vec![tcp("*", 80, V6), tcp("*", 80, V4)]),
            ("80/udp", vec![with_proto(tcp("*", 80, Any), Proto::Udp)]),
            ("80/SSL", vec![with_proto(tcp("*", 80, Any), Proto::Ssl)]),
            ("80/tls", vec![with_proto(tcp("*", 80, Any), Proto::Ssl)]),
            ("80/SSLeay", vec![with_proto(tcp("*", 80, Any), Proto::Ssl)]),
            ("80/unixdgram", vec![unix("80", Proto::UnixDgram)]),
            ("http-alt", vec![service("*", "http-alt")]),
            ("/tmp/sock|unix", vec![unix("/tmp/sock", Proto::Unix)]),
            ("/tmp/sock/unix", vec![unix("/tmp/sock", Proto::Unix)]),
            ("/tmp/a:b|UNIX", vec![unix("/tmp/a:b", Proto::Unix)]),
            ("/tmp/my sock|unix", vec![unix("/tmp/my sock", Proto::Unix)]),
            (
                "/tmp/s|sock_dgram|unix",
                vec![unix("/tmp/s", Proto::UnixDgram)],
            ),
            (
                "/tmp/s|sock_dgram|unixdgram",
                vec![unix("/tmp/s", Proto::UnixDgram)],
            ),
            ("/tmp/s|sock_dgram", vec![unix("/tmp/s", Proto::UnixDgram)]),
            ("/tmp/s|sock_stream", vec![unix("/tmp/s", Proto::Unix)]),
            ("/tmp/tcp|unix", vec![unix("/tmp/tcp", Proto::Unix)]),
        ];
        for (spec, expected) in cases {
            assert_eq!(parse_listeners(spec, &defaults()), Ok(expected), "{spec}");
        }
    }

    /// Forms Net::Server's `parse_info` accepts that were refused before,
    /// with what Net::Server 2.013 made of each (the comment: its host,
    /// port, proto and ipv after resolving `*` and `localhost` here).
    #[test]
    fn net_server_forms() {
        use Ipv::{Any, V4, V6};
        let udp = |l| with_proto(l, Proto::Udp);
        let ssl = |l| with_proto(l, Proto::Ssl);
        let cases: Vec<(&str, Vec<Listener>)> = vec![
            // A protocol by its class name (Net::Server: proto=the class).
            // ipv=6 host=:: (the wildcard, serving IPv4 too)
            ("20203/Net::Server::Proto::TCP", vec![tcp("*", 20203, Any)]),
            // host=* ipv=4
            (
                "20203/Net::Server::Proto::TCP/IPv4",
                vec![tcp("*", 20203, V4)],
            ),
            // host=* ipv=4 proto=Net::Server::Proto::UDP
            (
                "20203:IPv4:Net::Server::Proto::UDP",
                vec![udp(tcp("*", 20203, V4))],
            ),
            (
                "20203:Net::Server::Proto::UDP",
                vec![udp(tcp("*", 20203, Any))],
            ),
            (
                "localhost, 20203, Net::Server::Proto::SSL",
                vec![ssl(tcp("localhost", 20203, Any))],
            ),
            (
                "20203 | Net::Server::Proto::SSLEAY",
                vec![ssl(tcp("*", 20203, Any))],
            ),
            (
                "20203/IPv6/Net::Server::Proto::TCP",
                vec![tcp("*", 20203, V6)],
            ),
            (
                "20203:::Net::Server::Proto::TCP",
                vec![tcp("*", 20203, Any)],
            ),
            // host=* ipv=* port=/tmp/s
            (
                "/tmp/s|Net::Server::Proto::UNIX",
                vec![unix("/tmp/s", Proto::Unix)],
            ),
            (
                "/tmp/s|Net::Server::Proto::UNIXDGRAM",
                vec![unix("/tmp/s", Proto::UnixDgram)],
            ),
            (
                "/tmp/s|sock_dgram|Net::Server::Proto::UNIX",
                vec![unix("/tmp/s", Proto::UnixDgram)],
            ),
            // The IP version between host and port.
            // host=localhost ipv=6 port=20201
            ("[localhost]:IPv6:20201", vec![tcp("localhost", 20201, V6)]),
            ("localhost:IPv6:20201", vec![tcp("localhost", 20201, V6)]),
            ("localhost/IPv6:20201", vec![tcp("localhost", 20201, V6)]),
            ("[localhost]/ipv4 20201", vec![tcp("localhost", 20201, V4)]),
            // host=::1 ipv=6 port=80
            ("[::1]:IPv6:80", vec![tcp("::1", 80, V6)]),
            ("::1 | IPv6 | 80", vec![tcp("::1", 80, V6)]),
            (
                "localhost, IPv4, 20201, tcp",
                vec![tcp("localhost", 20201, V4)],
            ),
            (
                "localhost:IPv4:IPv6:20201",
                vec![tcp("localhost", 20201, V4), tcp("localhost", 20201, V6)],
            ),
            (
                "localhost:IPv4:20201:IPv6",
                vec![tcp("localhost", 20201, V4), tcp("localhost", 20201, V6)],
            ),
            (
                "localhost:IPv*:20201/udp",
                vec![udp(tcp("localhost", 20201, Any))],
            ),
            // Several versions in one word, as Net::Server's IPv([*\d]+).
            // host=localhost ipv=6 and ipv=4
            (
                "localhost:20203/IPv46",
                vec![tcp("localhost", 20203, V4), tcp("localhost", 20203, V6)],
            ),
            (
                "20203/IPv64",
                vec![tcp("*", 20203, V6), tcp("*", 20203, V4)],
            ),
            (
                "localhost:ipv46:20201",
                vec![tcp("localhost", 20201, V4), tcp("localhost", 20201, V6)],
            ),
            // A unix path is kept whole, IPv words and all (Net::Server
            // takes `/IPv4` out of it: port=/tmp/s).
            ("/tmp/IPv4/s|unix", vec![unix("/tmp/IPv4/s", Proto::Unix)]),
            // The first word is the host, whatever it looks like (so in
            // Net::Server: "Unresolveable [IPv6]:80").
            ("IPv6:80", vec![tcp("IPv6", 80, Any)]),
        ];
        for (spec, expected) in cases {
            assert_eq!(parse_listeners(spec, &defaults()), Ok(expected), "{spec}");
        }
    }

    /// Near forms that stay refused, each with one line. The comments say
    /// what Net::Server 2.013 made of each: the first ones it cannot use
    /// either; the others it takes and netserver refuses on purpose, as it
    /// did before (a repeated version, `*` with a version, an address of
    /// the other family, an IPv6 address without brackets before a `:`, a
    /// version on a unix socket).
    #[test]
    fn net_server_forms_still_refused() {
        let class_error = "unknown protocol class '{}' (known: Net::Server::Proto::TCP, UDP, SSL, SSLEAY, UNIX, UNIXDGRAM)";
        let cases: &[(&str, String)] = &[
            // proto=Net::Server::Proto::Tcp: no such module file.
            (
                "20203/Net::Server::Proto::Tcp",
                class_error.replace("{}", "Net::Server::Proto::Tcp"),
            ),
            (
                "20203/net::server::proto::tcp",
                class_error.replace("{}", "net::server::proto::tcp"),
            ),
            (
                "20203:Net::Server::Proto::SCTP/IPv4",
                class_error.replace("{}", "Net::Server::Proto::SCTP"),
            ),
            // proto=My::Proto: cannot load it.
            (
                "20203/My::Proto",
                "unknown protocol or IP version 'My::Proto'".to_owned(),
            ),
            // port=20203v6 ipv=4: not a port.
            (
                "localhost:20203/IPv4v6",
                "unknown protocol or IP version 'IPv4v6'".to_owned(),
            ),
            // proto=v4v6: no Net::Server::Proto::V4V6.
            (
                "20203/v4v6",
                "unknown protocol or IP version 'v4v6'".to_owned(),
            ),
            // "Invalid ipv parameter - must contain 4, 6, or *".
            (
                "80/IPv5",
                "unknown protocol or IP version 'IPv5'".to_owned(),
            ),
            // "Could not determine port number from host
            // [80/Net::Server::Proto]:TCP".
            (
                "80/Net::Server::Proto::TCP/udp",
                "protocol given twice".to_owned(),
            ),
            // port=localhost: (not a port).
            (
                "localhost:IPv6:",
                "port specification ends with a separator".to_owned(),
            ),
            // From here on Net::Server binds something. ipv=4.
            ("80/IPv44", "IP version given twice".to_owned()),
            // ipv=* (resolved: the wildcard).
            (
                "80/IPv4*",
                "IPv* cannot be combined with IPv4 or IPv6".to_owned(),
            ),
            (
                "localhost:IPv6:IPv6:80",
                "IP version given twice".to_owned(),
            ),
            (
                "localhost:IPv4:80/IPv4",
                "IP version given twice".to_owned(),
            ),
            (
                "localhost:IPv*:80/IPv4",
                "IPv* cannot be combined with IPv4 or IPv6".to_owned(),
            ),
            // host=127.0.0.1 ipv=6.
            (
                "127.0.0.1:IPv6:80",
                "host 127.0.0.1 is not an IPv6 address".to_owned(),
            ),
            // host=::1 ipv=6 port=80 (and `::1:80` is [::1]:80 there).
            (
                "::1:IPv6:80",
                "an IPv6 address must be written in brackets: [ADDR]:PORT".to_owned(),
            ),
            // host=* ipv=4 port=/tmp/s.
            (
                "/tmp/s|Net::Server::Proto::UNIX|IPv4",
                "an IP version does not apply to a unix socket".to_owned(),
            ),
        ];
        for (spec, message) in cases {
            assert_eq!(
                parse_listeners(spec, &defaults()),
                Err(message.clone()),
                "{spec}"
            );
        }
    }

    #[test]
    fn invalid_specs() {
        let cases: &[(&str, &str)] = &[
            ("", "no port given"),
            ("   ", "no port given"),
            ("65536", "port 65536 is out of range (0-65535)"),
            ("70000", "port 70000 is out of range (0-65535)"),
            (
                "localhost:99999999999999999999",
                "port 99999999999999999999 is out of range (0-65535)",
            ),
            ("host:", "no port given"),
            ("[::1]", "no port given"),
            ("[::1]:", "no port given"),
            (":80", "empty host before ':'"),
            ("|80", "empty host before '|'"),
            (
                "::1:80",
                "an IPv6 address must be written in brackets: [ADDR]:PORT",
            ),
            (
                "::1",
                "an IPv6 address must be written in brackets: [ADDR]:PORT",
            ),
            (
                "fe80::1:80/tcp",
                "an IPv6 address must be written in brackets: [ADDR]:PORT",
            ),
            ("[::1:80", "unclosed '[' in host"),
            ("[::1]80", "expected ':PORT' after ']'"),
            ("[]:80", "empty host in '[]'"),
            ("[::1]:80:bogus", "unknown protocol or IP version 'bogus'"),
            ("80/bogus", "unknown protocol or IP version 'bogus'"),
            ("80/IPv5", "unknown protocol or IP version 'IPv5'"),
            (
                "localhost:20203:bogus",
                "unknown protocol or IP version 'bogus'",
            ),
            (
                "localhost, 20203, bogus",
                "unknown protocol or IP version 'bogus'",
            ),
            ("80/", "empty protocol or IP version after '/'"),
            ("localhost, 80,", "port specification ends with a separator"),
            ("80/tcp/tcp", "protocol given twice"),
            ("80/tcp/udp", "protocol given twice"),
            ("80/ipv4/ipv4", "IP version given twice"),
            ("80/IPv*/IPv4", "IPv* cannot be combined with IPv4 or IPv6"),
            ("127.0.0.1:80/IPv6", "host 127.0.0.1 is not an IPv6 address"),
            (
                "127.0.0.1:80/IPv4/IPv6",
                "host 127.0.0.1 is not an IPv6 address",
            ),
            ("[::1]:80/IPv4", "host ::1 is not an IPv4 address"),
            ("::1 | 80 | IPv4", "host ::1 is not an IPv4 address"),
            (
                "80|sock_dgram|tcp",
                "socket type sock_dgram does not go with protocol tcp",
            ),
            (
                "/s|sock_stream|unixdgram",
                "socket type sock_stream does not go with protocol unixdgram",
            ),
            ("/s|sock_dgram|sock_dgram|unix", "socket type given twice"),
            (
                "/s|unix|IPv4",
                "an IP version does not apply to a unix socket",
            ),
            ("local host:80", "unknown protocol or IP version '80'"),
            ("loc@lhost:80", "invalid host 'loc@lhost'"),
            ("80!", "invalid port '80!'"),
            ("[a b]:80", "invalid host 'a b'"),
        ];
        for &(spec, message) in cases {
            assert_eq!(
                parse_listeners(spec, &defaults()),
                Err(message.to_owned()),
                "{spec}"
            );
        }
    }

    #[test]
    fn defaults_fill_in() {
        let defaults = PortDefaults {
            host: "127.0.0.1".to_owned(),
            proto: Proto::Udp,
            ipv: vec![Ipv::V4],
        };
        assert_eq!(
            parse_listeners("0", &defaults),
            Ok(vec![with_proto(tcp("127.0.0.1", 0, Ipv::V4), Proto::Udp)])
        );
        assert_eq!(
            parse_listeners("[::1]:0", &defaults),
            Err("host ::1 is not an IPv4 address".to_owned())
        );
        assert_eq!(
            parse_listeners("localhost:1/tcp/IPv6", &defaults),
            Ok(vec![tcp("localhost", 1, Ipv::V6)])
        );
        // The default protocol makes the spec a path.
        let defaults = PortDefaults {
            proto: Proto::Unix,
            ..PortDefaults::default()
        };
        assert_eq!(
            parse_listeners("/tmp/sock", &defaults),
            Ok(vec![unix("/tmp/sock", Proto::Unix)])
        );
        assert_eq!(
            parse_listeners("/tmp/sock|sock_dgram", &defaults),
            Ok(vec![unix("/tmp/sock", Proto::UnixDgram)])
        );
        // Several default IP versions make several listeners; empty is `*`.
        let defaults = PortDefaults {
            host: "localhost".to_owned(),
            proto: Proto::Tcp,
            ipv: vec![Ipv::V4, Ipv::V6],
        };
        assert_eq!(
            parse_listeners("20203", &defaults),
            Ok(vec![
                tcp("localhost", 20203, Ipv::V4),
                tcp("localhost", 20203, Ipv::V6)
            ])
        );
        let defaults = PortDefaults {
            ipv: Vec::new(),
            ..PortDefaults::default()
        };
        assert_eq!(
            parse_listeners("1", &defaults),
            Ok(vec![tcp("*", 1, Ipv::Any)])
        );
    }

    /// The reference's conf file: `host 127.0.0.1`, `ipv IPv6`,
    /// `port localhost:20204/IPv4`, `port 20205`. Its comment says the
    /// second binds 127.0.0.1 on IPv6; the `ipv` section says an IPv4
    /// address with ipv 6 is an error, which is what this parser does.
    #[test]
    fn reference_conf_file() {
        let defaults = PortDefaults {
            host: "127.0.0.1".to_owned(),
            proto: Proto::Tcp,
            ipv: parse_ipv_list("IPv6").unwrap(),
        };
        assert_eq!(
            parse_listeners("localhost:20204/IPv4", &defaults),
            Ok(vec![tcp("localhost", 20204, Ipv::V4)])
        );
        assert_eq!(
            parse_listeners("20205", &defaults),
            Err("host 127.0.0.1 is not an IPv6 address".to_owned())
        );
    }

    /// The values of the reference's `host` section.
    #[test]
    fn host_values() {
        use Ipv::{Any, V4, V6};
        let cases: &[(&str, &str, Option<&[Ipv]>)] = &[
            ("127.0.0.1", "127.0.0.1", None),
            ("::1", "::1", None),
            ("localhost", "localhost", None),
            ("localhost/IPv*", "localhost", Some(&[Any])),
            ("*", "*", None),
            ("*/IPv*", "*", Some(&[Any])),
            ("localhost IPv4 IPv6", "localhost", Some(&[V4, V6])),
            ("[::1]", "::1", None),
            ("[::1]/ipv6", "::1", Some(&[V6])),
            ("::1 IPv6", "::1", Some(&[V6])),
            ("localhost|ipv4", "localhost", Some(&[V4])),
            // Net::Server: ipv=6 and ipv=4.
            ("localhost/IPv46", "localhost", Some(&[V4, V6])),
        ];
        for &(value, host, ipvs) in cases {
            assert_eq!(
                split_host_value(value),
                Ok((host.to_owned(), ipvs.map(<[Ipv]>::to_vec))),
                "{value}"
            );
        }
        let errors: &[(&str, &str)] = &[
            ("", "no host given"),
            ("IPv4", "no host given"),
            ("IPv4 IPv6", "no host given"),
            ("/IPv4", "no host given"),
            ("[::1", "unclosed '[' in host"),
            ("a b", "invalid host 'a b'"),
            ("127.0.0.1/IPv6", "host 127.0.0.1 is not an IPv6 address"),
            // Net::Server: host=localhostv6.
            ("localhost/IPv4v6", "invalid host 'localhost/IPv4v6'"),
            ("localhost IPv4 IPv4", "IP version given twice"),
            (
                "localhost IPv4 IPv*",
                "IPv* cannot be combined with IPv4 or IPv6",
            ),
        ];
        for &(value, message) in errors {
            assert_eq!(split_host_value(value), Err(message.to_owned()), "{value}");
        }
    }

    /// The values of the reference's `proto` section, with IP versions.
    #[test]
    fn proto_values() {
        let cases: &[(&str, Proto, Option<&[Ipv]>)] = &[
            ("tcp", Proto::Tcp, None),
            ("UDP", Proto::Udp, None),
            ("unix", Proto::Unix, None),
            ("unixdgram", Proto::UnixDgram, None),
            ("ssl", Proto::Ssl, None),
            ("ssleay", Proto::Ssl, None),
            ("tls", Proto::Ssl, None),
            ("tcp/IPv6", Proto::Tcp, Some(&[Ipv::V6])),
            ("tcp IPv4 IPv6", Proto::Tcp, Some(&[Ipv::V4, Ipv::V6])),
            ("tcp/IPv46", Proto::Tcp, Some(&[Ipv::V4, Ipv::V6])),
            // Net::Server's class names, as their module files spell them.
            ("Net::Server::Proto::TCP", Proto::Tcp, None),
            ("Net::Server::Proto::UDP", Proto::Udp, None),
            ("Net::Server::Proto::UNIX", Proto::Unix, None),
            ("Net::Server::Proto::UNIXDGRAM", Proto::UnixDgram, None),
            ("Net::Server::Proto::SSL", Proto::Ssl, None),
            ("Net::Server::Proto::SSLEAY", Proto::Ssl, None),
            ("Net::Server::Proto::TCP/IPv6", Proto::Tcp, Some(&[Ipv::V6])),
            (
                " Net::Server::Proto::UDP IPv4 ",
                Proto::Udp,
                Some(&[Ipv::V4]),
            ),
        ];
        for &(value, proto, ipvs) in cases {
            assert_eq!(
                split_proto_value(value),
                Ok((proto, ipvs.map(<[Ipv]>::to_vec))),
                "{value}"
            );
        }
        let errors: &[(&str, &str)] = &[
            ("sctp", "unknown protocol 'sctp'"),
            // Net::Server cannot load these (case matters to `require`).
            (
                "Net::Server::Proto::Tcp",
                "unknown protocol class 'Net::Server::Proto::Tcp' (known: Net::Server::Proto::TCP, UDP, SSL, SSLEAY, UNIX, UNIXDGRAM)",
            ),
            (
                "NET::SERVER::PROTO::TCP",
                "unknown protocol class 'NET::SERVER::PROTO::TCP' (known: Net::Server::Proto::TCP, UDP, SSL, SSLEAY, UNIX, UNIXDGRAM)",
            ),
            (
                "Net::Server::Proto::TLS",
                "unknown protocol class 'Net::Server::Proto::TLS' (known: Net::Server::Proto::TCP, UDP, SSL, SSLEAY, UNIX, UNIXDGRAM)",
            ),
            ("My::Proto", "unknown protocol 'My::Proto'"),
            (
                "Net::Server::Proto::",
                "unknown protocol class 'Net::Server::Proto::' (known: Net::Server::Proto::TCP, UDP, SSL, SSLEAY, UNIX, UNIXDGRAM)",
            ),
        ];
        for &(value, message) in errors {
            assert_eq!(split_proto_value(value), Err(message.to_owned()), "{value}");
        }
        assert_eq!(split_proto_value(" "), Err("no protocol given".to_owned()));
        for proto in [
            Proto::Tcp,
            Proto::Udp,
            Proto::Unix,
            Proto::UnixDgram,
            Proto::Ssl,
        ] {
            assert_eq!(Proto::parse(proto.as_str()), Some(proto));
            assert_eq!(proto.to_string(), proto.as_str());
        }
    }

    /// The values of the reference's `ipv` section.
    #[test]
    fn ipv_values() {
        use Ipv::{Any, V4, V6};
        let cases: &[(&str, &[Ipv])] = &[
            ("6", &[V6]),
            ("4", &[V4]),
            ("*", &[Any]),
            ("IPv6", &[V6]),
            ("IPv4 IPv6", &[V4, V6]),
            ("ipv*", &[Any]),
            ("4,6", &[V4, V6]),
            // Net::Server takes any text with a 4, 6 or *; these are the
            // forms with a meaning: ipv=6 and ipv=4 for each.
            ("IPv4v6", &[V4, V6]),
            ("v4v6", &[V4, V6]),
            ("V6v4", &[V6, V4]),
            ("46", &[V4, V6]),
            ("IPv46", &[V4, V6]),
            ("IPv4IPv6", &[V4, V6]),
            ("v4", &[V4]),
            ("v*", &[Any]),
        ];
        for &(value, ipvs) in cases {
            assert_eq!(parse_ipv_list(value), Ok(ipvs.to_vec()), "{value}");
        }
        let errors: &[(&str, &str)] = &[
            ("", "no IP version given"),
            ("5", "unknown IP version '5'"),
            ("4 4", "IP version given twice"),
            ("* 4", "IPv* cannot be combined with IPv4 or IPv6"),
            // Net::Server: "must contain 4, 6, or *".
            ("IPv5", "unknown IP version 'IPv5'"),
            ("ipv", "unknown IP version 'ipv'"),
            ("v", "unknown IP version 'v'"),
            // Net::Server reads these as 4 (they contain a 4).
            ("foo4", "unknown IP version 'foo4'"),
            ("14", "unknown IP version '14'"),
            ("4v", "unknown IP version '4v'"),
            ("IPv4v4", "IP version given twice"),
            ("v4v*", "IPv* cannot be combined with IPv4 or IPv6"),
        ];
        for &(value, message) in errors {
            assert_eq!(parse_ipv_list(value), Err(message.to_owned()), "{value}");
        }
    }

    #[test]
    fn serializes_as_check_prints_it() {
        let listeners = [
            tcp("*", 20203, Ipv::Any),
            service("localhost", "http"),
            unix("/tmp/sock", Proto::UnixDgram),
            with_proto(tcp("::1", 0, Ipv::V6), Proto::Ssl),
        ];
        assert_eq!(
            serde_json::to_value(listeners).unwrap(),
            serde_json::json!([
                {"host": "*", "port": 20203, "proto": "tcp", "ipv": "*"},
                {"host": "localhost", "port": "http", "proto": "tcp", "ipv": "*"},
                {"host": "*", "port": "/tmp/sock", "proto": "unixdgram", "ipv": "*"},
                {"host": "::1", "port": 0, "proto": "ssl", "ipv": "6"},
            ])
        );
        assert_eq!(Port::Number(80).to_string(), "80");
        assert_eq!(Port::service("http").to_string(), "http");
    }

    const SERVICES: &str = "\
# Network services, Internet style
tcpmux\t\t1/tcp\t\t\t\t# TCP port service multiplexer
ftp\t\t21/tcp
http\t\t80/tcp\t\twww www-http\t# WorldWideWeb HTTP
http\t\t80/udp
https 443/tcp
https 443/udp
kerberos\t88/tcp\t\tkerberos5 krb5\t# Kerberos v5
kerberos\t88/udp\t\tkerberos5 krb5
syslog\t\t514/udp
http-alt\t8080/tcp\twebcache
broken\t\tnotaport/tcp
noproto\t\t99
#commented\t7/tcp
   
";

    #[test]
    fn services_file() {
        let cases: &[(&str, &str, Option<u16>)] = &[
            ("http", "tcp", Some(80)),
            ("http", "udp", Some(80)),
            ("www", "tcp", Some(80)),
            ("www-http", "tcp", Some(80)),
            ("https", "tcp", Some(443)),
            ("krb5", "udp", Some(88)),
            ("http-alt", "tcp", Some(8080)),
            ("webcache", "tcp", Some(8080)),
            ("tcpmux", "tcp", Some(1)),
            ("ftp", "TCP", Some(21)),
            ("syslog", "tcp", None),
            ("HTTP", "tcp", None),
            ("nosuch", "tcp", None),
            ("broken", "tcp", None),
            ("noproto", "tcp", None),
            ("commented", "tcp", None),
            ("Network", "tcp", None),
            ("", "tcp", None),
        ];
        for &(name, proto, port) in cases {
            assert_eq!(
                parse_services(SERVICES, name, proto),
                port,
                "{name}/{proto}"
            );
        }
    }

    #[test]
    fn system_services_file() {
        // Only where the machine has the usual entry.
        if std::fs::read_to_string("/etc/services").is_ok_and(|t| t.contains("\nhttp")) {
            assert_eq!(resolve_service("http", "tcp"), Some(80));
        }
        assert_eq!(resolve_service("no-such-service-here", "tcp"), None);
    }

    /// Tokens and separators of the grammar, to build near-valid specs.
    fn grammar_spec() -> impl Strategy<Value = String> {
        let token = prop::sample::select(vec![
            "localhost",
            "*",
            "[::1]",
            "::1",
            "127.0.0.1",
            "[",
            "]",
            "20203",
            "0",
            "65536",
            "http",
            "tcp",
            "TCP",
            "udp",
            "unix",
            "unixdgram",
            "ssl",
            "tls",
            "ssleay",
            "IPv4",
            "ipv6",
            "IPv*",
            "IPv",
            "IPv46",
            "IPv4v6",
            "v4v6",
            "Net::Server::Proto::TCP",
            "Net::Server::Proto::UNIX",
            "Net::Server::Proto::UNIXDGRAM",
            "Net::Server::Proto::Tcp",
            "Net::Server::Proto::",
            "My::Proto",
            "sock_dgram",
            "SOCK_STREAM",
            "/tmp/sock",
            "",
            "é",
            "fe80::1",
        ]);
        let separator =
            prop::sample::select(vec![":", "/", ",", "|", " ", ", ", " | ", "::", "\t"]);
        prop::collection::vec((token, separator), 0..8).prop_map(|parts| {
            parts
                .into_iter()
                .map(|(token, separator)| format!("{token}{separator}"))
                .collect()
        })
    }

    /// A well-formed spec of an IP listener in any of Net::Server's
    /// orders, with the listeners it must give: host, IP versions between
    /// host and port, port, then protocol and IP versions in either order,
    /// any separators.
    fn valid_ip_spec() -> impl Strategy<Value = (String, Vec<Listener>)> {
        let host = prop::sample::select(vec![
            ("localhost", "localhost"),
            ("[localhost]", "localhost"),
            ("127.0.0.1", "127.0.0.1"),
            ("[::1]", "::1"),
            ("*", "*"),
        ]);
        let proto = prop::sample::select(vec![
            ("tcp", Proto::Tcp),
            ("UDP", Proto::Udp),
            ("ssl", Proto::Ssl),
            ("Net::Server::Proto::TCP", Proto::Tcp),
            ("Net::Server::Proto::UDP", Proto::Udp),
            ("Net::Server::Proto::SSLEAY", Proto::Ssl),
        ]);
        let ipvs = prop::sample::select(vec![
            ("IPv4", vec![Ipv::V4]),
            ("ipv6", vec![Ipv::V6]),
            ("IPv*", vec![Ipv::Any]),
            ("IPv46", vec![Ipv::V4, Ipv::V6]),
        ]);
        // (`127.0.0.1::0` would look like an IPv6 address without brackets.)
        let separator = || prop::sample::select(vec![":", ",", "|", " ", ", ", " | "]);
        let slash = || prop::sample::select(vec!["/", ":", "|", ", ", "::"]);
        (
            host,
            prop::option::of((ipvs.clone(), slash())),
            separator(),
            0u16..=65535,
            prop::option::of((slash(), proto)),
            prop::option::of((slash(), ipvs)),
            any::<bool>(),
        )
            .prop_filter_map(
                "an address of the other family",
                |((host, name), inner, sep, port, proto, outer, swap)| {
                    let mut spec = host.to_owned();
                    let mut versions = Vec::new();
                    if let Some(((word, list), after)) = &inner {
                        spec += &format!("{after}{word}");
                        versions.extend(list.iter().copied());
                    }
                    spec += &format!("{sep}{port}");
                    let mut tail = Vec::new();
                    if let Some((before, (word, _))) = &proto {
                        tail.push(format!("{before}{word}"));
                    }
                    if let Some((before, (word, list))) = &outer {
                        tail.push(format!("{before}{word}"));
                        for ipv in list {
                            if versions.contains(ipv) {
                                return None;
                            }
                        }
                        versions.extend(list.iter().copied());
                    }
                    if swap {
                        tail.reverse();
                    }
                    spec += &tail.concat();
                    if versions.len() > 1 && versions.contains(&Ipv::Any) {
                        return None;
                    }
                    if versions.is_empty() {
                        versions.push(Ipv::Any);
                    }
                    let proto = proto.map_or(Proto::Tcp, |(_, (_, p))| p);
                    let listeners: Vec<Listener> = versions
                        .into_iter()
                        .map(|ipv| Listener {
                            host: name.to_owned(),
                            port: Port::Number(port),
                            proto,
                            ipv,
                        })
                        .collect();
                    if listeners.iter().any(|l| check_family(l).is_err()) {
                        return None;
                    }
                    Some((spec, listeners))
                },
            )
    }

    proptest! {
        #[test]
        fn valid_specs_give_their_listeners((spec, listeners) in valid_ip_spec()) {
            prop_assert_eq!(parse_listeners(&spec, &defaults()), Ok(listeners), "{}", spec);
        }

        #[test]
        fn never_panics_on_any_string(spec in any::<String>()) {
            let _ = parse_listeners(&spec, &defaults());
            let _ = split_host_value(&spec);
            let _ = split_proto_value(&spec);
            let _ = parse_ipv_list(&spec);
            let _ = parse_services(&spec, "http", "tcp");
        }

        #[test]
        fn never_panics_on_grammar_strings(spec in grammar_spec(), cut in 0usize..3) {
            let spec = spec.trim_end_matches(|c: char| cut > 0 && is_separator(c));
            let result = parse_listeners(spec, &defaults());
            if let Ok(listeners) = &result {
                prop_assert!(!listeners.is_empty());
                for listener in listeners {
                    prop_assert!(check_family(listener).is_ok());
                }
            }
            if let Err(message) = &result {
                prop_assert!(!message.contains('\n'));
                prop_assert!(!message.ends_with('.'));
            }
            let _ = split_host_value(spec);
            let _ = split_proto_value(spec);
        }
    }
}
