//! The per-Store state: one struct, a field per capability, and the one
//! place a Store is made, with its limits ([`new_store`]).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::ResourceTable;
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::bindings::{
    ClientHost, ConnectionsHost, HookHintsHost, LogHost, PropertiesHost, ServerHost, WitClientCert,
    WitClientInfo, WitCounts, WitCredentials, WitLevel, WitTlsInfo,
};
use super::budget::{Account, Budgets, Limiter};
use super::hints::{Hint, Hook, IdleHooks, ServerHook};
use super::log_rate::LogRate;
use super::mux::{self, ConnId, MuxTable};
use super::sandbox::{self, CpuMeter};
use super::stdio::{GuestIo, GuestStderr};
use crate::client::{ClientInfo, Local, Peer};
use crate::config::{Grants, ServiceConfig};

/// What every instance of one handler is given: its service's name,
/// properties, grants and limits, and the hooks it said do nothing.
#[derive(Debug)]
pub struct Shared {
    /// The service name.
    pub name: Arc<str>,
    /// The service's place in the configuration (and on the board).
    pub index: usize,
    /// The properties handed to the handler.
    pub properties: BTreeMap<String, String>,
    /// What its guests are granted beyond their client.
    pub grants: Grants,
    /// Bytes of linear memory one instance may use.
    pub max_memory: u64,
    /// The budgets all of its instances in a worker count against.
    pub budgets: Budgets,
    /// CPU time a hook may compute without waiting for its client.
    pub cpu_limit: Duration,
    /// The hooks its handler said do nothing, which are no longer called.
    pub idle_hooks: IdleHooks,
    /// How fast its guests may log, together (see [`LogRate`]).
    pub log_rate: Arc<LogRate>,
    /// Where its wasi:http guests' outgoing requests may go (made once:
    /// each Store takes a handle).
    pub outgoing: super::http::Outgoing,
}

impl Shared {
    /// What the instances of `config`, the configuration's service
    /// `index`, are given; their memory counts against `budgets`.
    pub fn new(config: &ServiceConfig, index: usize, budgets: Budgets) -> Self {
        let name: Arc<str> = config.name.as_str().into();
        Self {
            log_rate: Arc::new(LogRate::new(config.guest_log_rate, index, name.clone())),
            name,
            index,
            properties: config.properties.clone(),
            grants: config.grants.clone(),
            max_memory: config.max_memory,
            budgets,
            cpu_limit: config.cpu_limit,
            idle_hooks: IdleHooks::default(),
            outgoing: super::http::Outgoing::new(&config.grants),
        }
    }
}

/// Makes the Store of a new instance of `shared`'s handler: stdin and
/// stdout reach the client through `io`, its environment is `env`, and the
/// sandbox's limits apply (see [`sandbox`]): the memory cap traps growth
/// past `max_memory`, the budgets growth past the service's or the
/// worker's (see [`super::budget`]), and the epoch deadline makes a
/// computing guest yield at every tick — from its second tick without
/// waiting, to wait for its turn among the guests that keep computing (see
/// [`crate::fairness`]) — trapping once it computed for `cpu_limit` without
/// waiting for its client.
pub fn new_store(
    engine: &Engine,
    shared: Arc<Shared>,
    io: GuestIo,
    env: &[(&str, String)],
) -> anyhow::Result<Store<State>> {
    let account = Account::new(shared.budgets.clone());
    let limits = Limiter::new(sandbox::limits(shared.max_memory), account);
    let cpu = CpuMeter::new(shared.cpu_limit);
    let state = State::new(shared, io, env, limits, cpu)?;
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limits);
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        let (waits, pends) = (state.io.waits(), state.io.pends());
        if !state.cpu.tick(waits, pends) {
            return Err(wasmtime::format_err!(
                "{}: computed for more than {:?} without waiting for the client",
                sandbox::CPU_LIMIT_TRAP,
                state.cpu.limit()
            ));
        }
        // Computed through a whole tick without waiting: it takes turns
        // with the other guests that keep computing (see `fairness`).
        if state.cpu.computing() {
            crate::board::cpu_turn(state.shared.index);
            if let Some(turn) = crate::fairness::turn(state.shared.index) {
                return Ok(UpdateDeadline::YieldCustom(1, Box::pin(turn)));
            }
        }
        Ok(UpdateDeadline::Yield(1))
    });
    Ok(store)
}

