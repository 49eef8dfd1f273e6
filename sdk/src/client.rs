//! What the host knows about the client being served.

use std::net::{IpAddr, SocketAddr};

use crate::bindings::netserver::handler::client as wit;

/// The client connection, as Net::Server's `get_client_info` finds it.
///
/// Addresses are kept as the host gave them (`127.0.0.1`, `::1`; an
/// IPv4-mapped IPv6 address is given in its IPv4 form), so printing one
/// gives back exactly what the host logs. [`peer_ip`](Self::peer_ip) and
/// friends parse them when a typed address is wanted; they return `None`
/// only for an address that is not an IP address, which a TCP host never
/// sends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct ClientInfo {
    /// The client's address (`peeraddr`).
    pub peer_addr: String,
    /// The client's port (`peerport`).
    pub peer_port: u16,
    /// The address the client connected to (`sockaddr`).
    pub local_addr: String,
    /// The port the client connected to (`sockport`).
    pub local_port: u16,
    /// The protocol of the socket, lower case: `tcp`, `unix`, `udp`,
    /// `unixdgram` or `pipe` (see [`is_datagram`](Self::is_datagram)).
    pub proto: String,
    /// The client's host name from a reverse lookup (`peerhost`): `None`
    /// unless the host's `reverse_lookups` is on and the lookup succeeded.
    pub peer_host: Option<String>,
    /// The name of the service (the hosted handler) serving this client.
    pub service: String,
}

impl ClientInfo {
    /// Whether the request is one datagram (`udp`, `unixdgram`): stdin
    /// reads it, then end of file, and each flush of stdout sends one reply
    /// datagram.
    pub fn is_datagram(&self) -> bool {
        matches!(self.proto.as_str(), "udp" | "unixdgram")
    }

    /// The client's address, parsed.
    pub fn peer_ip(&self) -> Option<IpAddr> {
        self.peer_addr.parse().ok()
    }

    /// The client's address and port.
    pub fn peer_socket_addr(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.peer_ip()?, self.peer_port))
    }

    /// The address the client connected to, parsed.
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.local_addr.parse().ok()
    }

    /// The address and port the client connected to.
    pub fn local_socket_addr(&self) -> Option<SocketAddr> {
        Some(SocketAddr::new(self.local_ip()?, self.local_port))
    }
}

impl From<wit::ClientInfo> for ClientInfo {
    fn from(info: wit::ClientInfo) -> Self {
        Self {
            peer_addr: info.peer_addr,
            peer_port: info.peer_port,
            local_addr: info.local_addr,
            local_port: info.local_port,
            proto: info.proto,
            peer_host: info.peer_host,
            service: info.service,
        }
    }
}

/// The client being served, or `None` outside the connection hooks (in
/// [`child_init_hook`](crate::Handler::child_init_hook) and
/// [`child_finish_hook`](crate::Handler::child_finish_hook)).
///
/// Asks the host on every call: keep the result rather than calling it in a
/// loop.
pub fn client() -> Option<ClientInfo> {
    wit::info().map(ClientInfo::from)
}

/// Whether the client being served is a datagram (`udp`, `unixdgram`):
/// stdin holds the one datagram, and each flush of stdout is one reply
/// datagram. `false` outside the connection hooks.
///
/// What [`ClientInfo::is_datagram`] says, without asking the host for the
/// whole [`client`] (one host call that returns a `bool`, against a record
/// of four strings copied into the guest's memory): the test to make on
/// every request of a handler that serves streams and datagrams alike.
/// Needs a host that serves `netserver:handler@0.1.5` or later.
pub fn is_datagram() -> bool {
    wit::is_datagram()
}

/// Who a client on a unix socket is, as the kernel says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct Credentials {
    /// The client's process id.
    pub pid: i32,
    /// Its user id.
    pub uid: u32,
    /// Its group id.
    pub gid: u32,
}

/// The credentials of the client being served, on a unix socket (stream
/// or datagram): `None` for an IP client, outside the connection hooks, or
/// when the kernel gave none. Needs a host that serves
/// `netserver:handler@0.1.1`.
pub fn credentials() -> Option<Credentials> {
    wit::credentials().map(|c| Credentials {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(peer: &str, local: &str) -> ClientInfo {
        ClientInfo::from(wit::ClientInfo {
            peer_addr: peer.into(),
            peer_port: 40000,
            local_addr: local.into(),
            local_port: 20203,
            proto: "tcp".into(),
            peer_host: None,
            service: "echo".into(),
        })
    }

    #[test]
    fn addresses_parse() {
        let v4 = info("127.0.0.1", "10.0.0.1");
        assert_eq!(
            v4.peer_socket_addr(),
            Some("127.0.0.1:40000".parse().unwrap())
        );
        assert_eq!(
            v4.local_socket_addr(),
            Some("10.0.0.1:20203".parse().unwrap())
        );
        let v6 = info("::1", "fe80::1");
        assert_eq!(v6.peer_socket_addr(), Some("[::1]:40000".parse().unwrap()));
        assert_eq!(v6.local_ip(), Some("fe80::1".parse().unwrap()));
    }

    #[test]
    fn non_ip_address_is_kept_but_not_parsed() {
        let unix = info("/run/app.sock", "/run/app.sock");
        assert_eq!(unix.peer_addr, "/run/app.sock");
        assert_eq!(unix.peer_ip(), None);
        assert_eq!(unix.local_socket_addr(), None);
    }
}

/// What the TLS handshake of a client on an `ssl` port settled (the host
/// terminates TLS: stdin and stdout carry plaintext).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tls {
    /// The version: `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The cipher suite, e.g. `TLS13_AES_128_GCM_SHA256`.
    pub cipher: String,
    /// The server name the client asked for (SNI), lower case.
    pub server_name: Option<String>,
    /// The application protocol agreed by ALPN.
    pub alpn: Option<String>,
    /// The client certificate, when one was presented and verified.
    pub client_certificate: Option<ClientCertificate>,
}

/// A verified client certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// Its subject's distinguished name (`CN=alice, O=Example`).
    pub subject: String,
    /// Its issuer's distinguished name.
    pub issuer: String,
    /// The SHA-256 of its DER encoding, 64 lower-case hex digits.
    pub sha256: String,
}

/// The TLS of the client being served: `None` for a client not on an
/// `ssl` port, outside the connection hooks, or for a client the access
/// rules refused (closed before its handshake). Needs a host that serves
/// `netserver:handler@0.1.2`.
pub fn tls() -> Option<Tls> {
    wit::tls().map(|t| Tls {
        version: t.version,
        cipher: t.cipher,
        server_name: t.server_name,
        alpn: t.alpn,
        client_certificate: t.client_certificate.map(|c| ClientCertificate {
            subject: c.subject,
            issuer: c.issuer,
            sha256: c.sha256,
        }),
    })
}
