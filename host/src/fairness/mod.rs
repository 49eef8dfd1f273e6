//! CPU fairness between the guests of a `multiplex` worker: who computes
//! next when several guests keep computing.
//!
//! A guest that waits on its client costs nothing here: it runs as soon as
//! its client's bytes arrive, on any of the runtime's threads. A guest that
//! *keeps computing* — one that computed through a whole epoch tick without
//! waiting (see `wasm::state::new_store`) — is **heavy**: at each tick it
//! gives back its thread and asks this lane for a [`Turn`], the right to
//! compute until the next tick.
//!
//! - **At most `slots` heavy guests compute at once**: one thread fewer than
//!   the runtime has (at least one). The last thread is never taken by
//!   computation that could wait, so a guest whose client just sent a request
//!   finds a thread within microseconds, however many guests spin.
//! - **Between services, turns go by weighted fair queuing** on
//!   `cpu_share`: each turn a service took advances its virtual time by how
//!   long it lasted × `DEFAULT_SHARE / share`, and the waiting service with
//!   the smallest virtual time goes next. A service that was not waiting starts at the smallest
//!   virtual time of those that are: it cannot bank turns while idle.
//! - **Within a service, turns go in order of asking** (first come, first
//!   served), so every heavy connection of a service advances.
//!
//! A turn is held while its task is being polled and given back when the
//! task stops (it waits on its client, or ends) or at its next tick, so a
//! guest that stops computing never keeps a turn it does not use. Only
//! tasks spawned with [`spawn`] (the connections, the mux drivers, the
//! worker hooks) take turns; a process whose lane is not installed (every
//! personality but `multiplex`, which serve one connection at a time) never
//! waits here.
//!
//! **Short computations are weighed too.** Ticks only catch a guest that
//! computes for a whole tick; a tenant that opens thousands of connections
//! a second, each trapping or overflowing its stack within a millisecond,
//! never reaches one. So every poll of a task that [`enter`]ed a service is
//! timed and charged to that service. Every [`WINDOW`] the worker looks at
//! what each service used: a service that took more than its fair part of
//! the worker's threads (`threads × share / the shares of the services with
//! tasks open`) while another service has tasks open becomes **throttled**,
//! and stays so until it uses less than half its part. A throttled
//! service's tasks take a turn before *every* poll, so together they use
//! at most `slots` threads, in weighted fair queuing with the heavy guests.
//! And they are **set aside** (see `fairness::aside`): polled on `slots` threads of
//! their own, which compute on the kernel's longest time slice (see
//! `slice`), not on the worker's. So nothing of theirs waits in the
//! worker's run queues, a neighbour's task woken by its client never waits
//! behind one of their polls, and the kernel runs a worker thread, or any
//! other process (a client on this machine), as soon as it wakes, before
//! the turn being computed. A task set aside comes back to the worker's
//! threads at its first poll once its service is no longer throttled; a
//! task a throttled task spawns (an accept loop's connection) starts
//! aside; a heavy guest moves while it waits for its next turn (it is
//! always waiting for one between its polls). Alone on a worker a
//! service is never throttled: nothing is lost when no one else waits.
//! Turns are charged by the time they last, so a service of many short
//! turns and one of few long ones share by `cpu_share` all the same.

use std::cell::Cell;
use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

mod aside;

/// The weight a service has when `cpu_share` is not given.
pub const DEFAULT_SHARE: u32 = 100;

/// How often the worker looks at what each service used (see the module
/// documentation): two epoch ticks.
pub const WINDOW: Duration = Duration::from_millis(20);

/// The least a turn is charged, however short it was.
const LEAST_CHARGE: Duration = Duration::from_micros(1);

/// This process's lane (installed by a `multiplex` worker).
static LANE: OnceLock<Mutex<Lane>> = OnceLock::new();

/// What each service of this process used, by service index (installed
/// with the lane).
static METERS: OnceLock<Meters> = OnceLock::new();

thread_local! {
    /// Whether the task being polled on this thread was spawned with
    /// [`spawn`] (and so may take turns).
    static IN_FAIR_TASK: Cell<bool> = const { Cell::new(false) };
    /// The turn the task being polled on this thread holds: its service
    /// and when it began.
    static HOLDS_TURN: Cell<Option<(usize, Instant)>> = const { Cell::new(None) };
    /// The service the task being polled on this thread serves, once it
    /// [`enter`]ed one (or works for one).
    static SERVICE: Cell<Option<Entry>> = const { Cell::new(None) };
    /// Whether the task being polled on this thread took a turn for this
    /// poll because its service is throttled.
    static GATED: Cell<bool> = const { Cell::new(false) };
    /// Whether a heavy guest of the task being polled on this thread
    /// waits in the lane for its turn.
    static WAITS_IN_LANE: Cell<bool> = const { Cell::new(false) };
}

