//! Serving inside one worker process: its own tokio runtime and epoch
//! ticker, built after the fork, accepting on the listening sockets it
//! shares with the other workers.
//!
//! A worker is either *concurrent* (`multiplex`: many connections at once,
//! each in its own instance) or *sequential* (`single`, `prefork`,
//! `prefork-simple`: one connection at a time, up to `max_requests`). A
//! `fork` child and `inetd` serve one connection ([`serve_one`]); a
//! `dequeue` process runs the guest's `dequeue` once ([`run_dequeue`]).
//!
//! A worker also runs its per-worker instances' worker hooks (see
//! `server-hooks` in the WIT): `signal-hook` when USR1, USR2 or HUP reach
//! it, `server-close-hook` when the server closes (the board says whether
//! a stop is the server's or this worker's retirement; see
//! [`crate::board`]), and in a sequential worker `idle-hook` after
//! `check_for_idle` seconds without a client.
//!
//! Each process shows what it does in its title (see [`crate::title`]): a
//! sequential worker when it turns busy or idle, a concurrent one at most
//! once a second ([`TITLE_EVERY`]), never per client.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::{Context, Result};
use futures_util::future::select_all;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::Semaphore;

use super::status::StatusWriter;
use crate::board::stats::Refusal;
use crate::board::{self, Closing};
use crate::busy::Busy;
use crate::capacity::{Capacity, Place, Room};
use crate::config::port::Proto;
use crate::connection::{self, Thread};
use crate::fairness;
use crate::service::{Route, Service, SharedPort};
use crate::threads;
use crate::title::{self, Title};
use crate::transport::{Incoming, Listener, StdIncoming};
use crate::wasm::stdio::GuestIo;
use crate::wasm::ticker;

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
        /// How long without a client before the idle hooks run.
        idle_every: Duration,
    },
}

