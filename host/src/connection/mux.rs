//! A connection's life in the mux world (Net::Server::Multiplex's
//! callbacks), and the driver of a service's one instance per worker.
//!
//! Each admitted connection runs a task of its own ([`converse`]) that
//! reads its client, writes what the guest queued for it (see
//! [`Outbox`]) and keeps its idle and connection timeouts; what it reads
//! goes, as [`Event`]s through the service's [`Door`], to the driver
//! ([`start`]), one task per service and worker that owns the instance and
//! calls its callbacks one at a time, in each connection's order.
//!
//! Memory: an idle connection holds its task, its socket and its place in
//! the instance's table — no buffer. A read goes into a buffer of the
//! thread's ([`READ_CHUNK`] bytes) and only what was read is copied out;
//! output lives in the outbox while it is in flight; input the guest left
//! unconsumed is kept, up to `mux_input_cap`. A client that does not read
//! stops being read once half of `mux_write_cap` is queued for it, and is
//! cut off past the cap. The driver's queue holds at most [`DOOR_QUEUE`]
//! events: beyond it, the connections' reads wait.
//!
//! One instance, one fate: a callback that traps (a panic, its memory,
//! or its CPU limit) ends the instance, every connection it held is closed
//! with the reason, and the next client gets a fresh instance.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc;

use super::{End, Summary, log_end};
use crate::access::Verdict;
use crate::board::Closing;
use crate::capacity::Place;
use crate::log::tag::tagged;
use crate::service::{Admitted, Door, Service};
use crate::transport::{AsyncStream, Incoming, Stream};
use crate::wasm::mux::{Arrival, ConnId, Cut, Event, Next, Outbox};
use crate::wasm::stdio::GuestIo;
use crate::wasm::{Instance, ServerHook};
use std::future::Future;

/// Events the driver's queue holds before the connections' reads wait.
pub const DOOR_QUEUE: usize = 1024;

/// The most bytes one read takes from a client.
pub const READ_CHUNK: usize = 16 * 1024;

/// Numbers for connections, unique within the process.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The buffer this thread's reads go into before they are copied out.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

/// Starts `service`'s driver in this worker, if it serves a mux handler
/// and has none yet: from now on its connections reach the instance.
pub fn start(service: &Arc<Service>) {
    let Some(plan) = &service.mux else {
        return;
    };
    let (door, events) = mpsc::channel(DOOR_QUEUE);
    if plan.door.set(door).is_ok() {
        crate::fairness::spawn(drive(service.clone(), events));
    }
}

/// Serves one client of a mux service: the admission (see
/// [`Service::admit`]), then the connection's [`Life`]. The admission's
/// state (a TLS handshake's, a reverse lookup's) is boxed and freed once
/// done, and the connection's state is built before its future is: an idle
/// connection's task holds only what its life needs (about 1.2 KiB; an
/// `async fn` would also keep its arguments for as long as it runs).
pub fn serve(
    service: Arc<Service>,
    incoming: Incoming,
    room: Place,
) -> impl Future<Output = ()> + Send + 'static {
    // Among the service's connections across workers, while it lasts.
    let open = service.open_connection(&incoming);
    let admission = Box::pin(admit(service.clone(), incoming));
    async move {
        if crate::fairness::enter(service.index).await {
            crate::board::cpu_throttled(service.index);
        }
        let Some(_open) = open else {
            return;
        };
        let _counted = crate::board::client(service.index);
        let Some(admitted) = admission.await else {
            return;
        };
        let tag = admitted.tag.clone();
        let Some(life) = Life::new(&service, admitted, room) else {
            return;
        };
        tagged(tag, life.run(&service)).await;
    }
}

/// The service's admission of `incoming`.
async fn admit(service: Arc<Service>, incoming: Incoming) -> Option<Admitted> {
    service.admit(incoming).await
}

/// An admitted connection of a mux service, from its arrival at the
/// driver to its summary line.
struct Life {
    conn: Conn,
    id: ConnId,
    /// Its arrival, until the driver has it.
    arrival: Option<Box<Arrival>>,
    /// Its places, given back as it ends.
    room: Place,
    place: Option<crate::gate::Place>,
    started: Instant,
    host: Option<String>,
}

