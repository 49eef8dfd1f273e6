//! Serving inside one worker process: its own tokio runtime and epoch
//! ticker, built after the fork, accepting on the listening sockets it
//! shares with the other workers.
//!
//! A worker is either *concurrent* (`multiplex`: many connections at once,
//! each in its own instance) or *sequential* (`single`, `prefork`,
//! `prefork-simple`: one connection at a time, up to `max_requests`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::future::select_all;
use tokio::net::{TcpListener, TcpStream};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Semaphore;

use crate::config::{Config, ServiceConfig};
use crate::connection::{self, Accepted, Thread};
use crate::listen::{self, Bound};
use crate::process::inherit::Handed;
use crate::process::status::StatusWriter;
use crate::wasm::Handler;
use crate::wasm::ticker;

/// One service ready to serve: its handler, its bound sockets, its limits.
pub struct Service {
    /// How often its `dequeue` runs, and at most how many at once.
    pub dequeue: Option<(Duration, u32)>,
    /// The compiled handler.
    pub handler: Arc<Handler>,
    /// Its listening sockets.
    pub sockets: Vec<Bound>,
    /// Connections served at once (per worker).
    pub max_instances: u32,
    /// How long a connection may move no byte.
    pub idle_timeout: Duration,
}

/// Binds (or takes over) every service's sockets. `handlers` are in the
/// order of `config.services`. Sockets systemd handed over that no
/// listener names go to the only service (with several, they are closed
/// with a warning).
pub fn bind(config: &Config, handlers: Vec<Handler>, handed: &mut Handed) -> Result<Vec<Service>> {
    let mut services = Vec::new();
    // Under socket activation, ports nobody configured are systemd's to give.
    let activated = handed.has_systemd_sockets();
    for (service, handler) in config.services.iter().zip(handlers) {
        let port_given = service
            .options
            .get("port")
            .is_some_and(|(_, source)| *source != crate::config::Source::Default);
        if activated && !port_given {
            services.push(Service::unbound(service, handler));
        } else {
            services.push(Service::bind(service, handler, handed)?);
        }
    }
    let rest = handed.take_systemd_rest();
    match services.as_mut_slice() {
        [only] => {
            for inherited in rest {
                tracing::info!(
                    "Binding to TCP port {} on host {} with IPv{} (inherited from systemd)",
                    inherited.addr.port(),
                    inherited.addr.ip(),
                    if inherited.addr.is_ipv4() { 4 } else { 6 }
                );
                only.sockets.push(Bound {
                    listener: crate::config::Listener {
                        host: inherited.addr.ip().to_string(),
                        port: crate::config::Port::Number(inherited.addr.port()),
                        proto: crate::config::Proto::Tcp,
                        ipv: crate::config::Ipv::Any,
                    },
                    socket: inherited.socket,
                    addr: inherited.addr,
                });
            }
        }
        _ => {
            for inherited in rest {
                tracing::warn!(
                    "closing the socket systemd handed over for {}: no service lists it",
                    inherited.addr
                );
            }
        }
    }
    for service in &services {
        let handler = &service.handler;
        let addrs: Vec<String> = service.sockets.iter().map(|b| b.addr.to_string()).collect();
        tracing::info!(
            "Serving {} ({}) as service {} on {}",
            handler.source(),
            handler.kind(),
            handler.service_name(),
            addrs.join(", ")
        );
    }
    Ok(services)
}

impl Service {
    fn unbound(config: &ServiceConfig, handler: Handler) -> Self {
        Self {
            handler: Arc::new(handler),
            sockets: Vec::new(),
            max_instances: config.max_instances,
            idle_timeout: config.idle_timeout,
            dequeue: config
                .check_for_dequeue
                .map(|every| (every, config.max_dequeue)),
        }
    }

    fn bind(config: &ServiceConfig, handler: Handler, handed: &mut Handed) -> Result<Self> {
        Ok(Self {
            handler: Arc::new(handler),
            sockets: listen::bind_all(&config.listeners, handed)?,
            max_instances: config.max_instances,
            idle_timeout: config.idle_timeout,
            dequeue: config
                .check_for_dequeue
                .map(|every| (every, config.max_dequeue)),
        })
    }
}

/// How a worker serves.
pub enum Mode {
    /// Many connections at once (`multiplex`).
    Concurrent,
    /// One connection at a time.
    Sequential {
        /// Connections to serve before exiting (to be replaced).
        max_requests: u64,
        /// Taken around accept, so that one child at a time waits on the
        /// sockets (`serialize flock`).
        lock: Option<std::fs::File>,
        /// Where to say "busy" and "idle" to the parent (`prefork`).
        status: Option<std::fs::File>,
    },
}

