//! Loading a handler once (read, check, compile, link, pre-instantiate) and
//! making instances of it.
//!
//! Four kinds of guest are served: a component of the `handler` world
//! (its hooks are called in Net::Server's order), one of the `mux-handler`
//! world (Net::Server::Multiplex's callbacks, on one instance per worker),
//! a plain WASI command (`wasi:cli/run`), run once per connection as
//! inetd would, with the client's addresses in its environment, and a
//! wasi:http component (`wasi:http/incoming-handler`, the `wasi:http/proxy`
//! world), called once per HTTP request. The host tells them apart by what
//! the component exports. A WASI preview-1 core module that is a command
//! (`_start`) is made a component first (see [`super::adapt`]) and served
//! as a command.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, anyhow, bail};
use serde::Serialize;
use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime::{Engine, Store};
use wasmtime_wasi::p2::bindings::{Command, CommandPre};
use wasmtime_wasi_http::WasiHttpView;
use wasmtime_wasi_http::p2::bindings::{Proxy, ProxyPre};

use super::bindings::{
    self, ServerHooks, ServerHooksIndices, WitCloseReason, WitServerHook, WitSignal,
};
use super::budget::Budgets;
use super::embedded;
use super::hints::Hook;
use super::mux::{ConnId, MuxTable};
use super::state::{self, Shared, State, wit_info};
use super::stdio::GuestIo;
use crate::board::Closing;
use crate::client::ClientInfo;
use crate::config::ServiceConfig;

/// The newest 0.1.x of the `netserver:handler` package this host serves.
const PATCH: u32 = 5;

/// The export that makes a component a handler: this version's, or that
/// of an earlier 0.1.x, which the same bindings serve (semver-compatible).
const HOOKS_EXPORT: &str = "netserver:handler/hooks@0.1.5";
/// The hooks versions served, as errors name them.
const HOOKS_SERVED: &str = "netserver:handler/hooks@0.1.0 to @0.1.5";
/// The export that makes a component a mux handler: the version that
/// brought the mux world (0.1.3), or a later 0.1.x this host serves.
const MUX_EXPORT: &str = "netserver:handler/mux@0.1.3 to @0.1.5";
/// The worker's hooks, which a guest of either world may export as well
/// (since 0.1.4).
const SERVER_HOOKS_EXPORT: &str = "netserver:handler/server-hooks@0.1.4 to @0.1.5";

/// Whether `export` is interface `interface` of a 0.1.x this host serves,
/// from 0.1.`since` (the version that brought it) to 0.1.[`PATCH`].
fn serves(export: &str, interface: &str, since: u32) -> bool {
    export
        .strip_prefix("netserver:handler/")
        .and_then(|rest| rest.strip_prefix(interface))
        .and_then(|rest| rest.strip_prefix("@0.1."))
        .and_then(|patch| patch.parse::<u32>().ok())
        .is_some_and(|patch| (since..=PATCH).contains(&patch))
}

/// The export that makes a component a WASI command.
const RUN_EXPORT_PREFIX: &str = "wasi:cli/run@0.2";

/// Which world a loaded guest implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum GuestKind {
    /// The `netserver:handler/handler` world: Net::Server's hooks.
    Handler,
    /// The `netserver:handler/mux-handler` world: Net::Server::Multiplex's
    /// callbacks, one instance per worker holding its connections.
    Mux,
    /// A WASI command (`wasi:cli/run`), served inetd-style.
    Command,
    /// A WASI preview-1 core module with `_start`, adapted into a command
    /// at load and served as one.
    Preview1Command,
    /// A wasi:http component (`wasi:http/incoming-handler`), served as
    /// HTTP.
    Http,
}

impl GuestKind {
    /// How the guest is served: a preview-1 command as a command.
    pub fn served_as(self) -> Self {
        match self {
            Self::Preview1Command => Self::Command,
            other => other,
        }
    }
}