/// The data of one instance's Store.
pub struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    /// wasi:http's context (used by wasi:http guests only).
    http: WasiHttpCtx,
    /// Where a wasi:http guest's outgoing requests may go.
    outgoing: super::http::Outgoing,
    /// The memory and instance limits of this Store, and what it holds
    /// against its budgets.
    pub limits: Limiter,
    /// CPU used since the guest last waited (see [`super::sandbox`]).
    pub cpu: CpuMeter,
    /// The client being served, during the connection hooks.
    pub client: Option<ClientInfo>,
    /// The slot connecting stdin and stdout to the client.
    pub io: GuestIo,
    /// A mux instance's connections and timers (empty in the hooks world).
    pub mux: MuxTable,
    shared: Arc<Shared>,
}

impl State {
    /// The state of a new instance given `shared`: stdin and stdout reach
    /// the client through `io`, stderr goes to the log; the environment is
    /// `env` and the service's granted variables, nothing of the host's;
    /// the only directories and networks are the service's grants.
    fn new(
        shared: Arc<Shared>,
        io: GuestIo,
        env: &[(&str, String)],
        limits: Limiter,
        cpu: CpuMeter,
    ) -> anyhow::Result<Self> {
        let mut builder = WasiCtx::builder();
        builder
            .stdin(io.stdin())
            .stdout(io.stdout())
            .stderr(GuestStderr::new(shared.log_rate.clone()))
            .envs(env)
            .envs(&shared.grants.env);
        super::grants::apply(&mut builder, &shared.grants)?;
        let wasi = builder.build();
        Ok(Self {
            wasi,
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outgoing: shared.outgoing.clone(),
            limits,
            cpu,
            client: None,
            io,
            mux: MuxTable::default(),
            shared,
        })
    }

    /// The client the `client` import reports: in the hooks world the one
    /// being served, in the mux world the one the running callback is
    /// about.
    fn client(&self) -> Option<&ClientInfo> {
        self.client.as_ref().or_else(|| self.mux.current_client())
    }

    /// Whether the handler said `hook` does nothing, so it is not called.
    pub fn skips(&self, hook: impl Hint) -> bool {
        self.shared.idle_hooks.contains(hook)
    }

    /// Records that the handler said `hook` does nothing.
    fn said_does_nothing(&self, hook: impl Hint) {
        if self.shared.idle_hooks.insert(hook) {
            tracing::debug!(
                "service {}: {hook} does nothing; it is no longer called",
                self.shared.name
            );
        }
    }
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for State {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}

impl ClientHost for State {
    fn info(&mut self) -> Option<WitClientInfo> {
        self.client().map(wit_info)
    }

    fn credentials(&mut self) -> Option<WitCredentials> {
        let Peer::Unix {
            cred: Some(cred), ..
        } = &self.client()?.peer
        else {
            return None;
        };
        Some(WitCredentials {
            pid: cred.pid,
            uid: cred.uid,
            gid: cred.gid,
        })
    }

    fn tls(&mut self) -> Option<WitTlsInfo> {
        let tls = self.client()?.tls.as_ref()?;
        Some(WitTlsInfo {
            version: tls.version.to_owned(),
            cipher: tls.cipher.clone(),
            server_name: tls.server_name.clone(),
            alpn: tls.alpn.clone(),
            client_certificate: tls.client_cert.as_ref().map(|c| WitClientCert {
                subject: c.subject.clone(),
                issuer: c.issuer.clone(),
                sha256: c.sha256.clone(),
            }),
        })
    }

