//! The server's board: a table in memory that the master and every worker
//! share (an anonymous `MAP_SHARED` mapping made by the master before it
//! forks), as Net::Waiter keeps its busy and idle counts in shared memory.
//!
//! Each worker has a slot the master gives it at the fork and clears when
//! it reaps it; the worker counts its clients there, and anyone reads the
//! whole table: how many workers serve, how many of them are busy
//! (Net::Waiter's `get_kids_count`, `get_busy_kids_count`). The board also
//! says why the server is closing, so that a worker told to stop knows
//! whether the server closes (QUIT, TERM, HUP) or only the worker is
//! retired.
//!
//! Each worker also counts, per service, what the metrics endpoint shows
//! ([`stats`]): its row of the table; the master folds a reaped worker's
//! row into a retired row, so that the sums survive the worker.
//!
//! A service's open connections across every worker (`max_connections`)
//! are one counter per service ([`connection`]), taken with a
//! compare-and-swap so that two workers cannot both take the last place;
//! each worker's row also says how many it holds, which the master gives
//! back when it reaps a worker that died holding some.
//!
//! Nothing here takes a lock or makes a system call: a client costs a few
//! atomic additions on its worker's own cache lines. A process without a
//! board (`inetd`, `--check`) or without a slot (a `dequeue` process)
//! counts its clients in a slot of its own, and sees itself as the only
//! worker; its per-service figures go to the retired row (or nowhere
//! without a board).

pub mod stats;

use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result};

use stats::{Ending, Refusal, ServiceSum, Stats};

/// One worker's line of the board, a cache line of its own.
#[repr(C, align(64))]
#[derive(Debug, Default)]
struct Slot {
    /// The worker's pid; 0 when the slot is free.
    pid: AtomicU32,
    /// Clients it serves now.
    open: AtomicU32,
    /// Clients it took since it started.
    served: AtomicU64,
}

/// The head of the board, before the slots.
#[repr(C, align(64))]
#[derive(Debug, Default)]
struct Head {
    /// Why the server closes (a [`Closing`]).
    closing: AtomicU32,
    /// Clients served by the workers whose slots were freed.
    served_before: AtomicU64,
}

/// What the board says of one service beside its counts, a cache line of
/// its own.
#[repr(C, align(64))]
#[derive(Debug, Default)]
struct ServiceHead {
    /// Its connections open across every worker (`max_connections`).
    open: AtomicU64,
    /// How often its module was replaced (`watch_module`).
    module: AtomicU64,
}

/// The shared table: its head, its slots, then a row of [`Stats`] per
/// slot and one for retired workers, each with one per service, then a
/// [`ServiceHead`] per service.
struct Board {
    head: &'static Head,
    slots: &'static [Slot],
    stats: &'static [Stats],
    service_heads: &'static [ServiceHead],
    services: usize,
}

impl Board {
    /// The row of slot `row` (`slots.len()`: the retired row).
    fn row(&self, row: usize) -> &'static [Stats] {
        &self.stats[row * self.services..(row + 1) * self.services]
    }

    /// The row this process counts in: its slot's, or the retired row.
    fn my_row(&self) -> &'static [Stats] {
        let mine = MINE.load(Ordering::Relaxed);
        self.row(if mine < self.slots.len() {
            mine
        } else {
            self.slots.len()
        })
    }
}

static BOARD: OnceLock<Board> = OnceLock::new();
/// This process's slot on the board, once it has one.
static MINE: AtomicUsize = AtomicUsize::new(NO_SLOT);
const NO_SLOT: usize = usize::MAX;
/// Where a process without a slot counts its clients.
static OWN: Slot = Slot {
    pid: AtomicU32::new(0),
    open: AtomicU32::new(0),
    served: AtomicU64::new(0),
};

/// Why the server is closing, as the master wrote it before telling its
/// workers to stop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Closing {
    /// It is not: a worker told to stop is only being retired.
    No,
    /// QUIT: the workers finish their connections.
    Drain,
    /// INT or TERM: the workers stop at once.
    Stop,
    /// HUP: a new server takes over.
    Restart,
}

impl Closing {
    fn from_u32(value: u32) -> Self {
        match value {
            1 => Self::Drain,
            2 => Self::Stop,
            3 => Self::Restart,
            _ => Self::No,
        }
    }

    fn as_u32(self) -> u32 {
        match self {
            Self::No => 0,
            Self::Drain => 1,
            Self::Stop => 2,
            Self::Restart => 3,
        }
    }
}

