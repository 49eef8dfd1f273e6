//! One hosted service: its handler, and the host's policy around it — its
//! listening sockets, admission gate, limits and timeouts, instance mode
//! and `dequeue` — in one [`Service`]; and the admission prefix every
//! connection passes before any guest sees it ([`Service::admit`]).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::access::Verdict;
use crate::board::stats::Refusal;
use crate::board::{self, Closing};
use crate::client::{ClientInfo, Local, Peer};
use crate::config::port::Proto;
use crate::config::tls::{NamePattern, pick};
use crate::config::{Config, InstanceMode, ServiceConfig};
use crate::gate::{Gate, Place};
use crate::listen::{self, Bound, inherit::Handed};
use crate::log::every::Every;
use crate::log::tag::{ConnTag, tagged};
use crate::proxy::Origin;
use crate::tls::Tls;
use crate::transport::datagram::{RecvSettings, ReplyCap};
use crate::transport::tls::{Greeted, Hello, read_hello};
use crate::transport::{Accepted, Incoming, RawStream, Stream};
use crate::wasm::cache::ModuleCache;
use crate::wasm::log_rate::{Lines, LogRate};
use crate::wasm::mux::Event;
use crate::wasm::stdio::GuestIo;
use crate::wasm::{GuestKind, Handler, Instance, ServerHook};

/// One service ready to serve.
pub struct Service {
    /// Its name, in the log and for its guests.
    pub name: Arc<str>,
    /// Its place in the configuration (and its column on the board).
    pub index: usize,
    /// The compiled handler: the newest, when `watch_module` replaced it
    /// (see [`Service::handler`]).
    handler: RwLock<Arc<Handler>>,
    /// `watch_module`: how to load its module anew.
    pub watch: Option<Watch>,
    /// Its listening sockets (taken by the processes that accept on them).
    pub sockets: Vec<Bound>,
    /// What a connection passes before the guest sees it.
    pub gate: Gate,
    /// Connections served at once (per worker process).
    pub max_instances: u32,
    /// Connections open at once across every worker (0: no limit).
    pub max_connections: u32,
    /// Bytes a connection's guest may write to its client (0: no limit).
    pub max_bytes_written: u64,
    /// Its open connections, counted in the process where no board is
    /// shared (`inetd`).
    own_connections: Arc<AtomicU64>,
    /// When its being at `max_connections` was last said in the log.
    capped_warned: Every,
    /// Its weight when guests of several services keep computing.
    pub cpu_share: u32,
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
    /// How many lines a second, in this worker, may say that a connection
    /// ended by a fault (`fault_log_rate`).
    pub fault_log: LogRate,
    /// Its TLS, for its `ssl` ports.
    pub tls: Option<Arc<Tls>>,
    /// `instance per-worker`: the instance this process's connections
    /// share, in turn (made at the first connection after the fork).
    worker_instance: Option<tokio::sync::Mutex<Option<Instance>>>,
    /// A mux handler's settings, and the way to its driver in this worker.
    pub mux: Option<MuxPlan>,
    /// A wasi:http component's settings and access log.
    pub http: Option<HttpPlan>,
}

/// How a service whose guest is a wasi:http component serves HTTP (the
/// connection layer's `http`).
#[derive(Debug)]
pub struct HttpPlan {
    /// Its timeouts, size limits and access log format.
    pub settings: crate::config::HttpSettings,
    /// Where its access log goes (opened before the workers fork).
    pub access_log: crate::log::access::Sink,
}

/// How a service of the mux world is served (its driver and connections
/// are the connection layer's).
#[derive(Debug)]
pub struct MuxPlan {
    /// How often `dequeue` runs on the worker's instance.
    pub dequeue: Option<Duration>,
    /// Output queued for one client beyond which it is cut off.
    pub write_cap: u64,
    /// Input left unconsumed beyond which a connection closes.
    pub input_cap: u64,
    /// The way to this worker's driver, once it started.
    pub door: OnceLock<Door>,
}

