//! One hosted service: its handler, and the host's policy around it — its
//! listening sockets, admission gate, limits and timeouts, instance mode
//! and `dequeue` — in one [`Service`]; and the admission prefix every
//! connection passes before any guest sees it ([`Service::admit`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::access::Verdict;
use crate::client::{ClientInfo, Local, Peer};
use crate::config::{Config, InstanceMode, ServiceConfig};
use crate::gate::{Gate, Place};
use crate::listen::{self, Bound, inherit::Handed};
use crate::log::tag::{ConnTag, tagged};
use crate::proxy::Origin;
use crate::transport::datagram::{RecvSettings, ReplyCap};
use crate::transport::{Accepted, Incoming, Stream};
use crate::wasm::{GuestKind, Handler, Instance};

/// One service ready to serve.
pub struct Service {
    /// Its name, in the log and for its guests.
    pub name: Arc<str>,
    /// The compiled handler.
    pub handler: Handler,
    /// Its listening sockets (taken by the processes that accept on them).
    pub sockets: Vec<Bound>,
    /// What a connection passes before the guest sees it.
    pub gate: Gate,
    /// Connections served at once (per worker process).
    pub max_instances: u32,
    /// How long a connection may move no byte.
    pub idle_timeout: Duration,
    /// How long a connection may last in all, when limited.
    pub connection_timeout: Option<Duration>,
    /// How often its `dequeue` runs, and at most how many at once.
    pub dequeue: Option<(Duration, u32)>,
    /// How its datagram sockets are read (`udp_recv_len`, `udp_recv_flags`).
    pub recv: RecvSettings,
    /// The amplification cap on its UDP replies (`udp_amplification`).
    pub reply_cap: Arc<ReplyCap>,
    /// `instance per-worker`: the instance this process's connections
    /// share, in turn (made at the first connection after the fork).
    worker_instance: Option<tokio::sync::Mutex<Option<Instance>>>,
}

impl Service {
    /// The service `config` describes, served by `handler` on `sockets`.
    pub fn new(config: &ServiceConfig, handler: Handler, sockets: Vec<Bound>) -> Result<Self> {
        let per_worker = config.instance == InstanceMode::PerWorker;
        if per_worker && handler.kind() == GuestKind::Command {
            tracing::warn!(
                "service {}: a WASI command runs once per connection; `instance per-worker` does not apply",
                config.name
            );
        }
        let shared = per_worker && handler.kind() == GuestKind::Handler;
        let name = handler.service_name().clone();
        Ok(Self {
            reply_cap: ReplyCap::new(name.clone(), config.sockets.udp_amplification),
            name,
            recv: RecvSettings {
                len: config.sockets.udp_recv_len,
                flags: nix::sys::socket::MsgFlags::from_bits_truncate(
                    config.sockets.udp_recv_flags,
                ),
            },
            gate: Gate::new(config)?,
            worker_instance: shared.then(|| tokio::sync::Mutex::new(None)),
            handler,
            sockets,
            max_instances: config.max_instances,
            idle_timeout: config.idle_timeout,
            connection_timeout: config.connection_timeout,
            dequeue: config
                .check_for_dequeue
                .map(|every| (every, config.max_dequeue)),
        })
    }

    /// With `instance per-worker`, the instance this process's connections
    /// share, one at a time.
    pub fn worker_instance(&self) -> Option<&tokio::sync::Mutex<Option<Instance>>> {
        self.worker_instance.as_ref()
    }

    /// Ends this process's shared instance, if it has one: its
    /// `child-finish-hook` runs.
    pub async fn retire(&self) {
        let Some(slot) = &self.worker_instance else {
            return;
        };
        if let Some(mut instance) = slot.lock().await.take()
            && let Err(err) = instance.child_finish_hook().await
        {
            tracing::error!("guest trapped in child-finish-hook: {}", err.root_cause());
        }
    }

