//! Mux handlers: Net::Server::Multiplex's callbacks (IO::Multiplex's
//! `mux_*`), the world `mux-handler` of the project's `wit/handler.wit`
//! (with the worker's hooks, `server-mux-handler`).
//!
//! A mux handler is one instance per worker holding every connection of the
//! worker, where a [`Handler`](crate::Handler) serves one client at a time.
//! The host calls a [`MuxHandler`]'s callbacks, one at a time, when a
//! client connects, sends bytes, stops sending or closes, and when a timeout
//! or the timer it set expires. A callback never blocks: it answers with
//! [`Connection::write`], which queues bytes for the host to send as the
//! client reads, and returns. Stdin is empty and stdout discards what is
//! written; stderr and [`log`](crate::log()) go to the server log.
//!
//! # A line echo
//!
//! Every line a client sends is answered `You said 'LINE'`; `quit` closes
//! the connection. A partial line is left unconsumed: the host gives it
//! again with the bytes that follow.
//!
//! ```no_run
//! use netserver_sdk::mux::{Connection, MuxHandler, lines, lines_at_eof};
//! use netserver_sdk::{ClientInfo, log};
//!
//! struct LineEcho;
//!
//! impl MuxHandler for LineEcho {
//!     fn mux_connection(conn: Connection, client: &ClientInfo) -> bool {
//!         log::info(format_args!("{} is connection {}", client.peer_addr, conn.id()));
//!         conn.write("Say something.\r\n");
//!         true
//!     }
//!
//!     // Required: answers the complete lines, says how many bytes they used.
//!     fn mux_input(conn: Connection, data: &[u8]) -> usize {
//!         let mut lines = lines(data);
//!         for line in lines.by_ref() {
//!             answer(conn, line);
//!         }
//!         lines.consumed()
//!     }
//!
//!     // The client sends nothing more: answer a last line without "\n".
//!     fn mux_eof(conn: Connection, data: &[u8]) {
//!         for line in lines_at_eof(data) {
//!             answer(conn, line);
//!         }
//!     }
//! }
//!
//! fn answer(conn: Connection, line: &[u8]) {
//!     if line == b"quit" {
//!         conn.close();
//!     } else {
//!         conn.write([&b"You said '"[..], line, b"'\r\n"].concat());
//!     }
//! }
//!
//! netserver_sdk::export_mux!(LineEcho);
//! ```
//!
//! State shared by the connections (who is connected, what each one is
//! called) lives in a `thread_local!` of the handler's crate, keyed by
//! [`Connection`]: the instance lives as long as the worker.
//!
//! A panic in a callback traps: the instance ends and every connection it
//! held is closed; a fresh instance serves the next clients. So does a
//! callback that runs past the service's CPU limit.
//!
//! The worker's hooks run on the same instance:
//! [`signal_hook`](MuxHandler::signal_hook) when USR1, USR2 or HUP reaches
//! the worker, and [`server_close_hook`](MuxHandler::server_close_hook)
//! when the server closes, the place to say goodbye to every client:
//!
//! ```no_run
//! # use netserver_sdk::mux::{Connection, MuxHandler};
//! use netserver_sdk::CloseReason;
//! use netserver_sdk::mux::{broadcast, connections};
//! # struct LineEcho;
//! # impl MuxHandler for LineEcho {
//! #     fn mux_input(_: Connection, data: &[u8]) -> usize { data.len() }
//! fn server_close_hook(reason: CloseReason) {
//!     broadcast(format!("server closing ({reason})\r\n"));
//!     connections().into_iter().for_each(Connection::close);
//! }
//! # }
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use crate::bindings::mux::exports::netserver::handler::mux::Guest;
use crate::bindings::mux::netserver::handler::connections as wit;
use crate::bindings::netserver::handler::client as wit_client;
use crate::bindings::netserver::handler::server as wit_server;
use crate::bindings::server_hooks::exports::netserver::handler::server_hooks;
use crate::defaults::{self, ServerHook};
use crate::{ClientInfo, CloseReason, Signal};

/// A connection of this instance: a number the host gives it when it
/// arrives (see [`MuxHandler::mux_connection`]), never given to another
/// connection of the same worker. Ordered by that number, which is the
/// order the connections arrived in.
///
/// The methods ask the host: writing to a connection that closed does
/// nothing (and says so), it never fails otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Connection(u64);

