//! Binding the listening sockets, before anything else runs.
//!
//! First every listener is resolved into the socket addresses it binds (a
//! [`Plan`], also what `--check` prints as `bind`), then each is bound.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::config::port::{Port, Proto, resolve_service};
use crate::config::{Ipv, Listener};
use crate::process::inherit::{Handed, Origin};

/// Backlog of each listening socket (Net::Server's `listen` default is
/// SOMAXCONN; the kernel caps it anyway).
const BACKLOG: i32 = 1024;

/// Where the kernel says whether an IPv6 wildcard socket also serves IPv4.
const BINDV6ONLY: &str = "/proc/sys/net/ipv6/bindv6only";

/// One socket to bind.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Plan {
    /// An IP socket.
    Inet {
        /// The address and port (0: the kernel picks).
        address: SocketAddr,
        /// The protocol.
        proto: Proto,
        /// An IPv6 wildcard socket that serves IPv4 too
        /// (`net.ipv6.bindv6only = 0`).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        dual_stack: bool,
    },
    /// A unix socket.
    Unix {
        /// Its path.
        path: String,
        /// `unix` or `unixdgram`.
        proto: Proto,
    },
}

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

/// The sockets `listeners` bind, names and services resolved; a socket two
/// listeners name is bound once.
pub fn plan(listeners: &[Listener]) -> Result<Vec<(Plan, Listener)>> {
    let dual_stack = wildcard_serves_ipv4();
    let mut plans: Vec<(Plan, Listener)> = Vec::new();
    for listener in listeners {
        for plan in plan_one(listener, dual_stack)? {
            let again = matches!(plan, Plan::Inet { address, .. } if address.port() == 0);
            if again || !plans.iter().any(|(p, _)| *p == plan) {
                plans.push((plan, listener.clone()));
            }
        }
    }
    Ok(plans)
}

/// Binds every listener, logging one line per socket in Net::Server's words;
/// a socket handed over (across a HUP, or by systemd) is used instead of
/// binding its address again. Only TCP is served so far: any other protocol
/// fails before anything is bound.
pub fn bind_all(listeners: &[Listener], handed: &mut Handed) -> Result<Vec<Bound>> {
    let plans = plan(listeners)?;
    if let Some((_, other)) = plans.iter().find(|(_, l)| l.proto != Proto::Tcp) {
        bail!("port {other}: proto {} is not served yet", other.proto);
    }
    let mut bound = Vec::new();
    for (plan, listener) in plans {
        let Plan::Inet {
            address,
            dual_stack,
            ..
        } = plan
        else {
            unreachable!("only TCP gets here");
        };
        if let Some(inherited) = handed.take(address, &listener.to_string()) {
            tracing::info!(
                "Binding to TCP port {} on host {} with IPv{} (inherited{})",
                inherited.addr.port(),
                inherited.addr.ip(),
                if inherited.addr.is_ipv4() { 4 } else { 6 },
                match inherited.origin {
                    Origin::Restart => " across a restart",
                    Origin::Systemd => " from systemd",
                }
            );
            bound.push(Bound {
                socket: inherited.socket,
                addr: inherited.addr,
                listener,
            });
            continue;
        }
        let only_v6 = address.is_ipv6() && !dual_stack;
        let socket = bind(address, only_v6).with_context(|| {
            format!(
                "port {listener}: cannot bind to TCP port {} on host {}",
                address.port(),
                address.ip()
            )
        })?;
        let addr = socket.local_addr()?;
        tracing::info!(
            "Binding to TCP port {} on host {} with IPv{}{}",
            addr.port(),
            addr.ip(),
            if addr.is_ipv4() { 4 } else { 6 },
            if dual_stack {
                " (serves IPv4 too: net.ipv6.bindv6only = 0)"
            } else {
                ""
            }
        );
        bound.push(Bound {
            socket,
            addr,
            listener,
        });
    }
    Ok(bound)
}

/// The sockets of one listener: `*` is every address — with `ipv *`, one
/// IPv6 socket that serves IPv4 too where the kernel allows it
/// (`dual_stack`), else one socket per family; a name is every address it
/// resolves to in the admitted families.
fn plan_one(listener: &Listener, dual_stack: bool) -> Result<Vec<Plan>> {
    if listener.proto.is_unix() {
        return Ok(vec![Plan::Unix {
            path: listener.port.to_string(),
            proto: listener.proto,
        }]);
    }
    let proto = listener.proto;
    let inet = |ip: IpAddr, port: u16, dual_stack: bool| Plan::Inet {
        address: SocketAddr::new(ip, port),
        proto,
        dual_stack,
    };
    let port = port_number(listener)?;
    let v4 = Ipv4Addr::UNSPECIFIED.into();
    let v6 = Ipv6Addr::UNSPECIFIED.into();
    if listener.host == "*" {
        return Ok(match listener.ipv {
            Ipv::V4 => vec![inet(v4, port, false)],
            Ipv::V6 => vec![inet(v6, port, false)],
            Ipv::Any if !ipv6_available() => vec![inet(v4, port, false)],
            Ipv::Any if dual_stack => vec![inet(v6, port, true)],
            Ipv::Any => vec![inet(v4, port, false), inet(v6, port, false)],
        });
    }
    if let Ok(ip) = listener.host.parse::<IpAddr>() {
        return Ok(vec![inet(ip, port, false)]);
    }
    let resolved: Vec<SocketAddr> = (listener.host.as_str(), port)
        .to_socket_addrs()
        .with_context(|| format!("port {listener}: cannot resolve host '{}'", listener.host))?
        .filter(|a| listener.ipv.admits(&a.ip()))
        .collect();
    if resolved.is_empty() {
        bail!(
            "port {listener}: host '{}' has no IPv{} address",
            listener.host,
            listener.ipv
        );
    }
    let mut plans = Vec::new();
    for addr in resolved {
        let plan = inet(addr.ip(), port, false);
        if !plans.contains(&plan) {
            plans.push(plan);
        }
    }
    Ok(plans)
}

