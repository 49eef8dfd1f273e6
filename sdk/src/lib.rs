//! Write [netserver] handlers in Rust: Perl's Net::Server hooks, compiled to
//! a WebAssembly component that `netserver-host` runs in a sandbox.
//!
//! A handler is a type that implements [`Handler`]. Every hook has a default,
//! so implement only what your protocol needs — usually
//! [`process_request`](Handler::process_request). During a connection the
//! handler's stdin and stdout *are* the client connection, as STDIN and
//! STDOUT are in Net::Server: read the request with [`std::io::stdin`], write
//! the reply with [`std::io::stdout`] or `print!` — or with [`reply()`],
//! which hands each flush to the host in one call instead of three, for
//! protocols that answer many small requests. Whatever it writes to stderr
//! (`eprintln!`) goes to the server log.
//!
//! # A handler, start to finish
//!
//! A new library crate, built as a `cdylib` (outside the netserver checkout,
//! or with an empty `[workspace]` table of its own):
//!
//! ```toml
//! # Cargo.toml
//! [package]
//! name = "greeter"
//! version = "0.1.0"
//! edition = "2024"
//!
//! [lib]
//! crate-type = ["cdylib"]
//!
//! [dependencies]
//! netserver-sdk = { path = "../netserver/sdk" } # where your netserver checkout is
//!
//! [profile.release]
//! opt-level = "s"
//! lto = true
//! strip = true
//! ```
//!
//! A small line protocol: it greets the client by address with a greeting
//! taken from the `greeting` property, then answers `upper TEXT` and `peer`
//! until the client sends `quit` or closes the connection.
//!
//! ```no_run
//! // src/lib.rs
//! use std::io::{BufRead, Write, stdin, stdout};
//!
//! use netserver_sdk::{Error, Handler, client, log, property};
//!
//! struct Greeter;
//!
//! impl Handler for Greeter {
//!     // Runs first for every client: write a banner.
//!     fn post_accept_hook() {
//!         let greeting = property("greeting").unwrap_or_else(|| "Hello".to_owned());
//!         let peer = client().map_or_else(|| "stranger".to_owned(), |c| c.peer_addr);
//!         log::info(format_args!("greeting {peer}"));
//!         print!("{greeting}, {peer}!\r\n");
//!     }
//!
//!     // Serves the client until it quits: stdin and stdout are the socket.
//!     fn process_request() -> Result<(), Error> {
//!         let mut out = stdout().lock();
//!         for line in stdin().lock().lines() {
//!             let line = line?; // without its "\n" or "\r\n"
//!             match line.split_once(' ') {
//!                 _ if line == "quit" => break,
//!                 _ if line == "peer" => {
//!                     let info = client().ok_or("no client")?;
//!                     write!(out, "{}:{} on {}\r\n", info.peer_addr, info.peer_port, info.service)?;
//!                 }
//!                 Some(("upper", text)) => write!(out, "{}\r\n", text.to_uppercase())?,
//!                 _ => {
//!                     log::notice(format_args!("unknown command {line:?}"));
//!                     write!(out, "unknown command\r\n")?;
//!                 }
//!             }
//!             out.flush()?;
//!         }
//!         Ok(())
//!     }
//!
//!     // Runs after process_request, the connection still open.
//!     fn post_process_request_hook() {
//!         print!("Goodbye.\r\n");
//!     }
//! }
//!
//! netserver_sdk::export!(Greeter);
//! ```
//!
//! Build it for `wasm32-wasip2` and serve it:
//!
//! ```sh
//! rustup target add wasm32-wasip2    # once
//! cargo build --target wasm32-wasip2 --release
//! netserver-host --module target/wasm32-wasip2/release/greeter.wasm \
//!     --port 8000 --property greeting=Hi --log-level 3
//! ```
//!
//! ```console
//! $ printf 'upper hello\r\nquit\r\n' | nc 127.0.0.1 8000
//! Hi, 127.0.0.1!
//! HELLO
//! Goodbye.
//! ```
//!
//! The file is named after the crate, with `-` turned into `_`
//! (`my-handler` builds `my_handler.wasm`). It is a WebAssembly component
//! that exports `netserver:handler/hooks@0.1.5` and
//! `netserver:handler/server-hooks@0.1.5` (the world `server-handler` in
//! the project's `wit/handler.wit`); `netserver-host --check --module FILE`
//! says whether a file is one.
//!
//! # The API
//!
//! | item | what it is |
//! | --- | --- |
//! | [`Handler`] | Net::Server's hooks, each with a default, and the worker's: [`signal_hook`](Handler::signal_hook), [`server_close_hook`](Handler::server_close_hook), [`idle_hook`](Handler::idle_hook) |
//! | [`export!`] | makes a `Handler` the component's hooks: once per crate |
//! | [`Error`] | what `process_request` returns on failure; `?` converts to it |
//! | [`client()`], [`ClientInfo`] | the client's addresses, ports, protocol, host name and service |
//! | [`is_datagram()`] | whether the client is a datagram, without the whole [`ClientInfo`] |
//! | [`log()`](log()), [`Level`], [`enabled`] | the server log; [`log::info`] and friends skip formatting what would be dropped |
//! | [`property`], [`properties`] | the handler's settings (`--property KEY=VALUE`) |
//! | [`echo::serve`] | Net::Server's default echo, on any reader and writer |
//! | [`reply()`], [`Reply`] | stdout with one host call per flush, for many small replies |
//! | [`server::counts`], [`Counts`] | the server's workers and busy workers, this worker's clients and process id |
//! | [`Signal`], [`CloseReason`] | what the worker's hooks are told: the signal, why the server closes |
//! | [`MuxHandler`], [`export_mux!`], [`mux`] | Net::Server::Multiplex's callbacks: one instance holds every connection of a worker |
//! | [`Connection`], [`mux::connections`], [`mux::broadcast`], [`mux::set_timer`] | a mux handler's connections and timer |
//! | [`mux::lines`], [`mux::lines_at_eof`] | the complete lines of a mux handler's input, and the bytes they used |
//!
//! # Mux handlers
//!
//! A [`MuxHandler`] serves the other world, `mux-handler`:
//! Net::Server::Multiplex's callbacks, where one instance per worker holds
//! every connection and the host calls it when one of them sends bytes,
//! stops sending or closes. It suits protocols where clients talk to each other,
//! a chat for instance. See [the `mux` module](mux) for how one runs and a
//! line echo, start to finish; it is exported with [`export_mux!`].
//!
//! # How a handler runs
//!
//! - The host calls the hooks in Net::Server's order: see [`Handler`].
//! - After every hook the SDK flushes [`std::io::stdout`], which is line
//!   buffered: a reply's last line needs no `\n` and no explicit flush to
//!   reach the client. Flush yourself when the client must see a reply
//!   before you read again (the example above flushes after every line).
//!   A [`Reply`] is flushed when it is dropped.
//! - A panic ends the connection being served: its message goes to the log
//!   and the instance traps. So does running out of the host's memory or CPU
//!   limits. The host and other connections carry on.
//! - With per-worker instances one instance serves clients in turn and keeps
//!   the statics you give it. When a connection ends the SDK drops what std
//!   still buffers of it (unread input, unsent output), so the next client
//!   never sees the last one's bytes.
//! - With per-worker instances the host also calls the worker's hooks on
//!   that instance, between connections (never during one):
//!   [`signal_hook`](Handler::signal_hook) when USR1, USR2 or HUP reaches
//!   the worker, [`server_close_hook`](Handler::server_close_hook) when the
//!   server closes, [`idle_hook`](Handler::idle_hook) while the worker has
//!   no client. There is no client then: stdin is empty and stdout discards
//!   what is written. With an instance per connection they are not called.
//! - The handler gets nothing it was not granted: no files, no network, no
//!   host environment.
//!
//! # Testing natively
//!
//! The SDK builds for the native target too, so a handler's logic can be
//! unit-tested with `cargo test`. Off `wasm32`, [`export!`] exports nothing,
//! and [`client()`], [`log()`](log()), [`property`], a [`Reply`]'s flush and
//! the other host calls panic: keep them out of the code under test, or pass
//! their results in ([`echo::serve`] takes any writer, for instance).
//!
//! [netserver]: https://example.invalid/netserver