/// Installs this process's lane: `threads` threads of `runtime` run its
/// guests, and the services' shares are `shares` (by service index). Once
/// per process; later calls are ignored.
pub fn install(threads: usize, shares: Vec<u32>, runtime: tokio::runtime::Handle) {
    let meters = Meters::new(threads, &shares);
    aside::install(slots_for(threads), runtime);
    if LANE
        .set(Mutex::new(Lane::new(slots_for(threads), shares)))
        .is_ok()
    {
        let _ = METERS.set(meters);
    }
}

/// Heavy guests that compute at once when the runtime has `threads`
/// threads: all but one, and at least one.
pub fn slots_for(threads: usize) -> usize {
    threads.saturating_sub(1).max(1)
}

/// Spawns `task` on the runtime as a task whose guests take turns.
pub fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn_fair(task)
}

/// `task` as a task whose guests take turns, to be spawned by the caller
/// on the worker's runtime (as [`spawn`] does).
pub fn fair<F>(task: F) -> impl Future<Output = F::Output> + Send + 'static
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Fair::new(task, Side::Main)
}

/// Says that the task being polled (one spawned with [`spawn`]) serves a
/// client of `service` from now on: it counts among the service's open
/// tasks, its polls are charged to the service, and take a turn each while
/// the service is throttled. Returns whether it is (the task then waits for
/// its first turn here, before any more of it runs).
pub async fn enter(service: usize) -> bool {
    enter_as(Entry {
        service,
        client: true,
    })
    .await
}

/// As [`enter`], for a task that works for `service` without a client of
/// its own (an accept loop, a mux instance's driver, a signal's delivery):
/// charged and throttled, but not counted among the open tasks that make
/// other services yield.
pub async fn work_for(service: usize) -> bool {
    enter_as(Entry {
        service,
        client: false,
    })
    .await
}

/// Which service a task works for, and whether it serves a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    service: usize,
    client: bool,
}

async fn enter_as(entry: Entry) -> bool {
    if !IN_FAIR_TASK.get() || METERS.get().is_none() {
        return false;
    }
    SERVICE.set(Some(entry));
    if !throttled(entry.service) {
        return false;
    }
    // Hand the task back to `Fair`, which takes the turn before polling it
    // again.
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            return Poll::Ready(());
        }
        yielded = true;
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await;
    true
}

/// Whether the tasks of `service` take a turn before every poll.
fn throttled(service: usize) -> bool {
    METERS
        .get()
        .and_then(|m| m.services.get(service))
        .is_some_and(|m| m.throttled.load(Ordering::Relaxed))
}

/// For a heavy guest of service `service` at its tick: the wait for its
/// next turn, in which the turn its task holds, if any, is given back as
/// it asks again (so that it competes for the next turn with those
/// waiting) — or `None` where there is no lane, or where its task took a
/// turn for this very poll because its service is throttled (the guest
/// just yields, and its task takes a turn again before its next poll).
pub fn turn(service: usize) -> Option<Turn> {
    if !IN_FAIR_TASK.get() || GATED.get() {
        return None;
    }
    LANE.get()?;
    Some(Turn {
        service,
        id: None,
        yielded: false,
        done: false,
        held: HOLDS_TURN.take().map(|(s, since)| (s, since.elapsed())),
        gate: false,
    })
}

/// Gives back the turn the task being polled on this thread holds.
fn give_back() {
    if let Some((service, since)) = HOLDS_TURN.take()
        && let Some(lane) = LANE.get()
    {
        lock(lane).release(Some((service, since.elapsed())));
    }
}

fn lock(lane: &Mutex<Lane>) -> MutexGuard<'_, Lane> {
    // The lane's counts stay consistent between statements.
    lane.lock().unwrap_or_else(|p| p.into_inner())
}