/// How a `watch_module` service loads its module anew (see
/// `process::reload`).
pub struct Watch {
    /// Its configuration: the module's path, and what its instances are
    /// given.
    pub config: ServiceConfig,
    /// Where compiled modules are kept, when they are.
    pub cache: Option<ModuleCache>,
    /// The module generation this process serves (see
    /// [`board::module_generation`]).
    pub generation: std::sync::atomic::AtomicU64,
    /// Held while this process loads a new module, so that the
    /// connections that start meanwhile wait for it.
    loading: tokio::sync::Mutex<()>,
    /// The module file's stamp as it was when the served module was
    /// read (the master's watch starts from it).
    pub served: Option<crate::wasm::ModuleStamp>,
}

impl Watch {
    /// Watches the module of `config`, compiled modules kept in `cache`;
    /// `served`: the file's stamp when the module served was read (see
    /// [`Handler::stamp`]).
    pub fn new(
        config: ServiceConfig,
        cache: Option<ModuleCache>,
        served: Option<crate::wasm::ModuleStamp>,
    ) -> Self {
        Self {
            config,
            cache,
            served,
            generation: std::sync::atomic::AtomicU64::new(0),
            loading: tokio::sync::Mutex::new(()),
        }
    }
}

/// The way from a connection to its service's mux driver.
pub type Door = tokio::sync::mpsc::Sender<Event>;

impl Service {
    /// The service `config` describes, served by `handler` on `sockets`,
    /// with `tls` on its `ssl` ports.
    pub fn new(
        config: &ServiceConfig,
        handler: Handler,
        tls: Option<Arc<Tls>>,
        sockets: Vec<Bound>,
    ) -> Result<Self> {
        let per_worker = config.instance == InstanceMode::PerWorker;
        if per_worker && handler.kind().served_as() == GuestKind::Command {
            tracing::warn!(
                "service {}: a WASI command runs once per connection; `instance per-worker` does not apply",
                config.name
            );
        }
        let shared = per_worker && matches!(handler.kind(), GuestKind::Handler | GuestKind::Http);
        let http = match handler.kind() {
            GuestKind::Http => Some(HttpPlan {
                settings: config.http.clone(),
                access_log: crate::log::access::Sink::open(config.http.access_log_file.as_deref())
                    .map_err(|e| anyhow::anyhow!("service '{}': {e:#}", config.name))?,
            }),
            _ => None,
        };
        let name = handler.service_name().clone();
        let mux = (handler.kind() == GuestKind::Mux).then(|| MuxPlan {
            dequeue: config.check_for_dequeue,
            write_cap: config.mux_write_cap,
            input_cap: config.mux_input_cap,
            door: OnceLock::new(),
        });
        Ok(Self {
            reply_cap: ReplyCap::new(name.clone(), config.sockets.udp_amplification),
            fault_log: LogRate::of(
                Lines::Faults,
                config.fault_log_rate,
                handler.index(),
                name.clone(),
            ),
            name,
            index: handler.index(),
            recv: RecvSettings {
                len: config.sockets.udp_recv_len,
                flags: nix::sys::socket::MsgFlags::from_bits_truncate(
                    config.sockets.udp_recv_flags,
                ),
            },
            gate: Gate::new(config)?,
            worker_instance: shared.then(|| tokio::sync::Mutex::new(None)),
            handler: RwLock::new(Arc::new(handler)),
            watch: None,
            tls,
            sockets,
            max_instances: config.max_instances,
            max_connections: config.max_connections,
            max_bytes_written: config.max_bytes_written,
            own_connections: Arc::default(),
            capped_warned: Every::new(CAPPED_WARN_EVERY),
            cpu_share: config.cpu_share,
            idle_timeout: config.idle_timeout,
            connection_timeout: config.connection_timeout,
            // A mux handler's `dequeue` runs on the worker's instance: no
            // process is forked for it.
            dequeue: config
                .check_for_dequeue
                .filter(|_| mux.is_none())
                .map(|every| (every, config.max_dequeue)),
            mux,
            http,
        })
    }

    /// Its `server_name` patterns (none without TLS).
    pub fn tls_names(&self) -> &[NamePattern] {
        self.tls.as_ref().map_or(&[], |t| t.names.as_slice())
    }

    /// With `instance per-worker`, the instance this process's connections
    /// share, one at a time.
    pub fn worker_instance(&self) -> Option<&tokio::sync::Mutex<Option<Instance>>> {
        self.worker_instance.as_ref()
    }