#![warn(missing_docs)]

mod adapter;
// Public only for `export!`, which expands in the handler's crate.
#[doc(hidden)]
#[allow(missing_docs)]
pub mod bindings;
mod client;
mod defaults;
pub mod echo;
mod error;
pub mod log;
pub mod mux;
mod properties;
mod reply;
pub mod server;

pub use client::{
    ClientCertificate, ClientInfo, Credentials, Tls, client, credentials, is_datagram, tls,
};
use defaults::{Hook, ServerHook};
pub use error::Error;
pub use log::{Level, enabled, log};
pub use mux::{Connection, MuxHandler};
pub use properties::{properties, property};
pub use reply::{Reply, end_datagram, reply};
pub use server::{CloseReason, Counts, Signal};

/// Net::Server's hooks, each with a default that does what Net::Server's
/// does: implement only the ones your protocol needs.
///
/// The host calls them for every client connection in this order:
///
/// ```text
/// (instance created)          child_init_hook
/// accept → client info → host access rules
///                             post_accept_hook
///                             allow_deny_hook ── true ──→ process_request
///                                     └────── false ─→ request_denied_hook
///                             post_process_request_hook
/// (connection closed)         post_client_connection_hook
/// (instance retired)          child_finish_hook
/// ```
///
/// From `post_accept_hook` through `post_process_request_hook` stdin and
/// stdout are the client connection. Outside them stdin is empty, stdout
/// discards what is written and [`client()`] is `None` in the child hooks.
/// Every hook may log and read properties.
///
/// The hooks are associated functions: a handler type carries no value.
/// State kept for the life of an instance goes in `static`s (a
/// `thread_local!` or a `std::sync::Mutex`), prepared in `child_init_hook`.
///
/// With `instance per-worker` the host also calls the worker's hooks on the
/// worker's instance, between the connection hooks (never during them),
/// around the worker's life:
///
/// ```text
/// (instance created)                  child_init_hook
/// (clients …)                         … the connection hooks above …
/// (USR1, USR2, HUP reach the worker)  signal_hook
/// (no client for check_for_idle s)    idle_hook
/// (QUIT, TERM, INT, HUP: server closing)
///                                     server_close_hook
/// (the last connection is done)       child_finish_hook
/// ```
///
/// There is no client during them: [`client()`] is `None`, stdin is empty
/// and stdout discards what is written. [`server::counts`] says how busy
/// the server is. A panic in one ends the instance; the next client gets a
/// fresh one. With an instance per connection they are not called.
///
/// Implement only the hooks you need. A hook left at its default does
/// nothing, and the first time it runs the SDK tells the host so
/// (`hook-hints.does-nothing` in the WIT, `server.does-nothing` for the
/// worker's hooks): the host stops calling it and acts as if it had run,
/// which saves a call into the guest per hook and connection.
/// `process_request` and `post_client_connection_hook` (where the SDK drops
/// what stdin buffered from the client) are always called.
pub trait Handler {
    /// Runs once when an instance is created, before its first connection
    /// (Net::Server runs it when a child starts). There is no client yet.
    fn child_init_hook() {
        defaults::mark::<Self>(Hook::ChildInitHook);
    }

