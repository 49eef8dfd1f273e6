//! A chat server after Net::Server's `examples/samplechat.pl`, as a mux
//! handler: one instance per worker holds every client, and what one says
//! everyone hears.
//!
//! ```sh
//! cargo build --manifest-path guest-examples/Cargo.toml --target wasm32-wasip2 --release
//! netserver-host --module target/guests/wasm32-wasip2/release/chat.wasm --port 127.0.0.1:2000
//! nc 127.0.0.1 2000    # in one terminal
//! nc 127.0.0.1 2000    # in another
//! ```
//!
//! ```text
//! Welcome, you are number 1 to connect. You are guest1.
//! JOIN: guest2 from 127.0.0.1
//! /nick alice
//! NICK: guest1 is now alice
//! hello
//! [alice] hello
//! /who
//! WHO: 2 connected: alice, guest2
//! LEFT: guest2
//! ```
//!
//! The protocol. A client's lines end at `\n` (one `\r` before it is
//! dropped); every line the server sends ends `\r\n`.
//!
//! - A client that connects is told `Welcome, you are number N to connect.
//!   You are guestN.` (N counts this instance's connections from 1); the
//!   others are told `JOIN: guestN from PEERADDR` (unless property
//!   `join_notices` is `0`: a benchmark that opens 10,000 connections
//!   would otherwise send 50 million of them).
//! - A line that does not start with `/` goes to everyone, the sender
//!   included, as `[NICK] TEXT`. Empty lines are ignored.
//! - `/nick NAME` renames the sender (1 to 16 of `A-Z a-z 0-9 _ -`, not
//!   another client's): everyone is told `NICK: OLD is now NAME`, or the
//!   sender `ERROR: nick NAME is taken` or `ERROR: a nick is 1 to 16
//!   letters, digits, _ or -`.
//! - `/who` tells the sender `WHO: K connected: NICK, NICK, …` (in the order
//!   they connected).
//! - `/quit` tells the sender `BYE` and closes its connection.
//! - Any other `/cmd`: `ERROR: unknown command /cmd`.
//! - Every departure (`/quit`, the client closing, an idle kick, a line too
//!   long) is announced to the others as `LEFT: NICK`.
//! - A client silent for property `idle_kick` seconds (fractional allowed;
//!   default 300, `0` turns the kick off) is told `If you don't want to talk
//!   then you should leave. *BYE*` and closed.
//! - A line longer than 4096 bytes (without its line end; whether its `\n`
//!   has arrived or not): `ERROR: line too long`, and the sender is
//!   closed. A partial line waits for the rest.
//! - When the server closes (QUIT, TERM or INT, HUP), every client is told
//!   `*** server closing (REASON)` (`drain`, `stop` or `restart`) and
//!   closed.
//!
//! Logged at notice: `eof from NICK (B bytes left)` when a client stops
//! sending (after its last line without `\n`, if any, was said), and
//! `NICK left` when its connection closed.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::time::Duration;

use netserver_sdk::mux::{Connection, broadcast, connections, lines, lines_at_eof};
use netserver_sdk::{ClientInfo, CloseReason, MuxHandler, log, property};

/// The longest line a client may send, without its line end.
const MAX_LINE: usize = 4096;

/// The idle kick when property `idle_kick` is not set, in seconds.
const DEFAULT_IDLE_KICK: f64 = 300.0;

/// The longest nick.
const MAX_NICK: usize = 16;

/// A client in the chat.
struct Client {
    /// What the others call it.
    nick: String,
    /// Its number: the order it connected in, from 1.
    number: u64,
}

/// The chat: everything this instance knows.
#[derive(Default)]
struct Chat {
    /// The clients, by connection.
    clients: BTreeMap<Connection, Client>,
    /// The connections this instance has served.
    connected: u64,
    /// How long a silent client stays (`None`: for ever), once read from
    /// property `idle_kick`.
    idle_kick: Option<Option<Duration>>,
    /// Whether others are told of a client that joins: property
    /// `join_notices` (`0`: no), read once.
    joins: Option<bool>,
}

thread_local! {
    /// The chat of this instance.
    static CHAT: RefCell<Chat> = RefCell::new(Chat::default());
}

impl Chat {
    /// Whether others are told of a client that joins.
    fn join_notices(&mut self) -> bool {
        *self
            .joins
            .get_or_insert_with(|| property("join_notices").as_deref() != Some("0"))
    }

    /// The nick of the client on `conn`, or `?` for an unknown connection.
    fn nick(&self, conn: Connection) -> String {
        self.clients
            .get(&conn)
            .map_or_else(|| "?".to_owned(), |c| c.nick.clone())
    }

    /// Writes `line` and `\r\n` to every client.
    fn tell_all(&self, line: &[u8]) {
        let message = [line, b"\r\n"].concat();
        for &conn in self.clients.keys() {
            conn.write(&message);
        }
    }

    /// Says `line`, from the client on `conn`. Returns whether the client
    /// is still there to say more (not after `/quit`).
    fn said(&mut self, conn: Connection, line: &[u8]) -> bool {
        if line.is_empty() {
            return true;
        }
        if !line.starts_with(b"/") {
            let nick = self.nick(conn);
            self.tell_all(&[b"[", nick.as_bytes(), b"] ", line].concat());
            return true;
        }
        let line = String::from_utf8_lossy(line);
        let (command, arg) = line.split_once(' ').unwrap_or((&line, ""));
        match command {
            "/nick" => self.rename(conn, arg),
            "/who" => {
                let mut clients: Vec<&Client> = self.clients.values().collect();
                clients.sort_by_key(|c| c.number);
                let nicks: Vec<&str> = clients.iter().map(|c| c.nick.as_str()).collect();
                tell(
                    conn,
                    &format!("WHO: {} connected: {}", nicks.len(), nicks.join(", ")),
                );
            }
            "/quit" => {
                tell(conn, "BYE");
                conn.close();
                return false;
            }
            _ => tell(conn, &format!("ERROR: unknown command {command}")),
        }
        true
    }

