//! The worker's hooks and the server's counts, for `instance per-worker`:
//! the instance lives as long as the worker, so its statics count the
//! signals and idle calls the worker got.
//!
//! Each client is first told, in one line,
//!
//! ```text
//! usr1=N usr2=M workers=W busy=B open=O served=S pid=P idle=I
//! ```
//!
//! the USR1 and USR2 signals this worker's instance got, the server's
//! counts (workers, busy workers, this worker's open and served clients,
//! its process id) and how many times `idle_hook` ran; then it gets
//! Net::Server's echo (`You said '...'`; a line containing `quit` ends
//! it). When the server closes it logs `server-info closing: REASON` at
//! notice (`drain`, `stop` or `restart`).
//!
//! ```sh
//! netserver-host --module target/guests/wasm32-wasip2/release/server_info.wasm \
//!     --instance per-worker --port 127.0.0.1:2000
//! kill -USR1 WORKER_PID    # then connect again: usr1=1
//! ```

use std::sync::atomic::{AtomicU32, Ordering::Relaxed};

use netserver_sdk::{CloseReason, Handler, Signal, log, server};

/// The USR1 signals this instance got.
static USR1: AtomicU32 = AtomicU32::new(0);
/// The USR2 signals this instance got.
static USR2: AtomicU32 = AtomicU32::new(0);
/// The times `idle_hook` ran on this instance.
static IDLE: AtomicU32 = AtomicU32::new(0);

/// The handler: its state is in the statics above.
struct ServerInfo;

impl Handler for ServerInfo {
    // Tells the client what this worker knows; `process_request` is left at
    // its default, Net::Server's echo.
    fn post_accept_hook() {
        let c = server::counts();
        print!(
            "usr1={} usr2={} workers={} busy={} open={} served={} pid={} idle={}\r\n",
            USR1.load(Relaxed),
            USR2.load(Relaxed),
            c.workers,
            c.busy_workers,
            c.open,
            c.served,
            c.worker_pid,
            IDLE.load(Relaxed),
        );
    }

    // Between clients, never during one: counts USR1 and USR2; a HUP
    // (the server restarting) is not counted.
    fn signal_hook(signal: Signal) {
        match signal {
            Signal::Usr1 => USR1.fetch_add(1, Relaxed),
            Signal::Usr2 => USR2.fetch_add(1, Relaxed),
            Signal::Hup => return,
        };
    }

    fn server_close_hook(reason: CloseReason) {
        log::notice(format_args!("server-info closing: {reason}"));
    }

    // Runs every `check_for_idle` seconds while the worker has no client,
    // once the worker has an instance (after its first client).
    fn idle_hook() {
        IDLE.fetch_add(1, Relaxed);
    }
}

netserver_sdk::export!(ServerInfo);
