//! A connection of a wasi:http service (`docs/http.md`): once admitted
//! (PROXY header, TLS, per-address limits, access rules — before a byte
//! of a request is read), hyper serves it — HTTP/1.1 kept alive, or
//! HTTP/2 when the client starts with its preface (as it does after
//! choosing `h2` by ALPN) — and each request goes to an instance of the
//! guest: a fresh one, or the worker's (`instance per-worker`), in turn.
//!
//! Limits: `timeout_header` (a request head's time), `max_header_size`
//! (431), `max_body_size` (413 for a larger declared body; a longer
//! streamed one ends the guest's body stream with an error),
//! `timeout_idle` (a kept-alive connection waiting for its next request),
//! `idle_timeout` (no byte moved while a request is served) and
//! `connection_timeout`. A guest that traps, fails or gives no response
//! ends its request with 500 — 503 when a memory budget had no room for
//! its instance — and a logged reason; the connection, its other requests
//! and the server carry on. One access log line per request (see
//! [`crate::log::access`]), one summary line per connection.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tracing::Instrument;

use super::{End, Summary, Thread, log_end};
use crate::access::Verdict;
use crate::board;
use crate::client::{ClientInfo, Peer};
use crate::config::HttpSettings;
use crate::log::access::{Entry, Render};
use crate::service::{Admitted, HttpPlan, Service, Unmade};
use crate::transport::{AsyncStream, RawStream, Stream};
use crate::wasm::budget::Which;
use crate::wasm::http::{HyperIncomingBody, Scheme};
use crate::wasm::stdio::GuestIo;

/// The body of every response this host sends.
type OutBody = http_body_util::combinators::UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

/// Serves admitted connection `admitted` of wasi:http service `service`
/// until the client closes it or a limit does; logs its summary line.
pub async fn converse(service: Arc<Service>, admitted: Admitted, thread: Thread) {
    let Admitted {
        stream,
        client,
        verdict,
        place,
        started,
        ..
    } = admitted;
    let activity = Arc::new(Activity::new());
    // The service, for the summary once the connection has it.
    let owner = service.clone();
    let peer_host = client.peer_host.clone();
    let end = match verdict {
        // Refused by an access rule: closed before a byte is read.
        Verdict::Denied(rule) => End::Denied(rule),
        Verdict::Allowed(_) => match into_io(stream) {
            Some(io) => {
                let stop = match thread {
                    Thread::Shared => None,
                    Thread::Alone { stop } => Some(stop),
                };
                let conn = Arc::new(Conn {
                    scheme: if client.tls.is_some() {
                        Scheme::Https
                    } else {
                        Scheme::Http
                    },
                    service,
                    client,
                    activity: activity.clone(),
                });
                serve_http(&conn, io, stop).await
            }
            None => End::HandlerError("a wasi:http service serves streams, not datagrams".into()),
        },
    };
    drop(place);
    log_end(&Summary {
        service: &owner,
        took: started.elapsed(),
        host: peer_host.as_deref(),
        bytes: activity.bytes(),
        end: &end,
        capped: false,
    });
}

/// What every request of one connection shares.
struct Conn {
    service: Arc<Service>,
    client: ClientInfo,
    /// `https` over TLS, else `http`: the scheme the guest is told.
    scheme: Scheme,
    activity: Arc<Activity>,
}

impl Conn {
    /// The service's HTTP settings and access log (present: the connection
    /// layer sends only wasi:http services here).
    fn plan(&self) -> &HttpPlan {
        self.service
            .http
            .as_ref()
            .expect("a wasi:http service has an HTTP plan")
    }
}

/// The stream hyper reads and writes.
fn into_io(stream: Stream) -> Option<Box<dyn AsyncStream>> {
    match stream {
        Stream::Raw(RawStream::Tcp(tcp)) => {
            // Small responses go out at once (as `wasmtime serve` does).
            let _ = tcp.set_nodelay(true);
            Some(Box::new(tcp))
        }
        Stream::Raw(RawStream::Unix(unix)) => Some(Box::new(unix)),
        Stream::Wrapped { stream, .. } => Some(stream),
        Stream::Datagram(..) => None,
    }
}

