//! A service's places in one worker process (`max_instances`), and what
//! keeps one client from taking them all: when every place is taken and
//! another client is waiting, the host evicts a connection to make room.
//!
//! A new client from the address that holds the most connections (more
//! than one) is refused at once: that address has had its share. For any
//! other, the host evicts, among the addresses holding the most
//! connections, the connection that moved no byte for the longest. It is
//! evicted only if its address holds more than one connection, or it has
//! been idle for at least [`EVICT_IDLE`]; otherwise the service is truly
//! busy and the new client waits in the kernel's queue, as before. So one
//! address that opens thousands of silent connections loses its own new
//! and idle ones, never another client's, and a client from elsewhere is
//! served at once (measured in docs/security.md). Each eviction ends that
//! connection with the reason in the log; a service at its cap is logged at
//! most every [`WARN_EVERY`]. Behind a proxy (`proxy_from`) every client
//! has the proxy's address here: the proxy's connections are counted as
//! one address's.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::client::Peer;
use crate::log::every::Every;
use crate::transport::ClientSocket;

/// How long a connection must have been idle to be evicted when its
/// address holds no other connection.
pub const EVICT_IDLE: Duration = Duration::from_secs(10);

/// How often a service at its cap is said in the log, at most.
pub const WARN_EVERY: Duration = Duration::from_secs(10);

/// How often a client waiting for a place looks again for one to evict.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// The places of one service in one worker.
#[derive(Debug)]
pub struct Capacity {
    service: Arc<str>,
    max: u32,
    permits: Arc<Semaphore>,
    live: Mutex<Registry>,
    next: AtomicU64,
    warned: Every,
}

/// The live connections, and how many each address holds.
#[derive(Debug, Default)]
struct Registry {
    live: HashMap<u64, Entry>,
    held: HashMap<Option<IpAddr>, u32>,
}

impl Registry {
    fn insert(&mut self, id: u64, entry: Entry) {
        *self.held.entry(entry.addr).or_default() += 1;
        self.live.insert(id, entry);
    }

    fn remove(&mut self, id: u64) {
        let Some(entry) = self.live.remove(&id) else {
            return;
        };
        if let Some(count) = self.held.get_mut(&entry.addr) {
            *count -= 1;
            if *count == 0 {
                self.held.remove(&entry.addr);
            }
        }
    }
}

/// One live connection.
#[derive(Debug)]
struct Entry {
    /// Its client's address; a unix client has none (and all count as one).
    addr: Option<IpAddr>,
    socket: Arc<ClientSocket>,
    evict: Arc<Notify>,
}

/// What a waiting client gets.
#[derive(Debug)]
pub enum Room {
    /// A place.
    Given(Place),
    /// None: its address holds the most already.
    Refused,
    /// None: the service stopped serving.
    Closed,
}

/// A connection's place: held until it ends.
#[derive(Debug)]
pub struct Place {
    _permit: OwnedSemaphorePermit,
    capacity: Option<Arc<Capacity>>,
}

impl Place {
    /// A place no eviction can take (a process serving one connection).
    pub fn alone(permit: OwnedSemaphorePermit) -> Self {
        Self {
            _permit: permit,
            capacity: None,
        }
    }

    /// Makes the connection of `peer` on `socket` one that may be evicted
    /// to make room; the returned guard says when it is, and takes it off
    /// the list when dropped.
    pub fn live(&self, peer: &Peer, socket: &Arc<ClientSocket>) -> Live {
        let Some(capacity) = &self.capacity else {
            return Live(None);
        };
        let id = capacity.next.fetch_add(1, Ordering::Relaxed);
        let evict = Arc::new(Notify::new());
        capacity.registry().insert(
            id,
            Entry {
                addr: peer.ip_addr(),
                socket: socket.clone(),
                evict: evict.clone(),
            },
        );
        Live(Some((capacity.clone(), id, evict)))
    }
}

/// A connection on the list of those that may be evicted.
#[derive(Debug)]
pub struct Live(Option<(Arc<Capacity>, u64, Arc<Notify>)>);

impl Live {
    /// A connection that is never evicted: a datagram, served in
    /// microseconds, is not worth a place on the list.
    pub fn never() -> Self {
        Self(None)
    }

    /// Resolves when the connection is evicted (never, for one that cannot
    /// be).
    pub async fn evicted(&self) {
        match &self.0 {
            Some((_, _, evict)) => evict.notified().await,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        if let Some((capacity, id, _)) = &self.0 {
            capacity.registry().remove(*id);
        }
    }
}

impl Capacity {
    /// `max` places for `service`'s connections.
    pub fn new(service: Arc<str>, max: u32) -> Arc<Self> {
        Arc::new(Self {
            service,
            max,
            permits: Arc::new(Semaphore::new(max as usize)),
            live: Mutex::default(),
            next: AtomicU64::new(0),
            warned: Every::new(WARN_EVERY),
        })
    }

    fn registry(&self) -> MutexGuard<'_, Registry> {
        // Each insert and remove is whole: a panic cannot leave it half done.
        self.live.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a client at `addr` that is waiting: a free one, or one
    /// made by evicting a connection, or the first one to come free; or a
    /// refusal, for the address that holds the most (see the module's
    /// documentation). `Closed` once the service stops serving.
    pub async fn place(self: &Arc<Self>, addr: Option<IpAddr>) -> Room {
        loop {
            if let Ok(permit) = self.permits.clone().try_acquire_owned() {
                return Room::Given(self.place_of(permit));
            }
            if self.holds_the_most(addr) {
                self.warn(Instant::now(), Some((self.held_by(addr), addr)));
                return Room::Refused;
            }
            self.evict_one();
            tokio::select! {
                permit = self.permits.clone().acquire_owned() => {
                    return match permit {
                        Ok(permit) => Room::Given(self.place_of(permit)),
                        Err(_) => Room::Closed,
                    };
                }
                () = tokio::time::sleep(LOOK_AGAIN) => {}
            }
        }
    }

