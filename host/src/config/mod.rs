//! Configuration: the command line resolved once into a checked [`Config`].
//!
//! Every value is validated here, before anything is bound or compiled; an
//! error names the option and the value at fault.

pub mod port;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::cli::Cli;
pub use port::{Ipv, Listener, PortDefaults};

/// Net::Server's default port.
pub const DEFAULT_PORT: &str = "20203";

/// The resolved configuration of one `netserver-host`.
#[derive(Clone, Debug, Serialize)]
pub struct Config {
    /// The handler's file; `None` serves the built-in echo handler.
    pub module: Option<PathBuf>,
    /// The service name given to the handler and used in the log.
    pub service: String,
    /// The sockets to listen on, as specified (before name resolution).
    pub listeners: Vec<Listener>,
    /// Net::Server's log level, 0 (err) to 4 (debug).
    pub log_level: u8,
    /// How long a connection may move no byte before it is closed.
    #[serde(serialize_with = "as_secs")]
    pub idle_timeout: Duration,
    /// CPU time one hook call may use before it is interrupted.
    #[serde(serialize_with = "as_secs")]
    pub cpu_limit: Duration,
    /// Bytes of linear memory one instance may use.
    pub max_memory: u64,
    /// Instances (connections) served at once.
    pub max_instances: u32,
    /// Properties handed to the handler.
    pub properties: BTreeMap<String, String>,
    /// Validate, print and exit (`--check`).
    #[serde(skip)]
    pub check: bool,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Config {
    /// Resolves and validates the command line.
    pub fn resolve(cli: Cli) -> Result<Self> {
        let ipv = match cli.ipv.as_deref() {
            None => Ipv::Any,
            Some(v) => Ipv::parse(v).ok_or_else(|| bad("ipv", v, "must be 4, 6 or *"))?,
        };
        let defaults = PortDefaults {
            host: cli.host.clone().unwrap_or_else(|| "*".to_owned()),
            ipv,
        };
        let specs = if cli.port.is_empty() {
            vec![DEFAULT_PORT.to_owned()]
        } else {
            cli.port.clone()
        };
        let mut listeners = Vec::new();
        for spec in &specs {
            let listener = port::parse(spec, &defaults).map_err(|why| bad("port", spec, &why))?;
            if !listeners.contains(&listener) {
                listeners.push(listener);
            }
        }
        let service = match (&cli.service, &cli.module) {
            (Some(name), _) => name.clone(),
            (None, Some(path)) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "handler".to_owned()),
            (None, None) => "echo".to_owned(),
        };
        if service.is_empty() {
            bail!(bad("service", "", "must not be empty"));
        }
        Ok(Self {
            module: cli.module,
            service,
            listeners,
            log_level: parse_num(cli.log_level.as_deref(), "log_level", 2, 0..=4)?,
            idle_timeout: parse_secs(cli.idle_timeout.as_deref(), "idle_timeout", 30.0)?,
            cpu_limit: parse_secs(cli.cpu_limit.as_deref(), "cpu_limit", 10.0)?,
            max_memory: parse_size(cli.max_memory.as_deref(), "max_memory", 64 << 20)?,
            max_instances: parse_num(
                cli.max_instances.as_deref(),
                "max_instances",
                1000,
                1..=100_000,
            )?,
            properties: parse_properties(&cli.property)?,
            check: cli.check,
        })
    }
}

/// The error for option `key` with `value`: one line naming both.
fn bad(key: &str, value: &str, why: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "--{}: invalid value '{value}': {why}",
        key.replace('_', "-")
    )
}

fn parse_num<T>(
    value: Option<&str>,
    key: &str,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(text) = value else {
        return Ok(default);
    };
    match text.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(bad(
            key,
            text,
            &format!(
                "must be a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

fn parse_secs(value: Option<&str>, key: &str, default: f64) -> Result<Duration> {
    let Some(text) = value else {
        return Ok(Duration::from_secs_f64(default));
    };
    match text.trim().parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 31_536_000.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(bad(
            key,
            text,
            "must be a number of seconds above 0 (at most a year)",
        )),
    }
}

/// Parses a size in bytes with an optional `K`, `M` or `G` suffix (powers of
/// 1024, any case, an optional trailing `B` or `iB`).
fn parse_size(value: Option<&str>, key: &str, default: u64) -> Result<u64> {
    let Some(text) = value else {
        return Ok(default);
    };
    let size = size_bytes(text).filter(|&n| (64 << 10..=4 << 30).contains(&n));
    size.ok_or_else(|| bad(key, text, "must be a size from 64K to 4G, e.g. 64M"))
}

fn size_bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let unitless = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, shift) = match unitless.chars().last()? {
        'k' => (&unitless[..unitless.len() - 1], 10),
        'm' => (&unitless[..unitless.len() - 1], 20),
        'g' => (&unitless[..unitless.len() - 1], 30),
        _ => (unitless, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

fn parse_properties(pairs: &[String]) -> Result<BTreeMap<String, String>> {
    let mut properties = BTreeMap::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                properties.insert(key.trim().to_owned(), value.to_owned());
            }
            _ => bail!(bad("property", pair, "must be KEY=VALUE")),
        }
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("65536", Some(65536)),
            ("64K", Some(64 << 10)),
            ("64m", Some(64 << 20)),
            ("1G", Some(1 << 30)),
            ("1GiB", Some(1 << 30)),
            ("2mb", Some(2 << 20)),
            ("", None),
            ("M", None),
            ("-1M", None),
            ("1.5M", None),
            ("99999999999999999999G", None),
        ];
        for &(text, want) in cases {
            assert_eq!(size_bytes(text), want, "{text}");
        }
    }

    #[test]
    fn option_errors_name_key_and_value() {
        let cases: [(Result<()>, &str); 4] = [
            (
                parse_num(Some("7"), "log_level", 2u8, 0..=4).map(drop),
                "--log-level: invalid value '7': must be a whole number from 0 to 4",
            ),
            (
                parse_secs(Some("0"), "idle_timeout", 30.0).map(drop),
                "--idle-timeout: invalid value '0': must be a number of seconds above 0 (at most a year)",
            ),
            (
                parse_size(Some("1K"), "max_memory", 0).map(drop),
                "--max-memory: invalid value '1K': must be a size from 64K to 4G, e.g. 64M",
            ),
            (
                parse_properties(&["novalue".to_owned()]).map(drop),
                "--property: invalid value 'novalue': must be KEY=VALUE",
            ),
        ];
        for (got, message) in cases {
            assert_eq!(got.unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn properties_keep_last_value() {
        let got = parse_properties(&["a=1".into(), "b=x=y".into(), "a=2".into()]).unwrap();
        assert_eq!(got.get("a").map(String::as_str), Some("2"));
        assert_eq!(got.get("b").map(String::as_str), Some("x=y"));
    }
}
