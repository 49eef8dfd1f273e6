//! The mux world's side of an instance: the connections it holds, each
//! with the [`Outbox`] its writes go to, the timers its callbacks set, and
//! the [`Event`]s that reach the instance's driver from the connections.
//!
//! The driver (in the connection layer above) owns the instance and calls its
//! callbacks; each connection's own task reads the client and writes what
//! the guest queued in its outbox. Nothing here waits: the `connections`
//! imports only queue bytes and raise flags, and wake the connection's
//! task.

use std::collections::{BTreeMap, BTreeSet};
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use nix::sys::socket::{MsgFlags, send};

use crate::client::ClientInfo;
use crate::log::tag::ConnTag;

/// A connection of a mux instance, as the guest names it: unique within
/// the worker process.
pub type ConnId = u64;

/// What reaches a service's mux driver from its connections, in each
/// connection's order.
#[derive(Debug)]
pub enum Event {
    /// A client passed the admission: the driver gives it to the guest.
    Connected(Box<Arrival>),
    /// Bytes from a client.
    Input(ConnId, Vec<u8>),
    /// The client will send nothing more.
    Eof(ConnId),
    /// The connection closed (either end, a limit, a failed write).
    Closed(ConnId),
    /// The worker stops: the instance's `child-finish-hook` runs, then the
    /// driver says it is done.
    Retire(tokio::sync::oneshot::Sender<()>),
    /// A signal reached the worker: the instance's `signal-hook` runs
    /// (the instance is made if there is none).
    Signal(nix::sys::signal::Signal),
    /// The server closes: the instance's `server-close-hook` runs, if
    /// there is an instance, then the driver says it is done.
    Closing(crate::board::Closing, tokio::sync::oneshot::Sender<()>),
}

/// A connection arriving at the driver.
#[derive(Debug)]
pub struct Arrival {
    /// Its number.
    pub id: ConnId,
    /// What the host knows of its client.
    pub client: ClientInfo,
    /// Where the guest's writes to it go.
    pub outbox: Arc<Outbox>,
    /// The tag of its log lines.
    pub tag: Arc<ConnTag>,
}

/// Why the host ends a connection of the mux world on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cut {
    /// The guest refused it in `mux-connection`; what it wrote is sent.
    Refused,
    /// More than this many bytes were queued for a client that does not
    /// read (`mux_write_cap`).
    WriteCap(u64),
    /// The guest left more than this many bytes of input unconsumed
    /// (`mux_input_cap`).
    InputCap(u64),
    /// The instance holding it trapped (or could not be made): why.
    Instance(String),
    /// The guest wrote this many bytes to it, its `max_bytes_written`.
    BytesWritten(u64),
}

/// The writes queued for one connection, shared by the instance (which
/// queues) and the connection's task (which writes).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<OutState>,
    waker: AtomicWaker,
    cap: u64,
    /// The raw socket (TCP, unix stream) a write may be sent on at once,
    /// when nothing is queued before it: one wake of the connection's task
    /// fewer per reply. `None` for a stream that wraps its socket (TLS).
    direct: Option<RawFd>,
    /// The bytes the guest may write to it in all (0: no limit).
    limit: u64,
}

#[derive(Debug, Default)]
struct OutState {
    /// Bytes queued, not yet taken by the writer.
    queued: Vec<u8>,
    /// Bytes the writer took and has not written yet.
    taken: u64,
    /// Close once everything queued is written.
    close: bool,
    /// Shut the writing side down once everything queued is written.
    shutdown: bool,
    /// The writing side is shut, or will be: no more writes.
    write_shut: bool,
    /// End now, without writing what is queued (unless refused).
    cut: Option<Cut>,
    /// The connection's task ended: nothing more is written.
    ended: bool,
    /// Bytes sent at once by [`Outbox::write`], in all.
    sent: u64,
    /// Bytes the guest wrote, in all (up to the limit).
    written: u64,
}

impl OutState {
    /// Bytes queued or taken, and not yet written.
    fn pending(&self) -> u64 {
        self.queued.len() as u64 + self.taken
    }
}

