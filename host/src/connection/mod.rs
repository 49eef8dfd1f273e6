//! A connection's life: the service's admission, then in the hooks world
//! an instance (fresh, or the worker's) and Net::Server's hooks in order,
//! or in the mux world the worker's one instance and its callbacks
//! ([`mux`]); close, and one log line saying how it ended. Nothing that
//! happens here reaches the listener or another connection.

pub mod http;
pub mod mux;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::access::Verdict;
use crate::board::{
    self,
    stats::{Ending, Refusal},
};
use crate::capacity::{Live, Place};
use crate::client::ClientInfo;
use crate::fairness;
use crate::log::tag::tagged;
use crate::service::{Admitted, Service, Unmade};
use crate::transport::{ClientSocket, Incoming, KeptWriting, Wait};
use crate::wasm::budget::Which;
use crate::wasm::stdio::GuestIo;
use crate::wasm::{Handler, Instance};

/// Why a connection ended.
#[derive(Debug)]
pub enum End {
    /// The hooks ran to the end.
    Served,
    /// An access rule (or `allow-deny-hook`, as named) refused the client.
    Denied(String),
    /// `process-request` returned an error.
    HandlerError(String),
    /// The guest exited through WASI with this status.
    Exited(i32),
    /// The guest trapped (panic, bad memory access, a limit) in `hook`.
    Trap {
        /// The hook that was running.
        hook: &'static str,
        /// What happened.
        error: wasmtime::Error,
    },
    /// No instance could be made.
    Instantiate(anyhow::Error),
    /// The client went away while the guest was still writing to it.
    ClientGone,
    /// A reply datagram could not be sent (the sender's socket is gone, or
    /// not writable by the server's user).
    ReplyFailed(std::io::Error),
    /// No byte moved for the idle timeout.
    Idle(Duration),
    /// The connection lasted its whole `connection_timeout`.
    TimedOut(Duration),
    /// HTTP: a request head took longer than `timeout_header`.
    HeaderTimeout(Duration),
    /// Its place was taken for a waiting client (see [`crate::capacity`]).
    Evicted,
    /// Mux world: more than this many bytes were queued for a client that
    /// does not read (`mux_write_cap`).
    WriteCap(u64),
    /// Mux world: the guest left more than this many bytes of input
    /// unconsumed (`mux_input_cap`).
    InputCap(u64),
    /// Mux world: the instance holding the connection trapped, or could
    /// not be made.
    Instance(String),
    /// Its instance could not have its first memory within a budget
    /// (`memory_budget`, `worker_memory`): the connection is refused; why.
    NoMemory(String),
    /// The guest wrote this many bytes, its `max_bytes_written`.
    BytesWritten(u64),
    /// The client went away, and the guest kept writing to it (see
    /// [`crate::transport::WRITES_AFTER_FAILURE`]).
    KeptWriting,
}

impl End {
    /// Whether the guest or the host failed (logged at `err`), as opposed to
    /// an ordinary end (logged at `info`).
    pub fn is_fault(&self) -> bool {
        if self.budget().is_some() {
            // A connection refused (or a mux instance's connection ended)
            // for a full budget is no fault: the budget says it is full,
            // at most every 10 s (see `wasm::budget`). An instance that
            // trapped at one is, as any trap.
            return matches!(self, Self::Trap { .. });
        }
        matches!(
            self,
            Self::HandlerError(_) | Self::Trap { .. } | Self::Instantiate(_) | Self::Instance(_)
        ) || matches!(self, Self::Exited(status) if *status != 0)
    }

    /// How a failed instantiation ends the connection: refused, when a
    /// memory budget had no room for the instance's first memory.
    fn instantiate(error: anyhow::Error) -> Self {
        let why = error.root_cause().to_string();
        match Which::named_in(&why) {
            Some(_) => Self::NoMemory(why),
            None => Self::Instantiate(error),
        }
    }

    /// The memory budget that ended the connection, if one did: an
    /// instance that could not be made or grow within it (in the mux
    /// world, the instance holding the connection).
    fn budget(&self) -> Option<Which> {
        match self {
            Self::Trap { error, .. } => Which::named_in(&error.root_cause().to_string()),
            Self::NoMemory(why) | Self::Instance(why) => Which::named_in(why),
            _ => None,
        }
    }

