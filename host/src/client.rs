//! What the host knows about a client: Net::Server's `get_client_info`.

use std::net::SocketAddr;
use std::sync::Arc;

/// One client connection's addresses and the service serving it.
#[derive(Clone, Debug)]
pub struct ClientInfo {
    /// The client's address (`peeraddr`, `peerport`); an IPv4-mapped IPv6
    /// address is given in its IPv4 form.
    pub peer: SocketAddr,
    /// The address the client connected to (`sockaddr`, `sockport`).
    pub local: SocketAddr,
    /// The protocol of the listening socket, lower case.
    pub proto: &'static str,
    /// The client's host name from a reverse lookup, when enabled.
    pub peer_host: Option<String>,
    /// The service serving the client.
    pub service: Arc<str>,
}

impl ClientInfo {
    /// The information of a TCP client accepted on `local` from `peer`.
    pub fn tcp(peer: SocketAddr, local: SocketAddr, service: Arc<str>) -> Self {
        Self {
            peer: canonical(peer),
            local: canonical(local),
            proto: "tcp",
            peer_host: None,
            service,
        }
    }

    /// The variables a WASI command handler finds in its environment,
    /// named as in ucspi-tcp (`TCPREMOTEIP`, …) plus `PROTO`.
    pub fn environment(&self) -> Vec<(&'static str, String)> {
        let mut env = vec![
            ("PROTO", self.proto.to_ascii_uppercase()),
            ("TCPREMOTEIP", self.peer.ip().to_string()),
            ("TCPREMOTEPORT", self.peer.port().to_string()),
            ("TCPLOCALIP", self.local.ip().to_string()),
            ("TCPLOCALPORT", self.local.port().to_string()),
        ];
        if let Some(host) = &self.peer_host {
            env.push(("TCPREMOTEHOST", host.clone()));
        }
        env
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
        }
    }

    #[test]
    fn environment_uses_ucspi_names() {
        let info = ClientInfo::tcp(
            "[::ffff:127.0.0.1]:4000".parse().unwrap(),
            "127.0.0.1:20203".parse().unwrap(),
            "echo".into(),
        );
        let env: Vec<String> = info
            .environment()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        assert_eq!(
            env,
            [
                "PROTO=TCP",
                "TCPREMOTEIP=127.0.0.1",
                "TCPREMOTEPORT=4000",
                "TCPLOCALIP=127.0.0.1",
                "TCPLOCALPORT=20203"
            ]
        );
    }
}
