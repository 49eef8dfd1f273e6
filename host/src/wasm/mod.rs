//! The WebAssembly side: the engine, the WIT bindings, the per-Store state
//! (with the mux world's connections and timers), guest stdio, the sandbox's limits and memory budgets, the epoch ticker, loading handlers and adapting WASI preview-1 modules.

pub mod adapt;
pub mod bindings;
pub mod budget;
pub mod cache;
pub mod engine;
pub mod grants;
pub mod handler;
pub mod hints;
pub mod http;
pub mod http_send;
pub mod log_rate;
pub mod mux;
pub mod sandbox;
pub mod state;
pub mod stdio;
pub mod ticker;

pub use handler::{GuestKind, Handler, Instance, ModuleStamp};
pub use hints::ServerHook;

/// Guests built into the binary.
pub mod embedded {
    /// The echo handler of `guest-examples/echo`, served when no `--module`
    /// is given (Net::Server's default `process_request`).
    pub const ECHO: &[u8] = include_bytes!(env!("GUEST_ECHO"));
}