/// What the connection's writer is to do next (see [`Outbox::next`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Write these bytes.
    Write(Vec<u8>),
    /// Nothing to write; shut the writing side down (once).
    Shutdown,
    /// Nothing to write; close the connection.
    Close,
    /// End now, for this reason.
    Cut(Cut),
    /// Nothing to do.
    Idle,
}

impl Outbox {
    /// An empty outbox whose client is cut off past `cap` bytes queued;
    /// writes go at once to `direct`, a raw socket, when nothing waits
    /// before them. The socket must stay open until [`Outbox::end`].
    pub fn new(cap: u64, direct: Option<RawFd>) -> Self {
        Self {
            state: Mutex::new(OutState::default()),
            waker: AtomicWaker::new(),
            cap,
            direct,
            limit: 0,
        }
    }

    /// The same outbox, whose guest may write `limit` bytes in all (0: no
    /// limit): the write that reaches it is taken up to it, then the
    /// connection is cut.
    pub fn limit(self, limit: u64) -> Self {
        Self { limit, ..self }
    }

    fn state(&self) -> MutexGuard<'_, OutState> {
        // Plain data, left consistent by every critical section.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `data`; `false` when the connection is not open, or when
    /// this write passes the cap or the limit (the connection is then
    /// cut; of a write that passes the limit, what fits is taken).
    pub fn write(&self, data: &[u8]) -> bool {
        let mut state = self.state();
        if state.close || state.write_shut || state.cut.is_some() || state.ended {
            return false;
        }
        let (data, whole) = match self.limit {
            0 => (data, true),
            limit => {
                let room = limit.saturating_sub(state.written);
                let taken = &data[..data.len().min(usize::try_from(room).unwrap_or(usize::MAX))];
                state.written += taken.len() as u64;
                (taken, taken.len() == data.len())
            }
        };
        let reached = self.limit > 0 && state.written >= self.limit;
        let queued = self.queue(state, data);
        if reached {
            self.cut(Cut::BytesWritten(self.limit));
        }
        queued && whole
    }

    /// Queues `data`, or sends it at once (see [`Outbox::write`]).
    fn queue(&self, mut state: MutexGuard<'_, OutState>, data: &[u8]) -> bool {
        let pending = state.pending();
        if pending + data.len() as u64 > self.cap {
            state.cut = Some(Cut::WriteCap(self.cap));
            state.queued = Vec::new();
            drop(state);
            self.waker.wake();
            return false;
        }
        let mut data = data;
        if pending == 0
            && !state.shutdown
            && let Some(fd) = self.direct
        {
            // Under the lock: the connection's task writes nothing
            // meanwhile, and cannot end (and close the socket) before
            // `end`, which takes it. What the socket does not take now
            // is queued; an error is the writer's to find.
            let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
            if let Ok(n) = send(fd, data, flags) {
                state.sent += n as u64;
                data = &data[n..];
                if data.is_empty() {
                    return true;
                }
            }
        }
        state.queued.extend_from_slice(data);
        drop(state);
        self.waker.wake();
        true
    }

    /// Closes the connection once what is queued is written.
    pub fn close(&self) {
        self.state().close = true;
        self.waker.wake();
    }

    /// Shuts the writing side down once what is queued is written.
    pub fn shutdown(&self) {
        let mut state = self.state();
        state.shutdown = true;
        state.write_shut = true;
        drop(state);
        self.waker.wake();
    }

    /// Ends the connection now (a refused one after what was queued).
    pub fn cut(&self, why: Cut) {
        let mut state = self.state();
        if state.cut.is_none() {
            state.cut = Some(why);
        }
        drop(state);
        self.waker.wake();
    }

    /// Whether the connection is open: not closing, cut or ended (its
    /// writing side may be shut).
    pub fn is_open(&self) -> bool {
        let state = self.state();
        !(state.close || state.cut.is_some() || state.ended)
    }

    /// Bytes queued and not yet written.
    pub fn pending(&self) -> u64 {
        self.state().pending()
    }

    /// Whether the client's input should pause: half the cap is queued.
    pub fn full(&self) -> bool {
        self.pending() >= self.cap / 2
    }