impl Life {
    /// The life of `admitted`: `None` when it ends here (the access rules
    /// refused it, logged; the driver is not running).
    fn new(service: &Service, admitted: Admitted, room: Place) -> Option<Self> {
        let Admitted {
            stream,
            client,
            verdict,
            tag,
            place,
            started,
        } = admitted;
        let host = client.peer_host.clone();
        // A client the access rules refuse is closed before the guest
        // hears of it.
        if let Verdict::Denied(rule) = verdict {
            summary(
                service,
                started,
                host.as_deref(),
                (0, 0),
                &End::Denied(rule),
            );
            return None;
        }
        let plan = service.mux.as_ref()?;
        // A raw socket's replies may be sent from the guest's write itself
        // (see `Outbox`); the socket stays open until the outbox ends.
        let (stream, direct): (Box<dyn AsyncStream>, _) = match stream {
            Stream::Raw(raw) => {
                raw.send_at_once();
                let fd = raw.as_raw_fd();
                (Box::new(raw), Some(fd))
            }
            Stream::Wrapped { stream, .. } => (stream, None),
            Stream::Datagram(..) => {
                // Refused at start (see `check_worlds`).
                tracing::error!("closed a datagram: the mux world serves streams only");
                return None;
            }
        };
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let outbox = Arc::new(Outbox::new(plan.write_cap, direct).limit(service.max_bytes_written));
        let arrival = Box::new(Arrival {
            id,
            client,
            outbox: outbox.clone(),
            tag,
        });
        Some(Self {
            conn: Conn::new(stream, outbox),
            id,
            arrival: Some(arrival),
            room,
            place,
            started,
            host,
        })
    }

    /// Hands the connection to the driver, serves it until it ends, tells
    /// the driver, and logs how it ended.
    async fn run(mut self, service: &Service) {
        let Some(door) = service.mux.as_ref().and_then(|m| m.door.get()) else {
            tracing::error!("closed the connection: the service's mux driver is not running");
            return;
        };
        let Some(arrival) = self.arrival.take() else {
            return;
        };
        if tell(door, Event::Connected(arrival)).await.is_err() {
            return;
        }
        let end = self
            .conn
            .run(
                door,
                self.id,
                service.idle_timeout,
                service.connection_timeout,
            )
            .await;
        self.conn.outbox.end();
        self.conn.bytes.1 += self.conn.outbox.sent();
        let _ = tell(door, Event::Closed(self.id)).await;
        // Give the places back before saying the connection ended.
        drop(self.room);
        drop(self.place);
        summary(
            service,
            self.started,
            self.host.as_deref(),
            self.conn.bytes,
            &end,
        );
    }
}

/// Sends `event` to the driver; when its queue is full, waits for room
/// (in a future boxed only then: an idle connection's task does not carry
/// one). `Err` when the driver is gone.
async fn tell(door: &Door, event: Event) -> Result<(), ()> {
    match door.try_send(event) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Full(event)) => {
            Box::pin(door.send(event)).await.map_err(|_| ())
        }
        Err(mpsc::error::TrySendError::Closed(_)) => Err(()),
    }
}

/// Logs and counts a connection's end (see [`log_end`]).
fn summary(service: &Service, started: Instant, host: Option<&str>, bytes: (u64, u64), end: &End) {
    log_end(&Summary {
        service,
        took: started.elapsed(),
        host,
        bytes,
        end,
        capped: false,
    });
}

/// One connection's socket side: what it is writing and whether it still
/// reads.
struct Conn {
    stream: Box<dyn AsyncStream>,
    outbox: Arc<Outbox>,
    /// What it is writing, from `at` on.
    writing: Vec<u8>,
    at: usize,
    /// Written bytes wait in the stream's own buffer (TLS) until flushed.
    unflushed: bool,
    /// The client may still send.
    reading: bool,
    /// The write side is shut (`shutdown-write`).
    shut: bool,
    /// Close once all is written.
    closing: bool,
    /// When the last byte moved.
    moved: Instant,
    /// Bytes the outbox sent at once, when last looked at.
    sent: u64,
    /// Bytes read, written.
    bytes: (u64, u64),
}

/// What happened on a connection.
enum Happened {
    Input(Vec<u8>),
    Eof,
    Ended(End),
}

impl Conn {
    fn new(stream: Box<dyn AsyncStream>, outbox: Arc<Outbox>) -> Self {
        Self {
            stream,
            outbox,
            writing: Vec::new(),
            at: 0,
            unflushed: false,
            reading: true,
            shut: false,
            closing: false,
            moved: Instant::now(),
            sent: 0,
            bytes: (0, 0),
        }
    }

