//! The benchmark harness of netserver (issue 5): a load generator for line
//! protocols (TCP, TLS, unix stream sockets) and UDP, a native tokio echo
//! server (the no-sandbox limit), and the report that `bench/run` writes to
//! `docs/benchmarks.md`.
//!
//! Everything here talks to loopback addresses only.

#![warn(missing_docs)]

pub mod binding;
pub mod chat;
pub mod echo_server;
pub mod loadgen;
pub mod loopback;
pub mod protocol;
pub mod report;
pub mod tls;

/// Builds the tokio runtime the binaries run on: a current-thread runtime
/// for `threads == 1` (the load generator pinned to one core), else a
/// multi-thread runtime with `threads` workers; `None` means one worker per
/// CPU this process may run on.
pub fn runtime(threads: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let threads = threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    if threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()
    }
}