    /// The refusal this end is also counted as, if it is one: the guest's
    /// own, or a memory budget with no room for a new instance.
    fn refusal(&self) -> Option<Refusal> {
        match self {
            Self::Denied(by) if [HOOK_REFUSAL, MUX_REFUSAL].contains(&by.as_str()) => {
                Some(Refusal::AllowDenyHook)
            }
            Self::NoMemory(_) => match self.budget() {
                Some(Which::Worker) => Some(Refusal::WorkerMemory),
                _ => Some(Refusal::MemoryBudget),
            },
            Self::Instance(why) if why.starts_with(UNMADE) => match self.budget()? {
                Which::Service => Some(Refusal::MemoryBudget),
                Which::Worker => Some(Refusal::WorkerMemory),
            },
            _ => None,
        }
    }

    /// How a hook's error ends the connection: a WASI exit, a client that
    /// went away under the guest's writes, or a trap.
    fn trap<'a>(
        hook: &'static str,
        socket: &'a ClientSocket,
    ) -> impl FnOnce(wasmtime::Error) -> End + 'a {
        move |error| {
            if let Some(exit) = error.downcast_ref::<wasmtime_wasi::I32Exit>() {
                End::Exited(exit.0)
            } else if error.downcast_ref::<KeptWriting>().is_some() {
                End::KeptWriting
            } else if socket.write_failed().is_some() {
                End::ClientGone
            } else {
                End::Trap { hook, error }
            }
        }
    }
}

/// How the error of an instance that could not be made begins (in the
/// mux world, where it reaches the connections as text).
pub const UNMADE: &str = "cannot instantiate the handler";

/// What the guest refusing a client is called in [`End::Denied`] in the
/// hooks world...
const HOOK_REFUSAL: &str = "allow-deny-hook";
/// ...and in the mux world.
const MUX_REFUSAL: &str = "mux-connection";

impl End {
    /// How the metrics count this end.
    fn ending(&self) -> Ending {
        match self.budget() {
            Some(Which::Service) => return Ending::MemoryBudget,
            Some(Which::Worker) => return Ending::WorkerMemory,
            None => {}
        }
        match self {
            Self::Served => Ending::Served,
            Self::Denied(_) => Ending::Denied,
            Self::HandlerError(_) => Ending::HandlerError,
            Self::Exited(_) => Ending::Exited,
            Self::Trap { error, .. } => {
                let why = error.root_cause().to_string();
                if why.contains(crate::wasm::sandbox::CPU_LIMIT_TRAP) {
                    Ending::CpuLimit
                } else if why.contains(crate::wasm::sandbox::MEMORY_LIMIT_TRAP) {
                    Ending::MemoryLimit
                } else {
                    Ending::Trap
                }
            }
            Self::Instantiate(_) => Ending::InstantiateFailed,
            Self::ClientGone | Self::KeptWriting => Ending::ClientGone,
            Self::ReplyFailed(_) => Ending::ReplyFailed,
            Self::Idle(_) | Self::HeaderTimeout(_) => Ending::IdleTimeout,
            Self::TimedOut(_) => Ending::ConnectionTimeout,
            Self::Evicted => Ending::Evicted,
            Self::WriteCap(_) => Ending::WriteCap,
            Self::InputCap(_) => Ending::InputCap,
            Self::Instance(_) => Ending::MuxInstance,
            Self::NoMemory(_) => Ending::MemoryBudget,
            Self::BytesWritten(_) => Ending::BytesWritten,
        }
    }
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Served => f.write_str("served"),
            Self::Denied(by) => write!(f, "denied by {by}"),
            Self::HandlerError(why) => write!(f, "process-request failed: {why}"),
            Self::Exited(status) => write!(f, "the guest exited with status {status}"),
            Self::Trap { hook, error } => {
                write!(f, "guest trapped in {hook}: {}", error.root_cause())
            }
            Self::Instantiate(error) => write!(f, "{UNMADE}: {error:#}"),
            Self::ClientGone => f.write_str("the client went away"),
            Self::KeptWriting => write!(f, "the client went away; {KeptWriting}"),
            Self::ReplyFailed(why) => write!(f, "cannot send the reply: {why}"),
            Self::Idle(after) => write!(f, "idle timeout: no data for {}s", after.as_secs_f64()),
            Self::HeaderTimeout(after) => write!(
                f,
                "header timeout: no whole request head within {}s (timeout_header)",
                after.as_secs_f64()
            ),
            Self::TimedOut(after) => {
                write!(f, "connection timeout: open for {}s", after.as_secs_f64())
            }
            Self::Evicted => f.write_str(
                "evicted: every place was taken (max_instances) and its address held the most",
            ),
            Self::WriteCap(cap) => write!(
                f,
                "cut off: more than {cap} bytes were queued for a client that does not read (mux_write_cap)"
            ),
            Self::InputCap(cap) => write!(
                f,
                "the handler left more than {cap} bytes of input unconsumed (mux_input_cap)"
            ),
            Self::Instance(why) => f.write_str(why),
            Self::NoMemory(why) => write!(f, "refused: {why}"),
            Self::BytesWritten(limit) => write!(
                f,
                "cut off: the handler wrote {limit} bytes, its max_bytes_written"
            ),
        }
    }
}

