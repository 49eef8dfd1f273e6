//! The command line, as typed. [`crate::config`] turns it into a checked
//! [`crate::config::Config`].

use std::path::PathBuf;

use clap::Parser;

/// Net::Server rebuilt in Rust: serves a WebAssembly handler on TCP ports.
///
/// Without `--module` the built-in echo handler is served (Net::Server's
/// default `process_request`).
#[derive(Debug, Parser)]
#[command(name = "netserver-host", version, about, long_about = None)]
pub struct Cli {
    /// The handler: a component of the `netserver:handler/handler` world, or a
    /// WASI command (`wasi:cli/run`) served inetd-style. Default: built-in echo.
    #[arg(long, value_name = "PATH")]
    pub module: Option<PathBuf>,

    /// A port to listen on: `PORT`, `HOST:PORT`, `[V6]:PORT`, `*:PORT`,
    /// optionally followed by `/tcp` and `/IPv4`, `/IPv6` or `/IPv*`.
    /// Repeatable. Port 0 asks the kernel for a free port. Default: 20203.
    #[arg(long, value_name = "SPEC")]
    pub port: Vec<String>,

    /// The host to bind when a port spec names none: an address, a name, or
    /// `*` for every address. Default: `*`.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,

    /// The IP versions to bind when a port spec names none: `4`, `6` or `*`.
    /// Default: `*`.
    #[arg(long, value_name = "4|6|*")]
    pub ipv: Option<String>,

    /// Net::Server's log level: 0 err, 1 warning, 2 notice, 3 info, 4 debug.
    /// Default: 2.
    #[arg(long, value_name = "0..4")]
    pub log_level: Option<String>,

    /// Seconds a connection may stay idle (no byte read or written) before it
    /// is closed. Default: 30.
    #[arg(long, value_name = "SECONDS")]
    pub idle_timeout: Option<String>,

    /// Seconds of CPU one hook call may use before it is interrupted.
    /// Default: 10.
    #[arg(long, value_name = "SECONDS")]
    pub cpu_limit: Option<String>,

    /// Linear memory one instance may use: bytes, or with a `K`, `M` or `G`
    /// suffix. Default: 64M.
    #[arg(long, value_name = "SIZE")]
    pub max_memory: Option<String>,

    /// Instances (and so connections) served at once; further clients wait in
    /// the listen backlog. Default: 1000.
    #[arg(long, value_name = "N")]
    pub max_instances: Option<String>,

    /// A property handed to the handler, `KEY=VALUE`. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub property: Vec<String>,

    /// The service name reported to the handler and in the log. Default: the
    /// module's file name without extension, or `echo`.
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,

    /// Validate the options and the module, print the resolved configuration
    /// as JSON and exit without binding.
    #[arg(long)]
    pub check: bool,
}

impl Cli {
    /// Parses the process's arguments; on a usage error clap prints it and
    /// exits 2.
    pub fn parse_args() -> Self {
        Self::parse()
    }
}
