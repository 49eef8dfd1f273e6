//! What the host knows about a client: Net::Server's `get_client_info`, for
//! a client over IP or over a unix socket.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

/// A unix-socket peer's credentials, from `SO_PEERCRED`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// The peer's process id.
    pub pid: i32,
    /// Its user id.
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
}

/// What a client's TLS handshake settled (the client served over an
/// `ssl` port).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The version, as OpenSSL names it: `TLSv1.2`, `TLSv1.3`.
    pub version: &'static str,
    /// The cipher suite, by its rustls (IANA-like) name.
    pub cipher: String,
    /// The server name the client asked for (SNI), lower case.
    pub server_name: Option<String>,
    /// The application protocol agreed by ALPN.
    pub alpn: Option<String>,
    /// The client certificate, when one was presented and verified.
    pub client_cert: Option<ClientCert>,
}

/// A verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    /// Its subject's distinguished name (RFC 4514 style, `CN=…, O=…`).
    pub subject: String,
    /// Its issuer's distinguished name.
    pub issuer: String,
    /// The SHA-256 of its DER encoding, 64 lower-case hex digits.
    pub sha256: String,
}

/// The client's end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// An IP client: its address and port, an IPv4-mapped IPv6 address in
    /// its IPv4 form (see [`Peer::ip`]).
    Ip(SocketAddr),
    /// A unix-socket client.
    Unix {
        /// The path the client's socket is bound to: usually none.
        path: Option<PathBuf>,
        /// Who the client is, when the kernel says.
        cred: Option<Credentials>,
    },
}

impl Peer {
    /// An IP client at `addr` (`::ffff:a.b.c.d` becomes `a.b.c.d`).
    pub fn ip(addr: SocketAddr) -> Self {
        Self::Ip(canonical(addr))
    }

    /// The client's IP address, for an IP client.
    pub fn ip_addr(&self) -> Option<IpAddr> {
        match self {
            Self::Ip(addr) => Some(addr.ip()),
            Self::Unix { .. } => None,
        }
    }

    /// The client's user id, for a unix-socket client whose credentials
    /// are known.
    pub fn uid(&self) -> Option<u32> {
        match self {
            Self::Unix { cred, .. } => cred.map(|c| c.uid),
            Self::Ip(_) => None,
        }
    }
}

impl fmt::Display for Peer {
    /// `127.0.0.1:41000`, `[::1]:41000`; `unix:uid=1000,pid=42`, or
    /// `unix:PATH` for a client bound to a path.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(addr) => write!(f, "{addr}"),
            Self::Unix {
                path: Some(path), ..
            } => write!(f, "unix:{}", path.display()),
            Self::Unix {
                cred: Some(cred), ..
            } => write!(f, "unix:uid={},pid={}", cred.uid, cred.pid),
            Self::Unix { .. } => f.write_str("unix:unknown"),
        }
    }
}

/// The server's end of a connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Local {
    /// The address and port the client connected to.
    Ip(SocketAddr),
    /// The path of the unix socket the client connected to.
    Unix(PathBuf),
}

impl Local {
    /// The server address `addr` (`::ffff:a.b.c.d` becomes `a.b.c.d`).
    pub fn ip(addr: SocketAddr) -> Self {
        Self::Ip(canonical(addr))
    }
}

impl fmt::Display for Local {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ip(addr) => write!(f, "{addr}"),
            Self::Unix(path) => write!(f, "{}", path.display()),
        }
    }
}

/// One client connection's two ends and the service serving it.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    /// The client's end (`peeraddr`, `peerport`).
    pub peer: Peer,
    /// The end the client connected to (`sockaddr`, `sockport`).
    pub local: Local,
    /// The protocol of the listening socket, lower case.
    pub proto: &'static str,
    /// The client's host name from a reverse lookup, when enabled.
    pub peer_host: Option<String>,
    /// The service serving the client.
    pub service: Arc<str>,
    /// What its TLS handshake settled, over an `ssl` port.
    pub tls: Option<Arc<TlsInfo>>,
}

impl ClientInfo {
    /// The information of a client at `peer` on `local`, over `proto`.
    pub fn new(peer: Peer, local: Local, proto: &'static str, service: Arc<str>) -> Self {
        Self {
            peer,
            local,
            proto,
            peer_host: None,
            service,
            tls: None,
        }
    }

    /// Whether the client is a datagram (`udp`, `unixdgram`): one request,
    /// answered in datagrams.
    pub fn is_datagram(&self) -> bool {
        matches!(self.proto, "udp" | "unixdgram")
    }

    /// The information of a TCP client accepted on `local` from `peer`.
    pub fn tcp(peer: SocketAddr, local: SocketAddr, service: Arc<str>) -> Self {
        Self::new(Peer::ip(peer), Local::ip(local), "tcp", service)
    }

