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
//!   `cpu_share`: each turn a service is given advances its virtual time by
//!   `SCALE / share`, and the waiting service with the smallest virtual time
//!   goes next. A service that was not waiting starts at the smallest
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

use std::cell::Cell;
use std::collections::{BTreeSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::task::{Context, Poll, Waker};

/// The weight a service has when `cpu_share` is not given.
pub const DEFAULT_SHARE: u32 = 100;

/// Virtual time one turn costs a service of share 1.
const SCALE: u64 = 1 << 20;

/// This process's lane (installed by a `multiplex` worker).
static LANE: OnceLock<Mutex<Lane>> = OnceLock::new();

thread_local! {
    /// Whether the task being polled on this thread was spawned with
    /// [`spawn`] (and so may take turns).
    static IN_FAIR_TASK: Cell<bool> = const { Cell::new(false) };
    /// Whether the task being polled on this thread holds a turn.
    static HOLDS_TURN: Cell<bool> = const { Cell::new(false) };
}

/// Installs this process's lane: `threads` threads run its guests, and
/// the services' shares are `shares` (by service index). Once per process;
/// later calls are ignored.
pub fn install(threads: usize, shares: Vec<u32>) {
    let _ = LANE.set(Mutex::new(Lane::new(slots_for(threads), shares)));
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
    tokio::spawn(Fair { task })
}

/// For a heavy guest of service `service` at its tick: the wait for its
/// next turn, in which the turn its task holds, if any, is given back as
/// it asks again (so that it competes for the next turn with those
/// waiting) — or `None` where there is no lane (the guest just yields).
pub fn turn(service: usize) -> Option<Turn> {
    if !IN_FAIR_TASK.get() {
        return None;
    }
    LANE.get()?;
    Some(Turn {
        service,
        id: None,
        yielded: false,
        done: false,
        held: HOLDS_TURN.replace(false),
    })
}

/// Gives back the turn the task being polled on this thread holds.
fn give_back() {
    if HOLDS_TURN.replace(false)
        && let Some(lane) = LANE.get()
    {
        lock(lane).release();
    }
}

fn lock(lane: &Mutex<Lane>) -> MutexGuard<'_, Lane> {
    // The lane's counts stay consistent between statements.
    lane.lock().unwrap_or_else(|p| p.into_inner())
}

pin_project_lite::pin_project! {
    /// A task whose guests take turns: its turn is given back whenever it
    /// stops being polled.
    struct Fair<F> {
        #[pin]
        task: F,
    }
}

impl<F: Future> Future for Fair<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let was = IN_FAIR_TASK.replace(true);
        let out = self.project().task.poll(cx);
        IN_FAIR_TASK.set(was);
        give_back();
        out
    }
}

/// The wait of a heavy guest for its next turn (see [`turn`]).
pub struct Turn {
    service: usize,
    /// Its place in the lane, once it waits there.
    id: Option<u64>,
    /// Whether it gave its task's other futures a poll (see `poll`).
    yielded: bool,
    done: bool,
    /// Whether it holds a turn, given back when it asks.
    held: bool,
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
        // at once (the turn it holds stays counted until it asks).
        if !self.yielded {
            self.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let Some(lane) = LANE.get() else {
            return Poll::Ready(());
        };
        let mut lane = lock(lane);
        let granted = match self.id {
            None => match lane.ask(self.service, cx.waker(), std::mem::take(&mut self.held)) {
                Ok(()) => true,
                Err(id) => {
                    self.id = Some(id);
                    false
                }
            },
            Some(id) => lane.take_grant(self.service, id, cx.waker()),
        };
        if granted {
            self.done = true;
            self.id = None;
            HOLDS_TURN.set(true);
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        // Dropped while waiting (its connection ended): leave the lane, and
        // give back a turn granted but never taken.
        let Some(lane) = LANE.get() else {
            return;
        };
        if let Some(id) = self.id {
            lock(lane).leave(self.service, id);
        } else if self.held {
            lock(lane).release();
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
    /// `held`: `Ok` when it may compute at once (a slot is free and nobody
    /// waits), else its place in line.
    fn ask(&mut self, service: usize, waker: &Waker, held: bool) -> Result<(), u64> {
        if held {
            self.running = self.running.saturating_sub(1);
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
            self.charge(service);
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
            self.release();
        } else {
            self.queue(service).waiting.retain(|(i, _)| *i != id);
            self.dispatch();
        }
    }

    /// A turn held or granted is given back: its slot goes to the next
    /// waiter.
    fn release(&mut self) {
        self.running = self.running.saturating_sub(1);
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
            self.charge(next);
            self.granted.insert(id);
            waker.wake();
        }
    }

    /// A turn starts for `service`: the lane's clock moves to its
    /// virtual time, which the turn then advances.
    fn charge(&mut self, service: usize) {
        let queue = self.queue(service);
        let start = queue.vtime;
        queue.vtime = queue.vtime.saturating_add(SCALE / queue.share);
        self.clock = start;
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
        order_in(&mut Lane::new(slots, shares.to_vec()), asks, turns)
    }

    fn order_in(lane: &mut Lane, asks: &[usize], turns: usize) -> Vec<usize> {
        let mut held = Vec::new();
        let mut ids = std::collections::BTreeMap::new();
        for &service in asks {
            match lane.ask(service, &waker(), false) {
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
                match lane.ask(service, &waker(), true) {
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
    fn within_a_service_turns_go_round() {
        let mut lane = Lane::new(1, vec![100]);
        assert_eq!(lane.ask(0, &waker(), false), Ok(()));
        let a = lane.ask(0, &waker(), false).unwrap_err();
        let b = lane.ask(0, &waker(), false).unwrap_err();
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
        assert_eq!(lane.ask(0, &waker(), false), Ok(()));
        let a = lane.ask(0, &waker(), false).unwrap_err();
        let b = lane.ask(1, &waker(), false).unwrap_err();
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
        assert_eq!(lane.ask(1, &waker(), false), Ok(()));
    }

    #[test]
    fn an_idle_service_banks_no_turns() {
        let mut lane = Lane::new(1, vec![100, 100]);
        // Service 0 computes alone for a long time.
        for _ in 0..1000 {
            assert_eq!(lane.ask(0, &waker(), false), Ok(()));
            lane.running -= 1;
        }
        // Then service 1 starts computing beside it: they alternate, rather
        // than 1 taking the next thousand turns.
        let got = order_in(&mut lane, &[0, 1], 40);
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
}
