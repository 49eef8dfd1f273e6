//! Net::Server's default echo server, as a netserver handler.
//!
//! Every line the client sends is answered with `You said '<line>'`; a line
//! containing `quit` is answered and then ends the connection. A datagram
//! is answered with `You said "<datagram>"`.
//!
//! ```sh
//! cargo build --target wasm32-wasip2 --release
//! netserver-host --module target/wasm32-wasip2/release/echo.wasm --log-level 3
//! printf 'hello\r\nquit\r\n' | nc 127.0.0.1 20203
//! ```

use std::io::stdin;

use netserver_sdk::{Error, Handler, Level, client, log};

/// The handler. It carries no value: the hooks are associated functions.
struct Echo;

// Implement only the hooks you need: the others keep the SDK's defaults
// (which do what Net::Server's do).
impl Handler for Echo {
    /// Runs when a client connects, before `process_request`: log who it is
    /// (asking the host who the client is only when the line is written).
    fn post_accept_hook() {
        if !log::enabled(Level::Info) {
            return;
        }
        if let Some(client) = client() {
            log::info(format_args!(
                "echo serves {}:{} on {}:{}",
                client.peer_addr, client.peer_port, client.local_addr, client.local_port
            ));
        }
    }

    /// Serves the client. Stdin and stdout are the connection, as STDIN and
    /// STDOUT are in Net::Server; `reply()` is stdout written with one host
    /// call per reply. A datagram (UDP, unix datagram) is answered as
    /// Net::Server's default answers one: `You said "DATA"`. This is what
    /// the default `process_request` does; it is spelled out here to show
    /// where a protocol goes.
    fn process_request() -> Result<(), Error> {
        if netserver_sdk::is_datagram() {
            netserver_sdk::echo::answer_datagram(stdin().lock(), netserver_sdk::reply())?;
        } else {
            netserver_sdk::echo::serve(stdin().lock(), netserver_sdk::reply())?;
        }
        Ok(())
    }
}

// Exports the hooks of the component: once per crate.
netserver_sdk::export!(Echo);