    /// Ends this process's shared instance, if it has one: its
    /// `child-finish-hook` runs.
    pub async fn retire(&self) {
        if let Some(door) = self.mux_door() {
            let (done, retired) = tokio::sync::oneshot::channel();
            if door.send(Event::Retire(done)).await.is_ok() {
                let _ = retired.await;
            }
            return;
        }
        self.drop_worker_instance().await;
    }

    /// Makes this process's shared instance (`instance per-worker`) and
    /// runs its `child-init-hook`.
    pub async fn make_worker_instance(&self) -> Result<Instance, Unmade> {
        let mut instance = self
            .handler()
            .instantiate(GuestIo::default(), None)
            .await
            .map_err(Unmade::Instantiate)?;
        instance.child_init_hook().await.map_err(Unmade::Trap)?;
        Ok(instance)
    }

    /// The handler new connections are served by.
    pub fn handler(&self) -> Arc<Handler> {
        // An `Arc` cannot be left invalid by a panic.
        self.handler
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Serves `handler` from now on: new connections get it, open ones
    /// finish on the one they have. A module of another kind (a command
    /// for a handler, say) is refused: how the service is served depends
    /// on it.
    pub fn set_handler(&self, handler: Handler) -> Result<()> {
        let old = self.handler();
        if handler.kind().served_as() != old.kind().served_as() {
            anyhow::bail!(
                "it is {}, and the module served is {}: a module of another kind needs a restart (HUP)",
                handler.kind(),
                old.kind()
            );
        }
        *self.handler.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(handler);
        Ok(())
    }

    /// In a worker, as a connection starts: if the master loaded a new
    /// module of this `watch_module` service since this process last
    /// looked (see `process::reload`), loads it too — from the module
    /// cache, else compiled on a blocking thread — and serves it from now
    /// on. Connections that start meanwhile wait for it. One atomic load
    /// when nothing changed.
    pub async fn refresh(&self) {
        use std::sync::atomic::Ordering;
        let Some(watch) = &self.watch else {
            return;
        };
        let behind =
            || board::module_generation(self.index) != watch.generation.load(Ordering::Acquire);
        if !behind() {
            return;
        }
        let _loading = watch.loading.lock().await;
        if !behind() {
            return;
        }
        let now = board::module_generation(self.index);
        let (current, config, cache) = (self.handler(), watch.config.clone(), watch.cache.clone());
        let loaded =
            tokio::task::spawn_blocking(move || current.load_anew(&config, cache.as_ref()))
                .await
                .map_err(anyhow::Error::from)
                .and_then(|loaded| loaded)
                .and_then(|handler| self.set_handler(handler));
        // Tried once per generation: a module this process cannot load
        // leaves the old one serving until the next.
        watch.generation.store(now, Ordering::Release);
        match loaded {
            Ok(()) => {
                tracing::debug!("service {}: this worker serves the new module", self.name);
                self.drop_worker_instance().await;
            }
            Err(err) => tracing::error!(
                "service {}: this worker cannot serve the new module: {err:#}; the module served stays",
                self.name
            ),
        }
    }

    /// After [`Service::set_handler`], in a worker: this process's shared
    /// instance (`instance per-worker`), made by the old handler, runs its
    /// `child-finish-hook` once its connection is done; the next connection
    /// makes one from the new handler.
    pub async fn drop_worker_instance(&self) {
        let Some(slot) = &self.worker_instance else {
            return;
        };
        if let Some(mut instance) = slot.lock().await.take()
            && let Err(err) = instance.child_finish_hook().await
        {
            tracing::error!("guest trapped in child-finish-hook: {}", err.root_cause());
        }
    }

    /// Whether this service has worker hooks to run in this process: its
    /// guest exports `server-hooks`, and an instance outlives a
    /// connection (`instance per-worker`, or the mux world).
    pub fn has_worker_hooks(&self) -> bool {
        self.handler().has_server_hooks() && (self.worker_instance.is_some() || self.mux.is_some())
    }

    /// A signal reached the worker: the shared instance's `signal-hook`
    /// runs, once connections already holding it are done; the instance is
    /// made for it if there is none.
    pub async fn signal(&self, signal: nix::sys::signal::Signal) {
        if !self.handler().wants(ServerHook::SignalHook) {
            return;
        }
        if let Some(door) = self.mux_door() {
            let _ = door.send(Event::Signal(signal)).await;
            return;
        }
        let Some(slot) = &self.worker_instance else {
            return;
        };
        let mut turn = slot.lock().await;
        let mut instance = match turn.take() {
            Some(instance) => instance,
            None => match self.make_worker_instance().await {
                Ok(instance) => instance,
                Err(unmade) => {
                    tracing::error!("service {}: {unmade}", self.name);
                    return;
                }
            },
        };
        match instance.signal_hook(signal).await {
            Ok(()) => *turn = Some(instance),
            Err(error) => self.hook_failed("signal-hook", &error),
        }
    }

    /// The server closes for `closing`: the shared instance's
    /// `server-close-hook` runs, if there is one. With `wait`, after the
    /// connection holding it (if any); without, only if it is free now
    /// (the worker stops at once).
    pub async fn closing(&self, closing: Closing, wait: bool) {
        if closing == Closing::No || !self.handler().wants(ServerHook::ServerCloseHook) {
            return;
        }
        if let Some(door) = self.mux_door() {
            let (done, closed) = tokio::sync::oneshot::channel();
            let sent = if wait {
                door.send(Event::Closing(closing, done)).await.is_ok()
            } else {
                door.try_send(Event::Closing(closing, done)).is_ok()
            };
            if sent {
                let _ = closed.await;
            }
            return;
        }
        let Some(slot) = &self.worker_instance else {
            return;
        };
        let mut turn = if wait {
            slot.lock().await
        } else {
            match slot.try_lock() {
                Ok(turn) => turn,
                Err(_) => {
                    tracing::debug!(
                        "service {}: server-close-hook not run: its instance serves a client",
                        self.name
                    );
                    return;
                }
            }
        };
        if let Some(instance) = turn.as_mut()
            && let Err(error) = instance.server_close_hook(closing).await
        {
            turn.take();
            self.hook_failed("server-close-hook", &error);
        }
    }

    /// The worker has had no client for a while: the shared instance's
    /// `idle-hook` runs, if there is one (none is made for it).
    pub async fn idle(&self) {
        if !self.handler().wants(ServerHook::IdleHook) {
            return;
        }
        let Some(slot) = &self.worker_instance else {
            return;
        };
        let mut turn = slot.lock().await;
        if let Some(instance) = turn.as_mut()
            && let Err(error) = instance.idle_hook().await
        {
            turn.take();
            self.hook_failed("idle-hook", &error);
        }
    }

    /// The way to this worker's mux driver, once it started.
    fn mux_door(&self) -> Option<&Door> {
        self.mux.as_ref().and_then(|m| m.door.get())
    }

    /// Logs that a worker hook of the shared instance failed; the instance
    /// is gone, and the next client gets a fresh one.
    fn hook_failed(&self, hook: &str, error: &wasmtime::Error) {
        match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
            Some(exit) => tracing::error!(
                "service {}: the guest exited with status {} in {hook}; its instance is dropped",
                self.name,
                exit.0
            ),
            None => tracing::error!(
                "service {}: guest trapped in {hook}: {}; its instance is dropped",
                self.name,
                error.root_cause()
            ),
        }
    }