/// The port number of an IP listener, its service name resolved in
/// /etc/services for its protocol.
fn port_number(listener: &Listener) -> Result<u16> {
    match &listener.port {
        Port::Number(port) => Ok(*port),
        Port::Service { name, .. } => {
            let proto = listener.proto.service_proto().unwrap_or("tcp");
            resolve_service(name, proto)
                .ok_or_else(|| anyhow!("port {listener}: unknown service '{name}'"))
        }
        Port::Path(path) => bail!("port {listener}: '{path}' is a path, not a port"),
    }
}

/// Whether an IPv6 socket bound to `[::]` also accepts IPv4 clients, as it
/// does unless the administrator set `net.ipv6.bindv6only = 1`.
fn wildcard_serves_ipv4() -> bool {
    std::fs::read_to_string(BINDV6ONLY).map_or(true, |text| text.trim() == "0")
}

fn ipv6_available() -> bool {
    Socket::new(Domain::IPV6, Type::STREAM, Some(Protocol::TCP)).is_ok()
}

fn bind(addr: SocketAddr, only_v6: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::port::{PortDefaults, parse_listeners};

    fn plans(spec: &str, dual_stack: bool) -> Vec<String> {
        parse_listeners(spec, &PortDefaults::default())
            .unwrap()
            .iter()
            .flat_map(|l| plan_one(l, dual_stack).unwrap())
            .map(|p| serde_json::to_string(&p).unwrap())
            .collect()
    }

    #[test]
    fn wildcard_and_literal_addresses() {
        if !ipv6_available() {
            return;
        }
        let cases: &[(&str, bool, &[&str])] = &[
            (
                "*:80",
                true,
                &[r#"{"address":"[::]:80","proto":"tcp","dual_stack":true}"#],
            ),
            (
                "*:80",
                false,
                &[
                    r#"{"address":"0.0.0.0:80","proto":"tcp"}"#,
                    r#"{"address":"[::]:80","proto":"tcp"}"#,
                ],
            ),
            (
                "80/IPv4",
                true,
                &[r#"{"address":"0.0.0.0:80","proto":"tcp"}"#],
            ),
            ("80/IPv6", true, &[r#"{"address":"[::]:80","proto":"tcp"}"#]),
            (
                "80/IPv4/IPv6",
                true,
                &[
                    r#"{"address":"0.0.0.0:80","proto":"tcp"}"#,
                    r#"{"address":"[::]:80","proto":"tcp"}"#,
                ],
            ),
            (
                "127.0.0.1:80/udp",
                true,
                &[r#"{"address":"127.0.0.1:80","proto":"udp"}"#],
            ),
            ("[::1]:0", true, &[r#"{"address":"[::1]:0","proto":"tcp"}"#]),
            (
                "127.0.0.1:http",
                true,
                &[r#"{"address":"127.0.0.1:80","proto":"tcp"}"#],
            ),
            (
                "/tmp/a.sock|unix",
                true,
                &[r#"{"path":"/tmp/a.sock","proto":"unix"}"#],
            ),
        ];
        for &(spec, dual_stack, want) in cases {
            assert_eq!(
                plans(spec, dual_stack),
                want,
                "{spec} dual_stack={dual_stack}"
            );
        }
    }

    #[test]
    fn a_socket_two_specs_name_is_planned_once() {
        let listeners: Vec<Listener> = [
            "127.0.0.1:80",
            "127.0.0.1:80/IPv4",
            "127.0.0.1:0",
            "127.0.0.1:0",
        ]
        .iter()
        .flat_map(|s| parse_listeners(s, &PortDefaults::default()).unwrap())
        .collect();
        let got = plan(&listeners).unwrap();
        // Port 0 asks for a fresh port each time.
        assert_eq!(got.len(), 3);
    }

    #[test]
    fn unresolvable_names_are_errors() {
        let listener = parse_listeners("127.0.0.1:no-such-service-here", &PortDefaults::default())
            .unwrap()
            .remove(0);
        assert_eq!(
            plan_one(&listener, true).unwrap_err().to_string(),
            "port 127.0.0.1:no-such-service-here/tcp: unknown service 'no-such-service-here'"
        );
    }
}
