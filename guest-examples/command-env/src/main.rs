//! An inetd-style handler: a plain WASI command (`wasi:cli/run`) that uses
//! no SDK. The host runs it once per connection with stdin and stdout
//! connected to the client and the client's addresses in the environment,
//! under ucspi-tcp's names (`UDP…` for a datagram).

use std::env;
use std::io::{self, BufRead, Write};

fn main() -> io::Result<()> {
    let mut out = io::stdout().lock();
    let vars = if env::var("PROTO").as_deref() == Ok("UDP") {
        [
            "UDPREMOTEIP",
            "UDPREMOTEPORT",
            "UDPLOCALIP",
            "UDPLOCALPORT",
            "PROTO",
        ]
    } else {
        [
            "TCPREMOTEIP",
            "TCPREMOTEPORT",
            "TCPLOCALIP",
            "TCPLOCALPORT",
            "PROTO",
        ]
    };
    let fields: Vec<String> = vars
        .iter()
        .map(|name| format!("{name}={}", env::var(name).as_deref().unwrap_or("-")))
        .collect();
    write!(out, "{}\r\n", fields.join(" "))?;
    if env::var("PROTO").as_deref() == Ok("SSL") {
        // A TLS client: what the handshake settled (mod_ssl's names).
        let tls: Vec<String> = [
            "SSLREMOTEIP",
            "SSL_PROTOCOL",
            "SSL_SERVER_NAME",
            "SSL_CLIENT_VERIFY",
            "SSL_CLIENT_S_DN",
        ]
        .iter()
        .map(|name| format!("{name}={}", env::var(name).as_deref().unwrap_or("-")))
        .collect();
        write!(out, "{}\r\n", tls.join(" "))?;
    }
    out.flush()?;
    for line in io::stdin().lock().lines() {
        match line?.as_str() {
            "panic" => panic!("command guest panicked"),
            "quit" => break,
            line => write!(out, "echo: {line}\r\n")?,
        }
        out.flush()?;
    }
    Ok(())
}