    /// The writer's next step, once it wrote all it took before; registers
    /// its task to be woken by the next change.
    pub fn next(&self, waker: &std::task::Waker) -> Next {
        self.waker.register(waker);
        let mut state = self.state();
        state.taken = 0;
        if let Some(cut) = &state.cut
            && (*cut != Cut::Refused || state.queued.is_empty())
        {
            return Next::Cut(cut.clone());
        }
        if !state.queued.is_empty() {
            let bytes = std::mem::take(&mut state.queued);
            state.taken = bytes.len() as u64;
            return Next::Write(bytes);
        }
        if let Some(cut) = &state.cut {
            return Next::Cut(cut.clone());
        }
        if state.close {
            return Next::Close;
        }
        if std::mem::take(&mut state.shutdown) {
            return Next::Shutdown;
        }
        Next::Idle
    }

    /// A cut that ends the connection at once (not a refusal, which
    /// waits for what was queued), for a writer waiting on its client;
    /// registers the writer's task to be woken by the next change.
    pub fn cut_now(&self, waker: &std::task::Waker) -> Option<Cut> {
        self.waker.register(waker);
        self.state().cut.clone().filter(|cut| *cut != Cut::Refused)
    }

    /// Bytes [`Outbox::write`] sent at once, in all.
    pub fn sent(&self) -> u64 {
        self.state().sent
    }

    /// `n` bytes of what the writer took were written.
    pub fn wrote(&self, n: usize) {
        let mut state = self.state();
        state.taken = state.taken.saturating_sub(n as u64);
    }

    /// The connection's task ended: writes fail from now on.
    pub fn end(&self) {
        let mut state = self.state();
        state.ended = true;
        state.queued = Vec::new();
    }
}

/// One connection as the instance holds it.
#[derive(Debug)]
struct Held {
    client: ClientInfo,
    outbox: Arc<Outbox>,
    tag: Arc<ConnTag>,
    /// `mux-connection` returned `true`.
    accepted: bool,
    /// Input the guest left unconsumed.
    unconsumed: Vec<u8>,
    /// When its `mux-timeout` is due.
    timeout: Option<Instant>,
}

/// Due timers: a connection's timeout (`Some`), or the instance's own.
pub type Due = Option<ConnId>;

/// The connections of one mux instance and the timers its callbacks set:
/// the per-Store state of the mux world.
#[derive(Debug, Default)]
pub struct MuxTable {
    held: BTreeMap<ConnId, Held>,
    timeouts: BTreeSet<(Instant, ConnId)>,
    timer: Option<Instant>,
    /// The connection the running callback is about.
    current: Option<ConnId>,
}

impl MuxTable {
    /// Takes `arrival` in, not yet accepted by the guest.
    pub fn insert(&mut self, arrival: Arrival) {
        let Arrival {
            id,
            client,
            outbox,
            tag,
        } = arrival;
        self.held.insert(
            id,
            Held {
                client,
                outbox,
                tag,
                accepted: false,
                unconsumed: Vec::new(),
                timeout: None,
            },
        );
    }

    /// The guest accepted `id` in `mux-connection`.
    pub fn accept(&mut self, id: ConnId) {
        if let Some(held) = self.held.get_mut(&id) {
            held.accepted = true;
        }
    }

    /// Forgets `id`; whether the guest had accepted it.
    pub fn remove(&mut self, id: ConnId) -> bool {
        let Some(held) = self.held.remove(&id) else {
            return false;
        };
        if let Some(at) = held.timeout {
            self.timeouts.remove(&(at, id));
        }
        held.outbox.end();
        held.accepted
    }

    /// Every connection held, for cutting them all.
    pub fn drain(&mut self) -> Vec<Arc<Outbox>> {
        self.timeouts.clear();
        self.timer = None;
        std::mem::take(&mut self.held)
            .into_values()
            .map(|h| h.outbox)
            .collect()
    }

    /// `id`'s client.
    pub fn client(&self, id: ConnId) -> Option<&ClientInfo> {
        self.held.get(&id).map(|h| &h.client)
    }