/// The server's counts, as one worker sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Counts {
    /// Workers with a slot (serving, or waiting for a client).
    pub workers: u32,
    /// Of them, those serving at least one client.
    pub busy: u32,
    /// Clients this process serves now.
    pub open: u32,
    /// Clients this process took since it started.
    pub served: u64,
    /// This process's pid.
    pub pid: u32,
}

/// Makes the board with room for `slots` workers and `services` services,
/// in the master before it forks any: its children share it. (A master
/// re-executed by HUP is a new process, and makes a new one.)
pub fn create(slots: usize, services: usize) -> Result<()> {
    let slots = slots.max(1);
    let services = services.max(1);
    let rows = (slots + 1) * services;
    let len = std::mem::size_of::<Head>()
        + slots * std::mem::size_of::<Slot>()
        + rows * std::mem::size_of::<Stats>()
        + services * std::mem::size_of::<ServiceHead>();
    let size = std::num::NonZeroUsize::new(len).context("an empty board")?;
    use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous};
    // SAFETY: a new anonymous mapping at an address the kernel picks
    // touches no existing memory.
    let base = unsafe {
        mmap_anonymous(
            None,
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_SHARED,
        )
    }
    .context("cannot map the board")?;
    let base: NonNull<u8> = base.cast();
    // SAFETY: the mapping is `len` bytes: a `Head`, `slots` `Slot`s,
    // `rows` `Stats` and `services` `ServiceHead`s, each a multiple of 64
    // bytes, so every part starts
    // aligned (the mapping is page-aligned; the alignment of each is 64).
    // Zero-filled memory is a valid value of each (atomics and arrays of
    // atomics, all 0). It is never unmapped, so the references live as
    // long as the process; shared with other processes, it is only ever
    // accessed through atomics.
    let board = unsafe {
        let head = &*base.as_ptr().cast::<Head>();
        let first = base
            .as_ptr()
            .add(std::mem::size_of::<Head>())
            .cast::<Slot>();
        let first_stats = first.add(slots).cast::<Stats>();
        let first_head = first_stats.add(rows).cast::<ServiceHead>();
        Board {
            head,
            slots: std::slice::from_raw_parts(first, slots),
            stats: std::slice::from_raw_parts(first_stats, rows),
            service_heads: std::slice::from_raw_parts(first_head, services),
            services,
        }
    };
    if BOARD.set(board).is_err() {
        anyhow::bail!("the board was made twice");
    }
    Ok(())
}

/// How often the module of `service` was replaced since the server
/// started (0 without a board).
pub fn module_generation(service: usize) -> u64 {
    BOARD
        .get()
        .and_then(|board| board.service_heads.get(service))
        .map_or(0, |head| head.module.load(Ordering::Acquire))
}

/// In the master, once a new module of `service` is loaded: tells the
/// workers (see [`module_generation`]); returns the new generation.
pub fn module_replaced(service: usize) -> u64 {
    BOARD
        .get()
        .and_then(|board| board.service_heads.get(service))
        .map_or(0, |head| head.module.fetch_add(1, Ordering::AcqRel) + 1)
}

/// In the master, before forking a worker: a free slot for it, if the
/// board has one. The master alone hands out slots, one fork at a time.
pub fn free_slot() -> Option<usize> {
    let board = BOARD.get()?;
    board
        .slots
        .iter()
        .position(|slot| slot.pid.load(Ordering::Acquire) == 0)
}

/// In the master, after forking: slot `slot` is `pid`'s.
pub fn occupy(slot: usize, pid: u32) {
    if let Some(slot) = BOARD.get().and_then(|b| b.slots.get(slot)) {
        slot.pid.store(pid, Ordering::Release);
    }
}

/// In the master, once `slot`'s worker was reaped: its figures go to the
/// retired row, and the slot is free.
pub fn release(slot: usize) {
    let Some(board) = BOARD.get() else {
        return;
    };
    let Some(line) = board.slots.get(slot) else {
        return;
    };
    let retired = board.row(board.slots.len());
    for ((into, from), head) in retired.iter().zip(board.row(slot)).zip(board.service_heads) {
        // The connections it held under `max_connections` went with it.
        let held = from.take_held();
        let _ = head
            .open
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |open| {
                Some(open.saturating_sub(held))
            });
        into.fold(from);
    }
    let served = line.served.swap(0, Ordering::Relaxed);
    board
        .head
        .served_before
        .fetch_add(served, Ordering::Relaxed);
    line.open.store(0, Ordering::Relaxed);
    line.pid.store(0, Ordering::Release);
}

/// `service`'s counters in this process's row, when there is a board.
fn stats(service: usize) -> Option<&'static Stats> {
    BOARD.get().and_then(|b| b.my_row().get(service))
}