    /// The first place to come free, evicting nothing (for a datagram,
    /// whose sender may be forged); `None` once the service stops serving.
    pub async fn free_place(self: &Arc<Self>) -> Option<Place> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        Some(self.place_of(permit))
    }

    /// Connections live from `addr`.
    fn held_by(&self, addr: Option<IpAddr>) -> u32 {
        self.registry().held.get(&addr).copied().unwrap_or(0)
    }

    /// Whether the IP address `addr` holds more than one connection, and
    /// no other address holds more.
    fn holds_the_most(&self, addr: Option<IpAddr>) -> bool {
        if addr.is_none() {
            return false;
        }
        let registry = self.registry();
        let own = registry.held.get(&addr).copied().unwrap_or(0);
        own > 1 && registry.held.values().all(|&n| n <= own)
    }

    fn place_of(self: &Arc<Self>, permit: OwnedSemaphorePermit) -> Place {
        Place {
            _permit: permit,
            capacity: Some(self.clone()),
        }
    }

    /// Waits until every place is free again (the connections ended).
    pub async fn all_free(&self) {
        let _ = self.permits.acquire_many(self.max).await;
    }

    /// Evicts the connection the module's rule picks, if one may be.
    fn evict_one(&self) {
        let now = Instant::now();
        let picked = {
            let registry = self.registry();
            let held = &registry.held;
            registry
                .live
                .values()
                .map(|e| (held[&e.addr], e.socket.idle_for(), e))
                .filter(|(count, idle, _)| *count > 1 || *idle >= EVICT_IDLE)
                .max_by_key(|(count, idle, _)| (*count, *idle))
                .map(|(count, idle, e)| (count, idle, e.addr, e.evict.clone()))
        };
        self.warn(
            now,
            picked.as_ref().map(|(count, _, addr, _)| (*count, *addr)),
        );
        if let Some((_, idle, addr, evict)) = picked {
            tracing::debug!(
                service = %self.service,
                "evicting a connection of {} idle for {:.1}s to make room",
                shown(addr),
                idle.as_secs_f64()
            );
            evict.notify_one();
        }
    }

    /// Says (at most every [`WARN_EVERY`]) that the service is at its cap,
    /// and whose connections make room.
    fn warn(&self, now: Instant, evicting: Option<(u32, Option<IpAddr>)>) {
        if !self.warned.due(now) {
            return;
        }
        match evicting {
            Some((count, addr)) => tracing::warn!(
                "service {}: all {} places of this worker are taken (max_instances); \
                 making room from the connections of {}, which holds {count}",
                self.service,
                self.max,
                shown(addr)
            ),
            None => tracing::warn!(
                "service {}: all {} places of this worker are taken (max_instances); \
                 new clients wait until one ends",
                self.service,
                self.max
            ),
        }
    }
}

/// A client address as the log says it.
fn shown(addr: Option<IpAddr>) -> String {
    addr.map_or_else(|| "unix clients".to_owned(), |a| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{RawStream, Stream, Wait};

    fn socket() -> (Arc<ClientSocket>, tokio::net::UnixStream) {
        let (a, b) = tokio::net::UnixStream::pair().unwrap();
        let socket = ClientSocket::new(Stream::Raw(RawStream::Unix(a)), Wait::Runtime).unwrap();
        (socket, b)
    }

    fn peer(addr: &str) -> Peer {
        Peer::ip(format!("{addr}:1000").parse().unwrap())
    }

    #[tokio::test]
    async fn the_address_holding_most_loses_its_connection_first() {
        let capacity = Capacity::new("t".into(), 3);
        let mut held = Vec::new();
        for addr in ["192.0.2.1", "192.0.2.9", "192.0.2.9"] {
            let Room::Given(place) = capacity.place(None).await else {
                panic!("a free place");
            };
            let (socket, client) = socket();
            let live = place.live(&peer(addr), &socket);
            held.push((place, live, client));
        }
        // Full: the next client's place comes from 192.0.2.9's connections.
        // The address holding the most is refused at once.
        assert!(matches!(
            capacity.place(peer("192.0.2.9").ip_addr()).await,
            Room::Refused
        ));
        let waiting = tokio::spawn({
            let capacity = capacity.clone();
            async move { matches!(capacity.place(None).await, Room::Given(_)) }
        });
        let evicted = tokio::select! {
            () = held[1].1.evicted() => 1,
            () = held[2].1.evicted() => 2,
            () = held[0].1.evicted() => 0,
        };
        assert_ne!(evicted, 0, "the lone client was evicted");
        // The evicted connection ends: its place goes to the waiting one.
        held.remove(evicted);
        assert!(waiting.await.unwrap());
    }

    #[tokio::test]
    async fn a_lone_client_recently_active_is_not_evicted() {
        let capacity = Capacity::new("t".into(), 1);
        let Room::Given(place) = capacity.place(None).await else {
            panic!("a free place");
        };
        let (socket, _client) = socket();
        let live = place.live(&peer("192.0.2.1"), &socket);
        capacity.evict_one();
        let evicted = tokio::time::timeout(Duration::from_millis(50), live.evicted()).await;
        assert!(
            evicted.is_err(),
            "a lone client active just now was evicted"
        );
        drop(live);
        drop(place);
        assert!(matches!(capacity.place(None).await, Room::Given(_)));
    }
}