    /// A place among the service's connections open across every worker
    /// (`max_connections`), taken before anything else is done for the
    /// client `incoming`: `Some` (a place, or none needed), or `None` when
    /// they are all taken — the client is closed at once (said at level 3,
    /// and at most every [`CAPPED_WARN_EVERY`] as a warning), costing no
    /// guest anything.
    pub fn open_connection(&self, incoming: &Incoming) -> Option<Option<board::Connection>> {
        if self.max_connections == 0 {
            return Some(None);
        }
        let cap = u64::from(self.max_connections);
        match board::connection(self.index, cap, &self.own_connections) {
            Ok(connection) => Some(Some(connection)),
            Err(open) => {
                let peer = incoming
                    .peer_ip()
                    .map_or_else(|| "a unix client".to_owned(), |ip| ip.to_string());
                tracing::debug!(
                    service = %self.name,
                    "refused {peer}: {open} connections are open across the workers (max_connections {cap})"
                );
                board::refused_at_once(self.index, Refusal::ConnectionCap);
                self.warn_capped(open);
                None
            }
        }
    }

    /// Says (at most every [`CAPPED_WARN_EVERY`]) that the service is at
    /// its `max_connections`.
    fn warn_capped(&self, open: u64) {
        if !self.capped_warned.due(Instant::now()) {
            return;
        }
        tracing::warn!(
            "service {}: {open} connections open across the workers, its max_connections: new clients are closed at once",
            self.name
        );
    }