    /// `id`'s log tag.
    pub fn tag(&self, id: ConnId) -> Option<Arc<ConnTag>> {
        self.held.get(&id).map(|h| h.tag.clone())
    }

    /// `id`'s outbox.
    pub fn outbox(&self, id: ConnId) -> Option<&Arc<Outbox>> {
        self.held.get(&id).map(|h| &h.outbox)
    }

    /// The input for `id`'s next `mux-input`: what was left unconsumed,
    /// then `data`.
    pub fn input(&mut self, id: ConnId, data: Vec<u8>) -> Option<Vec<u8>> {
        let held = self.held.get_mut(&id).filter(|h| h.accepted)?;
        if held.unconsumed.is_empty() {
            return Some(data);
        }
        let mut all = std::mem::take(&mut held.unconsumed);
        all.extend_from_slice(&data);
        Some(all)
    }

    /// What `id` left unconsumed at its end of input.
    pub fn rest(&mut self, id: ConnId) -> Option<Vec<u8>> {
        let held = self.held.get_mut(&id).filter(|h| h.accepted)?;
        Some(std::mem::take(&mut held.unconsumed))
    }

    /// Keeps `data[consumed..]` for `id`'s next input; the bytes kept, or
    /// `Err` with the cap when more than `cap` would be kept.
    pub fn keep(
        &mut self,
        id: ConnId,
        mut data: Vec<u8>,
        consumed: usize,
        cap: u64,
    ) -> Result<usize, u64> {
        let Some(held) = self.held.get_mut(&id) else {
            return Ok(0);
        };
        let consumed = consumed.min(data.len());
        let left = data.len() - consumed;
        if left as u64 > cap {
            return Err(cap);
        }
        if left > 0 {
            data.drain(..consumed);
            held.unconsumed = data;
        }
        Ok(left)
    }

    /// Sets the connection the running callback is about.
    pub fn set_current(&mut self, id: Option<ConnId>) {
        self.current = id;
    }

    /// The client of the connection the running callback is about.
    pub fn current_client(&self) -> Option<&ClientInfo> {
        self.client(self.current?)
    }

    /// The accepted connections still taking writes, oldest first.
    pub fn open(&self) -> Vec<ConnId> {
        self.held
            .iter()
            .filter(|(_, h)| h.accepted && h.outbox.is_open())
            .map(|(&id, _)| id)
            .collect()
    }

    /// The outbox of `id` if the guest may act on it (accepted, or being
    /// offered in `mux-connection`).
    pub fn reachable(&self, id: ConnId) -> Option<&Arc<Outbox>> {
        let held = self.held.get(&id)?;
        (held.accepted || self.current == Some(id)).then_some(&held.outbox)
    }

    /// Sets (or with `None` clears) `id`'s timeout, `after` from now.
    pub fn set_timeout(&mut self, id: ConnId, after: Option<Duration>) {
        let Some(held) = self.held.get_mut(&id) else {
            return;
        };
        if let Some(at) = held.timeout.take() {
            self.timeouts.remove(&(at, id));
        }
        if let Some(after) = after {
            let at = Instant::now() + after;
            held.timeout = Some(at);
            self.timeouts.insert((at, id));
        }
    }

    /// Sets (or clears) the instance's own timer.
    pub fn set_timer(&mut self, after: Option<Duration>) {
        self.timer = after.map(|after| Instant::now() + after);
    }

