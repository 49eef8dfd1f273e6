//! Binding the listening sockets, before anything else runs, or taking
//! them over (across a HUP, or from systemd: see [`inherit`]).
//!
//! First every listener is resolved into the socket addresses it binds (a
//! [`Plan`], also what `--check` prints as `bind`), then each is bound.

pub mod inherit;

pub mod files;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use socket2::{Domain, Protocol, Socket, Type};

use crate::client::Local;
use crate::config::port::{Port, Proto};
use crate::config::{Ipv, Isolation, Listener, ServiceConfig, SocketSettings};
use crate::transport::ListenSocket;
use inherit::{Handed, Origin};

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
    pub socket: ListenSocket,
    /// The address it is bound to (the real port when 0 was asked).
    pub local: Local,
    /// The spec it came from.
    pub listener: Listener,
    /// The socket file the server removes as it exits: one it bound, or
    /// took over across a HUP (systemd's are systemd's).
    pub file: Option<std::path::PathBuf>,
    /// The later services that share it (a TLS port, by server name), by
    /// their index in the configuration.
    pub shares: Vec<usize>,
}

impl Bound {
    fn new(socket: ListenSocket, local: Local, listener: Listener, ours: bool) -> Self {
        let file = match &local {
            Local::Unix(path) if ours => Some(path.clone()),
            _ => None,
        };
        Self {
            socket,
            local,
            listener,
            file,
            shares: Vec::new(),
        }
    }
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

/// Binds every listener (stream sockets with a listen queue of
/// `backlog`, set up as `settings` say), logging one line per socket in
/// Net::Server's words; a socket handed over (across a HUP, or by
/// systemd) is used instead of binding its address again.
pub fn bind_all(
    listeners: &[Listener],
    settings: &SocketSettings,
    backlog: u32,
    handed: &mut Handed,
) -> Result<Vec<Bound>> {
    let plans = plan(listeners)?;
    let mut bound = Vec::new();
    for (plan, listener) in plans {
        if let Some(inherited) = handed.take(&plan, &listener.to_string()) {
            let how = match inherited.origin {
                Origin::Restart => " (inherited across a restart)",
                Origin::Systemd => " (inherited from systemd)",
            };
            log_binding(
                &inherited.local,
                shown_proto(&listener, &inherited.socket),
                how,
            );
            let ours = inherited.origin == Origin::Restart;
            bound.push(Bound::new(
                inherited.socket,
                inherited.local,
                listener,
                ours,
            ));
            continue;
        }
        let (socket, how) = match &plan {
            Plan::Inet {
                address,
                proto,
                dual_stack,
            } => {
                let only_v6 = address.is_ipv6() && !dual_stack;
                let datagram = *proto == Proto::Udp;
                let socket = bind_inet(*address, only_v6, datagram, backlog, settings)
                    .with_context(|| {
                        format!(
                            "port {listener}: cannot bind to {} port {} on host {}",
                            if datagram { "UDP" } else { "TCP" },
                            address.port(),
                            address.ip()
                        )
                    })?;
                let how = if *dual_stack {
                    " (serves IPv4 too: net.ipv6.bindv6only = 0)"
                } else {
                    ""
                };
                (socket, how)
            }
            Plan::Unix { path, proto } => {
                let socket = bind_unix(Path::new(path), *proto, backlog, settings)
                    .with_context(|| format!("port {listener}: cannot bind"))?;
                (socket, "")
            }
        };
        let local = socket.local()?;
        log_binding(&local, shown_proto(&listener, &socket), how);
        bound.push(Bound::new(socket, local, listener, true));
    }
    Ok(bound)
}

/// The listener of `earlier` that `listener` shares — a TLS port several
/// services serve, picked by server name: both `ssl`, binding the same
/// sockets.
pub fn shared_port<'a>(earlier: &'a [Listener], listener: &Listener) -> Option<&'a Listener> {
    if listener.proto != Proto::Ssl {
        return None;
    }
    let sockets = |l: &Listener| -> Option<Vec<Plan>> {
        let mut plans: Vec<Plan> = plan(std::slice::from_ref(l))
            .ok()?
            .into_iter()
            .map(|(p, _)| p)
            .collect();
        plans.sort_by_key(plan_address);
        // Port 0 asks for a fresh port each time: never shared.
        let fresh = plans
            .iter()
            .any(|p| matches!(p, Plan::Inet { address, .. } if address.port() == 0));
        (!fresh && !plans.is_empty()).then_some(plans)
    };
    let mine = sockets(listener)?;
    earlier
        .iter()
        .filter(|l| l.proto == Proto::Ssl)
        .find(|l| sockets(l).as_ref() == Some(&mine))
}

