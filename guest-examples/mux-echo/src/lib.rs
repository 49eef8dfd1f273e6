//! Net::Server's echo server as a mux handler (Net::Server::Multiplex):
//! the same bytes as the `echo` handler, from one instance per worker that
//! holds every connection.
//!
//! Every line the client sends is answered with `You said '<line>'\r\n`
//! (the line without its `\n` and one `\r` before it); after answering a
//! line that contains `quit` the connection is closed. A last line without
//! `\n` is answered when the client stops sending. Only complete lines are
//! consumed: a partial one waits for the rest.
//!
//! ```sh
//! cargo build --target wasm32-wasip2 --release
//! netserver-host --module target/wasm32-wasip2/release/mux_echo.wasm --log-level 3
//! printf 'hello\r\nquit\r\n' | nc 127.0.0.1 20203
//! ```

use netserver_sdk::MuxHandler;
use netserver_sdk::mux::{Connection, lines, lines_at_eof};

/// The handler. It carries no value and keeps no state.
struct MuxEcho;

impl MuxHandler for MuxEcho {
    /// Answers the complete lines in `data`, up to one containing `quit`.
    fn mux_input(conn: Connection, data: &[u8]) -> usize {
        let mut lines = lines(data);
        for line in lines.by_ref() {
            if !answer(conn, line) {
                break;
            }
        }
        lines.consumed()
    }

    /// Answers what is left, a last line without `\n` included.
    fn mux_eof(conn: Connection, data: &[u8]) {
        for line in lines_at_eof(data) {
            if !answer(conn, line) {
                break;
            }
        }
    }
}

/// Writes `You said '<line>'\r\n` to `conn`; closes it when `line`
/// contains `quit`. Returns whether more lines are to be answered.
fn answer(conn: Connection, line: &[u8]) -> bool {
    let mut reply = Vec::with_capacity(line.len() + 13);
    reply.extend_from_slice(b"You said '");
    reply.extend_from_slice(line);
    reply.extend_from_slice(b"'\r\n");
    if !conn.write(reply) {
        // Closed or closing: nothing more reaches the client.
        return false;
    }
    if line.windows(4).any(|w| w == b"quit") {
        conn.close();
        return false;
    }
    true
}

netserver_sdk::export_mux!(MuxEcho);
