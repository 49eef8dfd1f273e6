//! The PROXY protocol (HAProxy's, versions 1 and 2): a connection from a
//! trusted proxy (`proxy_from`) starts with a header naming the client
//! behind the proxy, so that access rules, logs and the guest see that
//! client. The header is consumed exactly: the bytes after it are the
//! client's, left in the socket for the guest.

use std::net::SocketAddr;
use std::time::Duration;

use ppp::HeaderResult;
use ppp::PartialResult;

/// The longest header accepted (the protocol allows 16 + 65535 bytes; real
/// proxies send well under 1 KiB).
pub const MAX_HEADER: usize = 4096;

/// The first 12 bytes of every v2 header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// How every v1 header starts.
const V1_PREFIX: &[u8; 6] = b"PROXY ";

/// How long a proxy may take to send the whole header.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What a header says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// The proxy relays this client, which connected to `server`.
    Relayed {
        /// The client behind the proxy.
        client: SocketAddr,
        /// The address the client connected to, on the proxy.
        server: SocketAddr,
    },
    /// The proxy speaks for itself (v2 `LOCAL`, health checks) or does not
    /// know the client (`UNKNOWN`, or a unix-socket client): the
    /// connection's own addresses stand.
    Own,
}

/// The outcome of parsing the bytes received so far.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole header of `len` bytes.
    Header {
        /// Its length, to consume from the socket.
        len: usize,
        /// What it says.
        origin: Origin,
    },
    /// More bytes are needed.
    Incomplete,
    /// Not a valid header, whatever follows.
    Invalid(String),
}

/// The longest v1 header, its CRLF included.
pub const MAX_V1_HEADER: usize = 107;

