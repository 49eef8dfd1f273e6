//! The `inetd` personality: the connection is already open on stdin and
//! stdout (inetd, xinetd, systemd `Accept=yes`); serve it and exit.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use nix::sys::socket::{getsockopt, sockopt};

use crate::config::Config;
use crate::server;
use crate::wasm::Handler;

/// Serves the connection on stdin with the first service's handler.
pub fn run(config: &Config, handlers: Vec<Handler>) -> Result<i32> {
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("inetd: no stdin")?;
    let stream = connection_on(stdin)?;
    let (Some(service), Some(handler)) = (config.services.first(), handlers.into_iter().next())
    else {
        bail!("inetd: no service to serve");
    };
    Ok(server::serve_one(
        Arc::new(handler),
        stream,
        service.idle_timeout,
    ))
}

/// The TCP connection on `fd`, or why it is not one.
fn connection_on(fd: OwnedFd) -> Result<std::net::TcpStream> {
    if getsockopt(&fd, sockopt::SockType).is_err() {
        bail!(
            "server_type inetd: stdin is not a socket (run me from inetd, xinetd or systemd Accept=yes)"
        );
    }
    let stream = std::net::TcpStream::from(fd);
    match stream.peer_addr() {
        Ok(_) => Ok(stream),
        Err(_) => bail!("server_type inetd: stdin is not a connected TCP socket"),
    }
}