/// The protocol a bound socket serves, as its log line names it: `ssl`
/// for a TLS port (a TCP socket).
fn shown_proto(listener: &Listener, socket: &ListenSocket) -> &'static str {
    match listener.proto {
        Proto::Ssl => "ssl",
        _ => socket.proto(),
    }
}

/// Logs a bound socket in Net::Server's words, `how` said after them.
pub fn log_binding(local: &Local, proto: &str, how: &str) {
    let proto = proto.to_ascii_uppercase();
    match local {
        Local::Ip(addr) => tracing::info!(
            "Binding to {proto} port {} on host {} with IPv{}{how}",
            addr.port(),
            addr.ip(),
            if addr.is_ipv4() { 4 } else { 6 },
        ),
        Local::Unix(path) => {
            tracing::info!("Binding to {proto} socket file \"{}\"{how}", path.display())
        }
    }
}

/// Refuses two services whose sockets would overlap — the same port
/// given twice, the same socket spelled two ways (`127.0.0.1:20999` and
/// `localhost:20999/IPv4`), or an address and a wildcard on one port —
/// before anything is bound (and so by `--check` too): the error names the
/// second service's definition, both listeners and, spelled differently,
/// the address. Port 0 asks for a fresh port and never overlaps; a
/// listener whose host does not resolve is reported when it is bound.
pub fn check_services(services: &[ServiceConfig]) -> Result<()> {
    let planned: Vec<Vec<(Plan, Listener)>> = services
        .iter()
        .map(|s| plan(&s.listeners).unwrap_or_default())
        .collect();
    for (j, later) in services.iter().enumerate() {
        for (i, earlier) in services[..j].iter().enumerate() {
            for (b, listener) in &planned[j] {
                let Some((_, theirs)) = planned[i].iter().find(|(a, _)| overlap(a, b)) else {
                    continue;
                };
                if shared_port(std::slice::from_ref(theirs), listener).is_some() {
                    check_apart(earlier, later, listener)?;
                    check_sharing(earlier, later, listener)?;
                    continue;
                }
                if listener == theirs {
                    bail!(
                        "{}: service '{}': port {listener} is already served by service '{}'",
                        later.source,
                        later.name,
                        earlier.name
                    );
                }
                bail!(
                    "{}: service '{}': port {listener} binds {}, as port {theirs} of service '{}' does",
                    later.source,
                    later.name,
                    plan_address(b),
                    earlier.name
                );
            }
        }
    }
    Ok(())
}

/// A service with processes of its own (`isolation process`) shares no
/// port: the connections of a TLS port several services share are
/// accepted first and given to a service by the server name they then
/// send, in the process that accepted them — a process of one of them.
/// The error names where that service's `isolation` was given.
fn check_apart(earlier: &ServiceConfig, later: &ServiceConfig, port: &Listener) -> Result<()> {
    let (apart, other) = match (earlier.isolation, later.isolation) {
        (_, Isolation::Process) => (later, earlier),
        (Isolation::Process, _) => (earlier, later),
        _ => return Ok(()),
    };
    bail!(
        "{}: service '{}' has processes of its own, so it cannot share port {port} with service '{}' \
         (a shared TLS port's clients are picked by server name in the process that accepted them): \
         give it a port of its own, or isolation shared",
        apart.origin("isolation", "process"),
        apart.name,
        other.name
    )
}

