//! The datagram path: the guest's stdin reads the request datagram, then
//! end of file; what it writes to stdout goes back to the sender as
//! datagrams. A reply datagram is cut when a hook returns, when the guest
//! calls `flush` or `blocking-flush` on stdout (the SDK's
//! `end_datagram()`; not `blocking-write-and-flush`, which libcs use for
//! every write), and when it reaches [`MAX_DATAGRAM`] bytes; an empty one
//! is never sent. A reply over the service's amplification cap is dropped
//! (see [`ReplyCap`]).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::ReadBuf;
use wasmtime_wasi::p2::{StreamError, StreamResult};

use super::Counters;
use crate::client::Peer;
use crate::transport::datagram::{
    HEADER_BYTES, MAX_DATAGRAM, Received, ReplyCap, ReplyTo, RoomWait,
};

/// Cut reply datagrams waiting for the socket before the guest must wait.
const QUEUED_MAX: usize = 16;

/// One request datagram and its reply.
#[derive(Debug)]
pub(super) struct Dgram {
    request: Mutex<Bytes>,
    request_len: usize,
    peer: Peer,
    reply_to: Option<ReplyTo>,
    cap: Option<Arc<ReplyCap>>,
    out: Mutex<Reply>,
}

#[derive(Debug, Default)]
struct Reply {
    /// The datagram being written.
    building: BytesMut,
    /// Datagrams cut, not sent yet.
    queued: VecDeque<Bytes>,
    /// Wire bytes the reply may still take, when capped.
    budget: Option<u64>,
    /// Set once the cap dropped a datagram: the rest is dropped too.
    capped: bool,
    /// Set when no reply may go (a denied request, or a sender with no
    /// address): what is written is dropped.
    discard: bool,
    /// Why sending failed, which ends the reply.
    failed: Option<io::ErrorKind>,
    /// The wait for room to send, once a send would have blocked.
    room: RoomWait,
}

impl Dgram {
    pub(super) fn new(received: Received, cap: Option<Arc<ReplyCap>>) -> Self {
        let reply_to = received.reply_to();
        let budget = cap.as_ref().and_then(|c| c.budget(received.data.len()));
        Self {
            request_len: received.data.len(),
            request: Mutex::new(received.data),
            peer: received.peer,
            out: Mutex::new(Reply {
                budget,
                discard: reply_to.is_none(),
                ..Reply::default()
            }),
            reply_to,
            cap,
        }
    }

    fn reply(&self) -> MutexGuard<'_, Reply> {
        // Every change to `Reply` is whole: a panic cannot leave it invalid.
        self.out.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Drops whatever the guest writes from now on.
    pub(super) fn discard(&self) {
        let mut out = self.reply();
        out.discard = true;
        out.building.clear();
        out.queued.clear();
    }

    /// The unread part of the request, at most `size` bytes; end of file
    /// once it was read.
    pub(super) fn read(&self, size: usize, counters: &Counters) -> StreamResult<Bytes> {
        let mut request = self.request.lock().unwrap_or_else(|p| p.into_inner());
        if request.is_empty() {
            return Err(StreamError::Closed);
        }
        let n = size.min(request.len());
        counters.received(n);
        Ok(request.split_to(n))
    }

    pub(super) fn poll_read(
        &self,
        buf: &mut ReadBuf<'_>,
        counters: &Counters,
    ) -> Poll<io::Result<()>> {
        let mut request = self.request.lock().unwrap_or_else(|p| p.into_inner());
        let n = buf.remaining().min(request.len());
        buf.put_slice(&request[..n]);
        request.advance(n);
        counters.received(n);
        Poll::Ready(Ok(()))
    }

    /// How much the guest may write now: nothing while cut datagrams wait
    /// for the socket (it then waits through `drain`).
    pub(super) fn check_write(&self, counters: &Counters) -> StreamResult<usize> {
        let mut out = self.reply();
        self.send_queued(&mut out, counters);
        if out.queued.len() >= QUEUED_MAX {
            return Ok(0);
        }
        Ok(MAX_DATAGRAM - out.building.len())
    }

    /// Adds `bytes` to the datagram being written, cutting it at
    /// [`MAX_DATAGRAM`].
    pub(super) fn write(&self, mut bytes: Bytes, counters: &Counters) -> StreamResult<()> {
        let mut out = self.reply();
        if out.discard || out.capped {
            return Ok(());
        }
        while !bytes.is_empty() {
            let room = MAX_DATAGRAM - out.building.len();
            let part = bytes.split_to(room.min(bytes.len()));
            out.building.extend_from_slice(&part);
            if out.building.len() == MAX_DATAGRAM {
                self.cut(&mut out);
            }
        }
        self.send_queued(&mut out, counters);
        Ok(())
    }

    /// Ends the datagram being written (a flush).
    pub(super) fn flush(&self, counters: &Counters) {
        let mut out = self.reply();
        self.cut(&mut out);
        self.send_queued(&mut out, counters);
    }

    /// Queues the datagram being written, if it holds anything and the
    /// cap lets it go.
    fn cut(&self, out: &mut Reply) {
        if out.building.is_empty() || out.discard {
            out.building.clear();
            return;
        }
        let datagram = out.building.split().freeze();
        if out.capped {
            return;
        }
        let wire = datagram.len() as u64 + HEADER_BYTES;
        if let Some(budget) = &mut out.budget {
            if wire > *budget {
                out.capped = true;
                if let Some(cap) = &self.cap {
                    cap.drop_reply(&self.peer, self.request_len, wire, Instant::now());
                }
                return;
            }
            *budget -= wire;
        }
        out.queued.push_back(datagram);
    }

    /// Sends the queued datagrams the socket takes now.
    fn send_queued(&self, out: &mut Reply, counters: &Counters) {
        let Some(to) = &self.reply_to else {
            out.queued.clear();
            return;
        };
        while let Some(datagram) = out.queued.front() {
            match to.try_send(datagram) {
                Ok(n) => {
                    counters.sent(n);
                    out.queued.pop_front();
                    out.room.sent();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    // The sender's socket is gone or not ours to write to
                    // (a unix path removed, its mode): nothing more can
                    // reach it. The guest writes on, to no one; the
                    // connection's log line says why.
                    out.failed = Some(e.kind());
                    out.discard = true;
                    out.queued.clear();
                    return;
                }
            }
        }
    }

    /// Polls until every queued datagram was sent or sending failed.
    pub(super) fn poll_drained(
        &self,
        cx: &mut Context<'_>,
        counters: &Counters,
    ) -> Poll<io::Result<()>> {
        loop {
            let mut out = self.reply();
            self.send_queued(&mut out, counters);
            if let Some(kind) = out.failed {
                return Poll::Ready(Err(kind.into()));
            }
            if out.queued.is_empty() {
                return Poll::Ready(Ok(()));
            }
            // Queued datagrams wait only with a sender to go to (else
            // `send_queued` dropped them).
            std::task::ready!(out.room.poll_retry(cx));
        }
    }

    /// Ends the reply: the datagram being written is cut and everything
    /// sent.
    pub(super) async fn close(&self, counters: &Counters) -> io::Result<()> {
        self.flush(counters);
        std::future::poll_fn(|cx| self.poll_drained(cx, counters)).await
    }

    /// Whether sending failed.
    pub(super) fn failed(&self) -> Option<io::ErrorKind> {
        self.reply().failed
    }

    /// Whether the amplification cap dropped some of the reply.
    pub(super) fn capped(&self) -> bool {
        self.reply().capped
    }
}
