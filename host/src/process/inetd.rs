//! The `inetd` personality: the connection is already open on stdin and
//! stdout (inetd, xinetd, systemd `Accept=yes`: a TCP or unix stream
//! socket), or stdin and stdout are pipes (a client with no address);
//! serve it and exit.

use std::os::fd::AsFd;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::worker;
use crate::config::Config;
use crate::config::port::Proto;
use crate::service::{Route, Service};
use crate::tls::Tls;
use crate::transport::{StdIncoming, StdStream};
use crate::wasm::Handler;

/// Serves the connection on stdin with the first service's handler; over
/// TLS when that service's ports are `ssl` (`--proto ssl`).
pub fn run(config: &Config, handlers: Vec<Handler>, tls: Vec<Option<Arc<Tls>>>) -> Result<i32> {
    let stdin = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("inetd: no stdin")?;
    let incoming = match StdStream::from_fd(stdin.try_clone()?) {
        Ok(stream) => StdIncoming::Stream(stream),
        Err(why) if why == "is not a socket" => {
            let stdout = std::io::stdout()
                .as_fd()
                .try_clone_to_owned()
                .context("inetd: no stdout")?;
            if !is_pipe(&stdin) || !is_pipe(&stdout) {
                bail!(
                    "server_type inetd: stdin and stdout are neither a connected socket nor pipes (run me from inetd, xinetd, systemd Accept=yes, or a pipe)"
                );
            }
            StdIncoming::Pipes {
                input: stdin,
                output: stdout,
            }
        }
        Err(why) => bail!("server_type inetd: stdin {why}"),
    };
    let (Some(config), Some(handler), Some(tls)) = (
        config.services.first(),
        handlers.into_iter().next(),
        tls.into_iter().next(),
    ) else {
        bail!("inetd: no service to serve");
    };
    let over_tls = tls.is_some() && config.listeners.iter().all(|l| l.proto == Proto::Ssl);
    let service = Service::new(config, handler, tls, Vec::new())?;
    let route = Route::One(Arc::new(service));
    Ok(worker::serve_one(route, incoming, over_tls))
}

/// Whether `fd` is a pipe or FIFO.
fn is_pipe(fd: &std::os::fd::OwnedFd) -> bool {
    use nix::libc::{S_IFIFO, S_IFMT};
    nix::sys::stat::fstat(fd).is_ok_and(|st| st.st_mode & S_IFMT == S_IFIFO)
}
