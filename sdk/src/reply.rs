//! A writer to the client that sends each flush in one host call.
//!
//! [`std::io::stdout`] reaches the host through WASI's three-step write
//! (`check-write`, `write`, `blocking-flush`): three calls into the host
//! for every reply. [`Reply`] buffers what is written and hands it over
//! with one `blocking-write-and-flush` per 4 KiB (the most one call may
//! carry) when it is flushed or dropped — the same bytes on the same
//! connection, for a third of the calls.

use std::cell::OnceCell;
use std::io::{self, Write};

use wasip2::cli::stdout::get_stdout;
use wasip2::io::streams::{OutputStream, StreamError};

/// The most one `blocking-write-and-flush` may carry (WASI's limit).
const MAX_CALL: usize = 4096;

/// Buffered bytes beyond which a write sends the buffer first.
const BUFFER: usize = 8 * 1024;

thread_local! {
    /// The stdout stream, asked of the host once per instance. The host
    /// points it at whichever client is being served.
    static STDOUT: OnceCell<OutputStream> = const { OnceCell::new() };
}

/// Stdout — the client connection — with one host call per flush.
///
/// Use it instead of [`std::io::stdout`] where replies are small and many:
/// a line protocol answering request after request. Write the reply, then
/// [`flush`](Write::flush) before reading the next request; dropping it
/// flushes too (errors are then ignored: flush first to see them).
///
/// It has a buffer of its own, separate from std's: within one hook, write
/// through one of the two, or flush the first before writing to the other,
/// so the client gets the bytes in order.
///
/// ```no_run
/// use std::io::{BufRead, Write, stdin};
///
/// fn process_request() -> std::io::Result<()> {
///     let mut out = netserver_sdk::reply();
///     for line in stdin().lock().lines() {
///         writeln!(out, "{}", line?.to_uppercase())?;
///         out.flush()?;
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Reply {
    buffer: Vec<u8>,
    /// Where the bytes go: [`send`], but for the unit tests.
    sink: fn(&[u8]) -> io::Result<()>,
}

/// A [`Reply`]: the client connection, written with one host call per flush.
pub fn reply() -> Reply {
    Reply {
        buffer: Vec::new(),
        sink: send,
    }
}

impl Write for Reply {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.buffer.len() + data.len() > BUFFER {
            self.flush()?;
        }
        if data.len() >= BUFFER {
            (self.sink)(data)?;
        } else {
            self.buffer.extend_from_slice(data);
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buffer.is_empty() {
            return Ok(());
        }
        let sent = (self.sink)(&self.buffer);
        self.buffer.clear();
        sent
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Ends the reply datagram being written, when the request is a datagram
/// (see [`ClientInfo::is_datagram`](crate::ClientInfo::is_datagram)): what
/// was written since the last one goes to the client as one datagram now.
/// Without it, all a hook writes is one datagram (cut at 65,507 bytes),
/// sent when the hook returns. On a stream it only waits until the host has
/// taken what was written. Flush a [`Reply`] first.
pub fn end_datagram() -> io::Result<()> {
    STDOUT.with(|cell| {
        cell.get_or_init(get_stdout)
            .blocking_flush()
            .map_err(to_io_error)
    })
}

/// Writes `data` to stdout and waits until the host has taken it.
fn send(data: &[u8]) -> io::Result<()> {
    STDOUT.with(|cell| {
        let stream = cell.get_or_init(get_stdout);
        data.chunks(MAX_CALL)
            .try_for_each(|chunk| stream.blocking_write_and_flush(chunk))
            .map_err(to_io_error)
    })
}

/// The `io::Error` for a failed stream write: a closed stream is the client
/// gone (`BrokenPipe`), anything else the host's description.
fn to_io_error(error: StreamError) -> io::Error {
    match error {
        StreamError::Closed => io::ErrorKind::BrokenPipe.into(),
        StreamError::LastOperationFailed(error) => io::Error::other(error.to_debug_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    thread_local! {
        /// What each call of the sink carried.
        static CALLS: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    fn record(data: &[u8]) -> io::Result<()> {
        CALLS.with(|calls| calls.borrow_mut().push(data.to_vec()));
        Ok(())
    }

    fn fail(_: &[u8]) -> io::Result<()> {
        Err(io::ErrorKind::BrokenPipe.into())
    }

    /// The sizes of the calls `script` makes on a fresh `Reply`.
    fn calls(script: impl FnOnce(&mut Reply)) -> Vec<usize> {
        CALLS.with(|calls| calls.borrow_mut().clear());
        let mut reply = Reply {
            buffer: Vec::new(),
            sink: record,
        };
        script(&mut reply);
        drop(reply);
        CALLS.with(|calls| calls.borrow().iter().map(Vec::len).collect())
    }

    #[test]
    fn table() {
        let big = vec![b'x'; BUFFER];
        #[allow(clippy::type_complexity)]
        let cases: &[(&str, &dyn Fn(&mut Reply), &[usize])] = &[
            ("nothing written, nothing sent", &|_| {}, &[]),
            (
                "flush of nothing sends nothing",
                &|r| r.flush().unwrap(),
                &[],
            ),
            (
                "three writes, one flush: one call",
                &|r| {
                    r.write_all(b"You said '").unwrap();
                    r.write_all(b"hello").unwrap();
                    r.write_all(b"'\r\n").unwrap();
                    r.flush().unwrap();
                },
                &[18],
            ),
            ("drop flushes", &|r| r.write_all(b"bye").unwrap(), &[3]),
            (
                "each flush is a call",
                &|r| {
                    r.write_all(b"a").unwrap();
                    r.flush().unwrap();
                    r.write_all(b"bc").unwrap();
                    r.flush().unwrap();
                },
                &[1, 2],
            ),
            (
                "a full buffer is sent before more is taken",
                &|r| {
                    r.write_all(&big[..BUFFER - 1]).unwrap();
                    r.write_all(b"yz").unwrap();
                },
                &[BUFFER - 1, 2],
            ),
            (
                "a large write goes straight through",
                &|r| {
                    r.write_all(b"head").unwrap();
                    r.write_all(&big).unwrap();
                    r.write_all(b"tail").unwrap();
                },
                &[4, BUFFER, 4],
            ),
        ];
        for (what, script, want) in cases {
            assert_eq!(calls(script), *want, "{what}");
        }
    }

    #[test]
    fn bytes_arrive_in_order() {
        calls(|r| {
            r.write_all(b"one ").unwrap();
            r.write_all(&vec![b'2'; BUFFER + 1]).unwrap();
            r.write_all(b" three").unwrap();
        });
        let sent: Vec<u8> = CALLS.with(|calls| calls.borrow().concat());
        let mut want = b"one ".to_vec();
        want.extend(vec![b'2'; BUFFER + 1]);
        want.extend(b" three");
        assert_eq!(sent, want);
    }

    #[test]
    fn errors_are_returned_and_the_buffer_emptied() {
        let mut reply = Reply {
            buffer: Vec::new(),
            sink: fail,
        };
        reply.write_all(b"lost").unwrap();
        let error = reply.flush().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
        assert!(reply.buffer.is_empty());
        reply.flush().unwrap();
    }
}
