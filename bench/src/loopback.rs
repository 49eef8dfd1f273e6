//! Addresses the harness may talk to: loopback only.

use std::net::SocketAddr;

use anyhow::{Context, bail};

/// Parses `text` as `IP:PORT` and accepts it only when the IP is a loopback
/// address (127.0.0.0/8 or ::1): the harness never talks beyond this host.
///
/// ```
/// use netserver_bench::loopback::parse_loopback;
/// assert!(parse_loopback("127.0.0.1:7").is_ok());
/// assert!(parse_loopback("[::1]:7").is_ok());
/// assert!(parse_loopback("192.0.2.1:7").is_err());
/// ```
pub fn parse_loopback(text: &str) -> anyhow::Result<SocketAddr> {
    let addr: SocketAddr = text
        .parse()
        .with_context(|| format!("{text:?} is not IP:PORT (for example 127.0.0.1:20203)"))?;
    check_loopback(addr)?;
    Ok(addr)
}

/// Fails unless `addr` is a loopback address.
pub fn check_loopback(addr: SocketAddr) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        bail!(
            "{addr} is not a loopback address: the benchmark harness only talks to \
             127.0.0.0/8 or [::1]"
        );
    }
    Ok(())
}
