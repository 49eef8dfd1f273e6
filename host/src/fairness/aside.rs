//! The threads a throttled service's tasks are set aside on.
//!
//! A worker's runtime threads serve every service's clients. While a
//! service is throttled, its tasks are moved off them, onto a runtime of
//! their own, [`SLOTS`](super::slots_for) threads that ask the kernel for
//! its longest time slice once, when they start (see `slice`). There they
//! take turns as before; meanwhile nothing of theirs is queued on the
//! worker's threads, so a neighbour's task woken by its client never waits
//! behind one of their polls, and the kernel runs a worker thread that
//! wakes before a thread computing a throttled turn. A task set aside comes
//! back to the worker's threads at its first poll after its service is no
//! longer throttled.
//!
//! The runtime is made the first time a task is set aside: a worker whose
//! services are never throttled starts no thread for it.

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Handle, Runtime};
use tokio::task::JoinHandle;

/// What the lane's installation tells: the worker's own runtime, where
/// tasks are spawned whichever runtime spawns them (a throttled accept
/// loop, set aside, spawns its connections there, not beside itself), and
/// how many threads the runtime set aside has (as many as throttled turns
/// may compute at once, see [`super::slots_for`]).
struct Installed {
    main: Handle,
    threads: usize,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// The runtime tasks are set aside on, once made (`None`: it could not be).
static ASIDE: OnceLock<Option<Runtime>> = OnceLock::new();

/// Remembers the worker's runtime, and how many threads may compute
/// throttled turns at once (installed with the lane).
pub(super) fn install(threads: usize, main: Handle) {
    let _ = INSTALLED.set(Installed { main, threads });
}

/// Spawns `task` on the worker's own runtime, wherever the caller runs
/// (on the current runtime where there is no lane).
pub(super) fn spawn_main<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match INSTALLED.get() {
        Some(installed) => installed.main.spawn(task),
        None => tokio::spawn(task),
    }
}

/// Spawns `task` on the runtime set aside, making it if needed; gives the
/// task back when there is none (its threads could not be started: the
/// caller then keeps it on the worker's threads).
pub(super) fn spawn<F>(task: F) -> Result<JoinHandle<F::Output>, F>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let Some(installed) = INSTALLED.get() else {
        // No lane: no service is ever throttled.
        return Err(task);
    };
    match ASIDE.get_or_init(|| start(installed.threads)) {
        Some(runtime) => Ok(runtime.spawn(task)),
        None => Err(task),
    }
}

thread_local! {
    /// Whether this thread is one of those set aside.
    static ASIDE_THREAD: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is one of those set aside (a task polled
/// here is a throttled service's).
pub(super) fn on_aside_thread() -> bool {
    ASIDE_THREAD.get()
}

fn start(threads: usize) -> Option<Runtime> {
    let threads = threads.max(1);
    let built = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .thread_name("netserver-aside")
        .on_thread_start(|| {
            ASIDE_THREAD.set(true);
            crate::slice::this_thread(Some(crate::slice::LONGEST));
        })
        .build();
    match built {
        Ok(runtime) => {
            tracing::debug!(
                "a service is throttled: its tasks are set aside on {threads} thread(s)"
            );
            Some(runtime)
        }
        Err(err) => {
            tracing::warn!(
                "cannot start the threads throttled tasks are set aside on: {err}; they stay on the worker's threads"
            );
            None
        }
    }
}
