//! What a guest may use beyond its client, and nothing more: the service's
//! granted directories (pre-opened, read-only unless granted `rw`) and
//! networks (outbound TCP connections and UDP datagrams to the granted
//! CIDRs only; never a listening socket, never name lookups).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use anyhow::{Result, anyhow};
use ipnet::IpNet;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::config::Grants;

/// Adds `grants` to a guest's WASI context. Without grants the guest has no
/// directory and no socket.
pub fn apply(builder: &mut WasiCtxBuilder, grants: &Grants) -> Result<()> {
    for dir in &grants.dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        builder
            .preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| anyhow!("grant_dir {dir}: cannot open: {e}"))?;
    }
    let networks = !grants.connect.is_empty();
    builder
        .allow_tcp(networks)
        .allow_udp(networks)
        .allow_ip_name_lookup(false);
    if networks {
        let nets: Arc<[IpNet]> = grants.connect.clone().into();
        builder.socket_addr_check(move |addr, use_| {
            let allowed = permits(&nets, addr, use_);
            Box::pin(async move { allowed }) as Pin<Box<dyn Future<Output = bool> + Send + Sync>>
        });
    }
    Ok(())
}

/// Whether a guest granted `nets` may use `addr` for `use_`: connecting or
/// sending to an address in a granted network, and the implicit bind to a
/// wildcard address and port 0 that connecting and sending make. Listening,
/// accepting and explicit binds are refused.
pub fn permits(nets: &[IpNet], addr: SocketAddr, use_: SocketAddrUse) -> bool {
    let granted = || {
        let ip = match addr.ip() {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(addr.ip(), std::net::IpAddr::V4),
            ip => ip,
        };
        nets.iter()
            .any(|net| net.contains(&ip) || net.contains(&addr.ip()))
    };
    match use_ {
        SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend | SocketAddrUse::UdpReceive => granted(),
        SocketAddrUse::TcpBind | SocketAddrUse::UdpBind => {
            addr.ip().is_unspecified() && addr.port() == 0
        }
        SocketAddrUse::TcpListen | SocketAddrUse::TcpAccept => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_granted_networks_and_implicit_binds() {
        let nets: Vec<IpNet> = vec!["10.1.0.0/16".parse().unwrap(), "::1/128".parse().unwrap()];
        let cases: &[(&str, SocketAddrUse, bool)] = &[
            ("10.1.2.3:80", SocketAddrUse::TcpConnect, true),
            ("10.2.0.1:80", SocketAddrUse::TcpConnect, false),
            ("[::ffff:10.1.2.3]:80", SocketAddrUse::TcpConnect, true),
            ("[::1]:53", SocketAddrUse::UdpSend, true),
            ("127.0.0.1:53", SocketAddrUse::UdpSend, false),
            ("10.1.0.9:53", SocketAddrUse::UdpReceive, true),
            ("0.0.0.0:0", SocketAddrUse::TcpBind, true),
            ("[::]:0", SocketAddrUse::UdpBind, true),
            ("0.0.0.0:8080", SocketAddrUse::TcpBind, false),
            ("10.1.2.3:0", SocketAddrUse::TcpBind, false),
            ("0.0.0.0:0", SocketAddrUse::TcpListen, false),
            ("10.1.2.3:5000", SocketAddrUse::TcpAccept, false),
        ];
        for &(addr, use_, want) in cases {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(permits(&nets, addr, use_), want, "{addr} {use_:?}");
        }
    }
}