    /// Runs right after a client connected and passed the host's access
    /// rules. Stdout is the client: a greeting banner can be written here.
    fn post_accept_hook() {
        defaults::mark::<Self>(Hook::PostAcceptHook);
    }

    /// Decides whether the client is served: `true` (the default) goes on to
    /// [`process_request`](Self::process_request), `false` runs
    /// [`request_denied_hook`](Self::request_denied_hook) instead.
    fn allow_deny_hook() -> bool {
        defaults::mark::<Self>(Hook::AllowDenyHook);
        true
    }

    /// Runs instead of `process_request` when `allow_deny_hook` returned
    /// `false`. Stdout is still the client: a refusal may be written.
    fn request_denied_hook() {
        defaults::mark::<Self>(Hook::RequestDeniedHook);
    }

    /// Serves the client: read the request from stdin, write the reply to
    /// stdout, for as long as the protocol requires. The connection stays
    /// open until this returns. An error is logged (at `err`) as the reason
    /// the connection ended.
    ///
    /// The default is Net::Server's: the echo server of [`echo::serve`],
    /// or for a datagram [`echo::answer_datagram`].
    fn process_request() -> Result<(), Error> {
        if is_datagram() {
            echo::answer_datagram(std::io::stdin().lock(), reply())?;
        } else {
            echo::serve(std::io::stdin().lock(), reply())?;
        }
        Ok(())
    }

    /// Runs after `process_request` (or `request_denied_hook`) returned,
    /// with the connection still open: a closing message may be written.
    fn post_process_request_hook() {
        defaults::mark::<Self>(Hook::PostProcessRequestHook);
    }