impl std::fmt::Display for GuestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Handler => "a netserver handler",
            Self::Mux => "a netserver mux handler",
            Self::Command => "a WASI command, inetd-style",
            Self::Preview1Command => "a WASI preview-1 command, adapted",
            Self::Http => "a wasi:http component",
        })
    }
}

enum Pre {
    Handler {
        pre: InstancePre<State>,
        hooks: bindings::HandlerIndices,
        server: Option<ServerHooksIndices>,
    },
    Mux {
        pre: InstancePre<State>,
        mux: bindings::mux::MuxHandlerIndices,
        server: Option<ServerHooksIndices>,
    },
    /// A command; `adapted` when it was a preview-1 core module.
    Command {
        pre: CommandPre<State>,
        adapted: bool,
    },
    Http(ProxyPre<State>),
}

/// A compiled, linked handler, ready to make instances of. It only
/// compiles, links and instantiates: when and for whom is its service's
/// business.
pub struct Handler {
    engine: Engine,
    pre: Pre,
    shared: Arc<Shared>,
    source: String,
    /// Its module file's stamp, taken before the file was read.
    stamp: Option<ModuleStamp>,
}

impl Handler {
    /// Reads, checks, compiles and links a service's module (or the
    /// built-in echo handler) on `engine`; its instances' memory counts
    /// against `budgets`. Errors name the file and what is wrong.
    pub fn load(
        engine: &Engine,
        config: &ServiceConfig,
        index: usize,
        cache: Option<&super::cache::ModuleCache>,
        budgets: Budgets,
    ) -> Result<Self> {
        let engine = engine.clone();
        let stamp = config
            .module
            .as_deref()
            .and_then(|p| ModuleStamp::of(p).ok());
        let (source, bytes) = match &config.module {
            Some(path) => (path.display().to_string(), read_module(path)),
            None => ("built-in echo".to_owned(), Ok(embedded::ECHO.to_vec())),
        };
        let pre = bytes
            .and_then(|bytes| prepare(&engine, &bytes, cache))
            .with_context(|| config.module_origin(&source))?;
        Ok(Self {
            engine,
            pre,
            shared: Arc::new(Shared::new(config, index, budgets)),
            source,
            stamp,
        })
    }

    /// Loads the module of `config` again for the same service (a new
    /// version of its file): the same engine, place and memory budgets.
    pub fn load_anew(
        &self,
        config: &ServiceConfig,
        cache: Option<&super::cache::ModuleCache>,
    ) -> Result<Self> {
        Self::load(
            &self.engine,
            config,
            self.index(),
            cache,
            self.budgets().clone(),
        )
    }

    /// The world the guest implements.
    pub fn kind(&self) -> GuestKind {
        match self.pre {
            Pre::Handler { .. } => GuestKind::Handler,
            Pre::Mux { .. } => GuestKind::Mux,
            Pre::Command { adapted: false, .. } => GuestKind::Command,
            Pre::Command { adapted: true, .. } => GuestKind::Preview1Command,
            Pre::Http(_) => GuestKind::Http,
        }
    }

    /// Whether the guest exports `server-hooks` (the worker's hooks).
    pub fn has_server_hooks(&self) -> bool {
        matches!(
            self.pre,
            Pre::Handler {
                server: Some(_),
                ..
            } | Pre::Mux {
                server: Some(_),
                ..
            }
        )
    }

    /// Whether `hook` of `server-hooks` is to be called: the guest exports
    /// it and has not said it does nothing.
    pub fn wants(&self, hook: super::hints::ServerHook) -> bool {
        self.has_server_hooks() && !self.shared.idle_hooks.contains(hook)
    }

    /// Where the guest came from: its path, or `built-in echo`.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Which version of its module file it was read from (none for the
    /// built-in echo): a file changed since has another stamp.
    pub fn stamp(&self) -> Option<ModuleStamp> {
        self.stamp
    }

    /// The engine every instance runs on.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The service name.
    pub fn service_name(&self) -> &Arc<str> {
        &self.shared.name
    }

    /// The service's place in the configuration (and on the board).
    pub fn index(&self) -> usize {
        self.shared.index
    }

