//! The command line, as typed: Net::Server's `--key value` or
//! `--key=value` for every option of [`crate::config::options`], dashes or
//! underscores alike. A single-valued option given twice takes the last
//! value, as in Net::Server; a repeatable one collects them all.
//! [`crate::config`] resolves it with the conf file.

use std::path::PathBuf;

use clap::{Arg, ArgAction, ArgMatches, Command};

use crate::config::options::{self, Kind, OPTIONS};
use crate::config::{Setting, Source};

/// What the command line said.
#[derive(Debug, Default)]
pub struct Cli {
    /// Every option given, in Net::Server's names, in the order given per
    /// option.
    pub settings: Vec<Setting>,
    /// `--conf-file`.
    pub conf_file: Option<PathBuf>,
    /// `--check`: validate, print the resolved configuration, exit.
    pub check: bool,
}

const ABOUT: &str = "Net::Server rebuilt in Rust: serves a WebAssembly handler on TCP ports.

Without --module the built-in echo handler is served (Net::Server's default
process_request). Every option may also be given in a conf file
(--conf-file); see docs/configuration.md.";

/// The clap command, built from the option table.
pub fn command() -> Command {
    let mut command = Command::new("netserver-host")
        .version(env!("CARGO_PKG_VERSION"))
        .about(ABOUT)
        // `--log-level 1 --log-level 3` is 3, as in Net::Server, where
        // clap would refuse the second.
        .args_override_self(true)
        .arg(
            Arg::new("conf_file")
                .long("conf-file")
                .alias("conf_file")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help(
                    "a conf file: TOML when it ends in .toml, else Net::Server's `key value` lines",
                ),
        )
        .arg(
            Arg::new("check")
                .long("check")
                .action(ArgAction::SetTrue)
                .help("validate everything, print the resolved configuration as JSON, exit"),
        );
    for spec in OPTIONS {
        let dashed = spec.name.replace('_', "-");
        let mut arg = Arg::new(spec.name)
            .long(dashed.clone())
            .value_name(value_name(spec.kind))
            .allow_hyphen_values(true)
            .help(spec.doc)
            .action(if spec.repeat {
                ArgAction::Append
            } else {
                ArgAction::Set
            });
        if dashed != spec.name {
            arg = arg.alias(spec.name);
        }
        let spelled = options::net_server_name(spec.name);
        if spelled != spec.name {
            // Net::Server's spelling: `--SSL_cert_file`.
            arg = arg.alias(spelled.into_owned());
        }
        if matches!(spec.kind, Kind::Bool) {
            // `--background` alone means `--background 1`, also when
            // another option follows (a 0 or 1 never starts with `-`).
            arg = arg
                .num_args(0..=1)
                .default_missing_value("1")
                .allow_hyphen_values(false);
        }
        command = command.arg(arg);
    }
    command
}

fn value_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Int(..) => "N",
        Kind::Seconds => "SECONDS",
        Kind::Size | Kind::Bytes(..) => "SIZE",
        Kind::Bool => "0|1",
        Kind::Choice(_) => "WORD",
        Kind::Regex => "REGEX",
        Kind::Cidr => "CIDR",
        Kind::User => "USER",
        Kind::Group => "GROUP",
        Kind::Mode => "MODE",
        Kind::Port => "SPEC",
        Kind::KeyValue => "KEY=VALUE",
        Kind::Text => "VALUE",
        Kind::ReadableFile | Kind::FileToWrite | Kind::LogTarget => "PATH",
        Kind::Directory => "DIR",
        Kind::DirGrant => "HOST[:GUEST][:ro|rw]",
        Kind::EnvGrant => "KEY[=VALUE]",
        Kind::Signals => "SIGNALS",
        Kind::VerifyMode => "0|1|3",
        Kind::TlsVersion => "VERSION",
        Kind::CipherList => "SUITES",
        Kind::Alpn => "PROTOCOLS",
        Kind::AccessFormat => "FORMAT",
        Kind::ServerName => "NAME",
        Kind::Address => "[ADDRESS:]PORT",
    }
}

impl Cli {
    /// Parses the process's arguments. `--help` and `--version` print and
    /// exit 0; a usage error becomes one line (see [`one_line`]).
    pub fn parse_args() -> anyhow::Result<Self> {
        Self::try_parse_from(std::env::args_os()).map_err(|err| {
            if !err.use_stderr() {
                err.exit();
            }
            anyhow::anyhow!(one_line(&err.render().to_string()))
        })
    }