    /// Runs after the connection was closed: accounting and cleanup for this
    /// client go here.
    fn post_client_connection_hook() {
        defaults::mark::<Self>(Hook::PostClientConnectionHook);
    }

    /// Runs once when an instance is retired, after its last connection
    /// (Net::Server runs it when a child finishes).
    fn child_finish_hook() {
        defaults::mark::<Self>(Hook::ChildFinishHook);
    }

    /// Runs every `check_for_dequeue` seconds on a fresh instance of its
    /// own, with no client: periodic work (Net::Server's `dequeue`).
    fn dequeue() {
        defaults::mark::<Self>(Hook::Dequeue);
    }

    /// A signal reached the worker: USR1, USR2 or HUP sent to it, or to the
    /// master with the signal in `sig_passthrough` (Net::Server), which
    /// passes it on to every worker (Net::Waiter's `propagate_signal`). As
    /// Net::Waiter's `on_child_sig_usr1`, `on_child_sig_usr2` and
    /// `on_child_sig_hup`.
    ///
    /// Runs on the worker's instance, which is made for it
    /// (`child_init_hook` first) if the worker has none yet. A signal that
    /// arrives while a client is served is delivered once that client's
    /// hooks are done; several of the same signal that arrive before it is
    /// delivered may come as one, as signals do. Needs a host that serves
    /// `netserver:handler@0.1.4`.
    fn signal_hook(signal: Signal) {
        let _ = signal;
        defaults::mark::<Self>(ServerHook::SignalHook);
    }

    /// The server is closing (Net::Server's `pre_server_close_hook`,
    /// Net::Waiter's `on_server_close`), for `reason`: [`CloseReason::Drain`]
    /// (QUIT), [`CloseReason::Stop`] (INT, TERM) or [`CloseReason::Restart`]
    /// (HUP).
    ///
    /// Runs once on the worker's instance as the worker stops accepting,
    /// before its connections finish and before `child_finish_hook`. Not
    /// run when a worker is merely retired (`max_requests`, fewer spare
    /// servers, TTOU). For `Stop` it runs only if the instance is not
    /// serving a client at that moment, and has a second: the worker ends
    /// at once. Needs a host that serves `netserver:handler@0.1.4`.
    fn server_close_hook(reason: CloseReason) {
        let _ = reason;
        defaults::mark::<Self>(ServerHook::ServerCloseHook);
    }

    /// The worker has had no client for `check_for_idle` seconds, and again
    /// every `check_for_idle` seconds while it stays idle (Net::Server's
    /// `idle_loop_hook`, Net::Waiter's `on_prefork_child_idle`).
    ///
    /// Called on one-connection-at-a-time workers (`single`,
    /// `prefork-simple`, `prefork`) with `instance per-worker`, on the
    /// worker's instance once it has one: the host never makes an instance
    /// only to call it, so it first runs after the worker's first client.
    /// Needs a host that serves `netserver:handler@0.1.4`.
    fn idle_hook() {
        defaults::mark::<Self>(ServerHook::IdleHook);
    }
}

/// Makes a [`Handler`] the hooks this component exports.
///
/// Invoke it once, at the top level of the handler's crate (a `cdylib`
/// built for `wasm32-wasip2`), with the handler's type:
///
/// ```no_run
/// struct Echo;
///
/// // Every hook keeps its default: this is Net::Server's echo server.
/// impl netserver_sdk::Handler for Echo {}
///
/// netserver_sdk::export!(Echo);
/// ```
///
/// It exports `netserver:handler/hooks@0.1.5` and
/// `netserver:handler/server-hooks@0.1.5` (the world `server-handler`),
/// each hook calling the handler's, and flushes stdout after every hook.
/// Off `wasm32` it expands to nothing, so the crate still builds and tests
/// natively.
#[macro_export]
macro_rules! export {
    ($handler:ty $(,)?) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            type NetserverSdkAdapter = $crate::__private::Adapter<$handler>;
            $crate::__export_handler_impl!(
                NetserverSdkAdapter with_types_in $crate::__private::bindings
            );
            $crate::__export_server_hooks_impl!(
                NetserverSdkAdapter with_types_in $crate::__private::bindings::server_hooks
            );
        };
    };
}

/// What [`export!`] expands to needs; not part of the API.
#[doc(hidden)]
pub mod __private {
    pub use crate::adapter::Adapter;
    pub use crate::bindings;
    pub use crate::mux::MuxAdapter;
}