    /// The admission prefix of a client, for any kind of guest: its two
    /// ends, the PROXY header from a trusted proxy (on a stream), on a TLS
    /// port its ClientHello, a place under the per-address limits, the
    /// access rules' verdict (after a reverse lookup when asked), and then
    /// the rest of the TLS handshake — for a client the rules allow only:
    /// a refused one costs no handshake, and its hooks see a closed
    /// stream. `None` when the client ends here: it left, the header or
    /// the handshake failed (logged), a limit refused it (logged at
    /// `debug`), or it is a datagram the rules refuse (dropped before any
    /// instance is made: its sender may be forged, and gets no reply).
    pub async fn admit(&self, incoming: Incoming) -> Option<Admitted> {
        let (pending, peer, local) = match incoming {
            Incoming::Stream(accepted) => self.admit_stream(accepted).await?,
            Incoming::Greeted(greeted) => {
                let Greeted { hello, peer, local } = *greeted;
                (Pending::Handshake(hello), peer, local)
            }
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
                let stream = Stream::Datagram(Box::new(received), cap);
                (Pending::Ready(stream), peer, local)
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
                let local = Local::Unix(std::path::PathBuf::new());
                (Pending::Ready(stream), nobody, local)
            }
        };
        let (datagram, proto) = match &pending {
            Pending::Ready(stream) => (matches!(stream, Stream::Datagram(..)), stream.proto()),
            Pending::Handshake(_) => (false, TLS_PROTO),
        };
        let mut client = ClientInfo::new(peer, local, proto, self.name.clone());
        let tag = ConnTag::new(client.service.clone(), client.peer.clone());
        tagged(tag.clone(), async move {
            let place = match self.gate.admit(&client.peer) {
                Ok(place) => place,
                Err(why) => {
                    tracing::debug!("refused: {why}");
                    board::refused(self.index, Refusal::PerAddress);
                    return None;
                }
            };
            let started = Instant::now();
            let verdict = self.gate.judge(&mut client).await;
            if let Verdict::Denied(_) = &verdict {
                board::refused(self.index, Refusal::AccessRules);
            }
            if datagram && let Verdict::Denied(rule) = &verdict {
                tracing::debug!("dropped a datagram: denied by {rule}");
                return None;
            }
            let stream = match pending {
                Pending::Ready(stream) => stream,
                Pending::Handshake(hello) => self.handshake(hello, &verdict, &mut client).await?,
            };
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

    /// A stream's ends, its PROXY header, and on a TLS port its
    /// ClientHello (whose server name must be one this service answers).
    async fn admit_stream(&self, accepted: Accepted) -> Option<(Pending, Peer, Local)> {
        if !accepted.tls {
            let (stream, peer, local) = self.origin(accepted).await?;
            return Some((Pending::Ready(Stream::Raw(stream)), peer, local));
        }
        let Greeted { hello, peer, local } = self.greet(accepted).await?;
        let accepted = self
            .tls
            .as_ref()
            .is_some_and(|tls| tls.accepts(hello.server_name.as_deref()));
        if !accepted {
            tracing::debug!(
                service = %self.name,
                "closed the connection from {peer}: TLS server name {} is not one of server_name",
                shown_name(hello.server_name.as_deref())
            );
            return None;
        }
        Some((Pending::Handshake(hello), peer, local))
    }

    /// A TLS client's ends, PROXY header and ClientHello, read within this
    /// service's `ssl_handshake_timeout` of now (the accept). `None` when
    /// it left, or sent no ClientHello in time (logged).
    async fn greet(&self, accepted: Accepted) -> Option<Greeted> {
        let started = Instant::now();
        let Some(tls) = &self.tls else {
            tracing::error!(service = %self.name, "a TLS port without TLS settings");
            return None;
        };
        let (stream, peer, local) = self.origin(accepted).await?;
        match read_hello(stream, started + tls.handshake_timeout).await {
            Ok(hello) => Some(Greeted { hello, peer, local }),
            Err(why) => {
                tracing::debug!(service = %self.name, "closed the connection from {peer}: {why}");
                None
            }
        }
    }

    /// A stream's ends and its PROXY header, read when it comes from a
    /// trusted proxy.
    async fn origin(&self, accepted: Accepted) -> Option<(RawStream, Peer, Local)> {
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
        Some((stream, peer, local))
    }

    /// The rest of a TLS client's handshake, when the access rules allow
    /// it; a refused client is closed without one, and its hooks see a
    /// stream with nothing to read that takes no reply. A failed
    /// handshake ends the connection with one line at Net::Server's `info` (level 3).
    async fn handshake(
        &self,
        hello: Box<Hello>,
        verdict: &Verdict,
        client: &mut ClientInfo,
    ) -> Option<Stream> {
        let closed = || Stream::Wrapped {
            stream: Box::new(tokio::io::empty()),
            proto: TLS_PROTO,
        };
        if let Verdict::Denied(_) = verdict {
            drop(hello);
            return Some(closed());
        }
        let tls = self.tls.as_ref()?;
        match hello.finish(tls).await {
            Ok((stream, info)) => {
                client.tls = Some(Arc::new(info));
                Some(Stream::Wrapped {
                    stream,
                    proto: TLS_PROTO,
                })
            }
            Err(why) => {
                tracing::debug!("closed the connection: {why}");
                None
            }
        }
    }
}

/// Why a shared instance could not be made.
#[derive(Debug)]
pub enum Unmade {
    /// Instantiating failed.
    Instantiate(anyhow::Error),
    /// Its `child-init-hook` trapped (or exited).
    Trap(wasmtime::Error),
}

impl std::fmt::Display for Unmade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Instantiate(error) => write!(f, "cannot instantiate the handler: {error:#}"),
            Self::Trap(error) => write!(
                f,
                "guest trapped in child-init-hook: {}",
                error.root_cause()
            ),
        }
    }
}