impl Connection {
    /// The connection with the host's number `id` (as [`id`](Self::id)
    /// gives it): for a handler's unit tests, or to find a connection kept
    /// by number.
    pub const fn from_id(id: u64) -> Self {
        Self(id)
    }

    /// The host's number for this connection.
    pub const fn id(self) -> u64 {
        self.0
    }

    /// Queues `data` to be written to the client, after what was queued
    /// before; the host sends it as the client reads. Returns `false`, and
    /// queues nothing, when the connection is not open (closed, closing,
    /// or not this instance's) or when `data` takes what is queued for a
    /// client that does not read past the service's `mux_write_cap`: then
    /// the host closes the connection, and writing more to it is useless.
    pub fn write(self, data: impl AsRef<[u8]>) -> bool {
        wit::write(self.0, data.as_ref())
    }

    /// Closes the connection once what was queued for it is written: no
    /// more input arrives, and [`MuxHandler::mux_close`] follows. Closing a
    /// connection that is not open does nothing.
    pub fn close(self) {
        wit::close(self.0);
    }

    /// Shuts down the writing side once what was queued is written: the
    /// client reads end of file, and its input still arrives.
    pub fn shutdown_write(self) {
        wit::shutdown_write(self.0);
    }

    /// Calls [`MuxHandler::mux_timeout`] with this connection once
    /// `timeout` has passed; `None` clears it. Setting it again replaces
    /// the last one.
    pub fn set_timeout(self, timeout: Option<Duration>) {
        wit::set_timeout(self.0, timeout.map(|t| t.as_secs_f64()));
    }

    /// What the host knows of this connection's client; `None` when the
    /// connection is not open.
    pub fn info(self) -> Option<ClientInfo> {
        wit::info(self.0).map(ClientInfo::from)
    }
}

impl std::fmt::Display for Connection {
    /// The host's number for the connection.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// The open connections of this instance (accepted by
/// [`MuxHandler::mux_connection`] and not yet closed), oldest first
/// (IO::Multiplex's `handles`).
pub fn connections() -> Vec<Connection> {
    wit::list().into_iter().map(Connection).collect()
}

/// Sets the instance's own timer: [`MuxHandler::mux_timeout`] is called
/// with `None` once `timeout` has passed. `None` clears it; setting it again
/// replaces the last one.
pub fn set_timer(timeout: Option<Duration>) {
    wit::set_timer(timeout.map(|t| t.as_secs_f64()));
}

/// Writes `data` to every open connection; returns how many took it (see
/// [`Connection::write`]).
pub fn broadcast(data: impl AsRef<[u8]>) -> usize {
    let data = data.as_ref();
    connections()
        .into_iter()
        .filter(|conn| conn.write(data))
        .count()
}

/// Net::Server::Multiplex's callbacks. Only [`mux_input`](Self::mux_input)
/// is required; every other callback does nothing by default
/// (`mux_connection` accepts the client).
///
/// The host calls them one at a time, on the one instance of the worker
/// that holds every connection:
///
/// ```text
/// (instance created)                child_init_hook
/// accept → client info → host access rules
///                                   mux_connection ── false ─→ (closed; nothing more)
///                                        │ true
/// (bytes arrive, in order)          mux_input  …
/// (the client stops sending)        mux_eof
/// (the connection closed)           mux_close
/// (a timeout or the timer expires)  mux_timeout
/// (every check_for_dequeue seconds) dequeue
/// (instance retired)                child_finish_hook
/// ```
///
/// Between the callbacks, never during one, the host also calls the
/// worker's hooks on the instance: [`signal_hook`](Self::signal_hook) and
/// [`server_close_hook`](Self::server_close_hook) (before
/// `child_finish_hook`). A mux worker has no idle hook: its periodic work
/// goes in `dequeue` or a timer.
///
/// During a callback about one connection [`client()`](crate::client),
/// [`tls()`](crate::tls) and [`credentials()`](crate::credentials) describe
/// that connection's client. Every callback may write to any open
/// connection, log and read properties.
///
/// The callbacks are associated functions: a handler type carries no value.
/// State kept for the life of the instance goes in `static`s (a
/// `thread_local!` holding a `RefCell`, keyed by [`Connection`]).
pub trait MuxHandler {
    /// Runs once when the instance is created, before its first
    /// connection.
    fn child_init_hook() {}