/// Whether the thread serving a connection serves other connections
/// meanwhile; it decides how the guest waits for its client.
#[derive(Clone, Debug)]
pub enum Thread {
    /// Other connections share the thread (`multiplex`): the guest waits
    /// through the runtime.
    Shared,
    /// The thread serves this connection alone (one connection at a time
    /// per process): the guest's reads sleep in the socket, until data, a
    /// timeout, or a signal (`stop` is raised by the ones that end the
    /// process). See [`Wait::InSocket`].
    Alone {
        /// Raised by the signals the runtime must see to (INT, TERM, QUIT).
        stop: Arc<AtomicBool>,
    },
}

/// Serves one client of `service` on `thread` — a connection, or a
/// datagram as one; `place` is its place among the concurrent instances,
/// held until it ends. Before the guest sees it, the client passes the
/// service's admission (see [`Service::admit`]), whose verdict the hooks
/// act on.
pub async fn serve(service: Arc<Service>, incoming: Incoming, thread: Thread, place: Place) {
    if service.mux.is_some() {
        return Box::pin(mux::serve(service, incoming, place)).await;
    }
    // Its polls are charged to the service (and wait for turns while it
    // takes more than its part of the worker: see `fairness`).
    if fairness::enter(service.index).await {
        board::cpu_throttled(service.index);
    }
    // Among the service's connections across workers, while it lasts.
    let Some(_open) = service.open_connection(&incoming) else {
        return;
    };
    // Counted on the board while it lasts (see `crate::board`).
    let _counted = board::client(service.index);
    let Some(admitted) = service.admit(incoming).await else {
        return;
    };
    let tag = admitted.tag.clone();
    if service.http.is_some() {
        return tagged(tag, http::converse(service, admitted, thread)).await;
    }
    tagged(tag, converse_with(&service, admitted, thread, place)).await
}

/// Serves one client of `service` in a task of its own, on a thread
/// other connections share: in the hooks world as [`serve`] does, in the
/// mux world as [`mux::serve`] does — a task of its own size, small while
/// its connection idles.
pub fn spawn(service: Arc<Service>, incoming: Incoming, place: Place) {
    if service.mux.is_some() {
        fairness::spawn(mux::serve(service, incoming, place));
    } else {
        fairness::spawn(serve(service, incoming, Thread::Shared, place));
    }
}