/// A task whose guests take turns: its turn is given back whenever it
/// stops being polled; while its service is throttled it is polled on the
/// threads set aside, and otherwise on the worker's (see [`aside`]).
///
/// It lives on the runtime it was spawned on, its home: the worker's, or
/// the one set aside when a throttled task spawned it (an accept loop's
/// connection). Polled where it should not be, it visits the other
/// runtime (a task there polls it) until it should be back, or ends there.
struct Fair<F: Future> {
    /// The task, while it is polled at home.
    core: Option<Core<F>>,
    /// The task visiting the other runtime, while it is.
    away: Option<tokio::task::JoinHandle<Visited<F>>>,
    home: Side,
}

/// The worker's threads, or those set aside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Main,
    Aside,
}

/// A task and what it holds of the lane.
struct Core<F> {
    task: Pin<Box<F>>,
    /// The service it serves, once it entered one.
    member: Option<Member>,
    /// Its wait for a turn before a poll, while its service is throttled.
    gate: Option<Turn>,
    /// Whether a heavy guest of it waits in the lane (it then needs no
    /// turn to be polled: it computes only once that one is granted).
    waits_in_lane: bool,
}

/// How a task's visit ends: with the task, or given back to its home.
enum Visited<F: Future> {
    Done(F::Output),
    Back(Core<F>),
}

/// Spawns `task` as a fair task on the worker's runtime, or on the one
/// set aside when the caller is polled there (a throttled task).
fn spawn_fair<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    if aside::on_aside_thread() {
        match aside::spawn(Fair::new(task, Side::Aside)) {
            Ok(handle) => handle,
            Err(mut fair) => {
                fair.home = Side::Main;
                aside::spawn_main(fair)
            }
        }
    } else {
        aside::spawn_main(Fair::new(task, Side::Main))
    }
}

impl<F: Future> Fair<F> {
    fn new(task: F, home: Side) -> Self {
        Fair {
            core: Some(Core {
                task: Box::pin(task),
                member: None,
                gate: None,
                waits_in_lane: false,
            }),
            away: None,
            home,
        }
    }
}

impl<F> Future for Fair<F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if let Some(away) = this.away.as_mut() {
            let back = match std::task::ready!(Pin::new(away).poll(cx)) {
                Ok(Visited::Done(out)) => {
                    this.away = None;
                    return Poll::Ready(out);
                }
                Ok(Visited::Back(core)) => core,
                // Its panic is this task's (as if it had not moved).
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                // Neither runtime shuts down before the worker ends.
                Err(err) => panic!("a fair task's visit was cancelled: {err}"),
            };
            this.away = None;
            this.core = Some(back);
        }
        let Some(core) = this.core.as_mut() else {
            panic!("a fair task polled after it ended");
        };
        if let Some(there) = core.belongs().filter(|&side| side != this.home) {
            let visit = Visit {
                core: this.core.take(),
                side: there,
            };
            let spawned = match there {
                Side::Aside => aside::spawn(visit),
                Side::Main => Ok(aside::spawn_main(visit)),
            };
            match spawned {
                Ok(handle) => {
                    this.away = Some(handle);
                    // Polled once from here, to wait for it.
                    return Pin::new(this).poll(cx);
                }
                // No threads set aside: it stays.
                Err(visit) => this.core = visit.core,
            }
        }
        let home = this.home;
        let core = this.core.as_mut().expect("the task is at home");
        let out = std::task::ready!(core.poll(cx, home));
        this.core = None;
        Poll::Ready(out)
    }
}

impl<F: Future> Drop for Fair<F> {
    fn drop(&mut self) {
        // Its visit ends with it.
        if let Some(away) = &self.away {
            away.abort();
        }
    }
}

/// A task visiting the runtime of `side`, polled there until it ends or
/// belongs at home again.
struct Visit<F> {
    core: Option<Core<F>>,
    side: Side,
}

impl<F: Future> Future for Visit<F> {
    type Output = Visited<F>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Visited<F>> {
        let this = self.get_mut();
        let Some(core) = this.core.as_mut() else {
            panic!("a visiting task polled after it ended");
        };
        if core.belongs().is_some_and(|side| side != this.side) {
            return Poll::Ready(Visited::Back(this.core.take().expect("the task is here")));
        }
        let out = std::task::ready!(core.poll(cx, this.side));
        this.core = None;
        Poll::Ready(Visited::Done(out))
    }
}

impl<F: Future> Core<F> {
    /// Where it should be polled, once it entered a service: on the
    /// threads set aside while its service is throttled, on the worker's
    /// otherwise. (It may move while it waits for a turn, a heavy guest's
    /// or a throttled poll's: the task that takes it over polls it at
    /// once, and that poll takes a turn granted meanwhile.)
    fn belongs(&self) -> Option<Side> {
        let member = self.member.as_ref()?;
        Some(if throttled(member.entry.service) {
            Side::Aside
        } else {
            Side::Main
        })
    }