    /// The variables a WASI command handler finds in its environment,
    /// named as in ucspi-tcp (`TCPREMOTEIP`, …; `UDPREMOTEIP`, … for a
    /// datagram, the prefix being `PROTO` as ucspi's convention has it) and
    /// ucspi-unix (`UNIXREMOTEEUID`, …), plus `PROTO`.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![("PROTO", self.proto.to_ascii_uppercase())];
        let udp = self.proto == "udp";
        let (remote_ip, remote_port, local_ip, local_port) = if udp {
            ("UDPREMOTEIP", "UDPREMOTEPORT", "UDPLOCALIP", "UDPLOCALPORT")
        } else {
            ("TCPREMOTEIP", "TCPREMOTEPORT", "TCPLOCALIP", "TCPLOCALPORT")
        };
        match &self.peer {
            Peer::Ip(addr) => {
                env.push((remote_ip, addr.ip().to_string()));
                env.push((remote_port, addr.port().to_string()));
            }
            Peer::Unix { cred, .. } => {
                if let Some(cred) = cred {
                    env.push(("UNIXREMOTEEUID", cred.uid.to_string()));
                    env.push(("UNIXREMOTEEGID", cred.gid.to_string()));
                    env.push(("UNIXREMOTEPID", cred.pid.to_string()));
                }
            }
        }
        match &self.local {
            Local::Ip(addr) => {
                env.push((local_ip, addr.ip().to_string()));
                env.push((local_port, addr.port().to_string()));
            }
            // Pipes have no path.
            Local::Unix(path) if path.as_os_str().is_empty() => {}
            Local::Unix(path) => env.push(("UNIXLOCALPATH", path.display().to_string())),
        }
        if let Some(host) = &self.peer_host {
            env.push(("TCPREMOTEHOST", host.clone()));
        }
        if self.proto == "ssl" {
            self.tls_environment(&mut env);
        }
        env
    }

    /// A TLS client's variables: ucspi-ssl's `SSL`-prefixed copies of the
    /// `TCP` ones, and mod_ssl's names for what the handshake settled
    /// (`SSL_PROTOCOL`, `SSL_CIPHER`, `SSL_SERVER_NAME`, `SSL_ALPN`,
    /// `SSL_CLIENT_VERIFY`, `SSL_CLIENT_S_DN`, `SSL_CLIENT_I_DN`,
    /// `SSL_CLIENT_CERT_SHA256`).
    fn tls_environment(&self, env: &mut Vec<(&'static str, String)>) {
        let copies: Vec<(&'static str, String)> = env
            .iter()
            .filter_map(|(key, value)| {
                let ssl = match *key {
                    "TCPREMOTEIP" => "SSLREMOTEIP",
                    "TCPREMOTEPORT" => "SSLREMOTEPORT",
                    "TCPLOCALIP" => "SSLLOCALIP",
                    "TCPLOCALPORT" => "SSLLOCALPORT",
                    "TCPREMOTEHOST" => "SSLREMOTEHOST",
                    _ => return None,
                };
                Some((ssl, value.clone()))
            })
            .collect();
        env.extend(copies);
        let Some(tls) = &self.tls else {
            return;
        };
        env.push(("SSL_PROTOCOL", tls.version.to_owned()));
        env.push(("SSL_CIPHER", tls.cipher.clone()));
        if let Some(name) = &tls.server_name {
            env.push(("SSL_SERVER_NAME", name.clone()));
        }
        if let Some(alpn) = &tls.alpn {
            env.push(("SSL_ALPN", alpn.clone()));
        }
        match &tls.client_cert {
            Some(cert) => {
                env.push(("SSL_CLIENT_VERIFY", "SUCCESS".to_owned()));
                env.push(("SSL_CLIENT_S_DN", cert.subject.clone()));
                env.push(("SSL_CLIENT_I_DN", cert.issuer.clone()));
                env.push(("SSL_CLIENT_CERT_SHA256", cert.sha256.clone()));
            }
            None => env.push(("SSL_CLIENT_VERIFY", "NONE".to_owned())),
        }
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; other addresses unchanged.
fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_addresses_become_ipv4() {
        let cases = [
            ("[::ffff:127.0.0.2]:5", "127.0.0.2:5"),
            ("[::ffff:7f00:3]:5", "127.0.0.3:5"),
            ("[::1]:5", "[::1]:5"),
            ("10.1.2.3:5", "10.1.2.3:5"),
        ];
        for (given, want) in cases {
            let peer: SocketAddr = given.parse().unwrap();
            let info = ClientInfo::tcp(peer, peer, "s".into());
            assert_eq!(info.peer.to_string(), want);
            assert_eq!(info.local.to_string(), want);
        }
    }

    #[test]
    fn datagrams_are_udp_and_unixdgram() {
        let peer: SocketAddr = "127.0.0.1:5".parse().unwrap();
        let cases = [
            ("tcp", false),
            ("ssl", false),
            ("unix", false),
            ("pipe", false),
            ("udp", true),
            ("unixdgram", true),
        ];
        for (proto, datagram) in cases {
            let info = ClientInfo::new(Peer::ip(peer), Local::ip(peer), proto, "s".into());
            assert_eq!(info.is_datagram(), datagram, "{proto}");
        }
    }

    fn env(info: &ClientInfo) -> Vec<String> {
        info.environment()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect()
    }

    #[test]
    fn environment_uses_ucspi_names() {
        let info = ClientInfo::tcp(
            "[::ffff:127.0.0.1]:4000".parse().unwrap(),
            "127.0.0.1:20203".parse().unwrap(),
            "echo".into(),
        );
        assert_eq!(
            env(&info),
            [
                "PROTO=TCP",
                "TCPREMOTEIP=127.0.0.1",
                "TCPREMOTEPORT=4000",
                "TCPLOCALIP=127.0.0.1",
                "TCPLOCALPORT=20203"
            ]
        );
        let udp = ClientInfo::new(
            Peer::ip("127.0.0.1:4000".parse().unwrap()),
            Local::ip("127.0.0.1:53".parse().unwrap()),
            "udp",
            "dns".into(),
        );
        assert_eq!(
            env(&udp),
            [
                "PROTO=UDP",
                "UDPREMOTEIP=127.0.0.1",
                "UDPREMOTEPORT=4000",
                "UDPLOCALIP=127.0.0.1",
                "UDPLOCALPORT=53"
            ]
        );
        let unix = ClientInfo::new(
            Peer::Unix {
                path: None,
                cred: Some(Credentials {
                    pid: 42,
                    uid: 1000,
                    gid: 100,
                }),
            },
            Local::Unix("/run/echo.sock".into()),
            "unix",
            "echo".into(),
        );
        assert_eq!(
            env(&unix),
            [
                "PROTO=UNIX",
                "UNIXREMOTEEUID=1000",
                "UNIXREMOTEEGID=100",
                "UNIXREMOTEPID=42",
                "UNIXLOCALPATH=/run/echo.sock"
            ]
        );
        let mut tls = ClientInfo::new(
            Peer::ip("127.0.0.1:4000".parse().unwrap()),
            Local::ip("127.0.0.1:443".parse().unwrap()),
            "ssl",
            "web".into(),
        );
        assert_eq!(
            env(&tls),
            [
                "PROTO=SSL",
                "TCPREMOTEIP=127.0.0.1",
                "TCPREMOTEPORT=4000",
                "TCPLOCALIP=127.0.0.1",
                "TCPLOCALPORT=443",
                "SSLREMOTEIP=127.0.0.1",
                "SSLREMOTEPORT=4000",
                "SSLLOCALIP=127.0.0.1",
                "SSLLOCALPORT=443",
            ],
            "refused before its handshake: no TLS variables"
        );
        tls.tls = Some(Arc::new(TlsInfo {
            version: "TLSv1.3",
            cipher: "TLS13_AES_128_GCM_SHA256".into(),
            server_name: Some("a.example".into()),
            alpn: Some("h2".into()),
            client_cert: Some(ClientCert {
                subject: "CN=alice".into(),
                issuer: "CN=ca".into(),
                sha256: "ab".repeat(32),
            }),
        }));
        assert_eq!(
            env(&tls)[9..],
            [
                "SSL_PROTOCOL=TLSv1.3".to_owned(),
                "SSL_CIPHER=TLS13_AES_128_GCM_SHA256".to_owned(),
                "SSL_SERVER_NAME=a.example".to_owned(),
                "SSL_ALPN=h2".to_owned(),
                "SSL_CLIENT_VERIFY=SUCCESS".to_owned(),
                "SSL_CLIENT_S_DN=CN=alice".to_owned(),
                "SSL_CLIENT_I_DN=CN=ca".to_owned(),
                format!("SSL_CLIENT_CERT_SHA256={}", "ab".repeat(32)),
            ]
        );
    }

    #[test]
    fn peers_as_the_log_shows_them() {
        let cases = [
            (
                Peer::ip("[::ffff:10.0.0.1]:7".parse().unwrap()),
                "10.0.0.1:7",
            ),
            (Peer::ip("[::1]:7".parse().unwrap()), "[::1]:7"),
            (
                Peer::Unix {
                    path: None,
                    cred: Some(Credentials {
                        pid: 9,
                        uid: 0,
                        gid: 0,
                    }),
                },
                "unix:uid=0,pid=9",
            ),
            (
                Peer::Unix {
                    path: Some("/tmp/c.sock".into()),
                    cred: None,
                },
                "unix:/tmp/c.sock",
            ),
            (
                Peer::Unix {
                    path: None,
                    cred: None,
                },
                "unix:unknown",
            ),
        ];
        for (peer, want) in cases {
            assert_eq!(peer.to_string(), want);
        }
    }
}