/// How often a service at its `max_connections` is said in the log, at
/// most.
pub const CAPPED_WARN_EVERY: Duration = Duration::from_secs(10);

/// The protocol name a TLS client's info gives (Net::Server's `SSL`).
const TLS_PROTO: &str = "ssl";

/// A server name as a log line shows it.
fn shown_name(name: Option<&str>) -> String {
    match name {
        Some(name) => format!("'{name}'"),
        None => "(none sent)".to_owned(),
    }
}

/// What a client is before the admission's verdict: ready to serve, or a
/// TLS client whose handshake waits for it.
enum Pending {
    Ready(Stream),
    Handshake(Box<Hello>),
}

/// Several services on one TLS port, each with its own certificate, the
/// client's server name (SNI) picking its service (see
/// [`crate::config::tls::pick`]). The first service, which binds the
/// port, reads the PROXY header (the services that share a port share
/// `proxy_from`) and sets the time allowed for the ClientHello.
pub struct SharedPort {
    services: Vec<Arc<Service>>,
}

impl SharedPort {
    /// The port `services` share, the first of which binds it.
    pub fn new(services: Vec<Arc<Service>>) -> Self {
        Self { services }
    }

    /// The services, the one that binds the port first.
    pub fn services(&self) -> &[Arc<Service>] {
        &self.services
    }

    /// Reads what comes before the choice — PROXY header, ClientHello —
    /// and picks the client's service; the client, greeted, goes to it.
    /// `None` (logged at `info`) when it left, sent no ClientHello in
    /// time, or named no service and the port has no default.
    pub async fn route(&self, incoming: Incoming) -> Option<(usize, Incoming)> {
        let Incoming::Stream(accepted) = incoming else {
            return Some((0, incoming));
        };
        let greeted = self.services[0].greet(accepted).await?;
        let names: Vec<&[NamePattern]> = self.services.iter().map(|s| s.tls_names()).collect();
        let defaults: Vec<bool> = self
            .services
            .iter()
            .map(|s| s.tls.as_ref().is_some_and(|t| t.sni_default))
            .collect();
        let name = greeted.hello.server_name.as_deref();
        let Some(index) = pick(name, &names, &defaults) else {
            tracing::debug!(
                "closed the connection from {}: TLS server name {} matches no service on {}",
                greeted.peer,
                shown_name(name),
                greeted.local
            );
            return None;
        };
        Some((index, Incoming::Greeted(Box::new(greeted))))
    }
}