    /// A client connected and passed the host's access rules. Return
    /// `false` to refuse it (Net::Server's `allow_deny_hook`): what was
    /// written to it is sent, then it is closed, and no other callback is
    /// called for it. The default, `true`, serves it.
    fn mux_connection(conn: Connection, client: &ClientInfo) -> bool {
        let _ = (conn, client);
        true
    }

    /// Bytes arrived from `conn`: `data` is what earlier calls left
    /// unconsumed followed by the new bytes. Return how many bytes, from
    /// the start of `data`, were consumed (more than `data.len()` counts as
    /// all of it); the host keeps the rest and gives it again with what
    /// arrives next. [`lines`] splits off the complete lines of a line
    /// protocol and counts their bytes.
    fn mux_input(conn: Connection, data: &[u8]) -> usize;

    /// `conn`'s client will send nothing more: `data` is what is left
    /// unconsumed (possibly empty; [`lines_at_eof`] reads it as lines). The
    /// host closes the connection once what was queued for it is written;
    /// [`mux_close`](Self::mux_close) follows.
    fn mux_eof(conn: Connection, data: &[u8]) {
        let _ = (conn, data);
    }

    /// `conn` closed (by either end, a limit, or a write that failed). It
    /// can no longer be written to.
    fn mux_close(conn: Connection) {
        let _ = conn;
    }

    /// A timeout set with [`Connection::set_timeout`] expired
    /// (`Some(conn)`), or the instance's timer set with [`set_timer`]
    /// (`None`).
    fn mux_timeout(conn: Option<Connection>) {
        let _ = conn;
    }

    /// Runs every `check_for_dequeue` seconds on this same instance, so it
    /// sees the connections and their state. Keep it short: every
    /// connection waits for it.
    fn dequeue() {}

    /// Runs once when the instance is retired (the worker stops).
    fn child_finish_hook() {}

    /// A signal reached the worker: USR1, USR2 or HUP sent to it, or to the
    /// master with the signal in `sig_passthrough` (Net::Server), which
    /// passes it on to every worker (Net::Waiter's `propagate_signal`). As
    /// Net::Waiter's `on_child_sig_usr1`, `on_child_sig_usr2` and
    /// `on_child_sig_hup`. The instance is made for it (`child_init_hook`
    /// first) if the worker has none yet.
    ///
    /// The default does nothing, and the first time it runs the SDK tells
    /// the host (`server.does-nothing`), which stops calling it. Needs a
    /// host that serves `netserver:handler@0.1.4`.
    fn signal_hook(signal: Signal) {
        let _ = signal;
        defaults::mark::<Self>(ServerHook::SignalHook);
    }

    /// The server is closing (Net::Server's `pre_server_close_hook`,
    /// Net::Waiter's `on_server_close`), for `reason`: [`CloseReason::Drain`]
    /// (QUIT), [`CloseReason::Stop`] (INT, TERM) or [`CloseReason::Restart`]
    /// (HUP). Say goodbye to the clients and close them here
    /// ([`broadcast`], [`connections`], [`Connection::close`]).
    ///
    /// Runs once as the worker stops accepting, before its connections
    /// finish and before `child_finish_hook`. Not run when a worker is
    /// merely retired (`max_requests`, fewer spare servers, TTOU). For
    /// `Stop` it has a second: the worker ends at once.
    ///
    /// The default does nothing, and the first time it runs the SDK tells
    /// the host (`server.does-nothing`), which stops calling it. Needs a
    /// host that serves `netserver:handler@0.1.4`.
    fn server_close_hook(reason: CloseReason) {
        let _ = reason;
        defaults::mark::<Self>(ServerHook::ServerCloseHook);
    }
}

/// Makes a [`MuxHandler`] the callbacks this component exports.
///
/// Invoke it once, at the top level of the handler's crate (a `cdylib`
/// built for `wasm32-wasip2`), with the handler's type; a crate exports
/// either a [`Handler`](crate::Handler) with [`export!`](crate::export!) or
/// a mux handler, not both. See [the `mux` module](crate::mux) for an
/// example.
///
/// It exports `netserver:handler/mux@0.1.5` and
/// `netserver:handler/server-hooks@0.1.5` (the world `server-mux-handler`),
/// each callback calling the handler's. Off `wasm32` it expands to nothing,
/// so the crate still builds and tests natively.
#[macro_export]
macro_rules! export_mux {
    ($handler:ty $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type NetserverSdkMuxAdapter = $crate::__private::MuxAdapter<$handler>;
            $crate::__export_mux_handler_impl!(
                NetserverSdkMuxAdapter with_types_in $crate::__private::bindings::mux
            );
            $crate::__export_server_hooks_impl!(
                NetserverSdkMuxAdapter with_types_in $crate::__private::bindings::server_hooks
            );
        };
    };
}

