//! The tag on every line logged while a client is served:
//! `conn{service=echo peer=127.0.0.1:41000}: `.
//!
//! A `tracing` span would do this too, but a span is made, formatted and
//! entered for every connection whether or not a line is written — about
//! 8 % of the host's CPU time per connection with the built-in echo
//! (`bench/cpu-per-request connect 8`). A [`ConnTag`] costs a pointer
//! swap per poll and is formatted only into a line that is written.

use std::cell::RefCell;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use crate::client::Peer;

/// Which client a connection's log lines are about.
#[derive(Debug)]
pub struct ConnTag {
    service: Arc<str>,
    peer: Peer,
}

impl ConnTag {
    /// The tag of `peer`'s connection to `service`.
    pub fn new(service: Arc<str>, peer: Peer) -> Arc<Self> {
        Arc::new(Self { service, peer })
    }
}

impl fmt::Display for ConnTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "conn{{service={} peer={}}}", self.service, self.peer)
    }
}

thread_local! {
    /// The tag of the connection whose future this thread is polling.
    static CURRENT: RefCell<Option<Arc<ConnTag>>> = const { RefCell::new(None) };
}

/// Runs `future` with every line it logs (on the polling thread, including
/// its guest's host calls) tagged with `tag`.
pub fn tagged<F: Future>(tag: Arc<ConnTag>, future: F) -> Tagged<F> {
    Tagged { tag, future }
}

pin_project_lite::pin_project! {
    /// A future whose log lines carry a connection's tag (see [`tagged`]).
    /// A struct rather than an `async fn`: one of those would hold the
    /// future twice (its argument, and the pinned copy it polls), and an
    /// idle connection's task is mostly this future.
    pub struct Tagged<F> {
        tag: Arc<ConnTag>,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Tagged<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _current = Current::enter(this.tag);
        this.future.poll(cx)
    }
}

/// Writes the current connection's tag and `: `, if a connection is being
/// served on this thread.
pub fn write_current(out: &mut impl fmt::Write) -> fmt::Result {
    CURRENT.with_borrow(|tag| match tag {
        Some(tag) => write!(out, "{tag}: "),
        None => Ok(()),
    })
}

/// Sets this thread's tag for one poll and puts the previous one back,
/// also when the poll panics.
struct Current {
    previous: Option<Arc<ConnTag>>,
}

impl Current {
    fn enter(tag: &Arc<ConnTag>) -> Self {
        let previous = CURRENT.replace(Some(tag.clone()));
        Self { previous }
    }
}

impl Drop for Current {
    fn drop(&mut self) {
        CURRENT.set(self.previous.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current() -> String {
        let mut out = String::new();
        write_current(&mut out).unwrap();
        out
    }

    #[test]
    fn tags_only_while_polling_and_nests() {
        let outer = ConnTag::new("echo".into(), Peer::ip("127.0.0.1:41000".parse().unwrap()));
        let inner = ConnTag::new("chat".into(), Peer::ip("[::1]:7".parse().unwrap()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(current(), "");
        let seen = runtime.block_on(tagged(outer, async {
            let during = current();
            let nested = tagged(inner, async {
                tokio::task::yield_now().await;
                current()
            })
            .await;
            (during, nested, current())
        }));
        assert_eq!(current(), "", "no tag outside the future");
        let echo = "conn{service=echo peer=127.0.0.1:41000}: ";
        assert_eq!(seen.0, echo);
        assert_eq!(seen.1, "conn{service=chat peer=[::1]:7}: ");
        assert_eq!(seen.2, echo, "back to the outer tag after the inner");
    }

    #[test]
    fn a_panicking_poll_leaves_no_tag() {
        let tag = ConnTag::new("echo".into(), Peer::ip("127.0.0.1:1".parse().unwrap()));
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            runtime.block_on(tagged(tag, async { panic!("guest bug") }))
        }));
        assert!(result.is_err());
        assert_eq!(current(), "");
    }
}