/// Two services may share a TLS port when the first's PROXY settings suit
/// the second (the first reads the header, before the server name picks
/// a service) and the server name can tell them apart: at most one of the
/// port's services takes the names no one lists.
fn check_sharing(earlier: &ServiceConfig, later: &ServiceConfig, port: &Listener) -> Result<()> {
    let at = |s: &ServiceConfig| format!("{}: service '{}': port {port}", s.source, s.name);
    if later.proxy_from != earlier.proxy_from {
        bail!(
            "{}: shared with service '{}', whose proxy_from differs (the services of one TLS port share proxy_from)",
            at(later),
            earlier.name
        );
    }
    let default = |s: &ServiceConfig| s.tls.sni_default || s.tls.server_names.is_empty();
    if default(earlier) && default(later) {
        bail!(
            "{}: shared with service '{}', and both take clients whose server name neither lists (give one of them server_name, and sni_default to at most one)",
            at(later),
            earlier.name
        );
    }
    Ok(())
}

/// Whether two planned sockets cannot both be bound.
fn overlap(a: &Plan, b: &Plan) -> bool {
    match (a, b) {
        (Plan::Unix { path: x, .. }, Plan::Unix { path: y, .. }) => x == y,
        (
            Plan::Inet {
                address: x,
                proto: px,
                dual_stack: dx,
            },
            Plan::Inet {
                address: y,
                proto: py,
                dual_stack: dy,
            },
        ) => {
            let datagram = |p: &Proto| *p == Proto::Udp;
            let covers = |w: &SocketAddr, dual: bool, other: &SocketAddr| {
                w.ip().is_unspecified() && (dual || w.is_ipv4() == other.is_ipv4())
            };
            x.port() != 0
                && x.port() == y.port()
                && datagram(px) == datagram(py)
                && (x.ip() == y.ip() || covers(x, *dx, y) || covers(y, *dy, x))
        }
        _ => false,
    }
}

/// A planned socket's address, as an error shows it.
fn plan_address(plan: &Plan) -> String {
    match plan {
        Plan::Inet { address, .. } => address.to_string(),
        Plan::Unix { path, .. } => path.clone(),
    }
}