    /// Polls the task, on the threads of `side`: first, while its service
    /// is throttled, it takes a turn. (The threads set aside keep the
    /// longest slice; on the worker's, a throttled turn asks for it for its
    /// own length.)
    fn poll(&mut self, cx: &mut Context<'_>, side: Side) -> Poll<F::Output> {
        let entry = self.member.as_ref().map(|m| m.entry);
        let service = entry.map(|e| e.service);
        let mut gated = false;
        if let Some(service) = service
            && !self.waits_in_lane
            && (self.gate.is_some() || throttled(service))
        {
            let gate = self.gate.get_or_insert_with(|| Turn::gate(service));
            if Pin::new(gate).poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.gate = None;
            gated = true;
        }
        // A throttled service's turn is computed on a long slice: the
        // worker's other threads and other processes (its clients, where
        // they run on this machine), waking meanwhile, run first.
        let slice = gated && side == Side::Main;
        if slice {
            crate::slice::this_thread(Some(crate::slice::LONGEST));
        }
        let was = IN_FAIR_TASK.replace(true);
        let was_gated = GATED.replace(gated);
        let waited = WAITS_IN_LANE.replace(false);
        let outer = SERVICE.replace(entry);
        let start = Instant::now();
        // A panic (a bug in host code: the runtime ends the task) must
        // still give back the turn and the thread's state, or the turn
        // would stay taken for ever.
        let out = std::panic::catch_unwind(AssertUnwindSafe(|| self.task.as_mut().poll(cx)));
        let end = Instant::now();
        let now = SERVICE.replace(outer);
        self.waits_in_lane = WAITS_IN_LANE.replace(waited);
        GATED.set(was_gated);
        IN_FAIR_TASK.set(was);
        give_back();
        if slice {
            crate::slice::this_thread(None);
        }
        if now != entry
            && let Some(entry) = now
        {
            self.member = Member::join(entry);
        }
        if let Some(member) = self.member.as_ref() {
            member.spend(end - start, end);
        }
        out.unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    }
}

/// A task's membership of a service: counted among the service's open
/// tasks while it lasts, if it serves a client.
struct Member {
    entry: Entry,
}

impl Member {
    fn join(entry: Entry) -> Option<Member> {
        let meter = METERS.get()?.services.get(entry.service)?;
        if entry.client {
            meter.open.fetch_add(1, Ordering::Relaxed);
        }
        Some(Member { entry })
    }

