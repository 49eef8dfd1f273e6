//! Binding the listening sockets, before anything else runs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use anyhow::{Context, Result, anyhow, bail};
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::port::{Port, Proto, resolve_service};
use crate::config::{Ipv, Listener};

/// Backlog of each listening socket (Net::Server's `listen` default is
/// SOMAXCONN; the kernel caps it anyway).
const BACKLOG: i32 = 1024;

/// A bound, listening socket (not yet registered with any runtime).
#[derive(Debug)]
pub struct Bound {
    /// The socket, non-blocking.
    pub socket: std::net::TcpListener,
    /// The address it is bound to (the real port when 0 was asked).
    pub addr: SocketAddr,
    /// The spec it came from.
    pub listener: Listener,
}

/// Binds every listener, logging one line per socket in Net::Server's words.
/// Addresses bound twice (by two specs) are bound once. Only TCP is served
/// so far: any other protocol fails before anything is bound.
pub fn bind_all(listeners: &[Listener]) -> Result<Vec<Bound>> {
    if let Some(other) = listeners.iter().find(|l| l.proto != Proto::Tcp) {
        bail!("--port: proto {} is not served yet", other.proto);
    }
    let mut bound: Vec<Bound> = Vec::new();
    for listener in listeners {
        for addr in addresses(listener)? {
            if addr.port() != 0 && bound.iter().any(|b| b.addr == addr) {
                continue;
            }
            let socket = bind(addr, listener.ipv).with_context(|| {
                format!(
                    "cannot bind to TCP port {} on host {}",
                    addr.port(),
                    addr.ip()
                )
            })?;
            let addr = socket.local_addr()?;
            tracing::info!(
                "Binding to TCP port {} on host {} with IPv{}",
                addr.port(),
                addr.ip(),
                if addr.is_ipv4() { 4 } else { 6 }
            );
            bound.push(Bound {
                socket,
                addr,
                listener: listener.clone(),
            });
        }
    }
    Ok(bound)
}

/// The socket addresses a listener binds: `*` is every address (one
/// dual-stack IPv6 socket for `ipv *` where the machine has IPv6), a name is
/// every address it resolves to in the admitted families. A service name is
/// looked up in /etc/services.
pub fn addresses(listener: &Listener) -> Result<Vec<SocketAddr>> {
    let port = port_number(listener)?;
    if listener.host == "*" {
        return Ok(match listener.ipv {
            Ipv::V4 => vec![SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)],
            Ipv::V6 => vec![SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)],
            Ipv::Any if ipv6_available() => {
                vec![SocketAddr::new(Ipv6Addr::UNSPECIFIED.into(), port)]
            }
            Ipv::Any => vec![SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port)],
        });
    }
    if let Ok(ip) = listener.host.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let resolved: Vec<SocketAddr> = (listener.host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve host '{}'", listener.host))?
        .filter(|a| listener.ipv.admits(&a.ip()))
        .collect();
    if resolved.is_empty() {
        bail!(
            "host '{}' has no IPv{} address",
            listener.host,
            listener.ipv
        );
    }
    let mut unique = Vec::new();
    for addr in resolved {
        if !unique.contains(&addr) {
            unique.push(addr);
        }
    }
    Ok(unique)
}

/// The TCP port number of a listener, its service name resolved.
fn port_number(listener: &Listener) -> Result<u16> {
    match &listener.port {
        Port::Number(port) => Ok(*port),
        Port::Service(name) => {
            resolve_service(name, "tcp").ok_or_else(|| anyhow!("unknown service '{name}'"))
        }
        Port::Path(path) => bail!("--port: a unix socket ({path}) is not served yet"),
    }
}

fn ipv6_available() -> bool {
    Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).is_ok()
}

fn bind(addr: SocketAddr, ipv: Ipv) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        // `*` with `ipv *` serves IPv4 too through the IPv6 socket.
        socket.set_only_v6(ipv == Ipv::V6 || !addr.ip().is_unspecified())?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}