/// Runs a worker until it is told to stop (INT or TERM: at once; QUIT:
/// after its open connections, within `quit_timeout`) or, sequential, has
/// served `max_requests`. Returns the process's exit status.
pub fn run_worker(services: Vec<Service>, mode: Mode, quit_timeout: Duration) -> i32 {
    let runtime = match &mode {
        Mode::Concurrent => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("netserver-worker")
            .build(),
        Mode::Sequential { .. } => one_thread_runtime(),
    };
    let runtime = match runtime.context("cannot start the runtime") {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("{err:#}");
            return 1;
        }
    };
    let result = runtime.block_on(async move {
        let stop = Stop::new()?;
        // Every service's handler shares one engine: one ticker.
        if let Some(first) = services.first() {
            ticker::start(first.handler.engine().clone())?;
        }
        let handlers: Vec<Arc<Handler>> = services.iter().map(|s| s.handler.clone()).collect();
        let served = match mode {
            Mode::Concurrent => concurrent(services, stop, quit_timeout).await,
            Mode::Sequential {
                max_requests,
                lock,
                status,
            } => sequential(services, stop, max_requests, lock, status).await,
        };
        // The worker ends: its shared instances (`instance per-worker`)
        // run their child-finish-hook.
        for handler in handlers {
            handler.retire().await;
        }
        served
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => 0,
        Err(err) => {
            tracing::error!("worker: {err:#}");
            1
        }
    }
}

/// Serves many connections at once until QUIT, then lets them finish.
async fn concurrent(services: Vec<Service>, mut stop: Stop, quit_timeout: Duration) -> Result<()> {
    let mut loops = tokio::task::JoinSet::new();
    let mut places = Vec::new();
    for service in services {
        // Each service has its own cap: one tenant's clients cannot take
        // another's places.
        let permits = Arc::new(Semaphore::new(service.max_instances as usize));
        for bound in service.sockets {
            let listener = TcpListener::from_std(bound.socket)?;
            loops.spawn(accept_loop(
                listener,
                service.handler.clone(),
                permits.clone(),
                service.idle_timeout,
            ));
        }
        places.push((permits, service.max_instances));
    }
    stop.quit().await;
    // Stop accepting: the listening sockets close with their loops.
    loops.shutdown().await;
    let all_done = async {
        for (permits, n) in &places {
            let _ = permits.acquire_many(*n).await;
        }
    };
    if tokio::time::timeout(quit_timeout, all_done).await.is_err() {
        tracing::warn!(
            "QUIT: connections still open after {}s are closed",
            quit_timeout.as_secs_f64()
        );
    }
    Ok(())
}

/// Serves one connection at a time until QUIT or `max_requests`.
async fn sequential(
    services: Vec<Service>,
    mut stop: Stop,
    max_requests: u64,
    lock: Option<std::fs::File>,
    status: Option<std::fs::File>,
) -> Result<()> {
    let mut listeners = Vec::new();
    let mut by_socket = Vec::new();
    for service in &services {
        for bound in &service.sockets {
            let listener = TcpListener::from_std(bound.socket.try_clone()?)?;
            let local = connection::fixed_local(&listener);
            listeners.push((listener, local));
            by_socket.push((service.handler.clone(), service.idle_timeout));
        }
    }
    drop(services);
    let lock = lock.map(Arc::new);
    let place = Arc::new(Semaphore::new(1));
    let status = status.map(StatusWriter::new);
    let say = |busy| {
        if let Some(status) = &status {
            status.say(busy);
        }
    };
    let mut served = 0;
    while served < max_requests {
        let guard = match &lock {
            Some(lock) => tokio::select! {
                guard = AcceptLock::take(lock.clone()) => Some(guard?),
                () = stop.quit() => break,
            },
            None => None,
        };
        let accepted = tokio::select! {
            accepted = accept_any(&listeners) => accepted,
            () = stop.quit() => break,
        };
        drop(guard);
        let (accepted, index) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        say(true);
        let _ = accepted.stream.set_nodelay(true);
        let (handler, idle_timeout) = by_socket[index].clone();
        let permit = place.clone().acquire_owned().await?;
        let thread = Thread::Alone {
            stop: stop.raised.clone(),
        };
        connection::serve(handler, accepted, idle_timeout, thread, permit).await;
        served += 1;
        say(false);
    }
    Ok(())
}

/// Accepts the first client to arrive on any of `listeners` (each given
/// with its [`connection::fixed_local`] address); says which one took it.
async fn accept_any(
    listeners: &[(TcpListener, Option<SocketAddr>)],
) -> std::io::Result<(Accepted, usize)> {
    let accepts = listeners
        .iter()
        .map(|(listener, local)| Box::pin(Accepted::next(listener, *local)));
    let (result, index, _) = select_all(accepts).await;
    result.map(|accepted| (accepted, index))
}

/// An exclusive `flock` on the accept lock file, released when dropped.
struct AcceptLock(Arc<std::fs::File>);