/// A client of `service` was refused (`why`) after it was counted.
pub fn refused(service: usize, why: Refusal) {
    if let Some(stats) = stats(service) {
        stats.refused(why);
    }
}

/// A client of `service` was accepted and refused at once, never
/// counted as open (`max_instances`'s eviction found no room).
pub fn refused_at_once(service: usize, why: Refusal) {
    if let Some(stats) = stats(service) {
        stats.refused_at_once(why);
    }
}

/// A connection (or datagram) of `service` ended: how, its bytes in and
/// out, and how long it lasted.
pub fn ended(service: usize, how: Ending, bytes: (u64, u64), took: Duration) {
    if let Some(stats) = stats(service) {
        stats.ended(how, bytes, took);
    }
}

/// An instance of `service`'s handler was made in `took`.
pub fn instantiated(service: usize, took: Duration) {
    if let Some(stats) = stats(service) {
        stats.instantiated(took);
    }
}

/// A guest of `service` computed through a whole tick without waiting, and
/// takes a turn in the CPU lane (see `fairness`).
pub fn cpu_turn(service: usize) {
    if let Some(stats) = stats(service) {
        stats.cpu_turn();
    }
}

/// A task of `service` began while the service was throttled for taking
/// more than its part of the worker's CPU (see `fairness`).
pub fn cpu_throttled(service: usize) {
    if let Some(stats) = stats(service) {
        stats.cpu_throttled();
    }
}

/// A log line of a guest of `service` was dropped over `guest_log_rate`.
pub fn guest_log_dropped(service: usize) {
    if let Some(stats) = stats(service) {
        stats.log_dropped();
    }
}

/// `service` (a wasi:http service) answered a request with `status`.
pub fn http_response(service: usize, status: u16) {
    if let Some(stats) = stats(service) {
        stats.http_response(usize::from(status / 100).saturating_sub(1));
    }
}

/// `service`'s `dequeue` ran (forked by the master, or on a mux instance).
pub fn dequeued(service: usize) {
    if let Some(stats) = stats(service) {
        stats.dequeued();
    }
}

/// The whole board, summed: per service over every worker (live and
/// retired), and the workers by state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Per service, in the configuration's order.
    pub services: Vec<ServiceSum>,
    /// The workers, busy and not, and their clients (see [`totals`]).
    pub totals: Totals,
}

/// Sums the board (`None` without one).
pub fn snapshot() -> Option<Snapshot> {
    let board = BOARD.get()?;
    let mut snapshot = Snapshot {
        services: vec![ServiceSum::default(); board.services],
        totals: totals(),
    };
    // Every worker's row and the retired row.
    for row in 0..=board.slots.len() {
        for (sum, stats) in snapshot.services.iter_mut().zip(board.row(row)) {
            stats.add_to(sum);
        }
    }
    Some(snapshot)
}

/// In a forked child: counts in `slot` from now on (`None`: in a slot of
/// its own, uncounted by others).
pub fn enter(slot: Option<usize>) {
    let pid = std::process::id();
    match slot.filter(|&s| BOARD.get().is_some_and(|b| s < b.slots.len())) {
        Some(index) => {
            MINE.store(index, Ordering::Relaxed);
            if let Some(slot) = BOARD.get().and_then(|b| b.slots.get(index)) {
                slot.pid.store(pid, Ordering::Release);
            }
        }
        None => MINE.store(NO_SLOT, Ordering::Relaxed),
    }
    OWN.pid.store(pid, Ordering::Relaxed);
}

/// This process's slot.
fn mine() -> &'static Slot {
    let index = MINE.load(Ordering::Relaxed);
    BOARD.get().and_then(|b| b.slots.get(index)).unwrap_or(&OWN)
}

/// In the master: writes why the server closes, before telling the
/// workers.
pub fn set_closing(closing: Closing) {
    if let Some(board) = BOARD.get() {
        board
            .head
            .closing
            .store(closing.as_u32(), Ordering::Release);
    }
}

/// Why the server closes, as the master wrote it.
pub fn closing() -> Closing {
    BOARD.get().map_or(Closing::No, |b| {
        Closing::from_u32(b.head.closing.load(Ordering::Acquire))
    })
}

/// A client of this process, counted from now until dropped.
#[derive(Debug)]
pub struct Client(&'static Slot, Option<&'static Stats>);

/// Counts a client of `service` this process takes: open until the
/// [`Client`] drops, and served (accepted) for good.
pub fn client(service: usize) -> Client {
    let slot = mine();
    slot.open.fetch_add(1, Ordering::Relaxed);
    slot.served.fetch_add(1, Ordering::Relaxed);
    let stats = stats(service);
    if let Some(stats) = stats {
        stats.opened();
    }
    Client(slot, stats)
}

