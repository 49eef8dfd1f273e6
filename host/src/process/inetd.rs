//! The `inetd` personality: the connection is already open on stdin and
//! stdout (inetd, xinetd, systemd `Accept=yes`); serve it and exit.

use std::os::fd::AsFd;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::worker;
use crate::config::Config;
use crate::service::Service;
use crate::transport::StdStream;
use crate::wasm::Handler;

/// Serves the connection on stdin with the first service's handler.
pub fn run(config: &Config, handlers: Vec<Handler>) -> Result<i32> {
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("inetd: no stdin")?;
    let stream = match StdStream::from_fd(stdin) {
        Ok(stream) => stream,
        Err(why) if why == "is not a socket" => bail!(
            "server_type inetd: stdin is not a socket (run me from inetd, xinetd or systemd Accept=yes)"
        ),
        Err(why) => bail!("server_type inetd: stdin {why}"),
    };
    let (Some(config), Some(handler)) = (config.services.first(), handlers.into_iter().next())
    else {
        bail!("inetd: no service to serve");
    };
    let service = Service::new(config, handler, Vec::new())?;
    Ok(worker::serve_one(Arc::new(service), stream))
}