/// The generated mux `Guest` implementation for handler `H`: what
/// [`export_mux!`](crate::export_mux!) exports.
pub struct MuxAdapter<H>(PhantomData<fn() -> H>);

impl<H: MuxHandler> Guest for MuxAdapter<H> {
    fn child_init_hook() {
        H::child_init_hook();
    }

    fn mux_connection(conn: u64, client: wit_client::ClientInfo) -> bool {
        H::mux_connection(Connection(conn), &ClientInfo::from(client))
    }

    fn mux_input(conn: u64, data: Vec<u8>) -> u32 {
        let consumed = H::mux_input(Connection(conn), &data).min(data.len());
        // A list's length is a u32 in the component model.
        u32::try_from(consumed).unwrap_or(u32::MAX)
    }

    fn mux_eof(conn: u64, data: Vec<u8>) {
        H::mux_eof(Connection(conn), &data);
    }

    fn mux_close(conn: u64) {
        H::mux_close(Connection(conn));
    }

    fn mux_timeout(conn: Option<u64>) {
        H::mux_timeout(conn.map(Connection));
    }

    fn dequeue() {
        H::dequeue();
    }

    fn child_finish_hook() {
        H::child_finish_hook();
    }
}

impl<H: MuxHandler> server_hooks::Guest for MuxAdapter<H> {
    fn signal_hook(signal: wit_server::Signal) {
        run::<H>(ServerHook::SignalHook, || H::signal_hook(signal.into()));
    }

    fn server_close_hook(reason: wit_server::CloseReason) {
        run::<H>(ServerHook::ServerCloseHook, || {
            H::server_close_hook(reason.into());
        });
    }

    /// Only one-connection-at-a-time workers get it, never a mux worker;
    /// the export must be there all the same.
    fn idle_hook() {
        wit_server::does_nothing(ServerHook::IdleHook);
    }
}

/// Runs `H`'s worker hook `hook`: when it is the default, which does
/// nothing, tells the host not to call it again.
fn run<H: MuxHandler>(hook: ServerHook, body: impl FnOnce()) {
    let ((), default) = defaults::run::<H, ()>(hook, body);
    if default {
        wit_server::does_nothing(hook);
    }
}

/// The complete lines at the start of `data`, for
/// [`mux_input`](MuxHandler::mux_input): each without its `\n` and one
/// `\r` right before it (Perl's `s/^(.*?)\r?\n//`). A last line without
/// `\n` is not yielded: it is [`rest`](Lines::rest), and
/// [`consumed`](Lines::consumed) counts the bytes of the lines yielded so
/// far, which is what `mux_input` returns to leave it for later.
///
/// ```
/// let mut lines = netserver_sdk::mux::lines(b"one\r\ntwo\nthr");
/// assert_eq!(lines.next(), Some(&b"one"[..]));
/// assert_eq!(lines.next(), Some(&b"two"[..]));
/// assert_eq!(lines.next(), None);
/// assert_eq!(lines.consumed(), 9);
/// assert_eq!(lines.rest(), b"thr");
/// ```
pub fn lines(data: &[u8]) -> Lines<'_> {
    Lines {
        rest: data,
        consumed: 0,
        at_eof: false,
    }
}

/// The lines of `data` when no more input follows, for
/// [`mux_eof`](MuxHandler::mux_eof): as [`lines`], then a last line without
/// `\n` (kept as it is, a `\r` included, as [`echo::serve`](crate::echo::serve)
/// answers it), if it is not empty. Consumes all of `data`.
///
/// ```
/// let all: Vec<&[u8]> = netserver_sdk::mux::lines_at_eof(b"one\r\ntwo").collect();
/// assert_eq!(all, [&b"one"[..], b"two"]);
/// ```
pub fn lines_at_eof(data: &[u8]) -> Lines<'_> {
    Lines {
        rest: data,
        consumed: 0,
        at_eof: true,
    }
}