    /// The memory budgets its instances count against (a handler loaded
    /// again for the same service takes the same).
    pub fn budgets(&self) -> &Budgets {
        &self.shared.budgets
    }

    /// Makes a fresh instance whose stdin and stdout reach the client through
    /// `io`. A command guest gets `client`'s addresses in its environment.
    pub async fn instantiate(&self, io: GuestIo, client: Option<&ClientInfo>) -> Result<Instance> {
        let env = match (&self.pre, client) {
            (Pre::Command { .. }, Some(client)) => client.environment(),
            _ => Vec::new(),
        };
        let started = std::time::Instant::now();
        let mut store = state::new_store(&self.engine, self.shared.clone(), io, &env)?;
        let (guest, server) = match &self.pre {
            Pre::Handler { pre, hooks, server } => {
                let instance = pre.instantiate_async(&mut store).await?;
                let guest = Guest::Handler(hooks.load(&mut store, &instance)?);
                (guest, load_server_hooks(server, &mut store, &instance)?)
            }
            Pre::Mux { pre, mux, server } => {
                let instance = pre.instantiate_async(&mut store).await?;
                let guest = Guest::Mux(mux.load(&mut store, &instance)?);
                (guest, load_server_hooks(server, &mut store, &instance)?)
            }
            Pre::Command { pre, .. } => (
                Guest::Command(pre.instantiate_async(&mut store).await?),
                None,
            ),
            Pre::Http(pre) => (Guest::Http(pre.instantiate_async(&mut store).await?), None),
        };
        crate::board::instantiated(self.shared.index, started.elapsed());
        Ok(Instance {
            store,
            guest,
            server,
        })
    }
}

/// A new instance's `server-hooks`, when its component exports them.
fn load_server_hooks(
    indices: &Option<ServerHooksIndices>,
    store: &mut Store<State>,
    instance: &wasmtime::component::Instance,
) -> Result<Option<ServerHooks>> {
    match indices {
        Some(indices) => Ok(Some(indices.load(&mut *store, instance)?)),
        None => Ok(None),
    }
}

/// The module's bytes: a regular file, of at most
/// [`files::MAX_MODULE`](crate::config::files::MAX_MODULE) bytes.
/// What identifies one version of a module file: its inode, size and
/// modification time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModuleStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
}

impl ModuleStamp {
    /// The stamp of the file at `path` as it is now.
    pub fn of(path: &std::path::Path) -> std::io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path)?;
        Ok(Self {
            dev: meta.dev(),
            ino: meta.ino(),
            size: meta.size(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        })
    }
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    use crate::config::files;
    files::read_regular(path, files::MAX_MODULE).map_err(|why| anyhow!("cannot read: {why}"))
}

