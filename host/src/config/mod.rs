//! Configuration: the command line and the conf file resolved once into a
//! checked [`Config`].
//!
//! Every value is validated here, before anything is bound or compiled; an
//! error names where the value was given (`--option`, or `file:line` and
//! the key) and the value at fault.

pub mod options;
pub mod port;
pub mod sources;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::cli::Cli;
pub use port::{Ipv, Listener, Port, PortDefaults, Proto};
pub use sources::{Setting, Source};

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
    /// Every option's effective value and where it came from.
    #[serde(skip)]
    pub options: BTreeMap<String, (serde_json::Value, Source)>,
    /// Validate, print and exit (`--check`).
    #[serde(skip)]
    pub check: bool,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl Config {
    /// Resolves the command line and, with `--conf-file`, the conf file,
    /// and validates every value. The command line wins over the file, the
    /// file over the defaults; a key the command line gives replaces all the
    /// file's values for it, as in Net::Server.
    pub fn resolve(cli: Cli) -> Result<Self> {
        let command_line = cli.settings;
        let file = match &cli.conf_file {
            Some(path) => sources::read_conf_file(path)?,
            None => Vec::new(),
        };
        let values = Values::merge(command_line, file)?;
        Self::from_values(&values, cli.check)
    }

    fn from_values(values: &Values, check: bool) -> Result<Self> {
        let (host, host_ipv) = match values.last("host") {
            None => ("*".to_owned(), None),
            Some(s) => port::split_host_value(&s.value).map_err(|why| bad(s, &why))?,
        };
        let (proto, proto_ipv) = match values.last("proto") {
            None => (Proto::Tcp, None),
            Some(s) => port::split_proto_value(&s.value).map_err(|why| bad(s, &why))?,
        };
        let ipv = match (host_ipv.or(proto_ipv), values.last("ipv")) {
            (Some(ipv), _) => ipv,
            (None, None) => vec![Ipv::Any],
            (None, Some(s)) => {
                port::parse_ipv_list(&s.value).map_err(|_| bad(s, "must be 4, 6 or *"))?
            }
        };
        let defaults = PortDefaults { host, proto, ipv };
        let mut listeners = Vec::new();
        for spec in values.all("port") {
            for listener in
                port::parse_listeners(&spec.value, &defaults).map_err(|why| bad(spec, &why))?
            {
                if !listeners.contains(&listener) {
                    listeners.push(listener);
                }
            }
        }
        if listeners.is_empty() {
            listeners =
                port::parse_listeners(DEFAULT_PORT, &defaults).map_err(anyhow::Error::msg)?;
        }
        let module = values.last("module").map(|s| PathBuf::from(&s.value));
        let service = match (values.last("service"), &module) {
            (Some(s), _) if s.value.is_empty() => return Err(bad(s, "must not be empty")),
            (Some(s), _) => s.value.clone(),
            (None, Some(path)) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "handler".to_owned()),
            (None, None) => "echo".to_owned(),
        };
        let mut options = values.report();
        if let Some((value, _)) = options.get_mut("service") {
            // Derived from the module when not given.
            *value = service.as_str().into();
        }
        Ok(Self {
            module,
            service,
            listeners,
            log_level: parse_num(values.last("log_level"), 2, 0..=4)?,
            idle_timeout: parse_secs(values.last("idle_timeout"), 30.0)?,
            cpu_limit: parse_secs(values.last("cpu_limit"), 10.0)?,
            max_memory: parse_size(values.last("max_memory"), 64 << 20)?,
            max_instances: parse_num(values.last("max_instances"), 1000, 1..=100_000)?,
            properties: parse_properties(values.all("property"))?,
            options,
            check,
        })
    }
}

impl Config {
    /// Logs a warning for each option that was set but does not take effect
    /// yet (see [`options::Status::Planned`]).
    pub fn warn_planned(&self) {
        for (key, (_, source)) in &self.options {
            let planned = options::find(key).is_some_and(|s| s.status == options::Status::Planned);
            if planned && *source != Source::Default {
                tracing::warn!("{source}: option '{key}' is accepted but does not take effect yet");
            }
        }
    }
}

/// Every option's values, from the strongest source that gave it.
struct Values(BTreeMap<String, Vec<Setting>>);