/// The iterator of [`lines`] and [`lines_at_eof`]: yields lines as slices
/// of the data, and counts the bytes they used.
#[derive(Debug, Clone)]
pub struct Lines<'a> {
    /// What no line yielded so far took.
    rest: &'a [u8],
    /// The bytes of the lines yielded so far, line ends included.
    consumed: usize,
    /// Whether a last line without `\n` is yielded too.
    at_eof: bool,
}

impl<'a> Lines<'a> {
    /// How many bytes from the start of the data the lines yielded so far
    /// used, their line ends included.
    pub fn consumed(&self) -> usize {
        self.consumed
    }

    /// The bytes after the lines yielded so far: a partial line once the
    /// iterator is done.
    pub fn rest(&self) -> &'a [u8] {
        self.rest
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        match self.rest.iter().position(|&b| b == b'\n') {
            Some(end) => {
                let line = &self.rest[..end];
                self.rest = &self.rest[end + 1..];
                self.consumed += end + 1;
                Some(line.strip_suffix(b"\r").unwrap_or(line))
            }
            None if self.at_eof && !self.rest.is_empty() => {
                let line = self.rest;
                self.consumed += line.len();
                self.rest = &[];
                Some(line)
            }
            None => None,
        }
    }
}

impl std::iter::FusedIterator for Lines<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the case shows, the data, the lines, the bytes consumed.
    type Case = (&'static str, &'static [u8], &'static [&'static [u8]], usize);

    fn shown(lines: &[&[u8]]) -> Vec<String> {
        lines.iter().map(|l| l.escape_ascii().to_string()).collect()
    }

    #[test]
    fn lines_table() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("empty", b"", &[], 0),
            ("partial only", b"abc", &[], 0),
            ("one line", b"abc\n", &[b"abc"], 4),
            ("crlf", b"abc\r\n", &[b"abc"], 5),
            ("two and a partial", b"a\nb\r\nc", &[b"a", b"b"], 5),
            ("empty lines", b"\n\r\n\n", &[b"", b"", b""], 4),
            ("only one cr is stripped", b"x\r\r\n", &[b"x\r"], 4),
            ("cr inside is kept", b"a\rb\n", &[b"a\rb"], 4),
            ("lone cr is a partial line", b"a\r", &[], 0),
            ("cr at the end waits for its lf", b"a\n\r", &[b"a"], 2),
            ("binary", b"\xff\x00\n\xfe", &[b"\xff\x00"], 3),
        ];
        for &(what, data, want, consumed) in cases {
            let mut lines = lines(data);
            let got: Vec<&[u8]> = lines.by_ref().collect();
            assert_eq!(shown(&got), shown(want), "{what}");
            assert_eq!(lines.consumed(), consumed, "{what}");
            assert_eq!(lines.rest(), &data[consumed..], "{what}");
            assert_eq!(lines.next(), None, "{what}: fused");
        }
    }

    #[test]
    fn lines_at_eof_table() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("empty", b"", &[], 0),
            ("partial only", b"abc", &[b"abc"], 3),
            ("lines then partial", b"a\r\nb", &[b"a", b"b"], 4),
            ("no partial", b"a\n", &[b"a"], 2),
            ("a last cr is kept", b"two\r", &[b"two\r"], 4),
            ("empty line is yielded", b"\n", &[b""], 1),
        ];
        for &(what, data, want, consumed) in cases {
            let mut lines = lines_at_eof(data);
            let got: Vec<&[u8]> = lines.by_ref().collect();
            assert_eq!(shown(&got), shown(want), "{what}");
            assert_eq!(lines.consumed(), consumed, "{what}");
            assert_eq!(lines.rest(), b"", "{what}");
            assert_eq!(lines.next(), None, "{what}: fused");
        }
    }

    #[test]
    fn consumed_counts_only_lines_taken() {
        let mut lines = lines(b"quit\nmore\n");
        assert_eq!(lines.next(), Some(&b"quit"[..]));
        assert_eq!(lines.consumed(), 5);
        assert_eq!(lines.rest(), b"more\n");
    }

    #[test]
    fn connection_is_its_number() {
        let (a, b) = (Connection::from_id(3), Connection::from_id(10));
        assert_eq!(a.id(), 3);
        assert!(a < b);
        assert_eq!(b.to_string(), "10");
    }
}