/// Checks what `bytes` are, compiles and links them.
fn prepare(
    engine: &Engine,
    bytes: &[u8],
    cache: Option<&super::cache::ModuleCache>,
) -> Result<Pre> {
    let adapted = wasmparser::Parser::is_core_wasm(bytes);
    if adapted {
        super::adapt::check_command(bytes)?;
    } else if !wasmparser::Parser::is_component(bytes) {
        bail!("not a WebAssembly component (no `\\0asm` component header)");
    }
    let component = match cache {
        Some(cache) => cache.component(engine, bytes)?,
        None => super::cache::compile(engine, bytes)?,
    };
    let mut linker = Linker::<State>::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    bindings::Handler::add_to_linker::<State, HasSelf<State>>(&mut linker, |state| state)?;
    bindings::mux::netserver::handler::connections::add_to_linker::<State, HasSelf<State>>(
        &mut linker,
        |state| state,
    )?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    // Every import is resolved now, before anything is bound: a handler
    // that needs what this host does not provide is refused at start.
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| anyhow!("cannot link: {e:#}"))?;
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(name, _)| name.to_owned())
        .collect();
    let server = match exports.iter().find(|e| serves(e, "server-hooks", 4)) {
        Some(name) => Some(
            ServerHooksIndices::new(&pre)
                .map_err(|e| anyhow!("its {name} export does not match the WIT contract: {e:#}"))?,
        ),
        None => None,
    };
    // Worker hooks of a version this host does not serve would never run:
    // refused rather than ignored.
    if let Some(other) = exports
        .iter()
        .find(|e| e.starts_with("netserver:handler/server-hooks") && server.is_none())
    {
        bail!("exports {other}, but this host serves {SERVER_HOOKS_EXPORT}");
    }
    if let Some(hooks) = exports.iter().find(|e| serves(e, "hooks", 0)) {
        let indices = bindings::HandlerIndices::new(&pre)
            .map_err(|e| anyhow!("its {hooks} export does not match the WIT contract: {e:#}"))?;
        return Ok(Pre::Handler {
            pre,
            hooks: indices,
            server,
        });
    }
    if let Some(mux) = exports.iter().find(|e| serves(e, "mux", 3)) {
        let indices = bindings::mux::MuxHandlerIndices::new(&pre)
            .map_err(|e| anyhow!("its {mux} export does not match the WIT contract: {e:#}"))?;
        return Ok(Pre::Mux {
            pre,
            mux: indices,
            server,
        });
    }
    if let Some(other) = exports
        .iter()
        .find(|e| e.starts_with("netserver:handler/hooks"))
    {
        bail!("exports {other}, but this host serves {HOOKS_SERVED}");
    }
    if let Some(other) = exports
        .iter()
        .find(|e| e.starts_with("netserver:handler/mux"))
    {
        bail!("exports {other}, but this host serves {MUX_EXPORT}");
    }
    if exports
        .iter()
        .any(|e| e.starts_with(super::http::INCOMING_HANDLER_PREFIX))
    {
        let pre = ProxyPre::new(pre).map_err(|e| {
            anyhow!("its wasi:http/incoming-handler export does not match WASI 0.2: {e:#}")
        })?;
        return Ok(Pre::Http(pre));
    }
    if exports.iter().any(|e| e.starts_with(RUN_EXPORT_PREFIX)) {
        let pre = CommandPre::new(pre)
            .map_err(|e| anyhow!("its wasi:cli/run export does not match WASI 0.2: {e:#}"))?;
        return Ok(Pre::Command { pre, adapted });
    }
    bail!(
        "exports neither {HOOKS_EXPORT} (a handler), {MUX_EXPORT} (a mux handler), wasi:http/incoming-handler@0.2 (a wasi:http component) nor wasi:cli/run (a WASI command); it exports: [{}]",
        exports.join(", ")
    )
}

enum Guest {
    Handler(bindings::Handler),
    Mux(bindings::MuxHandler),
    Command(Command),
    Http(Proxy),
}

/// One instance of a handler with its Store.
pub struct Instance {
    store: Store<State>,
    guest: Guest,
    /// Its `server-hooks`, when it exports them.
    server: Option<ServerHooks>,
}

/// Calls hook `$method` of a handler guest with a fresh CPU budget; a
/// command guest has no such hook, and a handler's hook that said it does
/// nothing ([`super::hints`]) is not called: both yield `$default`.
macro_rules! hook {
    ($self:ident, $method:ident, $hook:ident, $default:expr) => {{
        match &$self.guest {
            Guest::Handler(h) if !$self.store.data().skips(Hook::$hook) => {
                $self.store.data_mut().cpu.reset();
                h.netserver_handler_hooks().$method(&mut $self.store).await
            }
            _ => Ok($default),
        }
    }};
}

impl Instance {
    /// Sets (or clears) the client the `client` import reports.
    pub fn set_client(&mut self, client: Option<ClientInfo>) {
        self.store.data_mut().client = client;
    }

    /// The slot connecting stdin and stdout to the client.
    pub fn io(&self) -> &GuestIo {
        &self.store.data().io
    }

    /// `child-init-hook`.
    pub async fn child_init_hook(&mut self) -> wasmtime::Result<()> {
        hook!(self, call_child_init_hook, ChildInitHook, ())
    }