/// The life of an admitted connection: the hooks, within the idle and
/// connection timeouts (and unless evicted to make room), then its summary
/// line.
async fn converse_with(service: &Service, admitted: Admitted, thread: Thread, room: Place) {
    let Admitted {
        stream,
        client,
        verdict,
        place,
        started,
        ..
    } = admitted;
    let idle_timeout = service.idle_timeout;
    // One deadline for the runtime's timer and a sleeping read alike.
    let deadline = service
        .connection_timeout
        .map(|limit| (limit, Instant::now() + limit));
    let wait = match thread {
        Thread::Shared => Wait::Runtime,
        Thread::Alone { stop } => Wait::InSocket {
            idle: idle_timeout,
            deadline: deadline.map(|(_, at)| at),
            stop,
        },
    };
    let socket = match ClientSocket::limited(stream, wait, service.max_bytes_written) {
        Ok(socket) => socket,
        Err(why) => {
            tracing::warn!("closed the connection: cannot set up its socket: {why}");
            return;
        }
    };
    let live = if client.is_datagram() {
        Live::never()
    } else {
        room.live(&client.peer, &socket)
    };
    let deadline = async {
        match deadline {
            Some((limit, at)) => {
                tokio::time::sleep_until(at.into()).await;
                limit
            }
            None => std::future::pending().await,
        }
    };
    let end = tokio::select! {
        end = converse(service, &socket, &client, &verdict) => end,
        () = socket.idle(idle_timeout) => End::Idle(idle_timeout),
        limit = deadline => End::TimedOut(limit),
        () = live.evicted() => End::Evicted,
        () = socket.limit_reached() => End::BytesWritten(service.max_bytes_written),
    };
    // However the guest took its writes being cut (an error, a trap), the
    // limit ended the connection.
    let end = match socket.reached_limit() {
        Some(limit) => End::BytesWritten(limit),
        None => end,
    };
    drop(live);
    // Give the address's place back before saying the connection ended.
    drop(place);
    log_end(&Summary {
        service,
        took: started.elapsed(),
        host: client.peer_host.as_deref(),
        bytes: socket.bytes(),
        end: &end,
        capped: socket.reply_capped(),
    });
}

/// Logs a connection's end — a fault at `err`, an ordinary end at
/// Net::Server's level 3 (`info`), one line per connection — and counts it
/// on the board.
fn log_end(summary: &Summary<'_>) {
    board::ended(
        summary.service.index,
        summary.end.ending(),
        summary.bytes,
        summary.took,
    );
    if let Some(refusal) = summary.end.refusal() {
        board::refused(summary.service.index, refusal);
    }
    // Formatted only when the line is written; a fault's line only within
    // the service's `fault_log_rate` (counted on the board either way).
    if summary.end.is_fault() {
        if !summary.service.fault_log.admit() {
            return;
        }
        tracing::error!("connection ended after {summary}");
        if let End::Trap { error, .. } = summary.end {
            tracing::trace!("trap details: {error:?}");
        }
    } else {
        tracing::debug!("connection ended after {summary}");
    }
}

/// The line a connection's end is logged with: how long it lasted, the
/// client's host name, the bytes each way and why it ended.
struct Summary<'a> {
    /// The service: its column on the board, its `fault_log_rate`.
    service: &'a Service,
    took: Duration,
    host: Option<&'a str>,
    bytes: (u64, u64),
    end: &'a End,
    /// Whether the amplification cap dropped some of a datagram's reply.
    capped: bool,
}

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.1?}", self.took)?;
        if let Some(host) = self.host {
            write!(f, " ({host})")?;
        }
        let (read, written) = self.bytes;
        write!(f, ", {read} bytes in, {written} bytes out: {}", self.end)?;
        if self.capped {
            f.write_str(" (reply capped: udp_amplification)")?;
        }
        Ok(())
    }
}

/// Runs the hooks in Net::Server's order: on a fresh instance, or on the
/// worker's shared one (`instance per-worker`).
async fn converse(
    service: &Service,
    socket: &Arc<ClientSocket>,
    client: &ClientInfo,
    verdict: &Verdict,
) -> End {
    // `watch_module`: a new module the master loaded is served from this
    // connection on.
    service.refresh().await;
    let handler = &service.handler();
    match service.worker_instance() {
        None => fresh(handler, socket, client, verdict).await,
        Some(slot) => shared(service, slot, socket, client, verdict).await,
    }
}

