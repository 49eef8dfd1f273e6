//! `prefork`: each child tells the master whether it is busy or idle, as
//! Net::Server's children do, so that the master keeps enough idle children
//! (`min_spare_servers`) and not too many (`max_spare_servers`).
//!
//! The messages go through a pipe, as in Net::Server. A message is a few
//! bytes, written in one `write`: POSIX keeps writes of up to `PIPE_BUF`
//! bytes whole, so the pipe holds whole messages in the order they were
//! sent, and its 64 KiB take thousands of them before a write would fail. (A
//! datagram socket, as used before, queues only `net.unix.max_dgram_qlen`
//! messages, 10 by default: at thousands of connections a second some
//! were dropped, and the master took a busy child for an idle one or the
//! other way round until that child's next message.)

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd};

use anyhow::{Context, Result};
use nix::fcntl::OFlag;
use nix::unistd::Pid;

/// Bytes per message: the child's pid (little-endian) and `B` or `I`.
const MESSAGE_LEN: usize = 5;

/// Makes the pipe: the master's end, and the end every child writes to.
/// Both ends are non-blocking (a child never waits for the master) and
/// closed on `exec`.
pub fn channel() -> Result<(StatusReader, File)> {
    let (read, write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).context("status pipe")?;
    Ok((StatusReader(File::from(read)), File::from(write)))
}

/// The master's end of the pipe.
#[derive(Debug)]
pub struct StatusReader(File);

impl StatusReader {
    /// What to `poll` for messages.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }

    /// Calls `each(pid, busy)` for every message waiting, oldest first.
    pub fn drain(&self, mut each: impl FnMut(Pid, bool)) {
        // A whole number of messages: the pipe holds whole ones, so a read
        // into this buffer returns whole ones too.
        let mut buf = [0u8; MESSAGE_LEN * 256];
        while let Ok(n @ 1..) = (&self.0).read(&mut buf) {
            for message in buf[..n].chunks_exact(MESSAGE_LEN) {
                let (pid, busy) = decode(message);
                each(pid, busy);
            }
        }
    }
}

/// A child's end of the pipe.
#[derive(Debug)]
pub struct StatusWriter {
    pipe: File,
    pid: u32,
}

impl StatusWriter {
    /// The end `pipe` (from [`channel`]), in the child that writes to it.
    pub fn new(pipe: File) -> Self {
        Self {
            pipe,
            pid: std::process::id(),
        }
    }

    /// Tells the master this child is busy (serving a client) or idle. A
    /// message that does not fit (the master has stopped reading) is
    /// dropped, never waited for.
    pub fn say(&self, busy: bool) {
        let _ = (&self.pipe).write(&encode(self.pid, busy));
    }
}

fn encode(pid: u32, busy: bool) -> [u8; MESSAGE_LEN] {
    let mut message = [0u8; MESSAGE_LEN];
    message[..4].copy_from_slice(&pid.to_le_bytes());
    message[4] = if busy { b'B' } else { b'I' };
    message
}

fn decode(message: &[u8]) -> (Pid, bool) {
    let pid = i32::from_le_bytes(message[..4].try_into().unwrap_or_default());
    (Pid::from_raw(pid), message[4] == b'B')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let cases = [(1, true), (1, false), (4_194_304, true), (65_535, false)];
        for (pid, busy) in cases {
            let message = encode(pid, busy);
            assert_eq!(decode(&message), (Pid::from_raw(pid as i32), busy));
        }
        assert_eq!(&encode(0x0102_0304, true), b"\x04\x03\x02\x01B");
        assert_eq!(&encode(7, false), b"\x07\0\0\0I");
    }

    #[test]
    fn a_burst_of_messages_arrives_whole_and_in_order() {
        // Far more than a datagram socket's queue of 10, from several
        // writers, read in pieces that do not match the buffer's size.
        let (reader, write) = channel().unwrap();
        let writers: Vec<StatusWriter> = (0..3)
            .map(|_| StatusWriter::new(write.try_clone().unwrap()))
            .collect();
        let mut sent = Vec::new();
        for i in 0..1000 {
            let busy = i % 3 != 0;
            writers[i % 3].say(busy);
            sent.push((Pid::from_raw(writers[i % 3].pid as i32), busy));
            if i % 400 == 399 {
                let mut got = Vec::new();
                reader.drain(|pid, busy| got.push((pid, busy)));
                assert_eq!(got, sent);
                sent.clear();
            }
        }
        let mut got = Vec::new();
        reader.drain(|pid, busy| got.push((pid, busy)));
        assert_eq!(got, sent);
        let mut more = 0;
        reader.drain(|_, _| more += 1);
        assert_eq!(more, 0, "drained twice");
    }
}