    /// `post-accept-hook`.
    pub async fn post_accept_hook(&mut self) -> wasmtime::Result<()> {
        hook!(self, call_post_accept_hook, PostAcceptHook, ())
    }

    /// `allow-deny-hook`: whether to serve the client.
    pub async fn allow_deny_hook(&mut self) -> wasmtime::Result<bool> {
        hook!(self, call_allow_deny_hook, AllowDenyHook, true)
    }

    /// `request-denied-hook`.
    pub async fn request_denied_hook(&mut self) -> wasmtime::Result<()> {
        hook!(self, call_request_denied_hook, RequestDeniedHook, ())
    }

    /// `process-request`, or a command's `run`. The outer `Err` is a trap;
    /// the inner one the reason the guest gave for failing.
    pub async fn process_request(&mut self) -> wasmtime::Result<Result<(), String>> {
        self.store.data_mut().cpu.reset();
        match &self.guest {
            Guest::Handler(h) => {
                h.netserver_handler_hooks()
                    .call_process_request(&mut self.store)
                    .await
            }
            Guest::Command(c) => {
                let run = c.wasi_cli_run().call_run(&mut self.store).await?;
                Ok(run.map_err(|()| "the command exited with a failure status".to_owned()))
            }
            Guest::Mux(_) => Err(wasmtime::format_err!(
                "a mux handler has no process-request"
            )),
            Guest::Http(_) => Err(wasmtime::format_err!(
                "a wasi:http component has no process-request"
            )),
        }
    }

    /// `wasi:http/incoming-handler.handle`: hands `request` (which came
    /// over `scheme`) to a wasi:http guest with a fresh CPU budget; its
    /// response goes to `respond` (as soon as the guest sets it: the call
    /// returns once the guest has written the body, too). An `Err` is a
    /// trap.
    pub async fn handle_http(
        &mut self,
        request: hyper::Request<super::http::HyperIncomingBody>,
        scheme: super::http::Scheme,
        respond: super::http::Respond,
    ) -> wasmtime::Result<()> {
        let Guest::Http(proxy) = &self.guest else {
            return Err(wasmtime::format_err!("not a wasi:http component"));
        };
        let state = self.store.data_mut();
        state.cpu.reset();
        let mut http = state.http();
        let request = http.new_incoming_request(scheme, request)?;
        let out = http.new_response_outparam(respond)?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut self.store, request, out)
            .await
    }

    /// `post-process-request-hook`.
    pub async fn post_process_request_hook(&mut self) -> wasmtime::Result<()> {
        hook!(
            self,
            call_post_process_request_hook,
            PostProcessRequestHook,
            ()
        )
    }

    /// `post-client-connection-hook`.
    pub async fn post_client_connection_hook(&mut self) -> wasmtime::Result<()> {
        hook!(
            self,
            call_post_client_connection_hook,
            PostClientConnectionHook,
            ()
        )
    }

    /// `child-finish-hook`.
    pub async fn child_finish_hook(&mut self) -> wasmtime::Result<()> {
        hook!(self, call_child_finish_hook, ChildFinishHook, ())
    }

    /// `dequeue`.
    pub async fn dequeue(&mut self) -> wasmtime::Result<()> {
        hook!(self, call_dequeue, Dequeue, ())
    }
}

/// Calls mux callback `$method` about connection `$conn` (`None`: about
/// none) with a fresh CPU budget; the `client` import reports that
/// connection's client meanwhile. A guest of another world has no such
/// callback: an error.
macro_rules! callback {
    ($self:ident, $conn:expr, $method:ident $(, $arg:expr)*) => {{
        let Guest::Mux(m) = &$self.guest else {
            return Err(wasmtime::format_err!("not a mux handler"));
        };
        let state = $self.store.data_mut();
        state.cpu.reset();
        state.mux.set_current($conn);
        let result = m.netserver_handler_mux().$method(&mut $self.store $(, $arg)*).await;
        $self.store.data_mut().mux.set_current(None);
        result
    }};
}