    /// Parses `args` (the first is the program name).
    pub fn try_parse_from<I, T>(args: I) -> Result<Self, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let matches = command().try_get_matches_from(args)?;
        Ok(Self::from_matches(&matches))
    }

    fn from_matches(matches: &ArgMatches) -> Self {
        let settings = OPTIONS
            .iter()
            .flat_map(|spec| {
                let values = matches.get_many::<String>(spec.name).into_iter().flatten();
                values.map(|value| Setting {
                    key: spec.name.to_owned(),
                    value: value.clone(),
                    source: Source::CommandLine,
                })
            })
            .collect();
        Self {
            settings,
            conf_file: matches.get_one::<PathBuf>("conf_file").cloned(),
            check: matches.get_flag("check"),
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

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("netserver-host").chain(args.iter().copied()))
    }

    fn given(cli: &Cli) -> Vec<(&str, &str)> {
        cli.settings
            .iter()
            .map(|s| (s.key.as_str(), s.value.as_str()))
            .collect()
    }

    #[test]
    fn usage_errors_fold_into_one_line() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["--log-levle", "3"],
                "unexpected argument '--log-levle' found; a similar argument exists: '--log-level'",
            ),
            (&["--bogus"], "unexpected argument '--bogus' found"),
            (
                &["--module"],
                "a value is required for '--module <PATH>' but none was supplied",
            ),
        ];
        for (args, want) in cases {
            let err = parse(args).unwrap_err();
            assert_eq!(one_line(&err.render().to_string()), *want, "{args:?}");
        }
    }

    /// Arguments, and the settings they give.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);

    #[test]
    fn forms_of_options() {
        let cases: &[Case] = &[
            (&["--log-level", "3"], &[("log_level", "3")]),
            (&["--log_level=4"], &[("log_level", "4")]),
            (&["--idle-timeout", "-1"], &[("idle_timeout", "-1")]),
            (
                &["--port", "1", "--port=2"],
                &[("port", "1"), ("port", "2")],
            ),
            (&["--background"], &[("background", "1")]),
            (&["--background", "0"], &[("background", "0")]),
            (
                &["--cidr_allow", "10.0.0.0/8"],
                &[("cidr_allow", "10.0.0.0/8")],
            ),
        ];
        for (args, want) in cases {
            assert_eq!(given(&parse(args).unwrap()), *want, "{args:?}");
        }
        let cli = parse(&["--conf_file", "x.conf", "--check"]).unwrap();
        assert_eq!(cli.conf_file, Some(PathBuf::from("x.conf")));
        assert!(cli.check);
    }

    /// A single-valued option given again: the last one wins, as in
    /// Net::Server's process_args (clap refused it: "cannot be used
    /// multiple times"); repeatable options collect every value.
    #[test]
    fn repeated_options() {
        let cases: &[Case] = &[
            (
                &["--log-level", "1", "--log-level", "3"],
                &[("log_level", "3")],
            ),
            (
                &["--log-level", "1", "--log_level=2", "--log-level=4"],
                &[("log_level", "4")],
            ),
            (
                &["--background", "--background", "0"],
                &[("background", "0")],
            ),
            (
                &["--background", "0", "--background"],
                &[("background", "1")],
            ),
            // A flag before another option (clap took `--port` for its value).
            (
                &["--background", "--port", "1"],
                &[("background", "1"), ("port", "1")],
            ),
            (
                &["--idle-timeout", "-1", "--idle-timeout", "5"],
                &[("idle_timeout", "5")],
            ),
            (
                &[
                    "--server-type",
                    "fork",
                    "--port",
                    "1",
                    "--server_type",
                    "prefork",
                ],
                &[("port", "1"), ("server_type", "prefork")],
            ),
            // Repeatable: every value, in order.
            (
                &["--port", "1", "--port=2", "--port", "3"],
                &[("port", "1"), ("port", "2"), ("port", "3")],
            ),
            (
                &["--allow", "a", "--allow", "b"],
                &[("allow", "a"), ("allow", "b")],
            ),
            (&["--ipv", "4", "--ipv", "6"], &[("ipv", "4"), ("ipv", "6")]),
        ];
        for (args, want) in cases {
            let cli = parse(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            assert_eq!(given(&cli), *want, "{args:?}");
        }
        let cli = parse(&[
            "--conf-file",
            "a.conf",
            "--conf_file",
            "b.conf",
            "--check",
            "--check",
        ])
        .unwrap();
        assert_eq!(cli.conf_file, Some(PathBuf::from("b.conf")));
        assert!(cli.check);
    }
}