impl Values {
    /// Merges the command line over the file; a key unknown to this host
    /// is an error naming where it was given and the closest known key.
    fn merge(command_line: Vec<Setting>, file: Vec<Setting>) -> Result<Self> {
        let mut from_cli: BTreeMap<String, Vec<Setting>> = BTreeMap::new();
        for setting in command_line {
            from_cli
                .entry(setting.key.clone())
                .or_default()
                .push(setting);
        }
        let mut merged = from_cli.clone();
        for setting in file {
            if options::find(&setting.key).is_none() {
                bail!(unknown_key(&setting));
            }
            if !from_cli.contains_key(&setting.key) {
                merged.entry(setting.key.clone()).or_default().push(setting);
            }
        }
        let values = Self(merged);
        values.check_kinds()?;
        Ok(values)
    }

    /// Checks every value against its option's kind.
    fn check_kinds(&self) -> Result<()> {
        for (key, settings) in &self.0 {
            let Some(spec) = options::find(key) else {
                continue;
            };
            for setting in settings {
                options::check(spec.kind, &setting.value).map_err(|why| bad(setting, &why))?;
            }
        }
        Ok(())
    }

    /// Every option's effective typed value and where it came from, as
    /// `--check` prints them: a repeatable option gives a list.
    fn report(&self) -> BTreeMap<String, (serde_json::Value, Source)> {
        options::OPTIONS
            .iter()
            .map(|spec| {
                let given = self.all(spec.name);
                let typed = |text: &str| options::check(spec.kind, text).unwrap_or_default();
                let value = match (given, spec.default) {
                    ([], None) if spec.repeat => serde_json::Value::Array(Vec::new()),
                    ([], None) => serde_json::Value::Null,
                    ([], Some(default)) if spec.repeat => vec![typed(default)].into(),
                    ([], Some(default)) => typed(default),
                    (all, _) if spec.repeat => all.iter().map(|s| typed(&s.value)).collect(),
                    (all, _) => typed(&all[all.len() - 1].value),
                };
                let source = given.last().map_or(Source::Default, |s| s.source.clone());
                (spec.name.to_owned(), (value, source))
            })
            .collect()
    }

    fn all(&self, key: &str) -> &[Setting] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    fn last(&self, key: &str) -> Option<&Setting> {
        self.all(key).last()
    }
}

fn unknown_key(setting: &Setting) -> anyhow::Error {
    let closest = options::closest(&setting.key)
        .map(|key| format!(" (did you mean '{key}'?)"))
        .unwrap_or_default();
    anyhow::anyhow!(
        "{}: unknown option '{}'{closest}",
        setting.source,
        setting.key
    )
}

/// The error for an invalid value: one line naming where it was given, the
/// option and the value.
fn bad(setting: &Setting, why: &str) -> anyhow::Error {
    let Setting { key, value, source } = setting;
    match source {
        Source::CommandLine | Source::Default => anyhow::anyhow!(
            "--{}: invalid value '{value}': {why}",
            key.replace('_', "-")
        ),
        Source::File { .. } => anyhow::anyhow!("{source}: {key}: invalid value '{value}': {why}"),
    }
}

fn parse_num<T>(
    value: Option<&Setting>,
    default: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T>
where
    T: std::str::FromStr + PartialOrd + std::fmt::Display + Copy,
{
    let Some(setting) = value else {
        return Ok(default);
    };
    match setting.value.trim().parse::<T>() {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(bad(
            setting,
            &format!(
                "must be a whole number from {} to {}",
                range.start(),
                range.end()
            ),
        )),
    }
}

fn parse_secs(value: Option<&Setting>, default: f64) -> Result<Duration> {
    let Some(setting) = value else {
        return Ok(Duration::from_secs_f64(default));
    };
    match setting.value.trim().parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 31_536_000.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(bad(
            setting,
            "must be a number of seconds above 0 (at most a year)",
        )),
    }
}