/// Every hook, from `child-init-hook` to `child-finish-hook`, on an
/// instance made for this client.
async fn fresh(
    handler: &Handler,
    socket: &Arc<ClientSocket>,
    client: &ClientInfo,
    verdict: &Verdict,
) -> End {
    let io = GuestIo::default();
    let mut instance = match handler.instantiate(io, Some(client)).await {
        Ok(instance) => instance,
        Err(error) => return End::instantiate(error),
    };
    let trap = |hook| End::trap(hook, socket);
    let hooks = async {
        instance
            .child_init_hook()
            .await
            .map_err(trap("child-init-hook"))?;
        let end = connection_hooks(&mut instance, socket, client, verdict).await?;
        instance
            .child_finish_hook()
            .await
            .map_err(trap("child-finish-hook"))?;
        Ok(end)
    };
    match hooks.await {
        Ok(end) | Err(end) => end,
    }
}

/// The connection's hooks on the worker's shared instance, made (with its
/// `child-init-hook`) at the first connection. Connections take turns. An
/// instance whose hook trapped or exited — or whose connection was cut off
/// mid-hook — is dropped: the next client gets a fresh one.
async fn shared(
    service: &Service,
    slot: &tokio::sync::Mutex<Option<Instance>>,
    socket: &Arc<ClientSocket>,
    client: &ClientInfo,
    verdict: &Verdict,
) -> End {
    let mut turn = slot.lock().await;
    let mut instance = match turn.take() {
        Some(instance) => instance,
        None => match service.make_worker_instance().await {
            Ok(instance) => instance,
            Err(Unmade::Instantiate(error)) => return End::instantiate(error),
            Err(Unmade::Trap(error)) => return End::trap("child-init-hook", socket)(error),
        },
    };
    match connection_hooks(&mut instance, socket, client, verdict).await {
        Ok(end) => {
            *turn = Some(instance);
            end
        }
        Err(end) => end,
    }
}

/// The hooks of one client: `post-accept-hook` through
/// `post-client-connection-hook`, with stdin and stdout attached to the
/// client from the first through `post-process-request-hook` only. As in
/// Net::Server, a client the access rules refuse goes from
/// `post-accept-hook` to `request-denied-hook`; one they allow is put to
/// `allow-deny-hook`.
async fn connection_hooks(
    instance: &mut Instance,
    socket: &Arc<ClientSocket>,
    client: &ClientInfo,
    verdict: &Verdict,
) -> Result<End, End> {
    let trap = |hook| End::trap(hook, socket);
    let io = instance.io().clone();
    instance.set_client(Some(client.clone()));
    io.attach(socket.clone());
    instance
        .post_accept_hook()
        .await
        .map_err(trap("post-accept-hook"))?;
    socket.end_of_hook();
    let mut end = End::Served;
    let allowed = match verdict {
        Verdict::Denied(rule) => {
            end = End::Denied(rule.clone());
            false
        }
        Verdict::Allowed(_) => {
            let allowed = instance
                .allow_deny_hook()
                .await
                .map_err(trap("allow-deny-hook"))?;
            socket.end_of_hook();
            if !allowed {
                end = End::Denied(HOOK_REFUSAL.to_owned());
            }
            allowed
        }
    };
    if allowed {
        let served = instance
            .process_request()
            .await
            .map_err(trap("process-request"))?;
        socket.end_of_hook();
        if let Err(why) = served {
            end = End::HandlerError(why);
        }
    } else {
        // A datagram's sender may be forged: a refused one gets no reply.
        socket.discard_replies();
        instance
            .request_denied_hook()
            .await
            .map_err(trap("request-denied-hook"))?;
    }
    instance
        .post_process_request_hook()
        .await
        .map_err(trap("post-process-request-hook"))?;
    socket.end_of_hook();
    io.detach();
    if let Err(why) = socket.close().await
        && matches!(end, End::Served)
    {
        end = if socket.is_datagram() {
            End::ReplyFailed(why)
        } else {
            End::ClientGone
        };
    }
    instance
        .post_client_connection_hook()
        .await
        .map_err(trap("post-client-connection-hook"))?;
    instance.set_client(None);
    Ok(end)
}