    /// Serves the connection until it ends; says why.
    async fn run(
        &mut self,
        door: &Door,
        id: ConnId,
        idle: Duration,
        limit: Option<Duration>,
    ) -> End {
        let idle_timer = tokio::time::sleep(idle);
        tokio::pin!(idle_timer);
        // Allocated only when the service limits a connection's time.
        let mut deadline = limit.map(|limit| (limit, Box::pin(tokio::time::sleep(limit))));
        let deadline = std::future::poll_fn(|cx| match &mut deadline {
            Some((limit, sleep)) => sleep.as_mut().poll(cx).map(|()| *limit),
            None => Poll::Pending,
        });
        tokio::pin!(deadline);
        loop {
            let happened = tokio::select! {
                happened = std::future::poll_fn(|cx| self.poll(cx)) => happened,
                () = &mut idle_timer => {
                    // Bytes the guest's writes sent at once moved too.
                    let sent = self.outbox.sent();
                    if sent != self.sent {
                        (self.sent, self.moved) = (sent, Instant::now());
                    }
                    let due = self.moved + idle;
                    if due <= Instant::now() {
                        return End::Idle(idle);
                    }
                    idle_timer.as_mut().reset(due.into());
                    continue;
                }
                limit = &mut deadline => return End::TimedOut(limit),
            };
            let event = match happened {
                Happened::Input(bytes) => Event::Input(id, bytes),
                Happened::Eof => Event::Eof(id),
                Happened::Ended(end) => return end,
            };
            if tell(door, event).await.is_err() {
                return End::Instance("the worker stopped".to_owned());
            }
        }
    }