/// Who serves what comes in on one listening socket.
#[derive(Clone)]
pub enum Route {
    /// One service.
    One(Arc<Service>),
    /// Several, on a TLS port, by server name.
    Shared(Arc<SharedPort>),
}

impl Route {
    /// The route of a socket `first` binds and the services `sharing`
    /// share (by server name); `first` alone when none does.
    pub fn new(first: Arc<Service>, sharing: Vec<Arc<Service>>) -> Self {
        if sharing.is_empty() {
            return Self::One(first);
        }
        let port = std::iter::once(first).chain(sharing).collect();
        Self::Shared(Arc::new(SharedPort::new(port)))
    }

    /// The service that binds the socket (the first of a shared port).
    pub fn first(&self) -> &Arc<Service> {
        match self {
            Self::One(service) => service,
            Self::Shared(port) => &port.services[0],
        }
    }

    /// The client's service, and the client as it goes to it (see
    /// [`SharedPort::route`]).
    pub async fn pick(&self, incoming: Incoming) -> Option<(Arc<Service>, Incoming)> {
        match self {
            Self::One(service) => Some((service.clone(), incoming)),
            Self::Shared(port) => {
                let (index, incoming) = port.route(incoming).await?;
                Some((port.services[index].clone(), incoming))
            }
        }
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

/// Makes every service of `config` with its handler and TLS (`handlers`
/// and `tls` are in the order of `config.services`) and binds (or takes
/// over) its sockets. A TLS port a later service shares with an earlier
/// one is bound once, by the first, and routed by server name (see
/// [`SharedPort`]). Under systemd socket activation only ports given are
/// bound; the sockets systemd handed over that no listener names go to
/// the only service (with several, they are closed with a warning).
pub fn bind_all(
    config: &Config,
    handlers: Vec<Handler>,
    tls: Vec<Option<Arc<Tls>>>,
    handed: &mut Handed,
) -> Result<Vec<Service>> {
    let mut services: Vec<Service> = Vec::new();
    let watched = config.services.iter().any(|s| s.watch_module);
    let cache = watched
        .then(|| ModuleCache::configured(&config.module_cache))
        .flatten();
    // Under socket activation, ports nobody configured are systemd's to give.
    let activated = handed.has_systemd_sockets();
    for (j, ((service, handler), tls)) in config.services.iter().zip(handlers).zip(tls).enumerate()
    {
        let mut own = Vec::new();
        for listener in &service.listeners {
            let binder = config.services[..j]
                .iter()
                .enumerate()
                .find_map(|(i, earlier)| {
                    listen::shared_port(&earlier.listeners, listener).map(|theirs| (i, theirs))
                });
            match binder {
                Some((i, theirs)) => {
                    for bound in services[i].sockets.iter_mut() {
                        if bound.listener == *theirs {
                            bound.shares.push(j);
                        }
                    }
                }
                None => own.push(listener.clone()),
            }
        }
        let sockets = if activated && !service.port_given {
            Vec::new()
        } else {
            listen::bind_all(&own, &service.sockets, config.listen_backlog, handed)?
        };
        let mut made = Service::new(service, handler, tls, sockets)?;
        if service.watch_module && service.module.is_some() {
            let served = made.handler().stamp();
            made.watch = Some(Watch::new(service.clone(), cache.clone(), served));
        }
        services.push(made);
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
                    shares: Vec::new(),
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
    for (j, service) in services.iter().enumerate() {
        let handler = service.handler();
        let shown = |b: &Bound| match b.listener.proto {
            Proto::Ssl => format!("{} (TLS)", b.local),
            _ => b.local.to_string(),
        };
        let mut addrs: Vec<String> = service.sockets.iter().map(shown).collect();
        for (i, binder) in services.iter().enumerate() {
            for bound in binder.sockets.iter().filter(|b| b.shares.contains(&j)) {
                addrs.push(format!(
                    "{} (TLS, shared with service {} by server name)",
                    bound.local, services[i].name
                ));
            }
        }
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