    /// `/nick NAME` from the client on `conn`.
    fn rename(&mut self, conn: Connection, name: &str) {
        if !valid_nick(name) {
            tell(conn, "ERROR: a nick is 1 to 16 letters, digits, _ or -");
            return;
        }
        if self
            .clients
            .iter()
            .any(|(&other, c)| other != conn && c.nick == name)
        {
            tell(conn, &format!("ERROR: nick {name} is taken"));
            return;
        }
        let Some(client) = self.clients.get_mut(&conn) else {
            return;
        };
        let old = std::mem::replace(&mut client.nick, name.to_owned());
        self.tell_all(format!("NICK: {old} is now {name}").as_bytes());
    }

    /// (Re)starts the idle kick of the client on `conn`.
    fn wake(&mut self, conn: Connection) {
        if let Some(kick) = *self.idle_kick.get_or_insert_with(idle_kick) {
            conn.set_timeout(Some(kick));
        }
    }
}

/// Whether `name` may be a nick: 1 to 16 of `A-Z a-z 0-9 _ -`.
fn valid_nick(name: &str) -> bool {
    (1..=MAX_NICK).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Writes `line` and `\r\n` to `conn`.
fn tell(conn: Connection, line: &str) {
    conn.write(format!("{line}\r\n"));
}

/// The idle kick from property `idle_kick`: seconds, `0` for none.
fn idle_kick() -> Option<Duration> {
    let seconds = match property("idle_kick") {
        None => DEFAULT_IDLE_KICK,
        Some(value) => match value.trim().parse::<f64>() {
            Ok(seconds) if seconds.is_finite() && seconds >= 0.0 => seconds,
            _ => {
                log::warning(format_args!(
                    "idle_kick {value:?} is not a number of seconds: using {DEFAULT_IDLE_KICK}"
                ));
                DEFAULT_IDLE_KICK
            }
        },
    };
    (seconds > 0.0).then(|| Duration::from_secs_f64(seconds))
}

/// The handler. Its state is in [`CHAT`].
struct ChatServer;

impl MuxHandler for ChatServer {
    fn child_init_hook() {
        let kick = idle_kick();
        CHAT.with_borrow_mut(|chat| chat.idle_kick = Some(kick));
    }

    fn mux_connection(conn: Connection, client: &ClientInfo) -> bool {
        CHAT.with_borrow_mut(|chat| {
            chat.connected += 1;
            let number = chat.connected;
            let nick = format!("guest{number}");
            log::info(format_args!(
                "{nick} (number {number}) connected from {}",
                client.peer_addr
            ));
            tell(
                conn,
                &format!("Welcome, you are number {number} to connect. You are {nick}."),
            );
            if chat.join_notices() {
                chat.tell_all(format!("JOIN: {nick} from {}", client.peer_addr).as_bytes());
            }
            chat.clients.insert(conn, Client { nick, number });
            chat.wake(conn);
        });
        true
    }

    fn mux_input(conn: Connection, data: &[u8]) -> usize {
        CHAT.with_borrow_mut(|chat| {
            chat.wake(conn);
            let mut lines = lines(data);
            for line in lines.by_ref() {
                if line.len() > MAX_LINE {
                    return too_long(conn, data);
                }
                if !chat.said(conn, line) {
                    return lines.consumed();
                }
            }
            // Its `\r` may be there already, its `\n` not yet.
            let rest = lines.rest();
            if rest.strip_suffix(b"\r").unwrap_or(rest).len() > MAX_LINE {
                return too_long(conn, data);
            }
            lines.consumed()
        })
    }

    fn mux_eof(conn: Connection, data: &[u8]) {
        CHAT.with_borrow_mut(|chat| {
            for line in lines_at_eof(data) {
                if !chat.said(conn, line) {
                    break;
                }
            }
            log::notice(format_args!(
                "eof from {} ({} bytes left)",
                chat.nick(conn),
                data.len()
            ));
        });
    }

    fn mux_close(conn: Connection) {
        CHAT.with_borrow_mut(|chat| {
            if let Some(client) = chat.clients.remove(&conn) {
                chat.tell_all(format!("LEFT: {}", client.nick).as_bytes());
                log::notice(format_args!("{} left", client.nick));
            }
        });
    }

    fn mux_timeout(conn: Option<Connection>) {
        if let Some(conn) = conn {
            tell(
                conn,
                "If you don't want to talk then you should leave. *BYE*",
            );
            conn.close();
        }
    }

    // The server closes: say so to everyone and close them (their
    // `mux_close` follows, as for any departure).
    fn server_close_hook(reason: CloseReason) {
        broadcast(format!("*** server closing ({reason})\r\n"));
        for conn in connections() {
            conn.close();
        }
    }
}

/// Tells `conn` its line is too long and closes it; consumes all of `data`.
fn too_long(conn: Connection, data: &[u8]) -> usize {
    tell(conn, "ERROR: line too long");
    conn.close();
    data.len()
}

netserver_sdk::export_mux!(ChatServer);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nicks() {
        for ok in ["a", "alice", "Bob_2", "x-y", "abcdefghijklmnop"] {
            assert!(valid_nick(ok), "{ok}");
        }
        for bad in ["", "abcdefghijklmnopq", "a b", "é", "a.b", "a/b"] {
            assert!(!valid_nick(bad), "{bad}");
        }
    }
}