    /// When the next timer is due.
    pub fn next_due(&self) -> Option<Instant> {
        let first = self.timeouts.first().map(|(at, _)| *at);
        match (first, self.timer) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes the timers due by `now`, earliest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<Due> {
        let mut due = Vec::new();
        while let Some(&(at, id)) = self.timeouts.first()
            && at <= now
        {
            self.timeouts.pop_first();
            if let Some(held) = self.held.get_mut(&id) {
                held.timeout = None;
            }
            due.push((at, Some(id)));
        }
        if let Some(at) = self.timer
            && at <= now
        {
            self.timer = None;
            due.push((at, None));
        }
        due.sort_by_key(|(at, _)| *at);
        due.into_iter().map(|(_, id)| id).collect()
    }
}

/// A timeout's length from the guest's fractional seconds: `None` clears
/// it (and so does a value that is not a finite number); a negative one is
/// due at once.
pub fn seconds(value: Option<f64>) -> Option<Duration> {
    let value = value.filter(|v| v.is_finite())?;
    Duration::try_from_secs_f64(value.max(0.0)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{Local, Peer};

    fn arrival(id: ConnId) -> Arrival {
        let peer = Peer::ip("127.0.0.1:4000".parse().unwrap());
        let local = Local::ip("127.0.0.1:20203".parse().unwrap());
        let client = ClientInfo::new(peer.clone(), local, "tcp", "chat".into());
        Arrival {
            id,
            client,
            outbox: Arc::new(Outbox::new(100, None)),
            tag: ConnTag::new("chat".into(), peer),
        }
    }

    fn noop() -> std::task::Waker {
        std::task::Waker::noop().clone()
    }

    #[test]
    fn writes_queue_until_the_cap_cuts_the_client_off() {
        let outbox = Outbox::new(10, None);
        assert!(outbox.write(b"hello"));
        assert_eq!(outbox.next(&noop()), Next::Write(b"hello".to_vec()));
        // Taken but not written still counts.
        assert!(outbox.write(b"abc"));
        assert_eq!(outbox.pending(), 8);
        assert!(!outbox.full() || outbox.pending() >= 5);
        assert!(!outbox.write(b"xyz"), "8 + 3 passes the cap of 10");
        assert_eq!(outbox.next(&noop()), Next::Cut(Cut::WriteCap(10)));
        assert!(!outbox.write(b"a"), "a cut connection takes no write");
    }

    #[test]
    fn writes_stop_at_the_limit_and_cut_the_connection() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (server, mut client) = std::os::unix::net::UnixStream::pair().unwrap();
        let outbox = Outbox::new(100, Some(server.as_raw_fd())).limit(10);
        // (bytes written, taken whole?)
        let steps: &[(&[u8], bool)] = &[(b"1234", true), (b"5678", true), (b"9abc", false)];
        for (i, &(bytes, whole)) in steps.iter().enumerate() {
            assert_eq!(outbox.write(bytes), whole, "step {i}");
        }
        assert_eq!(outbox.sent(), 10, "what fits went at once");
        assert_eq!(outbox.next(&noop()), Next::Cut(Cut::BytesWritten(10)));
        assert!(!outbox.write(b"d"), "a cut connection takes no write");
        drop(server);
        let mut got = Vec::new();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"123456789a");
        // Reaching the limit exactly cuts too.
        let outbox = Outbox::new(100, None).limit(4);
        assert!(outbox.write(b"1234"));
        assert_eq!(outbox.next(&noop()), Next::Cut(Cut::BytesWritten(4)));
    }