    fn is_datagram(&mut self) -> bool {
        self.client().is_some_and(ClientInfo::is_datagram)
    }
}

/// A client as the WIT gives it.
pub fn wit_info(c: &ClientInfo) -> WitClientInfo {
    // A unix socket's ends have a path (or none) and no port.
    let (peer_addr, peer_port) = match &c.peer {
        Peer::Ip(addr) => (addr.ip().to_string(), addr.port()),
        Peer::Unix { path, .. } => (
            path.as_ref()
                .map_or_else(String::new, |p| p.display().to_string()),
            0,
        ),
    };
    let (local_addr, local_port) = match &c.local {
        Local::Ip(addr) => (addr.ip().to_string(), addr.port()),
        Local::Unix(path) => (path.display().to_string(), 0),
    };
    WitClientInfo {
        peer_addr,
        peer_port,
        local_addr,
        local_port,
        proto: c.proto.to_owned(),
        peer_host: c.peer_host.clone(),
        service: c.service.to_string(),
    }
}

/// The mux world's imports: each acts on a connection the instance holds
/// (one it accepted, or the one `mux-connection` is offering); on any
/// other it does nothing (`write` says `false`).
impl ConnectionsHost for State {
    fn write(&mut self, conn: ConnId, data: Vec<u8>) -> bool {
        self.mux
            .reachable(conn)
            .is_some_and(|outbox| outbox.write(&data))
    }

    fn close(&mut self, conn: ConnId) {
        if let Some(outbox) = self.mux.reachable(conn) {
            outbox.close();
        }
    }

    fn shutdown_write(&mut self, conn: ConnId) {
        if let Some(outbox) = self.mux.reachable(conn) {
            outbox.shutdown();
        }
    }

    fn set_timeout(&mut self, conn: ConnId, seconds: Option<f64>) {
        if self.mux.reachable(conn).is_some() {
            self.mux.set_timeout(conn, mux::seconds(seconds));
        }
    }

    fn set_timer(&mut self, seconds: Option<f64>) {
        self.mux.set_timer(mux::seconds(seconds));
    }

    fn list(&mut self) -> Vec<ConnId> {
        self.mux.open()
    }

    fn info(&mut self, conn: ConnId) -> Option<WitClientInfo> {
        self.mux.reachable(conn)?;
        self.mux.client(conn).map(wit_info)
    }
}

impl LogHost for State {
    fn log(&mut self, level: WitLevel, message: String) {
        // A line the log level filters out costs no token.
        if !LogHost::enabled(self, level) {
            return;
        }
        for line in message.lines() {
            if !self.shared.log_rate.admit() {
                continue;
            }
            match level {
                WitLevel::Err => tracing::error!(target: "guest", "{line}"),
                WitLevel::Warning => tracing::warn!(target: "guest", "{line}"),
                WitLevel::Notice => tracing::info!(target: "guest", "{line}"),
                WitLevel::Info => tracing::debug!(target: "guest", "{line}"),
                WitLevel::Debug => tracing::trace!(target: "guest", "{line}"),
            }
        }
    }

    fn enabled(&mut self, level: WitLevel) -> bool {
        match level {
            WitLevel::Err => tracing::enabled!(target: "guest", tracing::Level::ERROR),
            WitLevel::Warning => tracing::enabled!(target: "guest", tracing::Level::WARN),
            WitLevel::Notice => tracing::enabled!(target: "guest", tracing::Level::INFO),
            WitLevel::Info => tracing::enabled!(target: "guest", tracing::Level::DEBUG),
            WitLevel::Debug => tracing::enabled!(target: "guest", tracing::Level::TRACE),
        }
    }
}

impl HookHintsHost for State {
    fn does_nothing(&mut self, hook: Hook) {
        self.said_does_nothing(hook);
    }
}

/// The server around the instance, from the board the processes share
/// (see [`crate::board`]).
impl ServerHost for State {
    fn counts(&mut self) -> WitCounts {
        let counts = crate::board::counts();
        WitCounts {
            workers: counts.workers,
            busy_workers: counts.busy,
            open: counts.open,
            served: counts.served,
            worker_pid: counts.pid,
        }
    }

    fn does_nothing(&mut self, hook: ServerHook) {
        self.said_does_nothing(hook);
    }
}

impl PropertiesHost for State {
    fn get(&mut self, key: String) -> Option<String> {
        self.shared.properties.get(&key).cloned()
    }

    fn all(&mut self) -> Vec<(String, String)> {
        self.shared
            .properties
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