impl AcceptLock {
    async fn take(file: Arc<std::fs::File>) -> Result<Self> {
        let held = file.clone();
        tokio::task::spawn_blocking(move || held.lock())
            .await?
            .context("cannot lock the accept lock file")?;
        Ok(Self(file))
    }
}

impl Drop for AcceptLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

/// Accepts on one socket while a permit (a place among the concurrent
/// instances) is free; further clients wait in the backlog.
async fn accept_loop(
    listener: TcpListener,
    handler: Arc<Handler>,
    permits: Arc<Semaphore>,
    idle_timeout: Duration,
) {
    let local = connection::fixed_local(&listener);
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        match Accepted::next(&listener, local).await {
            Ok(accepted) => {
                // Replies are written whole by the guest: send them at once.
                let _ = accepted.stream.set_nodelay(true);
                tokio::spawn(connection::serve(
                    handler.clone(),
                    accepted,
                    idle_timeout,
                    Thread::Shared,
                    permit,
                ));
            }
            Err(err) => {
                // Out of descriptors, or a client that reset before accept:
                // log, back off briefly, keep serving.
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// A worker's signals: INT and TERM end the process at once; QUIT asks it
/// to finish.
struct Stop {
    quit: Signal,
    /// Raised by INT and TERM, for a guest's read sleeping in its socket
    /// (see [`Thread::Alone`]): the process ends when its runtime next runs.
    raised: Arc<AtomicBool>,
}

impl Stop {
    fn new() -> Result<Self> {
        let raised = Arc::new(AtomicBool::new(false));
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, raised.clone())?;
        }
        let mut int = signal(SignalKind::interrupt())?;
        let mut term = signal(SignalKind::terminate())?;
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
            // Stop at once: open connections end with the process.
            std::process::exit(0);
        });
        let quit = signal(SignalKind::quit())?;
        crate::process::ready_for_signals();
        Ok(Self { quit, raised })
    }

    async fn quit(&mut self) {
        self.quit.recv().await;
    }
}

/// Serves the one connection `stream` on a runtime of its own (a `fork`
/// child, or `inetd`), then returns the exit status. INT and TERM end it at
/// once.
pub fn serve_one(
    handler: Arc<Handler>,
    stream: std::net::TcpStream,
    idle_timeout: Duration,
) -> i32 {
    let span = tracing::Span::none();
    one_shot(handler.clone(), span, |stop| async move {
        stream.set_nonblocking(true)?;
        let stream = TcpStream::from_std(stream)?;
        let _ = stream.set_nodelay(true);
        let permit = Arc::new(Semaphore::new(1)).acquire_owned().await?;
        let thread = Thread::Alone { stop };
        connection::serve(handler, Accepted::new(stream), idle_timeout, thread, permit).await;
        Ok(())
    })
}

/// Runs the guest's `dequeue` once on a fresh instance (a process of its
/// own, forked by the master every `check_for_dequeue` seconds); returns the
/// exit status.
pub fn run_dequeue(handler: Arc<Handler>) -> i32 {
    let span = tracing::info_span!("dequeue", service = %handler.service_name());
    one_shot(handler.clone(), span, |_| async move {
        let io = crate::wasm::stdio::GuestIo::default();
        let mut instance = handler.instantiate(io, None).await?;
        instance
            .dequeue()
            .await
            .map_err(|e| anyhow::anyhow!("guest trapped in dequeue: {}", e.root_cause()))
    })
}

/// The runtime of a process that serves one connection at a time: on the
/// main thread, where the stop signals go (its blocking pool leaves them
/// there), so that they wake a guest's read sleeping in its socket.
fn one_thread_runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_start(crate::process::leave_signals_to_main_thread)
        .build()
}

/// Runs `work` once on a current-thread runtime of its own, with the stop
/// signals (`work` is given the flag INT and TERM raise) and an epoch
/// ticker for `handler`'s engine; returns the exit status (an error is
/// logged in `span`).
fn one_shot<F: std::future::Future<Output = Result<()>>>(
    handler: Arc<Handler>,
    span: tracing::Span,
    work: impl FnOnce(Arc<AtomicBool>) -> F,
) -> i32 {
    let runtime = match one_thread_runtime() {
        Ok(runtime) => runtime,
        Err(err) => {
            tracing::error!("cannot start the runtime: {err}");
            return 1;
        }
    };
    let result: Result<()> = runtime.block_on(tracing::Instrument::instrument(
        async move {
            let stop = Stop::new()?;
            ticker::start(handler.engine().clone())?;
            work(stop.raised.clone()).await
        },
        span.clone(),
    ));
    runtime.shutdown_timeout(Duration::from_millis(100));
    match result {
        Ok(()) => 0,
        Err(err) => {
            let _entered = span.enter();
            tracing::error!("{err:#}");
            1
        }
    }
}
