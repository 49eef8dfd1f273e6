//! Guest stdio: stdin and stdout are the client connection, stderr is the
//! log.
//!
//! The guest's stdin and stdout read and write the client's
//! [`ClientSocket`] directly — no extra task and no pipe between them. They
//! reach it through a [`GuestIo`] slot that the host attaches the client to
//! for the connection hooks and detaches afterwards: a detached stdin reads
//! end of file and a detached stdout discards what is written, so nothing
//! of one client can reach another through an instance's stdio.
//!
//! | module | concern |
//! | --- | --- |
//! | this one | the slot between an instance's stdio and its client |
//! | `streams` | stdin and stdout as WASI streams over the slot |
//! | `stderr` | stderr as log lines |

mod stderr;
mod streams;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

pub use stderr::GuestStderr;
pub use streams::{GuestStdin, GuestStdout};

use crate::transport::ClientSocket;

/// The slot through which an instance's stdin and stdout reach the client.
/// Cloned into the instance's WASI context; the host attaches and detaches
/// the client.
#[derive(Clone, Debug, Default)]
pub struct GuestIo(Arc<GuestIoInner>);

#[derive(Debug, Default)]
struct GuestIoInner {
    client: Mutex<Option<Arc<ClientSocket>>>,
    /// How often the guest waited for the client: each wait ends a burst of
    /// computation (see [`crate::wasm::sandbox`]).
    waits: AtomicU64,
    /// How many of those waits really waited (the client had sent nothing,
    /// or had no room): a guest whose reads and writes all complete at once
    /// keeps computing, for CPU fairness (see `crate::fairness`).
    pends: AtomicU64,
}

impl GuestIo {
    /// Connects stdin and stdout to `client`.
    pub fn attach(&self, client: Arc<ClientSocket>) {
        *self.slot() = Some(client);
    }

    /// Disconnects stdin and stdout: stdin reads end of file, stdout discards.
    pub fn detach(&self) {
        *self.slot() = None;
    }

    /// How often the guest waited for the client so far.
    pub fn waits(&self) -> u64 {
        self.0.waits.load(Ordering::Relaxed)
    }

    /// How often a wait for the client really waited so far.
    pub fn pends(&self) -> u64 {
        self.0.pends.load(Ordering::Relaxed)
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<ClientSocket>>> {
        // An `Option<Arc<_>>` cannot be left invalid by a panic.
        self.0.client.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn client(&self) -> Option<Arc<ClientSocket>> {
        self.slot().clone()
    }

    fn note_wait(&self) {
        self.0.waits.fetch_add(1, Ordering::Relaxed);
    }

    /// Awaits `io`, a wait for the client, counting it in [`Self::waits`]
    /// and, if it is not ready at once, in [`Self::pends`].
    async fn wait_for<T>(&self, io: impl std::future::Future<Output = T>) -> T {
        self.note_wait();
        let mut io = std::pin::pin!(io);
        let mut first = true;
        std::future::poll_fn(|cx| {
            let poll = io.as_mut().poll(cx);
            if std::mem::take(&mut first) && poll.is_pending() {
                self.0.pends.fetch_add(1, Ordering::Relaxed);
            }
            poll
        })
        .await
    }

    /// The guest's stdin.
    pub fn stdin(&self) -> GuestStdin {
        GuestStdin(self.clone())
    }

    /// The guest's stdout.
    pub fn stdout(&self) -> GuestStdout {
        GuestStdout(self.clone())
    }
}
