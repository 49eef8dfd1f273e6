//! The line a native server logs once bound, in Net::Server's words as
//! netserver-host says it, so that scripts read the port or the path the
//! same way from every server.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

/// Writes `line` on stderr, at once.
fn say(line: std::fmt::Arguments<'_>) -> std::io::Result<()> {
    let mut stderr = std::io::stderr().lock();
    writeln!(stderr, "{line}")?;
    stderr.flush()
}

/// `Binding to PROTO port N on host H with IPvX` for a socket bound at
/// `bound` (`proto`: `TCP`, `SSL`, `UDP`).
pub fn ip(proto: &str, bound: SocketAddr) -> std::io::Result<()> {
    let version = if bound.is_ipv4() { 4 } else { 6 };
    say(format_args!(
        "Binding to {proto} port {} on host {} with IPv{version}",
        bound.port(),
        bound.ip()
    ))
}

/// `Binding to UNIX socket file "PATH"`.
pub fn unix(path: &Path) -> std::io::Result<()> {
    say(format_args!(
        "Binding to UNIX socket file \"{}\"",
        path.display()
    ))
}