    /// Writes what is queued, then reads what came; ready when something
    /// happened the driver must hear of, or the connection ended.
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Happened> {
        if let Poll::Ready(end) = self.poll_write(cx) {
            return Poll::Ready(Happened::Ended(end));
        }
        // Paused while the client does not read what is queued for it.
        if self.reading && !self.closing && !self.outbox.full() {
            let read = SCRATCH.with_borrow_mut(|scratch| {
                let mut buf = ReadBuf::new(scratch);
                match Pin::new(&mut self.stream).poll_read(cx, &mut buf) {
                    Poll::Ready(Ok(())) => Poll::Ready(Ok(buf.filled().to_vec())),
                    Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                    Poll::Pending => Poll::Pending,
                }
            });
            match read {
                Poll::Ready(Ok(bytes)) if bytes.is_empty() => {
                    self.reading = false;
                    return Poll::Ready(Happened::Eof);
                }
                Poll::Ready(Ok(bytes)) => {
                    self.bytes.0 += bytes.len() as u64;
                    self.moved = Instant::now();
                    return Poll::Ready(Happened::Input(bytes));
                }
                Poll::Ready(Err(_)) => return Poll::Ready(Happened::Ended(End::ClientGone)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }

    /// Writes what the guest queued, then shuts down or closes when asked:
    /// ready when the connection ended (closed as asked, cut off, or the
    /// client gone).
    fn poll_write(&mut self, cx: &mut Context<'_>) -> Poll<End> {
        loop {
            while self.at < self.writing.len() {
                let stream = Pin::new(&mut self.stream);
                match stream.poll_write(cx, &self.writing[self.at..]) {
                    Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => {
                        return Poll::Ready(End::ClientGone);
                    }
                    Poll::Ready(Ok(n)) => {
                        self.at += n;
                        self.bytes.1 += n as u64;
                        self.unflushed = true;
                        self.moved = Instant::now();
                        self.outbox.wrote(n);
                    }
                    Poll::Pending => {
                        // Cut off while the client does not read.
                        return match self.outbox.cut_now(cx.waker()) {
                            Some(cut) => Poll::Ready(ended(cut)),
                            None => Poll::Pending,
                        };
                    }
                }
            }
            if self.unflushed {
                match Pin::new(&mut self.stream).poll_flush(cx) {
                    Poll::Ready(Ok(())) => self.unflushed = false,
                    Poll::Ready(Err(_)) => return Poll::Ready(End::ClientGone),
                    Poll::Pending => return Poll::Pending,
                }
            }
            // All written: free the buffer, take what came meanwhile.
            self.writing = Vec::new();
            self.at = 0;
            match self.outbox.next(cx.waker()) {
                Next::Write(bytes) => self.writing = bytes,
                Next::Cut(cut) => return Poll::Ready(ended(cut)),
                Next::Close => {
                    self.closing = true;
                    return match Pin::new(&mut self.stream).poll_shutdown(cx) {
                        Poll::Ready(_) => Poll::Ready(End::Served),
                        Poll::Pending => Poll::Pending,
                    };
                }
                Next::Shutdown if !self.shut => {
                    if Pin::new(&mut self.stream).poll_shutdown(cx).is_pending() {
                        // Asked again at the next poll.
                        self.outbox.shutdown();
                        return Poll::Pending;
                    }
                    self.shut = true;
                }
                Next::Shutdown | Next::Idle => return Poll::Pending,
            }
        }
    }
}

/// However its task ends (cancelled too), the outbox ends before the
/// socket closes: a guest's write can no longer reach the descriptor,
/// whose number the kernel may give to another socket.
impl Drop for Conn {
    fn drop(&mut self) {
        self.outbox.end();
    }
}

/// How a connection the host cut off ends.
fn ended(cut: Cut) -> End {
    match cut {
        Cut::Refused => End::Denied(super::MUX_REFUSAL.to_owned()),
        Cut::WriteCap(cap) => End::WriteCap(cap),
        Cut::InputCap(cap) => End::InputCap(cap),
        Cut::Instance(why) => End::Instance(why),
        Cut::BytesWritten(limit) => End::BytesWritten(limit),
    }
}

/// Runs a service's driver: takes its connections' events, one at a
/// time, to the worker's instance (made at the first client, or the first
/// `dequeue`), and runs its timers and `dequeue`; until the worker
/// retires it.
async fn drive(service: Arc<Service>, mut events: mpsc::Receiver<Event>) {
    let Some(plan) = &service.mux else {
        return;
    };
    if crate::fairness::work_for(service.index).await {
        crate::board::cpu_throttled(service.index);
    }
    let mut driver = Driver {
        service: &service,
        input_cap: plan.input_cap,
        instance: None,
    };
    let mut dequeue = plan.dequeue.map(|every| {
        let mut ticks = tokio::time::interval_at((Instant::now() + every).into(), every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticks
    });
    loop {
        let due = driver.instance.as_mut().and_then(|i| i.mux().next_due());
        let timer = async {
            match due {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        let tick = async {
            match &mut dequeue {
                Some(ticks) => {
                    ticks.tick().await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = events.recv() => match event {
                Some(Event::Retire(done)) => {
                    driver.retire().await;
                    let _ = done.send(());
                    return;
                }
                Some(event) => driver.handle(event).await,
                None => return,
            },
            () = timer => driver.timers().await,
            () = tick => driver.dequeue().await,
        }
    }
}

/// The worker's instance of a mux service, and what it needs to call it.
struct Driver<'a> {
    service: &'a Service,
    input_cap: u64,
    instance: Option<Instance>,
}

impl Driver<'_> {
    /// The instance, made (and its `child-init-hook` run) if there is
    /// none; `Err` says why none could be.
    async fn instance(&mut self) -> Result<&mut Instance, String> {
        if self.instance.is_none() {
            let handler = self.service.handler();
            let mut instance = handler
                .instantiate(GuestIo::default(), None)
                .await
                .map_err(|e| format!("{}: {e:#}", super::UNMADE))?;
            if let Err(error) = instance.mux_init().await {
                let why = failure("child-init-hook", &error);
                tracing::error!("service {}: {why}", self.service.name);
                return Err(why);
            }
            self.instance = Some(instance);
        }
        Ok(self.instance.as_mut().expect("made above"))
    }

    async fn handle(&mut self, event: Event) {
        match event {
            Event::Connected(arrival) => self.connected(*arrival).await,
            Event::Input(id, bytes) => self.input(id, bytes).await,
            Event::Eof(id) => self.eof(id).await,
            Event::Closed(id) => self.closed(id).await,
            Event::Signal(signal) => self.signal(signal).await,
            Event::Closing(closing, done) => {
                self.closing(closing).await;
                let _ = done.send(());
            }
            // Taken by the loop.
            Event::Retire(done) => {
                let _ = done.send(());
            }
        }
    }

    /// A signal reached the worker: `signal-hook`, on the instance (made
    /// for it if there is none), when the guest has one that does
    /// something.
    async fn signal(&mut self, signal: nix::sys::signal::Signal) {
        if !self.service.handler().wants(ServerHook::SignalHook) {
            return;
        }
        let result = match self.instance().await {
            Ok(instance) => instance.signal_hook(signal).await,
            Err(_) => return,
        };
        if let Err(error) = result {
            self.trapped("signal-hook", &error);
        }
    }

    /// The server closes: `server-close-hook`, on the instance if there
    /// is one (its connections are still open: it may say goodbye).
    async fn closing(&mut self, closing: Closing) {
        let Some(instance) = &mut self.instance else {
            return;
        };
        if let Err(error) = instance.server_close_hook(closing).await {
            self.trapped("server-close-hook", &error);
        }
    }

    async fn connected(&mut self, arrival: Arrival) {
        let (id, tag, outbox) = (arrival.id, arrival.tag.clone(), arrival.outbox.clone());
        let instance = match self.instance().await {
            Ok(instance) => instance,
            Err(why) => return outbox.cut(Cut::Instance(why)),
        };
        instance.mux().insert(arrival);
        match tagged(tag, instance.mux_connection(id)).await {
            Ok(true) => instance.mux().accept(id),
            // What it wrote is sent, then it is closed; the entry goes
            // when the connection says it closed.
            Ok(false) => outbox.cut(Cut::Refused),
            Err(error) => self.trapped("mux-connection", &error),
        }
    }

    async fn input(&mut self, id: ConnId, bytes: Vec<u8>) {
        let Some(instance) = &mut self.instance else {
            return;
        };
        let Some(data) = instance.mux().input(id, bytes) else {
            return;
        };
        let Some(tag) = instance.mux().tag(id) else {
            return;
        };
        let consumed = match tagged(tag, instance.mux_input(id, &data)).await {
            Ok(consumed) => consumed as usize,
            Err(error) => return self.trapped("mux-input", &error),
        };
        if let Err(cap) = instance.mux().keep(id, data, consumed, self.input_cap)
            && let Some(outbox) = instance.mux().outbox(id)
        {
            outbox.cut(Cut::InputCap(cap));
        }
    }

    async fn eof(&mut self, id: ConnId) {
        let Some(instance) = &mut self.instance else {
            return;
        };
        let (Some(rest), Some(tag)) = (instance.mux().rest(id), instance.mux().tag(id)) else {
            return;
        };
        if let Err(error) = tagged(tag, instance.mux_eof(id, &rest)).await {
            return self.trapped("mux-eof", &error);
        }
        // The client is done: close once what is queued is written.
        if let Some(outbox) = instance.mux().outbox(id) {
            outbox.close();
        }
    }

    async fn closed(&mut self, id: ConnId) {
        let Some(instance) = &mut self.instance else {
            return;
        };
        let tag = instance.mux().tag(id);
        if !instance.mux().remove(id) {
            return;
        }
        let Some(tag) = tag else { return };
        if let Err(error) = tagged(tag, instance.mux_close(id)).await {
            self.trapped("mux-close", &error);
        }
    }

    /// Runs the callbacks of the timers due.
    async fn timers(&mut self) {
        let Some(instance) = &mut self.instance else {
            return;
        };
        for due in instance.mux().take_due(Instant::now()) {
            let Some(instance) = &mut self.instance else {
                return;
            };
            let result = match due {
                Some(id) => {
                    let Some(tag) = instance.mux().tag(id) else {
                        continue;
                    };
                    tagged(tag, instance.mux_timeout(Some(id))).await
                }
                None => instance.mux_timeout(None).await,
            };
            if let Err(error) = result {
                return self.trapped("mux-timeout", &error);
            }
        }
    }

    /// Runs `dequeue` on the instance (Net::Server::Multiplex's
    /// `run_dequeue`: in the worker, no process forked).
    async fn dequeue(&mut self) {
        crate::board::dequeued(self.service.index);
        let result = match self.instance().await {
            Ok(instance) => instance.mux_dequeue().await,
            Err(_) => return,
        };
        if let Err(error) = result {
            self.trapped("dequeue", &error);
        }
    }

    /// The worker stops: the instance's `child-finish-hook` runs.
    async fn retire(&mut self) {
        if let Some(mut instance) = self.instance.take()
            && let Err(error) = instance.mux_finish().await
        {
            let why = failure("child-finish-hook", &error);
            tracing::error!("service {}: {why}", self.service.name);
        }
    }

    /// A callback trapped: the instance ends, and every connection it held
    /// is closed with the reason; the next client gets a fresh instance.
    fn trapped(&mut self, callback: &str, error: &wasmtime::Error) {
        let Some(mut instance) = self.instance.take() else {
            return;
        };
        let why = failure(callback, error);
        let held = instance.mux().drain();
        tracing::error!(
            "service {}: {why}; closing the {} connection(s) it held",
            self.service.name,
            held.len()
        );
        tracing::trace!("trap details: {error:?}");
        for outbox in held {
            outbox.cut(Cut::Instance(why.clone()));
        }
    }
}

/// What a failed callback did: exited through WASI, or trapped.
fn failure(callback: &str, error: &wasmtime::Error) -> String {
    match error.downcast_ref::<wasmtime_wasi::I32Exit>() {
        Some(exit) => format!(
            "the mux instance exited with status {} in {callback}",
            exit.0
        ),
        None => format!(
            "the mux instance trapped in {callback}: {}",
            error.root_cause()
        ),
    }
}
