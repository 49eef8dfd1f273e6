//! The command line, as typed. [`crate::config`] turns it into a checked
//! [`crate::config::Config`].

use std::path::PathBuf;

use clap::Parser;

use crate::config::{Setting, Source};

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
    pub module: Option<String>,

    /// A port to listen on: `PORT`, `HOST:PORT`, `[V6]:PORT`, `*:PORT`,
    /// optionally followed by `/tcp` and `/IPv4`, `/IPv6` or `/IPv*`.
    /// Repeatable. Port 0 asks the kernel for a free port. Default: 20203.
    #[arg(long, value_name = "SPEC", allow_hyphen_values = true)]
    pub port: Vec<String>,

    /// The host to bind when a port spec names none: an address, a name, or
    /// `*` for every address. Default: `*`.
    #[arg(long, value_name = "HOST", allow_hyphen_values = true)]
    pub host: Option<String>,

    /// The IP versions to bind when a port spec names none: `4`, `6` or `*`.
    /// Default: `*`.
    #[arg(long, value_name = "4|6|*", allow_hyphen_values = true)]
    pub ipv: Option<String>,

    /// Net::Server's log level: 0 err, 1 warning, 2 notice, 3 info, 4 debug.
    /// Default: 2.
    #[arg(
        long,
        value_name = "0..4",
        allow_hyphen_values = true,
        alias = "log_level"
    )]
    pub log_level: Option<String>,

    /// Seconds a connection may stay idle (no byte read or written) before it
    /// is closed. Default: 30.
    #[arg(
        long,
        value_name = "SECONDS",
        allow_hyphen_values = true,
        alias = "idle_timeout"
    )]
    pub idle_timeout: Option<String>,

    /// Seconds of CPU one hook call may use before it is interrupted.
    /// Default: 10.
    #[arg(
        long,
        value_name = "SECONDS",
        allow_hyphen_values = true,
        alias = "cpu_limit"
    )]
    pub cpu_limit: Option<String>,

    /// Linear memory one instance may use: bytes, or with a `K`, `M` or `G`
    /// suffix. Default: 64M.
    #[arg(
        long,
        value_name = "SIZE",
        allow_hyphen_values = true,
        alias = "max_memory"
    )]
    pub max_memory: Option<String>,

    /// Instances (and so connections) served at once; further clients wait in
    /// the listen backlog. Default: 1000.
    #[arg(
        long,
        value_name = "N",
        allow_hyphen_values = true,
        alias = "max_instances"
    )]
    pub max_instances: Option<String>,

    /// A property handed to the handler, `KEY=VALUE`. Repeatable.
    #[arg(long, value_name = "KEY=VALUE")]
    pub property: Vec<String>,

    /// The service name reported to the handler and in the log. Default: the
    /// module's file name without extension, or `echo`.
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,

    /// A conf file: TOML when it ends in `.toml`, otherwise Net::Server's
    /// `key value` lines. The command line wins over it.
    #[arg(long, value_name = "FILE", alias = "conf_file")]
    pub conf_file: Option<PathBuf>,

    /// Validate the options and the module, print the resolved configuration
    /// as JSON and exit without binding.
    #[arg(long)]
    pub check: bool,
}

impl Cli {
    /// The options given on the command line, in Net::Server's names.
    pub fn settings(&self) -> Vec<Setting> {
        let single = [
            ("module", &self.module),
            ("host", &self.host),
            ("ipv", &self.ipv),
            ("log_level", &self.log_level),
            ("idle_timeout", &self.idle_timeout),
            ("cpu_limit", &self.cpu_limit),
            ("max_memory", &self.max_memory),
            ("max_instances", &self.max_instances),
            ("service", &self.service),
        ];
        let repeated = [("port", &self.port), ("property", &self.property)];
        let given = single
            .into_iter()
            .filter_map(|(key, value)| value.as_ref().map(|v| (key, v)))
            .chain(
                repeated
                    .into_iter()
                    .flat_map(|(key, values)| values.iter().map(move |v| (key, v))),
            );
        given
            .map(|(key, value)| Setting {
                key: key.to_owned(),
                value: value.clone(),
                source: Source::CommandLine,
            })
            .collect()
    }

    /// Parses the process's arguments. `--help` and `--version` print and
    /// exit 0; a usage error becomes one line (see [`one_line`]).
    pub fn parse_args() -> anyhow::Result<Self> {
        match Self::try_parse() {
            Ok(cli) => Ok(cli),
            Err(err) if !err.use_stderr() => err.exit(),
            Err(err) => Err(anyhow::anyhow!(one_line(&err.render().to_string()))),
        }
    }
}

/// Folds clap's multi-line usage error into one line: the error itself and
/// its tips, without the usage block.
pub fn one_line(rendered: &str) -> String {
    let mut parts = Vec::new();
    for line in rendered.lines().map(str::trim) {
        if let Some(error) = line.strip_prefix("error: ") {
            parts.push(error.to_owned());
        } else if let Some(tip) = line.strip_prefix("tip: ") {
            parts.push(tip.to_owned());
        }
    }
    parts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_errors_fold_into_one_line() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--prot", "80"],
                "unexpected argument '--prot' found; a similar argument exists: '--port'",
            ),
            (&["--bogus"], "unexpected argument '--bogus' found"),
            (
                &["--module"],
                "a value is required for '--module <PATH>' but none was supplied",
            ),
        ];
        for (args, want) in cases {
            let argv = std::iter::once("netserver-host").chain(args.iter().copied());
            let err = Cli::try_parse_from(argv).unwrap_err();
            assert_eq!(one_line(&err.render().to_string()), *want, "{args:?}");
        }
    }

    #[test]
    fn negative_values_reach_validation() {
        let cli = Cli::try_parse_from(["netserver-host", "--idle-timeout", "-1", "--port", "-5"])
            .unwrap();
        assert_eq!(cli.idle_timeout.as_deref(), Some("-1"));
        assert_eq!(cli.port, ["-5"]);
    }
}