/// Runs a worker until it is told to stop (INT or TERM: at once; QUIT:
/// after its open connections, within `quit_timeout`) or, sequential, has
/// served `max_requests`. With `busy` (a tenant's worker with
/// `busy_slice`), it asks for long time slices while it keeps a CPU busy.
/// Returns the process's exit status.
pub fn run_worker(
    services: Vec<Service>,
    mode: Mode,
    quit_timeout: Duration,
    busy: Option<Busy>,
) -> i32 {
    let names: Vec<Arc<str>> = services.iter().map(|s| s.name.clone()).collect();
    show_title(&names, false, 0);
    let runtime = match &mode {
        Mode::Concurrent => {
            // Guests that keep computing take turns on all threads but one
            // (see `fairness`): two at least, so that one is always kept
            // for the guests whose clients wait.
            let threads = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
            let mut shares: Vec<u32> = Vec::new();
            for service in &services {
                if shares.len() <= service.index {
                    shares.resize(service.index + 1, fairness::DEFAULT_SHARE);
                }
                shares[service.index] = service.cpu_share;
            }
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .enable_all()
                .thread_name("netserver-worker")
                .build();
            if let Ok(runtime) = &runtime {
                fairness::install(threads, shares, runtime.handle().clone());
            }
            runtime
        }
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
        let mut stop = Stop::new()?;
        // Every service's handler shares one engine: one ticker.
        if let Some(first) = services.first() {
            ticker::start(first.handler().engine().clone(), busy)?;
        }
        let (services, listeners) = listen(services)?;
        // A mux service's instance serves all of this worker's clients.
        for service in &services {
            connection::mux::start(service);
        }
        let hooked: Vec<Arc<Service>> = services
            .iter()
            .filter(|s| s.has_worker_hooks())
            .cloned()
            .collect();
        stop.arm(hooked.clone());
        let signals = GuestSignals::new(!hooked.is_empty())?;
        let served = match mode {
            Mode::Concurrent => {
                tokio::spawn(pass_signals(signals, hooked.clone()));
                tokio::spawn(titles(names));
                concurrent(listeners, stop, quit_timeout, &hooked).await
            }
            Mode::Sequential {
                max_requests,
                lock,
                status,
                idle_every,
            } => {
                let turn = Turn {
                    stop,
                    signals,
                    hooked: &hooked,
                    idle_every,
                    names: &names,
                };
                let served = sequential(listeners, turn, max_requests, lock, status).await;
                // Told to stop (or done): the server may be closing.
                closing_hooks(&hooked, board::closing(), true).await;
                served
            }
        };
        // The worker ends: its shared instances (`instance per-worker`)
        // run their child-finish-hook.
        for service in services {
            service.retire().await;
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

/// Every service's sockets, registered with this worker's runtime, each
/// with who serves what comes in on it.
type Listening = Vec<(Listener, Route)>;

/// Registers every service's sockets with the runtime; a TLS port several
/// services share is routed by server name.
fn listen(services: Vec<Service>) -> Result<(Vec<Arc<Service>>, Listening)> {
    let mut sockets = Vec::new();
    let mut shared = Vec::new();
    for mut service in services {
        sockets.push(std::mem::take(&mut service.sockets));
        shared.push(Arc::new(service));
    }
    let mut listeners = Vec::new();
    for (i, bound) in sockets.into_iter().enumerate() {
        for bound in bound {
            let sharing = bound.shares.iter().map(|&j| shared[j].clone()).collect();
            let route = Route::new(shared[i].clone(), sharing);
            let mut listener = bound.socket.into_listener()?;
            if bound.listener.proto == Proto::Ssl {
                listener = listener.serving_tls();
            }
            listeners.push((listener, route));
        }
    }
    Ok((shared, listeners))
}

/// Serves many connections at once until QUIT, then lets them finish.
async fn concurrent(
    listeners: Listening,
    mut stop: Stop,
    quit_timeout: Duration,
    hooked: &[Arc<Service>],
) -> Result<()> {
    let mut loops = tokio::task::JoinSet::new();
    // Each service has its own places: one tenant's clients cannot take
    // another's.
    let mut places: Vec<(Arc<Service>, Arc<Capacity>)> = Vec::new();
    let mut capacity_of =
        |service: &Arc<Service>| match places.iter().find(|(s, _)| Arc::ptr_eq(s, service)) {
            Some((_, capacity)) => capacity.clone(),
            None => {
                let capacity = Capacity::new(service.name.clone(), service.max_instances);
                places.push((service.clone(), capacity.clone()));
                capacity
            }
        };
    for (listener, route) in listeners {
        match route {
            Route::One(service) => {
                let capacity = capacity_of(&service);
                // The loop's accepts are charged to its service, and wait
                // for turns while it is throttled (see `fairness`).
                loops.spawn(fairness::fair(accept_loop(listener, service, capacity)));
            }
            Route::Shared(port) => {
                let capacities = port.services().iter().map(&mut capacity_of).collect();
                loops.spawn(shared_loop(listener, port, capacities));
            }
        }
    }
    stop.quit().await;
    // Stop accepting: the listening sockets close with their loops.
    loops.shutdown().await;
    let all_done = async {
        // The server closing (not this worker retiring): the guests hear
        // it before their connections finish, and may end them.
        closing_hooks(hooked, board::closing(), true).await;
        for (_, capacity) in &places {
            capacity.all_free().await;
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

/// Serves one connection at a time until QUIT or `max_requests`. QUIT
/// closes the listening sockets at once, even in the middle of a
/// connection (which it lets finish): a child told to stop takes no new
/// client, and a client that connects meanwhile goes to another child.
async fn sequential(
    mut listeners: Listening,
    turn: Turn<'_>,
    max_requests: u64,
    lock: Option<std::fs::File>,
    status: Option<std::fs::File>,
) -> Result<()> {
    let Turn {
        mut stop,
        mut signals,
        hooked,
        idle_every,
        names,
    } = turn;
    // The idle hooks wait for a quiet spell only where some may run.
    let idle_every = (!hooked.is_empty()).then_some(idle_every);
    let lock = lock.map(Arc::new);
    let place = Arc::new(Semaphore::new(1));
    let status = status.map(StatusWriter::new);
    let say = |busy| {
        if let Some(status) = &status {
            status.say(busy);
        }
        // Busy: the client being served counts among those taken.
        show_title(names, busy, board::served() + u64::from(busy));
    };
    let mut served = 0;
    while served < max_requests {
        let guard = match &lock {
            Some(lock) => tokio::select! {
                biased;
                () = stop.quit() => break,
                guard = AcceptLock::take(lock.clone()) => Some(guard?),
            },
            None => None,
        };
        let incoming = tokio::select! {
            biased;
            () = stop.quit() => break,
            incoming = next_any(&listeners) => incoming,
            // Between clients: the instance is free for the worker hooks.
            signal = signals.next() => {
                drop(guard);
                for service in hooked {
                    service.signal(signal).await;
                }
                continue;
            }
            () = quiet(idle_every) => {
                drop(guard);
                for service in hooked {
                    service.idle().await;
                }
                continue;
            }
        };
        drop(guard);
        let (incoming, index) = match incoming {
            Ok(incoming) => incoming,
            Err(err) => {
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        say(true);
        send_at_once(&incoming);
        let Some((service, incoming)) = listeners[index].1.pick(incoming).await else {
            say(false);
            continue;
        };
        let permit = Place::alone(place.clone().acquire_owned().await?);
        let thread = Thread::Alone {
            stop: stop.raised.clone(),
        };
        let serving = connection::serve(service, incoming, thread, permit);
        tokio::pin!(serving);
        let quit = tokio::select! {
            () = &mut serving => false,
            () = stop.quit() => true,
        };
        if quit {
            // Stop accepting first, then let the client finish.
            listeners.clear();
            serving.await;
            say(false);
            break;
        }
        served += 1;
        say(false);
    }
    Ok(())
}

/// What a sequential worker waits on besides its clients.
struct Turn<'a> {
    stop: Stop,
    /// The signals its guests hear.
    signals: GuestSignals,
    /// The services with worker hooks.
    hooked: &'a [Arc<Service>],
    /// How long without a client before the idle hooks run.
    idle_every: Duration,
    /// The services' names, for the process title.
    names: &'a [Arc<str>],
}

/// How often a concurrent worker looks whether its title should change.
const TITLE_EVERY: Duration = Duration::from_secs(1);

/// Shows this worker's title: its services, busy or idle, and the clients
/// it took.
fn show_title(names: &[Arc<str>], busy: bool, served: u64) {
    let services: Vec<&str> = names.iter().map(|n| &**n).collect();
    title::set(&Title::Worker {
        services: &services,
        busy,
        served,
    });
}

/// A concurrent worker's title, looked at every [`TITLE_EVERY`] and
/// rewritten when it changed: busy while at least one client is open.
async fn titles(names: Vec<Arc<str>>) {
    let mut every = tokio::time::interval(TITLE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut shown = (false, 0);
    loop {
        every.tick().await;
        let counts = board::counts();
        let now = (counts.open > 0, counts.served);
        if now != shown {
            show_title(&names, now.0, now.1);
            shown = now;
        }
    }
}

/// Sleeps `every`, or forever when there is nothing to run after it.
async fn quiet(every: Option<Duration>) {
    match every {
        Some(every) => tokio::time::sleep(every).await,
        None => std::future::pending().await,
    }
}

/// Runs the `server-close-hook` of every service in `hooked`, at once,
/// when the server is closing (not when only this worker is retired).
async fn closing_hooks(hooked: &[Arc<Service>], closing: Closing, wait: bool) {
    if closing == Closing::No {
        return;
    }
    futures_util::future::join_all(hooked.iter().map(|s| s.closing(closing, wait))).await;
}

/// The signals that reach the guests' `signal-hook` (HUP, USR1, USR2),
/// caught only when some service of the worker has worker hooks;
/// otherwise they stay as the worker found them.
struct GuestSignals(Vec<(nix::sys::signal::Signal, Signal)>);

impl GuestSignals {
    fn new(catch: bool) -> Result<Self> {
        use nix::sys::signal::Signal as Sig;
        let mut caught = Vec::new();
        if catch {
            for (signal, kind) in [
                (Sig::SIGHUP, SignalKind::hangup()),
                (Sig::SIGUSR1, SignalKind::user_defined1()),
                (Sig::SIGUSR2, SignalKind::user_defined2()),
            ] {
                caught.push((signal, tokio::signal::unix::signal(kind)?));
            }
        }
        Ok(Self(caught))
    }

    /// The next signal (never, when none is caught).
    async fn next(&mut self) -> nix::sys::signal::Signal {
        if self.0.is_empty() {
            return std::future::pending().await;
        }
        let nexts = self
            .0
            .iter_mut()
            .map(|(signal, stream)| Box::pin(async move { stream.recv().await.map(|_| *signal) }));
        match select_all(nexts).await.0 {
            Some(signal) => signal,
            None => std::future::pending().await,
        }
    }
}

/// A concurrent worker's signals go to its services' instances as they
/// come, each delivered in a task of its own (a service whose instance is
/// busy holds up no other).
async fn pass_signals(mut signals: GuestSignals, hooked: Vec<Arc<Service>>) {
    loop {
        let signal = signals.next().await;
        for service in &hooked {
            let service = service.clone();
            fairness::spawn(async move {
                if fairness::work_for(service.index).await {
                    board::cpu_throttled(service.index);
                }
                service.signal(signal).await
            });
        }
    }
}

/// Takes the first client to arrive on any of `listeners` (a connection
/// or a datagram); says which one took it.
async fn next_any(listeners: &Listening) -> std::io::Result<(Incoming, usize)> {
    let nexts = listeners
        .iter()
        .map(|(listener, route)| Box::pin(listener.next(route.first().recv)));
    let (result, index, _) = select_all(nexts).await;
    result.map(|incoming| (incoming, index))
}

/// Replies are written whole by the guest: a connection sends them at once.
fn send_at_once(incoming: &Incoming) {
    if let Incoming::Stream(accepted) = incoming {
        accepted.stream.send_at_once();
    }
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

/// Serves one socket, and gives each client a place among the concurrent
/// instances. A connection gets a free place or one made for it (see
/// [`crate::capacity`]); while it waits, further clients wait in the
/// backlog. A datagram gets a free place only — it evicts no connection —
/// and while it waits, further datagrams wait in the socket's receive
/// buffer, which the kernel drops from when full: the host queues nothing.
async fn accept_loop(listener: Listener, service: Arc<Service>, capacity: Arc<Capacity>) {
    let datagrams = listener.is_datagram();
    fairness::work_for(service.index).await;
    loop {
        // A datagram is received only with a place to serve it in.
        let free = if datagrams {
            match capacity.free_place().await {
                Some(place) => Some(place),
                None => return,
            }
        } else {
            None
        };
        let incoming = match listener.next(service.recv).await {
            Ok(incoming) => incoming,
            Err(err) => {
                // Out of descriptors, or a client that reset before accept:
                // log, back off briefly, keep serving.
                let what = if datagrams { "receive" } else { "accept" };
                tracing::warn!("{what} failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let place = match free {
            Some(place) => place,
            None => match capacity.place(incoming.peer_ip()).await {
                Room::Given(place) => place,
                // Closed at once: its address has had its share.
                Room::Refused => {
                    board::refused_at_once(service.index, Refusal::InstanceCap);
                    continue;
                }
                Room::Closed => return,
            },
        };
        if datagrams && service.worker_instance().is_some() {
            // One instance serves the worker's datagrams in turn: serve
            // this one here, the next waiting in the socket meanwhile.
            connection::serve(service.clone(), incoming, Thread::Shared, place).await;
            // The loop is the service's again, not a client's.
            fairness::work_for(service.index).await;
            continue;
        }
        send_at_once(&incoming);
        connection::spawn(service.clone(), incoming, place);
    }
}

/// Serves a TLS port several services share: each connection's
/// ClientHello is read in a task of its own (a slow client holds up no
/// other), its server name picks the service, whose places it then takes
/// as any of its connections does. At most [`ROUTING`] connections are
/// being routed at once; further ones wait in the backlog.
async fn shared_loop(listener: Listener, port: Arc<SharedPort>, capacities: Vec<Arc<Capacity>>) {
    let routing = Arc::new(Semaphore::new(ROUTING));
    let capacities = Arc::new(capacities);
    loop {
        let Ok(slot) = routing.clone().acquire_owned().await else {
            return;
        };
        let incoming = match listener.next(port.services()[0].recv).await {
            Ok(incoming) => incoming,
            Err(err) => {
                tracing::warn!("accept failed: {err}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        send_at_once(&incoming);
        let (port, capacities) = (port.clone(), capacities.clone());
        fairness::spawn(async move {
            let Some((index, incoming)) = port.route(incoming).await else {
                return;
            };
            drop(slot);
            let place = match capacities[index].place(incoming.peer_ip()).await {
                Room::Given(place) => place,
                Room::Refused => {
                    let service = &port.services()[index];
                    board::refused_at_once(service.index, Refusal::InstanceCap);
                    return;
                }
                Room::Closed => return,
            };
            let service = port.services()[index].clone();
            connection::serve(service, incoming, Thread::Shared, place).await;
        });
    }
}

/// Connections of a shared TLS port whose ClientHello is awaited at once,
/// per worker.
const ROUTING: usize = 1024;

/// How long the `server-close-hook`s may take when the server stops at
/// once (INT, TERM): the master kills what is left after its grace.
const STOP_HOOK_TIME: Duration = Duration::from_secs(1);

/// A worker's signals: INT and TERM end the process at once; QUIT asks it
/// to finish.
struct Stop {
    quit: Signal,
    /// INT and TERM, until [`Stop::arm`] takes them.
    now: Option<(Signal, Signal)>,
    /// Raised by INT, TERM and QUIT, for a guest's read sleeping in its
    /// socket (see [`Thread::Alone`]): a read does not sleep once a signal
    /// came that the runtime must see to — INT and TERM end the process
    /// when it next runs, QUIT closes the listening sockets — so a signal
    /// that came while the guest computed is not left waiting for its
    /// client's next byte.
    raised: Arc<AtomicBool>,
}

impl Stop {
    fn new() -> Result<Self> {
        let raised = Arc::new(AtomicBool::new(false));
        let signals = [
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGQUIT,
        ];
        for signal in signals {
            signal_hook::flag::register(signal, raised.clone())?;
        }
        let int = signal(SignalKind::interrupt())?;
        let term = signal(SignalKind::terminate())?;
        let quit = signal(SignalKind::quit())?;
        threads::ready_for_signals();
        Ok(Self {
            quit,
            now: Some((int, term)),
            raised,
        })
    }

    /// From now on INT and TERM end the process at once: when the server
    /// closes (not when only this worker is stopped), the
    /// `server-close-hook` of the services with worker hooks (`hooked`)
    /// whose instance is free runs first, for at most [`STOP_HOOK_TIME`].
    fn arm(&mut self, hooked: Vec<Arc<Service>>) {
        let Some((mut int, mut term)) = self.now.take() else {
            return;
        };
        tokio::spawn(async move {
            tokio::select! {
                _ = int.recv() => {},
                _ = term.recv() => {},
            }
            let closing = board::closing();
            let _ =
                tokio::time::timeout(STOP_HOOK_TIME, closing_hooks(&hooked, closing, false)).await;
            // Stop at once: open connections end with the process.
            std::process::exit(0);
        });
    }

    async fn quit(&mut self) {
        self.quit.recv().await;
    }
}

/// Serves the one client `incoming` of `route` — a connection (come on a
/// TLS port when `tls`), or a datagram — on a runtime of its own (a
/// `fork` child, or `inetd`), then returns the exit status. INT and TERM
/// end it at once.
pub fn serve_one(route: Route, incoming: StdIncoming, tls: bool) -> i32 {
    title::set(&Title::Child {
        service: &route.first().name,
    });
    let engine = route.first().handler().engine().clone();
    one_shot(engine, tracing::Span::none(), |stop| async move {
        let incoming = incoming.into_incoming()?.over_tls(tls);
        let Some((service, incoming)) = route.pick(incoming).await else {
            return Ok(());
        };
        let place = Place::alone(Arc::new(Semaphore::new(1)).acquire_owned().await?);
        let thread = Thread::Alone { stop };
        connection::serve(service, incoming, thread, place).await;
        Ok(())
    })
}

/// Runs the guest's `dequeue` once on a fresh instance of `service`'s
/// handler (a process of its own, forked by the master every
/// `check_for_dequeue` seconds); returns the exit status.
pub fn run_dequeue(service: Service) -> i32 {
    title::set(&Title::Dequeue {
        service: &service.name,
    });
    let engine = service.handler().engine().clone();
    let span = tracing::info_span!("dequeue", service = %service.name);
    one_shot(engine, span, |_| async move {
        let mut instance = service
            .handler()
            .instantiate(GuestIo::default(), None)
            .await?;
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
        .on_thread_start(threads::leave_signals_to_main_thread)
        .build()
}

/// Runs `work` once on a current-thread runtime of its own, with the stop
/// signals (`work` is given the flag INT and TERM raise) and an epoch
/// ticker for `engine`; returns the exit status (an error is logged in
/// `span`).
fn one_shot<F: std::future::Future<Output = Result<()>>>(
    engine: wasmtime::Engine,
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
            let mut stop = Stop::new()?;
            stop.arm(Vec::new());
            ticker::start(engine, None)?;
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