/// The listener a socket handed over without one (by systemd) stands for.
pub fn listener_of(socket: &ListenSocket, local: &Local) -> Listener {
    let datagram = socket.is_datagram();
    match local {
        Local::Ip(addr) => Listener {
            host: addr.ip().to_string(),
            port: Port::Number(addr.port()),
            proto: if datagram { Proto::Udp } else { Proto::Tcp },
            ipv: Ipv::Any,
        },
        Local::Unix(path) => Listener {
            host: "*".to_owned(),
            port: Port::Path(path.display().to_string()),
            proto: if datagram {
                Proto::UnixDgram
            } else {
                Proto::Unix
            },
            ipv: Ipv::Any,
        },
    }
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

/// The port number of an IP listener (a service name was looked up when
/// the configuration was resolved).
fn port_number(listener: &Listener) -> Result<u16> {
    match &listener.port {
        Port::Number(port) => Ok(*port),
        Port::Service {
            number: Some(port), ..
        } => Ok(*port),
        Port::Service { name, number: None } => {
            Err(anyhow!("port {listener}: unknown service '{name}'"))
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

/// Binds a TCP socket and listens, or a UDP socket (`datagram`), as
/// Net::Server does: `SO_REUSEADDR`, and `SO_BROADCAST` on UDP when
/// `udp_broadcast` asks.
fn bind_inet(
    addr: SocketAddr,
    only_v6: bool,
    datagram: bool,
    backlog: u32,
    settings: &SocketSettings,
) -> std::io::Result<ListenSocket> {
    let (kind, protocol) = if datagram {
        (Type::DGRAM, Protocol::UDP)
    } else {
        (Type::STREAM, Protocol::TCP)
    };
    let socket = Socket::new(Domain::for_address(addr), kind, Some(protocol))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(only_v6)?;
    }
    if datagram && settings.udp_broadcast {
        socket.set_broadcast(true)?;
    }
    socket.bind(&addr.into())?;
    if !datagram {
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    }
    ListenSocket::adopt(socket.into()).map_err(std::io::Error::other)
}

/// Binds a unix socket file at `path` — a stale socket there is removed
/// first (see [`files::clear_stale`]) — then gives it the mode and group
/// asked for.
fn bind_unix(
    path: &Path,
    proto: Proto,
    backlog: u32,
    settings: &SocketSettings,
) -> Result<ListenSocket> {
    files::clear_stale(path)?;
    let datagram = proto == Proto::UnixDgram;
    let kind = if datagram { Type::DGRAM } else { Type::STREAM };
    let socket = Socket::new(Domain::UNIX, kind, None)?;
    let addr = socket2::SockAddr::unix(path)?;
    socket
        .bind(&addr)
        .with_context(|| format!("cannot create socket file {}", path.display()))?;
    if !datagram {
        socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    }
    files::set_owner_and_mode(path, settings)?;
    ListenSocket::adopt(socket.into()).map_err(|why| anyhow!("{}: {why}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::port::{PortDefaults, parse_listeners};

    fn plans(spec: &str, dual_stack: bool) -> Vec<String> {
        parse_listeners(spec, &PortDefaults::default())
            .unwrap()
            .into_iter()
            .map(|mut l| {
                // As the configuration's resolution does.
                if let Port::Service { name, number } = &mut l.port {
                    *number = crate::config::port::resolve_service(name, "tcp");
                }
                l
            })
            .flat_map(|l| plan_one(&l, dual_stack).unwrap())
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
    fn overlapping_sockets_of_two_services_are_found() {
        let inet = |a: &str, proto, dual_stack| Plan::Inet {
            address: a.parse().unwrap(),
            proto,
            dual_stack,
        };
        let unix = |p: &str| Plan::Unix {
            path: p.to_owned(),
            proto: Proto::Unix,
        };
        let tcp = Proto::Tcp;
        let cases = [
            (
                inet("127.0.0.1:9", tcp, false),
                inet("127.0.0.1:9", tcp, false),
                true,
            ),
            (
                inet("127.0.0.1:9", tcp, false),
                inet("127.0.0.1:9", Proto::Ssl, false),
                true,
            ),
            (
                inet("127.0.0.1:9", tcp, false),
                inet("127.0.0.1:9", Proto::Udp, false),
                false,
            ),
            (
                inet("127.0.0.1:9", tcp, false),
                inet("127.0.0.2:9", tcp, false),
                false,
            ),
            (
                inet("127.0.0.1:9", tcp, false),
                inet("127.0.0.1:8", tcp, false),
                false,
            ),
            (
                inet("0.0.0.0:9", tcp, false),
                inet("127.0.0.1:9", tcp, false),
                true,
            ),
            (
                inet("[::]:9", tcp, true),
                inet("127.0.0.1:9", tcp, false),
                true,
            ),
            (
                inet("[::]:9", tcp, false),
                inet("127.0.0.1:9", tcp, false),
                false,
            ),
            (
                inet("[::1]:9", tcp, false),
                inet("[::]:9", tcp, false),
                true,
            ),
            (
                inet("127.0.0.1:0", tcp, false),
                inet("127.0.0.1:0", tcp, false),
                false,
            ),
            (unix("/tmp/a"), unix("/tmp/a"), true),
            (unix("/tmp/a"), unix("/tmp/b"), false),
        ];
        for (a, b, want) in cases {
            assert_eq!(overlap(&a, &b), want, "{a:?} {b:?}");
            assert_eq!(overlap(&b, &a), want, "{b:?} {a:?}");
        }
    }

    #[test]
    fn an_unresolved_service_name_is_an_error() {
        let listener = parse_listeners("127.0.0.1:no-such-service-here", &PortDefaults::default())
            .unwrap()
            .remove(0);
        assert_eq!(
            plan_one(&listener, true).unwrap_err().to_string(),
            "port 127.0.0.1:no-such-service-here/tcp: unknown service 'no-such-service-here'"
        );
    }
}