impl Drop for Client {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
        if let Some(stats) = self.1 {
            stats.closed();
        }
    }
}

/// A connection of a service counted among its open connections across
/// every worker (`max_connections`), until dropped.
#[derive(Debug)]
pub struct Connection {
    open: Open,
    row: Option<&'static Stats>,
}

/// Where a service's open connections are counted: on the board, or
/// (without one) in the process.
#[derive(Debug)]
enum Open {
    Board(&'static AtomicU64),
    Process(Arc<AtomicU64>),
}

impl Open {
    fn counter(&self) -> &AtomicU64 {
        match self {
            Self::Board(open) => open,
            Self::Process(open) => open,
        }
    }
}

/// Counts a new connection of `service` among its open ones across every
/// worker, if fewer than `cap` are; otherwise `Err` with how many are.
/// Without a board (`inetd`, `--check`) the count is `own`, this process's.
pub fn connection(service: usize, cap: u64, own: &Arc<AtomicU64>) -> Result<Connection, u64> {
    let board = BOARD.get().filter(|b| service < b.service_heads.len());
    let open = match board {
        Some(board) => Open::Board(&board.service_heads[service].open),
        None => Open::Process(own.clone()),
    };
    open.counter()
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < cap).then_some(n + 1)
        })?;
    let row = board.and(stats(service));
    if let Some(row) = row {
        row.held(1);
    }
    Ok(Connection { open, row })
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(row) = self.row {
            row.held(-1);
        }
        let _ = self
            .open
            .counter()
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

/// Clients this process took since it started (its [`Counts::served`],
/// without reading the rest of the board).
pub fn served() -> u64 {
    mine().served.load(Ordering::Relaxed)
}

/// The whole server's counts, as the master sees them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Workers with a slot.
    pub workers: u32,
    /// Of them, those serving at least one client.
    pub busy: u32,
    /// Clients served now.
    pub open: u64,
    /// Clients taken since the board was made (since the server started,
    /// or its last HUP), by the workers running and those gone.
    pub served: u64,
}

/// The whole board's counts (all zero without a board).
pub fn totals() -> Totals {
    let Some(board) = BOARD.get() else {
        return Totals::default();
    };
    let mut totals = Totals {
        served: board.head.served_before.load(Ordering::Relaxed),
        ..Totals::default()
    };
    for slot in board.slots {
        if slot.pid.load(Ordering::Acquire) == 0 {
            continue;
        }
        let open = slot.open.load(Ordering::Relaxed);
        totals.workers += 1;
        totals.busy += u32::from(open > 0);
        totals.open += u64::from(open);
        totals.served += slot.served.load(Ordering::Relaxed);
    }
    totals
}