    #[test]
    fn a_write_goes_at_once_to_a_raw_socket_when_nothing_waits() {
        use std::io::Read;
        use std::os::fd::AsRawFd;
        let (server, mut client) = std::os::unix::net::UnixStream::pair().unwrap();
        let outbox = Outbox::new(1 << 20, Some(server.as_raw_fd()));
        assert!(outbox.write(b"at once"));
        assert_eq!(outbox.sent(), 7);
        assert_eq!(outbox.next(&noop()), Next::Idle, "nothing queued");
        let mut got = [0u8; 7];
        client.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"at once");
        // What the socket does not take is queued, and so is what follows.
        let big = vec![b'x'; 4 << 20];
        assert!(!outbox.write(&big), "4 MiB passes the cap of 1 MiB");
        assert_eq!(outbox.sent(), 7, "and none of it was sent");
        let outbox = Outbox::new(8 << 20, Some(server.as_raw_fd()));
        assert!(outbox.write(&big));
        assert!(outbox.pending() > 0, "the socket took only part");
        assert!(outbox.write(b"after"));
        let Next::Write(queued) = outbox.next(&noop()) else {
            panic!("queued bytes to write");
        };
        assert!(queued.ends_with(b"after"));
        assert_eq!(outbox.sent() + queued.len() as u64, 4 * (1 << 20) + 5);
    }

    #[test]
    fn close_and_shutdown_come_after_what_is_queued() {
        let outbox = Outbox::new(100, None);
        outbox.write(b"bye");
        outbox.shutdown();
        assert_eq!(outbox.next(&noop()), Next::Write(b"bye".to_vec()));
        outbox.wrote(3);
        assert_eq!(outbox.next(&noop()), Next::Shutdown);
        assert_eq!(outbox.next(&noop()), Next::Idle, "shut down once");
        assert!(!outbox.write(b"after"), "its writing side is shut");
        assert!(outbox.is_open(), "its input still arrives");
        outbox.close();
        assert!(!outbox.write(b"late"), "closing takes no more writes");
        assert_eq!(outbox.next(&noop()), Next::Close);
    }

    #[test]
    fn a_refused_client_gets_what_was_written_first() {
        let outbox = Outbox::new(100, None);
        outbox.write(b"go away\r\n");
        outbox.cut(Cut::Refused);
        assert_eq!(outbox.next(&noop()), Next::Write(b"go away\r\n".to_vec()));
        assert_eq!(outbox.next(&noop()), Next::Cut(Cut::Refused));
        // Any other cut drops what is queued.
        let outbox = Outbox::new(100, None);
        outbox.write(b"lost");
        outbox.cut(Cut::Instance("trap".into()));
        assert_eq!(
            outbox.next(&noop()),
            Next::Cut(Cut::Instance("trap".into()))
        );
    }

    #[test]
    fn unconsumed_input_is_given_again_with_the_next_bytes() {
        let mut table = MuxTable::default();
        table.insert(arrival(1));
        assert_eq!(table.input(1, b"x".to_vec()), None, "not accepted yet");
        table.accept(1);
        let data = table.input(1, b"hel".to_vec()).unwrap();
        assert_eq!(table.keep(1, data, 0, 64), Ok(3));
        let data = table.input(1, b"lo\nwor".to_vec()).unwrap();
        assert_eq!(data, b"hello\nwor");
        assert_eq!(table.keep(1, data, 6, 64), Ok(3));
        assert_eq!(table.rest(1).unwrap(), b"wor");
        // A guest that says it consumed more than it got consumed it all.
        let data = table.input(1, b"abc".to_vec()).unwrap();
        assert_eq!(table.keep(1, data, 99, 64), Ok(0));
        let data = table.input(1, vec![b'x'; 65]).unwrap();
        assert_eq!(table.keep(1, data, 0, 64), Err(64));
    }

    #[test]
    fn timers_come_due_in_order_and_can_be_replaced_or_cleared() {
        let mut table = MuxTable::default();
        for id in 1..=3 {
            table.insert(arrival(id));
            table.accept(id);
        }
        table.set_timeout(1, Some(Duration::from_millis(30)));
        table.set_timeout(2, Some(Duration::from_millis(10)));
        table.set_timeout(3, Some(Duration::from_millis(20)));
        table.set_timeout(3, None);
        table.set_timer(Some(Duration::from_millis(20)));
        table.set_timeout(1, Some(Duration::from_millis(5)));
        let later = Instant::now() + Duration::from_millis(40);
        assert!(table.next_due().unwrap() < later);
        assert_eq!(table.take_due(later), vec![Some(1), Some(2), None]);
        assert_eq!(table.next_due(), None);
        // A removed connection's timeout goes with it.
        table.set_timeout(2, Some(Duration::ZERO));
        assert!(table.remove(2));
        assert_eq!(table.take_due(later), vec![]);
        assert_eq!(table.open(), vec![1, 3]);
    }

    #[test]
    fn seconds_from_the_guest() {
        let cases = [
            (None, None),
            (Some(1.5), Some(Duration::from_millis(1500))),
            (Some(-3.0), Some(Duration::ZERO)),
            (Some(f64::NAN), None),
            (Some(f64::INFINITY), None),
        ];
        for (given, want) in cases {
            assert_eq!(seconds(given), want, "{given:?}");
        }
    }
}