/// The mux world's callbacks (see `wit/handler.wit`, interface `mux`).
impl Instance {
    /// The instance's connections and timers.
    pub fn mux(&mut self) -> &mut MuxTable {
        &mut self.store.data_mut().mux
    }

    /// `child-init-hook` of a mux handler.
    pub async fn mux_init(&mut self) -> wasmtime::Result<()> {
        callback!(self, None, call_child_init_hook)
    }

    /// `mux-connection`: whether the guest serves connection `id`.
    pub async fn mux_connection(&mut self, id: ConnId) -> wasmtime::Result<bool> {
        let Some(client) = self.store.data().mux.client(id).map(wit_info) else {
            return Ok(false);
        };
        callback!(self, Some(id), call_mux_connection, id, &client)
    }

    /// `mux-input`: how many bytes of `data` the guest consumed.
    pub async fn mux_input(&mut self, id: ConnId, data: &[u8]) -> wasmtime::Result<u32> {
        callback!(self, Some(id), call_mux_input, id, data)
    }

    /// `mux-eof`, with what was left unconsumed.
    pub async fn mux_eof(&mut self, id: ConnId, rest: &[u8]) -> wasmtime::Result<()> {
        callback!(self, Some(id), call_mux_eof, id, rest)
    }

    /// `mux-close`.
    pub async fn mux_close(&mut self, id: ConnId) -> wasmtime::Result<()> {
        callback!(self, Some(id), call_mux_close, id)
    }

    /// `mux-timeout`: a connection's timeout, or (`None`) the instance's
    /// timer.
    pub async fn mux_timeout(&mut self, id: Option<ConnId>) -> wasmtime::Result<()> {
        callback!(self, id, call_mux_timeout, id)
    }

    /// `dequeue` of a mux handler, on this instance.
    pub async fn mux_dequeue(&mut self) -> wasmtime::Result<()> {
        callback!(self, None, call_dequeue)
    }

    /// `child-finish-hook` of a mux handler.
    pub async fn mux_finish(&mut self) -> wasmtime::Result<()> {
        callback!(self, None, call_child_finish_hook)
    }
}

/// Calls hook `$method` of `server-hooks` with a fresh CPU budget, about
/// no client; a guest without them, or whose hook said it does nothing,
/// is not called.
macro_rules! server_hook {
    ($self:ident, $method:ident, $hook:ident $(, $arg:expr)*) => {{
        match &$self.server {
            Some(server) if !$self.store.data().skips(WitServerHook::$hook) => {
                let state = $self.store.data_mut();
                state.cpu.reset();
                state.client = None;
                state.mux.set_current(None);
                server.$method(&mut $self.store $(, $arg)*).await
            }
            _ => Ok(()),
        }
    }};
}

/// The worker's hooks (see `wit/handler.wit`, interface `server-hooks`).
impl Instance {
    /// `signal-hook`, for a signal that reached the worker (HUP, USR1 or
    /// USR2; others are not the guest's).
    pub async fn signal_hook(&mut self, signal: nix::sys::signal::Signal) -> wasmtime::Result<()> {
        use nix::sys::signal::Signal;
        let signal = match signal {
            Signal::SIGHUP => WitSignal::Hup,
            Signal::SIGUSR1 => WitSignal::Usr1,
            Signal::SIGUSR2 => WitSignal::Usr2,
            _ => return Ok(()),
        };
        server_hook!(self, call_signal_hook, SignalHook, signal)
    }

    /// `server-close-hook`, as the server closes for `closing` (nothing
    /// when it is not closing).
    pub async fn server_close_hook(&mut self, closing: Closing) -> wasmtime::Result<()> {
        let reason = match closing {
            Closing::No => return Ok(()),
            Closing::Drain => WitCloseReason::Drain,
            Closing::Stop => WitCloseReason::Stop,
            Closing::Restart => WitCloseReason::Restart,
        };
        server_hook!(self, call_server_close_hook, ServerCloseHook, reason)
    }

    /// `idle-hook`.
    pub async fn idle_hook(&mut self) -> wasmtime::Result<()> {
        server_hook!(self, call_idle_hook, IdleHook)
    }
}