    /// The admission prefix of a client, for any kind of guest: its two
    /// ends, the PROXY header from a trusted proxy (on a stream), a place
    /// under the per-address limits, and the access rules' verdict (after
    /// a reverse lookup when asked). `None` when the client ends here: it
    /// left, the header was bad (logged), a limit refused it (logged at
    /// `debug`), or it is a datagram the rules refuse (dropped before any
    /// instance is made: its sender may be forged, and gets no reply).
    pub async fn admit(&self, incoming: Incoming) -> Option<Admitted> {
        let (stream, peer, local) = match incoming {
            Incoming::Stream(accepted) => self.admit_stream(accepted).await?,
            Incoming::Datagram(received) => {
                let Some(local) = received.local.clone() else {
                    tracing::debug!("dropped a datagram: its socket's address is unknown");
                    return None;
                };
                if received.truncated {
                    tracing::debug!(
                        service = %self.name,
                        "a datagram from {} was longer than udp_recv_len {}: cut to it",
                        received.peer,
                        self.recv.len
                    );
                }
                if !received.answerable() {
                    tracing::debug!(
                        service = %self.name,
                        "a datagram from {}, a sender with no address: no reply can reach it",
                        received.peer
                    );
                }
                let peer = received.peer.clone();
                let cap = (received.proto() == "udp").then(|| self.reply_cap.clone());
                (Stream::Datagram(Box::new(received), cap), peer, local)
            }
            Incoming::Pipe(stream) => {
                let stream = Stream::Wrapped {
                    stream,
                    proto: "pipe",
                };
                let nobody = Peer::Unix {
                    path: None,
                    cred: None,
                };
                (stream, nobody, Local::Unix(std::path::PathBuf::new()))
            }
        };
        let datagram = matches!(stream, Stream::Datagram(..));
        let proto = stream.proto();
        let mut client = ClientInfo::new(peer, local, proto, self.name.clone());
        let tag = ConnTag::new(client.service.clone(), client.peer.clone());
        tagged(tag.clone(), async move {
            let place = match self.gate.admit(&client.peer) {
                Ok(place) => place,
                Err(why) => {
                    tracing::debug!("refused: {why}");
                    return None;
                }
            };
            let started = Instant::now();
            let verdict = self.gate.judge(&mut client).await;
            if datagram && let Verdict::Denied(rule) = &verdict {
                tracing::debug!("dropped a datagram: denied by {rule}");
                return None;
            }
            Some(Admitted {
                stream,
                client,
                verdict,
                tag,
                place,
                started,
            })
        })
        .await
    }

    /// A stream's ends and its PROXY header.
    async fn admit_stream(&self, accepted: Accepted) -> Option<(Stream, Peer, Local)> {
        let Ok((mut peer, mut local)) = accepted.ends() else {
            // The client left between accept and here.
            return None;
        };
        let stream = accepted.stream;
        if self.gate.expects_proxy_header(&peer) {
            match stream.read_proxy_header().await {
                Ok(Origin::Relayed { client, server }) => {
                    (peer, local) = (Peer::ip(client), Local::ip(server));
                }
                Ok(Origin::Own) => {}
                Err(why) => {
                    tracing::warn!(
                        service = %self.name,
                        "closed the connection from proxy {peer}: {why}"
                    );
                    return None;
                }
            }
        }
        Some((Stream::Raw(stream), peer, local))
    }
}

/// A client that passed the admission prefix.
pub struct Admitted {
    /// The client's stream, or its datagram.
    pub stream: Stream,
    /// What the host knows of the client.
    pub client: ClientInfo,
    /// The access rules' verdict, which the hooks act on.
    pub verdict: Verdict,
    /// The tag of the connection's log lines.
    pub tag: Arc<ConnTag>,
    /// Its place under the per-address limits, held until it ends.
    pub place: Option<Place>,
    /// When it was admitted.
    pub started: Instant,
}

/// Makes every service of `config` with its handler (`handlers` are in the
/// order of `config.services`) and binds (or takes over) its sockets.
/// Under systemd socket activation only ports given are bound; the sockets
/// systemd handed over that no listener names go to the only service (with
/// several, they are closed with a warning).
pub fn bind_all(
    config: &Config,
    handlers: Vec<Handler>,
    handed: &mut Handed,
) -> Result<Vec<Service>> {
    let mut services = Vec::new();
    // Under socket activation, ports nobody configured are systemd's to give.
    let activated = handed.has_systemd_sockets();
    for (service, handler) in config.services.iter().zip(handlers) {
        let sockets = if activated && !service.port_given {
            Vec::new()
        } else {
            listen::bind_all(
                &service.listeners,
                &service.sockets,
                config.listen_backlog,
                handed,
            )?
        };
        services.push(Service::new(service, handler, sockets)?);
    }
    let rest = handed.take_systemd_rest();
    match services.as_mut_slice() {
        [only] => {
            for inherited in rest {
                let proto = inherited.socket.proto();
                listen::log_binding(&inherited.local, proto, " (inherited from systemd)");
                let listener = listen::listener_of(&inherited.socket, &inherited.local);
                only.sockets.push(Bound {
                    listener,
                    socket: inherited.socket,
                    local: inherited.local,
                    file: None,
                });
            }
        }
        _ => {
            for inherited in rest {
                tracing::warn!(
                    "closing the socket systemd handed over for {}: no service lists it",
                    inherited.local
                );
            }
        }
    }
    for service in &services {
        let handler = &service.handler;
        let addrs: Vec<String> = service
            .sockets
            .iter()
            .map(|b| b.local.to_string())
            .collect();
        tracing::info!(
            "Serving {} ({}) as service {} on {}",
            handler.source(),
            handler.kind(),
            service.name,
            addrs.join(", ")
        );
    }
    Ok(services)
}