/// The counts now. A process without a slot is the only worker it sees.
pub fn counts() -> Counts {
    let own = mine();
    let open = own.open.load(Ordering::Relaxed);
    let served = own.served.load(Ordering::Relaxed);
    let pid = std::process::id();
    let counted = MINE.load(Ordering::Relaxed) != NO_SLOT;
    let (workers, busy) = match BOARD.get() {
        Some(board) if counted => board
            .slots
            .iter()
            .filter(|s| s.pid.load(Ordering::Acquire) != 0)
            .fold((0, 0), |(workers, busy), s| {
                let serving = s.open.load(Ordering::Relaxed) > 0;
                (workers + 1, busy + u32::from(serving))
            }),
        _ => (1, u32::from(open > 0)),
    };
    Counts {
        workers,
        busy,
        open,
        served,
        pid,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closing_round_trips() {
        for closing in [Closing::No, Closing::Drain, Closing::Stop, Closing::Restart] {
            assert_eq!(Closing::from_u32(closing.as_u32()), closing);
        }
        assert_eq!(Closing::from_u32(99), Closing::No);
    }

    #[test]
    fn slots_are_cache_lines() {
        assert_eq!(std::mem::size_of::<Slot>(), 64);
        assert_eq!(std::mem::size_of::<Head>(), 64);
        assert_eq!(std::mem::size_of::<ServiceHead>(), 64);
    }

    /// The whole life of a board, in one test (the board is the
    /// process's): slots given and freed, clients counted, and the same
    /// counts seen from a forked child.
    #[test]
    fn a_board_counts_workers_and_clients() {
        // Before there is a board: the process is the only worker.
        let before = counts();
        assert_eq!((before.workers, before.pid), (1, std::process::id()));
        // Without a board, a service's connections are capped in the
        // process.
        let own = Arc::new(AtomicU64::new(0));
        let held = connection(0, 1, &own).unwrap();
        assert_eq!(connection(0, 1, &own).unwrap_err(), 1);
        assert_eq!(own.load(Ordering::Relaxed), 1);
        drop(held);
        assert_eq!(own.load(Ordering::Relaxed), 0);
        create(4, 2).unwrap();
        assert!(create(4, 2).is_err(), "one board per process");
        assert_eq!(closing(), Closing::No);
        // Three "workers": this process in slot 0, two others.
        let a = free_slot().unwrap();
        occupy(a, std::process::id());
        enter(Some(a));
        let b = free_slot().unwrap();
        occupy(b, 4_000_001);
        let c = free_slot().unwrap();
        occupy(c, 4_000_002);
        assert_eq!((a, b, c), (0, 1, 2));
        BOARD.get().unwrap().slots[c]
            .open
            .store(2, Ordering::Relaxed);
        let first = client(1);
        let second = client(1);
        let now = counts();
        assert_eq!((now.workers, now.busy, now.open, now.served), (3, 2, 2, 2));
        drop(first);
        drop(second);
        let now = counts();
        assert_eq!((now.workers, now.busy, now.open, now.served), (3, 1, 0, 2));
        // Per service, in this process's row; a refusal and an end.
        refused(1, Refusal::AccessRules);
        ended(1, Ending::Served, (5, 7), Duration::from_millis(2));
        let sums = snapshot().unwrap();
        assert_eq!((sums.totals.workers, sums.totals.busy), (3, 1));
        assert_eq!(served(), 2);
        let all = totals();
        assert_eq!((all.workers, all.busy, all.open, all.served), (3, 1, 2, 2));
        assert_eq!(sums.services[1].accepted, 2);
        assert_eq!(sums.services[1].refused[0], 1);
        assert_eq!(sums.services[0], ServiceSum::default());
        // Service 1's open connections across workers, capped at 2: this
        // process holds one, the worker in slot c (another process, as
        // the master sees it) one; the third is refused.
        let own = Arc::new(AtomicU64::new(0));
        let mine = connection(1, 2, &own).unwrap();
        BOARD.get().unwrap().row(c)[1].held(1);
        BOARD.get().unwrap().service_heads[1]
            .open
            .fetch_add(1, Ordering::Relaxed);
        assert_eq!(connection(1, 2, &own).unwrap_err(), 2);
        assert_eq!(
            own.load(Ordering::Relaxed),
            0,
            "the board counts, not the process"
        );
        // Service 0 has its own count.
        drop(connection(0, 1, &own).unwrap());
        // Reaped, slot c's worker gives back what it held.
        release(c);
        let again = connection(1, 2, &own).unwrap();
        assert_eq!(connection(1, 2, &own).unwrap_err(), 2);
        drop((mine, again));
        assert_eq!(
            BOARD.get().unwrap().service_heads[1]
                .open
                .load(Ordering::Relaxed),
            0
        );
        assert_eq!(free_slot(), Some(2));
        assert_eq!(counts().workers, 2);
        // This process's figures survive its slot: folded into the
        // retired row.
        release(a);
        let sums = snapshot().unwrap();
        assert_eq!(sums.services[1].accepted, 2);
        assert_eq!(sums.services[1].bytes_out, 7);
        assert_eq!(sums.services[1].open, 0, "the clients went with it");
        // A freed slot's clients still count in the totals.
        assert_eq!((totals().workers, totals().served), (1, 2));
        occupy(a, std::process::id());
        // A forked child writes to the same table.
        set_closing(Closing::Drain);
        // SAFETY: the child touches only atomics and leaves with `_exit`,
        // which is all a child of a multi-threaded process may do.
        let forked = unsafe { nix::unistd::fork() }.unwrap();
        let pid = match forked {
            nix::unistd::ForkResult::Child => {
                let ok = closing() == Closing::Drain;
                BOARD.get().unwrap().slots[b]
                    .open
                    .store(7, Ordering::Relaxed);
                // SAFETY: ends the child at once, running nothing of the
                // parent's (no destructors, no atexit handlers).
                unsafe { nix::libc::_exit(i32::from(!ok)) }
            }
            nix::unistd::ForkResult::Parent { child } => child,
        };
        let waited = nix::sys::wait::waitpid(pid, None).unwrap();
        assert_eq!(waited, nix::sys::wait::WaitStatus::Exited(pid, 0));
        assert_eq!(
            BOARD.get().unwrap().slots[b].open.load(Ordering::Relaxed),
            7
        );
        assert_eq!(counts().busy, 1);
    }
}