/// Serves HTTP on `io` until the client closes, `timeout_idle` passes
/// between requests, the server closes (or `stop` is raised), or a limit
/// ends the connection.
async fn serve_http(
    conn: &Arc<Conn>,
    io: Box<dyn AsyncStream>,
    stop: Option<Arc<AtomicBool>>,
) -> End {
    let settings = &conn.plan().settings;
    let builder = builder(settings);
    let io = TokioIo::new(Watched {
        inner: io,
        activity: conn.activity.clone(),
    });
    let requests = {
        let conn = conn.clone();
        hyper::service::service_fn(move |request| {
            let conn = conn.clone();
            async move { Ok::<_, Infallible>(respond(conn, request).await) }
        })
    };
    let served = builder.serve_connection(io, requests);
    tokio::pin!(served);
    let service = &conn.service;
    let deadline = async {
        match service.connection_timeout {
            Some(limit) => {
                tokio::time::sleep(limit).await;
                limit
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(deadline);
    let watch = Watch {
        activity: &conn.activity,
        between_requests: settings.timeout_idle,
        serving: service.idle_timeout,
        stop: stop.as_deref(),
        header: settings.timeout_header,
    };
    tokio::select! {
        result = served.as_mut() => ended(result),
        why = watch.until_done() => match why {
            Done::Idle(after) => End::Idle(after),
            Done::Header(after) => End::HeaderTimeout(after),
            why @ (Done::Quiet | Done::Closing) => {
                if matches!(why, Done::Closing) {
                    // hyper closes a connection it sees idle at once: one
                    // accepted as the server began closing, whose request
                    // has not come yet (or is half read), gets it served.
                    tokio::select! {
                        result = served.as_mut() => return ended(result),
                        limit = &mut deadline => return End::TimedOut(limit),
                        end = watch.until_request() => if let Some(end) = end {
                            return end;
                        },
                    }
                }
                // Requests under way finish (within `idle_timeout` of
                // silence); kept-alive connections close at once.
                served.as_mut().graceful_shutdown();
                tokio::select! {
                    result = served.as_mut() => ended(result),
                    limit = &mut deadline => End::TimedOut(limit),
                    why = watch.while_serving() => why,
                }
            }
        },
        limit = &mut deadline => End::TimedOut(limit),
    }
}

/// How hyper's end of a connection ends it: served, or the client went
/// away (or spoke no HTTP, said at `info`).
fn ended(result: Result<(), Box<dyn std::error::Error + Send + Sync>>) -> End {
    match result {
        Ok(()) => End::Served,
        Err(why) => {
            tracing::debug!("HTTP connection error: {why}");
            End::ClientGone
        }
    }
}

/// hyper's connection settings from the service's.
fn builder(settings: &HttpSettings) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let header = usize::try_from(settings.max_header_size).unwrap_or(usize::MAX);
    // `timeout_header` is the host's (see `Watch`): hyper's runs from the
    // end of one response, so it would also cut a kept-alive connection
    // waiting for its next request (`timeout_idle`).
    builder
        .http1()
        .keep_alive(true)
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(header);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(header).unwrap_or(u32::MAX));
    builder
}

/// Serves one request: the guest's response (or the host's error page),
/// whose body logs the access line when it ends.
async fn respond(conn: Arc<Conn>, request: Request<Incoming>) -> Response<Logged> {
    let busy = Busy::new(&conn.activity);
    // Its head is whole: `timeout_header` waits for the next one's first byte.
    conn.activity.head_started.store(NO_HEAD, Ordering::Relaxed);
    let head = Head::of(&request, conn.plan());
    let response = answer(&conn, request).await;
    let (parts, body) = response.into_parts();
    crate::board::http_response(conn.service.index, parts.status.as_u16());
    let log = AccessLine {
        conn,
        head,
        status: parts.status,
        response_headers: parts.headers.clone(),
        bytes: 0,
        _busy: busy,
    };
    Response::from_parts(
        parts,
        Logged {
            body,
            log: Some(log),
        },
    )
}

/// The response to `request`: a declared body over `max_body_size` gets
/// 413; otherwise the guest answers, or its failure gets 500 (503 when a
/// memory budget had no room for its instance).
async fn answer(conn: &Arc<Conn>, request: Request<Incoming>) -> Response<OutBody> {
    let max = conn.plan().settings.max_body_size;
    if max > 0 && declared_length(request.headers()).is_some_and(|n| n > max) {
        tracing::info!(
            "{} {}: refused with 413: a body of more than max_body_size ({max} bytes)",
            request.method(),
            request.uri().path()
        );
        return page(StatusCode::PAYLOAD_TOO_LARGE);
    }
    let what = format!("{} {}", request.method(), request.uri().path());
    let request = request.map(|body| limited(body, max));
    let (respond, response) = tokio::sync::oneshot::channel();
    // In the connection's span: its lines carry the connection's tag.
    let task = crate::fairness::spawn(
        handle(
            conn.service.clone(),
            conn.client.clone(),
            request,
            conn.scheme.clone(),
            respond,
            what.clone(),
        )
        .in_current_span(),
    );
    match response.await {
        Ok(Ok(response)) => response,
        Ok(Err(code)) => {
            if conn.service.fault_log.admit() {
                tracing::error!("{what}: the handler answered with an error: {code:?}");
            }
            page(StatusCode::INTERNAL_SERVER_ERROR)
        }
        // The guest ended without a response: its task said why.
        Err(_) => match task.await {
            Ok(Some(status)) => page(status),
            _ => {
                if conn.service.fault_log.admit() {
                    tracing::error!("{what}: the handler returned without a response");
                }
                page(StatusCode::INTERNAL_SERVER_ERROR)
            }
        },
    }
}

/// Hands `request` to an instance of the service's guest (fresh, or the
/// worker's in turn) and runs it to its end, which may come after its
/// response was sent (a streamed body). Logs a failure; gives its status.
async fn handle(
    service: Arc<Service>,
    client: ClientInfo,
    request: Request<HyperIncomingBody>,
    scheme: Scheme,
    respond: crate::wasm::http::Respond,
    what: String,
) -> Option<StatusCode> {
    // `watch_module`: a new module the master loaded serves from now on.
    service.refresh().await;
    // A fault's line within the service's `fault_log_rate`.
    let failed = |why: String, status: StatusCode| {
        if service.fault_log.admit() {
            tracing::error!("{what}: {why} (answered {})", status.as_u16());
        }
        Some(status)
    };
    let mut turn = None;
    let mut instance = match service.worker_instance() {
        None => match service
            .handler()
            .instantiate(GuestIo::default(), Some(&client))
            .await
        {
            Ok(instance) => instance,
            Err(error) => return unmade(error, failed),
        },
        Some(slot) => {
            let mut held = slot.lock().await;
            let instance = match held.take() {
                Some(instance) => instance,
                None => match service.make_worker_instance().await {
                    Ok(instance) => instance,
                    Err(Unmade::Instantiate(error)) => return unmade(error, failed),
                    Err(Unmade::Trap(error)) => {
                        return failed(
                            format!("the instance trapped as it started: {}", error.root_cause()),
                            StatusCode::INTERNAL_SERVER_ERROR,
                        );
                    }
                },
            };
            turn = Some(held);
            instance
        }
    };
    instance.set_client(Some(client));
    match instance.handle_http(request, scheme, respond).await {
        Ok(()) => {
            instance.set_client(None);
            // The worker's instance serves the next request; one that
            // trapped is dropped (the next gets a fresh one).
            if let Some(mut held) = turn {
                *held = Some(instance);
            }
            None
        }
        Err(error) => failed(
            format!(
                "guest trapped in wasi:http/incoming-handler.handle: {}",
                error.root_cause()
            ),
            failure_status(error.root_cause()),
        ),
    }
}

/// The status of a request whose instance could not be made (see
/// [`failure_status`]).
fn unmade(
    error: anyhow::Error,
    failed: impl FnOnce(String, StatusCode) -> Option<StatusCode>,
) -> Option<StatusCode> {
    let status = failure_status(error.root_cause());
    failed(format!("{}: {error:#}", super::UNMADE), status)
}

/// The status of a request its guest failed for `root_cause`: 503 when a
/// memory budget had no room for the guest, else 500.
fn failure_status(root_cause: impl std::fmt::Display) -> StatusCode {
    match Which::named_in(&root_cause.to_string()) {
        Some(_) => StatusCode::SERVICE_UNAVAILABLE,
        None => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// A request body the guest may read `max` bytes of (0: any number).
fn limited(body: Incoming, max: u64) -> HyperIncomingBody {
    if max == 0 {
        return body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync();
    }
    let max_usize = usize::try_from(max).unwrap_or(usize::MAX);
    http_body_util::Limited::new(body, max_usize)
        .map_err(move |e| match e.downcast::<hyper::Error>() {
            Ok(e) => wasmtime_wasi_http::Error::Hyper(*e),
            Err(_) => wasmtime_wasi_http::Error::HttpRequestBodySize(Some(max)),
        })
        .boxed_unsync()
}

/// The body length a request declares, if it does.
fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// The host's own response with `status`: its reason as plain text.
fn page(status: StatusCode) -> Response<OutBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    let body = http_body_util::Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// What a request's access line needs of it.
struct Head {
    time: SystemTime,
    started: Instant,
    method: hyper::Method,
    uri: hyper::Uri,
    version: hyper::Version,
    /// Its headers, when the format logs some.
    headers: Option<HeaderMap>,
}

impl Head {
    fn of(request: &Request<Incoming>, plan: &HttpPlan) -> Self {
        Self {
            time: SystemTime::now(),
            started: Instant::now(),
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: plan
                .settings
                .access_log_format
                .logs_request_headers()
                .then(|| request.headers().clone()),
        }
    }
}

/// A request's access log line, written as its response body ends (or is
/// dropped: the client went away).
struct AccessLine {
    conn: Arc<Conn>,
    head: Head,
    status: StatusCode,
    response_headers: HeaderMap,
    bytes: u64,
    _busy: Busy,
}

impl Drop for AccessLine {
    fn drop(&mut self) {
        let plan = self.conn.plan();
        let client = &self.conn.client;
        let addr = match &client.peer {
            Peer::Ip(addr) => addr.ip().to_string(),
            Peer::Unix { .. } => "-".to_owned(),
        };
        let lookup = |map: &HeaderMap, name: &str| {
            map.get(name)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        };
        let request_header = |name: &str| self.head.headers.as_ref().and_then(|m| lookup(m, name));
        let response_header = |name: &str| lookup(&self.response_headers, name);
        let entry = Entry {
            host: client.peer_host.as_deref().unwrap_or(&addr),
            addr: &addr,
            time: Some(self.head.time),
            method: self.head.method.as_str(),
            path: self.head.uri.path(),
            query: self.head.uri.query(),
            protocol: version(self.head.version),
            status: self.status.as_u16(),
            bytes: self.bytes,
            took: self.head.started.elapsed(),
            service: &self.conn.service.name,
            request_header: Some(&request_header),
            response_header: Some(&response_header),
        };
        plan.access_log
            .write(&plan.settings.access_log_format.line(&entry));
    }
}

/// `HTTP/1.1`, as the request line says it.
fn version(version: hyper::Version) -> &'static str {
    match version {
        hyper::Version::HTTP_09 => "HTTP/0.9",
        hyper::Version::HTTP_10 => "HTTP/1.0",
        hyper::Version::HTTP_2 => "HTTP/2.0",
        hyper::Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

pin_project_lite::pin_project! {
    /// A response body that counts its bytes and logs the access line
    /// when it ends.
    struct Logged {
        #[pin]
        body: OutBody,
        log: Option<AccessLine>,
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = wasmtime_wasi_http::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let frame = std::task::ready!(this.body.poll_frame(cx));
        match &frame {
            Some(Ok(frame)) => {
                if let (Some(data), Some(log)) = (frame.data_ref(), this.log.as_mut()) {
                    log.bytes += data.len() as u64;
                }
            }
            // The end: the line is written now, not when hyper drops it.
            None => drop(this.log.take()),
            Some(Err(_)) => {}
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Bytes each way on a connection, when one last moved, and how many of
/// its requests are being served.
struct Activity {
    origin: Instant,
    /// Milliseconds from `origin` to when a byte last moved.
    last: AtomicU64,
    read: AtomicU64,
    written: AtomicU64,
    busy: AtomicUsize,
    /// Milliseconds from `origin` to the first byte of a request head not
    /// yet whole ([`NO_HEAD`]: none under way).
    head_started: AtomicU64,
}

/// No request head under way.
const NO_HEAD: u64 = u64::MAX;

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last: AtomicU64::new(0),
            read: AtomicU64::new(0),
            written: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            head_started: AtomicU64::new(NO_HEAD),
        }
    }

    fn moved(&self, counter: &AtomicU64, n: usize) {
        counter.fetch_add(n as u64, Ordering::Relaxed);
        let now = self.origin.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }

    /// Bytes came while no request is served: a head has begun, unless
    /// one had already.
    fn read_between_requests(&self) {
        if self.busy.load(Ordering::Relaxed) == 0 {
            let now = self.origin.elapsed().as_millis() as u64;
            let _ = self.head_started.compare_exchange(
                NO_HEAD,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    /// How long the request head under way has taken so far, if one is.
    fn head_for(&self) -> Option<Duration> {
        let started = self.head_started.load(Ordering::Relaxed);
        (started != NO_HEAD).then(|| {
            self.origin
                .elapsed()
                .saturating_sub(Duration::from_millis(started))
        })
    }

    /// How long since a byte last moved.
    fn quiet_for(&self) -> Duration {
        let last = Duration::from_millis(self.last.load(Ordering::Relaxed));
        self.origin.elapsed().saturating_sub(last)
    }

    fn bytes(&self) -> (u64, u64) {
        (
            self.read.load(Ordering::Relaxed),
            self.written.load(Ordering::Relaxed),
        )
    }
}

/// A request being served, counted while it lasts (with its response
/// body).
struct Busy(Arc<Activity>);

impl Busy {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        Self(activity.clone())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Why the watch on a connection says it is done.
enum Done {
    /// No request for `timeout_idle`.
    Quiet,
    /// A request under way moved no byte for `idle_timeout`.
    Idle(Duration),
    /// A request head took longer than `timeout_header`.
    Header(Duration),
    /// The server is closing (or, one connection per process, stopping).
    Closing,
}

/// The watch over a connection's silences.
struct Watch<'a> {
    activity: &'a Activity,
    /// `timeout_idle`: between requests.
    between_requests: Duration,
    /// `idle_timeout`: while a request is served.
    serving: Duration,
    /// `timeout_header`: a request head's time, from its first byte.
    header: Duration,
    stop: Option<&'a AtomicBool>,
}

/// How often the watch looks whether the server is closing.
const CLOSING_LOOK: Duration = Duration::from_secs(1);

impl Watch<'_> {
    /// Waits until the connection is to end.
    async fn until_done(&self) -> Done {
        loop {
            let busy = self.activity.busy.load(Ordering::Relaxed) > 0;
            let limit = if busy {
                self.serving
            } else {
                self.between_requests
            };
            let quiet = self.activity.quiet_for();
            let head = self.activity.head_for().filter(|_| !busy);
            if head.is_some_and(|took| took >= self.header) {
                return Done::Header(self.header);
            }
            if quiet >= limit && head.is_none() {
                return if busy { Done::Idle(limit) } else { Done::Quiet };
            }
            let limit = match head {
                Some(took) => {
                    self.header
                        .saturating_sub(took)
                        .max(Duration::from_millis(10))
                        + quiet
                }
                None => limit,
            };
            if board::closing() != board::Closing::No
                || self.stop.is_some_and(|s| s.load(Ordering::Relaxed))
            {
                return Done::Closing;
            }
            tokio::time::sleep((limit - quiet).min(CLOSING_LOOK)).await;
        }
    }

    /// While the server closes: waits until the connection has a request
    /// under way, when its first request has not come yet or a request
    /// head is half read (hyper would drop either as an idle connection);
    /// `None` when there is none to wait for, or the first request did not
    /// come within `timeout_idle`; the head's end when it took longer than
    /// `timeout_header`.
    async fn until_request(&self) -> Option<End> {
        /// How often it looks whether a request began.
        const LOOK: Duration = Duration::from_millis(5);
        loop {
            if self.activity.busy.load(Ordering::Relaxed) > 0 {
                return None;
            }
            let wait = match self.activity.head_for() {
                Some(took) if took >= self.header => return Some(End::HeaderTimeout(self.header)),
                Some(took) => self.header - took,
                None if self.activity.bytes().0 > 0 => return None,
                None => {
                    let quiet = self.activity.quiet_for();
                    if quiet >= self.between_requests {
                        return None;
                    }
                    self.between_requests - quiet
                }
            };
            tokio::time::sleep(wait.min(LOOK)).await;
        }
    }

    /// While the requests under way finish: ends them when one moves no
    /// byte for `idle_timeout`.
    async fn while_serving(&self) -> End {
        loop {
            let quiet = self.activity.quiet_for();
            if quiet >= self.serving {
                return End::Idle(self.serving);
            }
            tokio::time::sleep(self.serving - quiet).await;
        }
    }
}

/// The stream hyper serves, counting bytes and noting when one moved.
struct Watched {
    inner: Box<dyn AsyncStream>,
    activity: Arc<Activity>,
}

impl AsyncRead for Watched {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.activity.moved(&self.activity.read, n);
            self.activity.read_between_requests();
        }
        polled
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.activity.moved(&self.activity.written, n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled
            && n > 0
        {
            self.activity.moved(&self.activity.written, n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