/// Parses the start of a connection. Never panics, whatever the input.
pub fn parse(bytes: &[u8]) -> Parsed {
    // The v2 signature decides the version, so that a bad v2 header is
    // reported as such (ppp's own guess falls back to v1).
    let v2 = bytes.len().min(V2_SIGNATURE.len());
    let result: HeaderResult<'_> = if bytes[..v2] == V2_SIGNATURE[..v2] {
        ppp::v2::Header::try_from(bytes).into()
    } else {
        // A v1 header is a line: whatever its words so far, it is not
        // whole before its CRLF (ppp's word-by-word verdict on a part of
        // one can be wrong), and there is none past 107 bytes.
        let seen = bytes.len().min(V1_PREFIX.len());
        if bytes[..seen] != V1_PREFIX[..seen] {
            return Parsed::Invalid("not a PROXY header: it does not start with PROXY".to_owned());
        }
        let line = bytes.iter().take(MAX_V1_HEADER).position(|&b| b == b'\n');
        if line.is_none() {
            return if bytes.len() < MAX_V1_HEADER {
                Parsed::Incomplete
            } else {
                Parsed::Invalid(format!("no PROXY v1 header within {MAX_V1_HEADER} bytes"))
            };
        }
        ppp::v1::Header::try_from(bytes).into()
    };
    if result.is_incomplete() {
        return match &result {
            HeaderResult::V2(Err(ppp::v2::ParseError::Partial(_, need)))
                if need.saturating_add(16) > MAX_HEADER =>
            {
                Parsed::Invalid(format!(
                    "a PROXY v2 header of {} bytes is longer than the {MAX_HEADER} accepted",
                    need.saturating_add(16)
                ))
            }
            _ if bytes.len() >= MAX_HEADER => {
                Parsed::Invalid(format!("no PROXY header within {MAX_HEADER} bytes"))
            }
            _ => Parsed::Incomplete,
        };
    }
    match result {
        HeaderResult::V1(Ok(header)) => {
            use ppp::v1::Addresses;
            let origin = match header.addresses {
                Addresses::Tcp4(ip) => Origin::Relayed {
                    client: (ip.source_address, ip.source_port).into(),
                    server: (ip.destination_address, ip.destination_port).into(),
                },
                Addresses::Tcp6(ip) => Origin::Relayed {
                    client: (ip.source_address, ip.source_port).into(),
                    server: (ip.destination_address, ip.destination_port).into(),
                },
                Addresses::Unknown => Origin::Own,
            };
            Parsed::Header {
                len: header.header.len(),
                origin,
            }
        }
        HeaderResult::V2(Ok(header)) => {
            use ppp::v2::{Addresses, Command};
            let origin = match (header.command, header.addresses) {
                (Command::Proxy, Addresses::IPv4(ip)) => Origin::Relayed {
                    client: (ip.source_address, ip.source_port).into(),
                    server: (ip.destination_address, ip.destination_port).into(),
                },
                (Command::Proxy, Addresses::IPv6(ip)) => Origin::Relayed {
                    client: (ip.source_address, ip.source_port).into(),
                    server: (ip.destination_address, ip.destination_port).into(),
                },
                _ => Origin::Own,
            };
            Parsed::Header {
                len: header.len(),
                origin,
            }
        }
        HeaderResult::V1(Err(error)) => Parsed::Invalid(format!("not a PROXY header: {error}")),
        HeaderResult::V2(Err(error)) => Parsed::Invalid(format!("bad PROXY v2 header: {error}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v2 header: `command` 0x20 | (0 LOCAL, 1 PROXY), `family`
    /// (0x11 TCP/IPv4, 0x21 TCP/IPv6, 0x00 unspecified), then the
    /// addresses and ports.
    pub fn v2(command: u8, family: u8, body: &[u8]) -> Vec<u8> {
        let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
        h.push(command);
        h.push(family);
        h.extend_from_slice(&(body.len() as u16).to_be_bytes());
        h.extend_from_slice(body);
        h
    }

    fn v4_body() -> Vec<u8> {
        let mut b = vec![192, 0, 2, 7, 10, 0, 0, 1];
        b.extend_from_slice(&4000u16.to_be_bytes());
        b.extend_from_slice(&25u16.to_be_bytes());
        b
    }

    #[test]
    fn headers() {
        let relayed = |c: &str, s: &str| Origin::Relayed {
            client: c.parse().unwrap(),
            server: s.parse().unwrap(),
        };
        let v1 = b"PROXY TCP4 192.0.2.7 10.0.0.1 4000 25\r\n".to_vec();
        let v1_6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 25\r\n".to_vec();
        let v1_unknown = b"PROXY UNKNOWN\r\n".to_vec();
        let mut v6_body = Vec::new();
        v6_body.extend_from_slice(
            &"2001:db8::7"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6_body.extend_from_slice(
            &"2001:db8::1"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets(),
        );
        v6_body.extend_from_slice(&[0x0f, 0xa0, 0, 25]);
        let cases: Vec<(Vec<u8>, Parsed)> = vec![
            (
                v1.clone(),
                Parsed::Header {
                    len: v1.len(),
                    origin: relayed("192.0.2.7:4000", "10.0.0.1:25"),
                },
            ),
            (
                [v1.as_slice(), b"hello\r\n"].concat(),
                Parsed::Header {
                    len: v1.len(),
                    origin: relayed("192.0.2.7:4000", "10.0.0.1:25"),
                },
            ),
            (
                v1_6.clone(),
                Parsed::Header {
                    len: v1_6.len(),
                    origin: relayed("[2001:db8::7]:4000", "[2001:db8::1]:25"),
                },
            ),
            (
                v1_unknown.clone(),
                Parsed::Header {
                    len: v1_unknown.len(),
                    origin: Origin::Own,
                },
            ),
            (
                v2(0x21, 0x11, &v4_body()),
                Parsed::Header {
                    len: 28,
                    origin: relayed("192.0.2.7:4000", "10.0.0.1:25"),
                },
            ),
            (
                v2(0x21, 0x21, &v6_body),
                Parsed::Header {
                    len: 52,
                    origin: relayed("[2001:db8::7]:4000", "[2001:db8::1]:25"),
                },
            ),
            (
                v2(0x20, 0x00, &[]),
                Parsed::Header {
                    len: 16,
                    origin: Origin::Own,
                },
            ),
            (b"PROXY TCP4 192.0.2.7".to_vec(), Parsed::Incomplete),
            (b"\r\n\r\n\0\r".to_vec(), Parsed::Incomplete),
            (
                v2(0x21, 0x11, &v4_body())[..20].to_vec(),
                Parsed::Incomplete,
            ),
            (b"P".to_vec(), Parsed::Incomplete),
            // Split after a space: the rest may yet make it whole.
            (
                b"PROXY TCP4 192.0.2.7 10.0.0.1 1111 ".to_vec(),
                Parsed::Incomplete,
            ),
            (
                b"PROXY TCP4 192.0.2.7 10.0.0.1 1111".to_vec(),
                Parsed::Incomplete,
            ),
            (b"PROXY ".to_vec(), Parsed::Incomplete),
            (b"PROXY TCP6 ".to_vec(), Parsed::Incomplete),
            (
                b"PROXY TCP4 192.0.2.7 10.0.0.1 4000 25\r".to_vec(),
                Parsed::Incomplete,
            ),
        ];
        for (input, want) in cases {
            assert_eq!(parse(&input), want, "{:?}", String::from_utf8_lossy(&input));
        }
    }

    #[test]
    fn invalid_headers() {
        let mut huge = v2(0x21, 0x11, &v4_body());
        huge[14..16].copy_from_slice(&60000u16.to_be_bytes());
        let cases: Vec<Vec<u8>> = vec![
            b"hello\r\n".to_vec(),
            b"GET / HTTP/1.1\r\n".to_vec(),
            b"PROXY TCP4 999.0.2.7 10.0.0.1 4000 25\r\n".to_vec(),
            b"PROXY TCP4 192.0.2.7 10.0.0.1 70000 25\r\n".to_vec(),
            b"PROXY TCP9 192.0.2.7 10.0.0.1 4000 25\r\n".to_vec(),
            v2(0x31, 0x11, &v4_body()),
            v2(0x2f, 0x11, &v4_body()),
            v2(0x21, 0x11, &v4_body()[..6]),
            huge,
            vec![b'P'; MAX_HEADER],
            b"PROXX".to_vec(),
            b"HELLO".to_vec(),
            [b"PROXY ".as_slice(), &[b'x'; 101]].concat(),
            b"PROXY TCP4 192.0.2.7 10.0.0.1 1111 \r\n".to_vec(),
        ];
        for input in cases {
            assert!(
                matches!(parse(&input), Parsed::Invalid(_)),
                "{:?} gave {:?}",
                String::from_utf8_lossy(&input),
                parse(&input)
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..600)) {
            let _ = parse(&bytes);
        }

        /// Every way of cutting a valid v1 header gives `Incomplete`
        /// before the cut and the header after it.
        #[test]
        fn a_v1_header_cut_anywhere_is_incomplete_until_whole(
            a in proptest::array::uniform4(proptest::num::u8::ANY),
            b in proptest::array::uniform4(proptest::num::u8::ANY),
            ports in (proptest::num::u16::ANY, proptest::num::u16::ANY),
        ) {
            let line = format!(
                "PROXY TCP4 {}.{}.{}.{} {}.{}.{}.{} {} {}\r\n",
                a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3], ports.0, ports.1
            );
            let bytes = line.as_bytes();
            for cut in 0..bytes.len() {
                proptest::prop_assert_eq!(parse(&bytes[..cut]), Parsed::Incomplete, "{:?}", &line[..cut]);
            }
            let whole = matches!(parse(bytes), Parsed::Header { len, .. } if len == bytes.len());
            proptest::prop_assert!(whole, "{:?}", line);
        }

        #[test]
        fn never_panics_after_a_v2_prefix(
            command in proptest::num::u8::ANY,
            family in proptest::num::u8::ANY,
            body in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let _ = parse(&v2(command, family, &body));
        }

        #[test]
        fn never_panics_after_a_v1_prefix(rest in "[ -~\r\n]{0,120}") {
            let _ = parse(format!("PROXY {rest}").as_bytes());
        }
    }
}