/// Parses a size in bytes with an optional `K`, `M` or `G` suffix (powers of
/// 1024, any case, an optional trailing `B` or `iB`).
fn parse_size(value: Option<&Setting>, default: u64) -> Result<u64> {
    let Some(setting) = value else {
        return Ok(default);
    };
    let size = options::size_bytes(&setting.value).filter(|&n| (64 << 10..=4 << 30).contains(&n));
    size.ok_or_else(|| bad(setting, "must be a size from 64K to 4G, e.g. 64M"))
}

fn parse_properties(pairs: &[Setting]) -> Result<BTreeMap<String, String>> {
    let mut properties = BTreeMap::new();
    for pair in pairs {
        match pair.value.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                properties.insert(key.trim().to_owned(), value.to_owned());
            }
            _ => bail!(bad(pair, "must be KEY=VALUE")),
        }
    }
    Ok(properties)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(key: &str, value: &str) -> Setting {
        Setting {
            key: key.to_owned(),
            value: value.to_owned(),
            source: Source::CommandLine,
        }
    }

    fn file(key: &str, value: &str, line: usize) -> Setting {
        Setting {
            key: key.to_owned(),
            value: value.to_owned(),
            source: Source::File {
                path: "s.conf".into(),
                line,
            },
        }
    }

    #[test]
    fn command_line_replaces_a_files_values_for_its_keys() {
        let values = Values::merge(
            vec![cli("port", "1"), cli("port", "2")],
            vec![
                file("port", "3", 1),
                file("log_level", "4", 2),
                file("port", "5", 3),
            ],
        )
        .unwrap();
        let ports: Vec<&str> = values
            .all("port")
            .iter()
            .map(|s| s.value.as_str())
            .collect();
        assert_eq!(ports, ["1", "2"]);
        assert_eq!(values.last("log_level").unwrap().value, "4");
        let report = values.report();
        assert_eq!(
            report["log_level"],
            (
                4.into(),
                Source::File {
                    path: "s.conf".into(),
                    line: 2
                }
            )
        );
        assert_eq!(
            report["port"],
            (serde_json::json!(["1", "2"]), Source::CommandLine)
        );
        assert_eq!(report["host"], ("*".into(), Source::Default));
    }

    #[test]
    fn file_errors_name_file_line_key_and_value() {
        let cases = [
            (
                vec![file("log_levle", "3", 7)],
                "s.conf:7: unknown option 'log_levle' (did you mean 'log_level'?)",
            ),
            (vec![file("zzz", "1", 1)], "s.conf:1: unknown option 'zzz'"),
            (
                vec![file("log_level", "9", 3)],
                "s.conf:3: log_level: invalid value '9': must be a whole number from 0 to 4",
            ),
            (
                vec![file("port", "1", 1), file("port", "99999", 2)],
                "s.conf:2: port: invalid value '99999': port 99999 is out of range (0-65535)",
            ),
        ];
        for (settings, want) in cases {
            let err = Values::merge(Vec::new(), settings)
                .and_then(|v| Config::from_values(&v, false))
                .unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn option_errors_name_key_and_value() {
        let cases: [(Result<()>, &str); 4] = [
            (
                parse_num(Some(&cli("log_level", "7")), 2u8, 0..=4).map(drop),
                "--log-level: invalid value '7': must be a whole number from 0 to 4",
            ),
            (
                parse_secs(Some(&cli("idle_timeout", "0")), 30.0).map(drop),
                "--idle-timeout: invalid value '0': must be a number of seconds above 0 (at most a year)",
            ),
            (
                parse_size(Some(&cli("max_memory", "1K")), 0).map(drop),
                "--max-memory: invalid value '1K': must be a size from 64K to 4G, e.g. 64M",
            ),
            (
                parse_properties(&[cli("property", "novalue")]).map(drop),
                "--property: invalid value 'novalue': must be KEY=VALUE",
            ),
        ];
        for (got, message) in cases {
            assert_eq!(got.unwrap_err().to_string(), message);
        }
    }

    #[test]
    fn properties_keep_last_value() {
        let pairs = [
            cli("property", "a=1"),
            cli("property", "b=x=y"),
            cli("property", "a=2"),
        ];
        let got = parse_properties(&pairs).unwrap();
        assert_eq!(got.get("a").map(String::as_str), Some("2"));
        assert_eq!(got.get("b").map(String::as_str), Some("x=y"));
    }
}