    /// Charges `spent` to the service, and looks at what every service
    /// used when a window is over (it is `now`).
    fn spend(&self, spent: Duration, now: Instant) {
        let Some(meters) = METERS.get() else {
            return;
        };
        if let Some(meter) = meters.services.get(self.entry.service) {
            meter.busy_ns.fetch_add(nanos(spent), Ordering::Relaxed);
        }
        meters.tick(now);
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        if self.entry.client
            && let Some(meter) = METERS
                .get()
                .and_then(|m| m.services.get(self.entry.service))
        {
            meter.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// What the services of this process use, by service index.
struct Meters {
    threads: u64,
    started: Instant,
    /// The window last looked at, in [`WINDOW`]s since `started`.
    window: AtomicU64,
    services: Vec<Meter>,
}

/// What one service used in the current window.
struct Meter {
    share: u64,
    /// Time its tasks were polled in the current window.
    busy_ns: AtomicU64,
    /// Its tasks that entered it and have not ended.
    open: AtomicUsize,
    /// Whether its tasks take a turn before every poll.
    throttled: AtomicBool,
    /// Its throttled tasks' polls that had to wait for a turn in the
    /// current window: it wanted more than it was given.
    held_back: AtomicU64,
}

impl Meters {
    fn new(threads: usize, shares: &[u32]) -> Self {
        Self {
            threads: threads.max(1) as u64,
            started: Instant::now(),
            window: AtomicU64::new(0),
            services: shares
                .iter()
                .map(|&share| Meter {
                    share: u64::from(share.max(1)),
                    busy_ns: AtomicU64::new(0),
                    open: AtomicUsize::new(0),
                    throttled: AtomicBool::new(false),
                    held_back: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    /// When a window is over, the first thread to see it decides which
    /// services are throttled for the next one.
    fn tick(&self, now: Instant) {
        let window = nanos(now.saturating_duration_since(self.started)) / nanos(WINDOW);
        let last = self.window.load(Ordering::Relaxed);
        if window <= last
            || self
                .window
                .compare_exchange(last, window, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        // A window with no poll at all in between counts as idle.
        let length = nanos(WINDOW) * (window - last);
        let used: Vec<Use> = self
            .services
            .iter()
            .map(|m| Use {
                share: m.share,
                busy_ns: m.busy_ns.swap(0, Ordering::Relaxed),
                open: m.open.load(Ordering::Relaxed) > 0,
                throttled: m.throttled.load(Ordering::Relaxed),
                held_back: m.held_back.swap(0, Ordering::Relaxed) > 0,
            })
            .collect();
        for (meter, throttled) in self
            .services
            .iter()
            .zip(decide(&used, self.threads, length))
        {
            meter.throttled.store(throttled, Ordering::Relaxed);
        }
    }
}

/// What one service used in a window, and whether it was throttled (and
/// then, whether any of its polls had to wait for a turn).
#[derive(Debug, Clone, Copy)]
struct Use {
    share: u64,
    busy_ns: u64,
    open: bool,
    throttled: bool,
    held_back: bool,
}

/// Which services are throttled in the next window, given what each used
/// in a window `length_ns` long on `threads` threads: those that took more
/// than their fair part of the threads while another service has tasks
/// open, until they use less than half of it with none of their polls
/// held back (a throttled service may use less than its part only because
/// it is throttled: while its polls wait for turns it still wants more).
fn decide(used: &[Use], threads: u64, length_ns: u64) -> Vec<bool> {
    let open_shares: u64 = used.iter().filter(|u| u.open).map(|u| u.share).sum();
    used.iter()
        .enumerate()
        .map(|(i, u)| {
            let others_open = used.iter().enumerate().any(|(j, o)| j != i && o.open);
            if !others_open || open_shares == 0 {
                return false;
            }
            let part = (u128::from(length_ns) * u128::from(threads) * u128::from(u.share)
                / u128::from(open_shares.max(u.share))) as u64;
            if u.throttled {
                u.held_back || u.busy_ns > part / 2
            } else {
                u.busy_ns > part
            }
        })
        .collect()
}

/// The wait of a heavy guest for its next turn (see [`turn`]).
pub struct Turn {
    service: usize,
    /// Its place in the lane, once it waits there.
    id: Option<u64>,
    /// Whether it gave its task's other futures a poll (see `poll`).
    yielded: bool,
    done: bool,
    /// The turn it holds, given back when it asks: its service and how
    /// long it lasted.
    held: Option<(usize, Duration)>,
    /// Whether it is a throttled task's wait before a poll.
    gate: bool,
}

impl Turn {
    /// The wait of a throttled service's task for a turn before its poll.
    fn gate(service: usize) -> Turn {
        Turn {
            service,
            id: None,
            yielded: true,
            done: false,
            held: None,
            gate: true,
        }
    }
}

impl Future for Turn {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.done {
            return Poll::Ready(());
        }
        // First a plain yield, as a guest with no lane makes: the task's
        // other futures — the connection's idle and total timeouts, its
        // end — are polled at every tick even when the turn is given back
        // at once (the turn it holds stays counted until it asks, and its
        // task takes no other turn meanwhile).
        if !self.yielded {
            self.yielded = true;
            WAITS_IN_LANE.set(true);
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let Some(lane) = LANE.get() else {
            return Poll::Ready(());
        };
        let mut lane = lock(lane);
        let granted = match self.id {
            None => match lane.ask(self.service, cx.waker(), self.held.take()) {
                Ok(()) => true,
                Err(id) => {
                    self.id = Some(id);
                    if self.gate
                        && let Some(meter) = METERS.get().and_then(|m| m.services.get(self.service))
                    {
                        meter.held_back.fetch_add(1, Ordering::Relaxed);
                    }
                    false
                }
            },
            Some(id) => lane.take_grant(self.service, id, cx.waker()),
        };
        if granted {
            self.done = true;
            self.id = None;
            HOLDS_TURN.set(Some((self.service, Instant::now())));
            Poll::Ready(())
        } else {
            WAITS_IN_LANE.set(true);
            Poll::Pending
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Dropped while waiting (its connection ended): leave the lane, or
        // give back the turn granted but never taken.
        let Some(lane) = LANE.get() else {
            return;
        };
        if let Some(id) = self.id {
            lock(lane).leave(self.service, id);
        } else if let Some(held) = self.held {
            lock(lane).release(Some(held));
        }
    }
}

/// The turns of one process.
#[derive(Debug)]
struct Lane {
    /// Heavy guests allowed to compute at once.
    slots: usize,
    /// Turns held or granted.
    running: usize,
    services: Vec<Queue>,
    /// Turns granted to waiters that have not taken them yet.
    granted: BTreeSet<u64>,
    next_id: u64,
    /// The virtual time at which the latest turn started.
    clock: u64,
}

/// One service's place in the lane.
#[derive(Debug)]
struct Queue {
    share: u64,
    /// Turns taken, weighted by the share.
    vtime: u64,
    waiting: VecDeque<(u64, Waker)>,
}

impl Lane {
    fn new(slots: usize, shares: Vec<u32>) -> Self {
        Self {
            slots: slots.max(1),
            running: 0,
            services: shares
                .into_iter()
                .map(|share| Queue {
                    share: u64::from(share.max(1)),
                    vtime: 0,
                    waiting: VecDeque::new(),
                })
                .collect(),
            granted: BTreeSet::new(),
            next_id: 0,
            clock: 0,
        }
    }

    fn queue(&mut self, service: usize) -> &mut Queue {
        // A service the lane was not told of gets the default share.
        if service >= self.services.len() {
            self.services.resize_with(service + 1, || Queue {
                share: u64::from(DEFAULT_SHARE),
                vtime: 0,
                waiting: VecDeque::new(),
            });
        }
        &mut self.services[service]
    }

    /// A heavy guest of `service` asks for a turn, giving back the one it
    /// `held` (its service and how long it lasted): `Ok` when it may compute
    /// at once (a slot is free and nobody waits), else its place in line.
    fn ask(
        &mut self,
        service: usize,
        waker: &Waker,
        held: Option<(usize, Duration)>,
    ) -> Result<(), u64> {
        if let Some((of, lasted)) = held {
            self.running = self.running.saturating_sub(1);
            self.spend(of, lasted);
        }
        // A service that starts asking is set to the lane's clock, if it
        // is behind: time spent idle earns no turns.
        let clock = self.clock;
        let queue = self.queue(service);
        if queue.waiting.is_empty() {
            queue.vtime = queue.vtime.max(clock);
        }
        let nobody_waits = self.services.iter().all(|q| q.waiting.is_empty());
        if nobody_waits && self.running < self.slots {
            self.running += 1;
            self.start(service);
            return Ok(());
        }
        let id = self.next_id;
        self.next_id += 1;
        self.queue(service).waiting.push_back((id, waker.clone()));
        self.dispatch();
        Err(id)
    }

    /// Whether the waiter `id` was granted its turn (taking it); else keeps
    /// its newest waker.
    fn take_grant(&mut self, service: usize, id: u64, waker: &Waker) -> bool {
        if self.granted.remove(&id) {
            return true;
        }
        if let Some(entry) = self
            .queue(service)
            .waiting
            .iter_mut()
            .find(|(i, _)| *i == id)
        {
            entry.1.clone_from(waker);
        }
        false
    }

    /// The waiter `id` is gone: out of the line, or its unused grant given
    /// back.
    fn leave(&mut self, service: usize, id: u64) {
        if self.granted.remove(&id) {
            self.release(None);
        } else {
            self.queue(service).waiting.retain(|(i, _)| *i != id);
            self.dispatch();
        }
    }

    /// A turn held or granted is given back (charged to its service for
    /// how long it lasted, if it was taken): its slot goes to the next
    /// waiter.
    fn release(&mut self, held: Option<(usize, Duration)>) {
        self.running = self.running.saturating_sub(1);
        if let Some((service, lasted)) = held {
            self.spend(service, lasted);
        }
        self.dispatch();
    }

    /// Grants turns while slots are free: to the waiting service with the
    /// least virtual time, its longest waiter first.
    fn dispatch(&mut self) {
        while self.running < self.slots {
            let Some(next) = self
                .services
                .iter()
                .enumerate()
                .filter(|(_, q)| !q.waiting.is_empty())
                .min_by_key(|(_, q)| q.vtime)
                .map(|(i, _)| i)
            else {
                return;
            };
            let Some((id, waker)) = self.services[next].waiting.pop_front() else {
                return;
            };
            self.running += 1;
            self.start(next);
            self.granted.insert(id);
            waker.wake();
        }
    }

    /// A turn starts for `service`: the lane's clock moves to its
    /// virtual time.
    fn start(&mut self, service: usize) {
        self.clock = self.queue(service).vtime;
    }

    /// A turn of `service` lasted `lasted`: its virtual time advances by
    /// that, weighted by its share.
    fn spend(&mut self, service: usize, lasted: Duration) {
        let queue = self.queue(service);
        let cost = nanos(lasted.max(LEAST_CHARGE)).saturating_mul(u64::from(DEFAULT_SHARE));
        queue.vtime = queue.vtime.saturating_add(cost / queue.share);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn waker() -> Waker {
        Waker::noop().clone()
    }

    /// Asks for turns in the order given, gives every granted turn back at
    /// once, and returns the services in the order their turns came.
    fn order(slots: usize, shares: &[u32], asks: &[usize], turns: usize) -> Vec<usize> {
        order_in(&mut Lane::new(slots, shares.to_vec()), asks, turns, &[])
    }

    /// A whole tick: how long a heavy guest's turn lasts.
    const TICK: Duration = Duration::from_millis(10);

    /// As [`order`], on `lane`, each turn of service `s` lasting
    /// `lasting[s]` (a tick if not given).
    fn order_in(lane: &mut Lane, asks: &[usize], turns: usize, lasting: &[Duration]) -> Vec<usize> {
        let lasted = |s: usize| Some((s, lasting.get(s).copied().unwrap_or(TICK)));
        let mut held = Vec::new();
        let mut ids = std::collections::BTreeMap::new();
        for &service in asks {
            match lane.ask(service, &waker(), None) {
                Ok(()) => held.push(service),
                Err(id) => {
                    ids.insert(id, service);
                }
            }
        }
        let mut got = held.clone();
        while got.len() < turns {
            // Every computing guest reaches its tick: it gives its turn
            // back and asks again at once.
            let computing = std::mem::take(&mut held);
            for service in computing {
                match lane.ask(service, &waker(), lasted(service)) {
                    Ok(()) => {
                        held.push(service);
                        got.push(service);
                    }
                    Err(id) => {
                        ids.insert(id, service);
                    }
                }
            }
            let granted: Vec<u64> = lane.granted.iter().copied().collect();
            for id in granted {
                let service = ids.remove(&id).unwrap();
                assert!(lane.take_grant(service, id, &waker()));
                held.push(service);
                got.push(service);
            }
            assert!(lane.running <= lane.slots, "{lane:?}");
        }
        got.truncate(turns);
        got
    }

    /// slots, shares, heavy guests by service, turns, turns per service.
    type Case<'a> = (usize, &'a [u32], &'a [usize], usize, &'a [usize]);

    #[test]
    fn turns_are_shared_by_weight() {
        let cases: &[Case] = &[
            // One heavy guest of each of two equal services: they alternate.
            (1, &[100, 100], &[0, 1], 100, &[50, 50]),
            // Eight heavy guests against one: still half each.
            (1, &[100, 100], &[0, 0, 0, 0, 0, 0, 0, 0, 1], 100, &[50, 50]),
            // Shares 3:1.
            (1, &[300, 100], &[0, 1], 100, &[75, 25]),
            // Two slots, one guest each: both run all the time.
            (2, &[100, 100], &[0, 1], 100, &[50, 50]),
            // Alone, a service takes every turn.
            (1, &[100, 100], &[1, 1, 1], 30, &[0, 30]),
        ];
        for &(slots, shares, asks, turns, want) in cases {
            let got = order(slots, shares, asks, turns);
            let mut per = vec![0usize; shares.len()];
            for s in got {
                per[s] += 1;
            }
            for (s, (&n, &w)) in per.iter().zip(want).enumerate() {
                assert!(
                    n.abs_diff(w) <= 2,
                    "slots {slots} shares {shares:?} asks {asks:?}: service {s} had {n} turns, want {w}"
                );
            }
        }
    }

    #[test]
    fn turns_are_charged_by_how_long_they_last() {
        // Service 0's turns last a tenth of service 1's: it gets ten turns
        // to every one of service 1, the same time on the threads.
        let mut lane = Lane::new(1, vec![100, 100]);
        let got = order_in(&mut lane, &[0, 1], 110, &[TICK / 10, TICK]);
        let ones = got.iter().filter(|&&s| s == 1).count();
        assert!((9..=11).contains(&ones), "{ones} turns of 11: {got:?}");
    }

    #[test]
    fn within_a_service_turns_go_round() {
        let mut lane = Lane::new(1, vec![100]);
        assert_eq!(lane.ask(0, &waker(), None), Ok(()));
        let a = lane.ask(0, &waker(), None).unwrap_err();
        let b = lane.ask(0, &waker(), None).unwrap_err();
        // The first guest's tick: the longest waiter goes next.
        lane.running -= 1;
        lane.dispatch();
        assert!(lane.take_grant(0, a, &waker()));
        assert!(!lane.take_grant(0, b, &waker()));
        lane.running -= 1;
        lane.dispatch();
        assert!(lane.take_grant(0, b, &waker()));
    }

    #[test]
    fn a_waiter_that_leaves_frees_its_place_and_its_grant() {
        let mut lane = Lane::new(1, vec![100, 100]);
        assert_eq!(lane.ask(0, &waker(), None), Ok(()));
        let a = lane.ask(0, &waker(), None).unwrap_err();
        let b = lane.ask(1, &waker(), None).unwrap_err();
        // `a` leaves while waiting.
        lane.leave(0, a);
        assert_eq!(lane.services[0].waiting.len(), 0);
        // The turn goes to `b`, which leaves before taking it: the slot is
        // free again.
        lane.running -= 1;
        lane.dispatch();
        assert!(lane.granted.contains(&b));
        lane.leave(1, b);
        assert_eq!(lane.running, 0);
        assert_eq!(lane.ask(1, &waker(), None), Ok(()));
    }

    #[test]
    fn an_idle_service_banks_no_turns() {
        let mut lane = Lane::new(1, vec![100, 100]);
        // Service 0 computes alone for a long time.
        for _ in 0..1000 {
            assert_eq!(lane.ask(0, &waker(), None), Ok(()));
            lane.release(Some((0, TICK)));
        }
        // Then service 1 starts computing beside it: they alternate, rather
        // than 1 taking the next thousand turns.
        let got = order_in(&mut lane, &[0, 1], 40, &[]);
        let ones = got.iter().filter(|&&s| s == 1).count();
        assert!((19..=21).contains(&ones), "{got:?}");
    }

    #[test]
    fn one_thread_is_kept_for_guests_that_wait() {
        let cases = [(1, 1), (2, 1), (3, 2), (8, 7)];
        for (threads, slots) in cases {
            assert_eq!(slots_for(threads), slots, "{threads} threads");
        }
    }

    #[test]
    fn services_over_their_part_are_throttled_while_others_are_open() {
        const MS: u64 = 1_000_000;
        let u = |share, busy_ms, open, throttled| Use {
            share,
            busy_ns: busy_ms * MS,
            open,
            throttled,
            held_back: false,
        };
        let held_back = |busy_ms| Use {
            held_back: true,
            ..u(100, busy_ms, true, true)
        };
        // Two threads, a 20 ms window: 40 ms of thread time to share.
        let cases: &[(&str, &[Use], &[bool])] = &[
            (
                "alone, a service may take every thread",
                &[u(100, 40, true, false), u(100, 0, false, false)],
                &[false, false],
            ),
            (
                "over its half while a neighbour is open",
                &[u(100, 30, true, false), u(100, 1, true, false)],
                &[true, false],
            ),
            (
                "the neighbour's open connections count even when idle",
                &[u(100, 25, true, false), u(100, 0, true, false)],
                &[true, false],
            ),
            (
                "within its half",
                &[u(100, 19, true, false), u(100, 1, true, false)],
                &[false, false],
            ),
            (
                "a throttled service stays so above a quarter",
                &[u(100, 11, true, true), u(100, 1, true, false)],
                &[true, false],
            ),
            (
                "and is let go below it",
                &[u(100, 9, true, true), u(100, 1, true, false)],
                &[false, false],
            ),
            (
                "unless its polls waited for turns: it still wants more",
                &[held_back(9), u(100, 1, true, false)],
                &[true, false],
            ),
            (
                "shares weigh the parts: 3 of 4 is 30 ms",
                &[u(300, 29, true, false), u(100, 11, true, false)],
                &[false, true],
            ),
            (
                "services with nothing open do not dilute the parts",
                &[
                    u(100, 25, true, false),
                    u(100, 1, true, false),
                    u(100, 0, false, false),
                ],
                &[true, false, false],
            ),
        ];
        for (why, used, want) in cases {
            assert_eq!(decide(used, 2, 20 * MS), *want, "{why}");
        }
    }
}
