//! Every option's values as given, merged by precedence (command line, conf
//! file, `[[service]]` table), each with where it came from; and the typed
//! reading of them through the option table, which both the resolution and
//! `--check` use.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, bail};

use super::options::{self, Kind, Scope, Spec, Typed};
use super::{Report, ServiceTable, Setting, Source};

/// Every option's values, from the strongest source that gave it.
#[derive(Clone, Debug)]
pub struct Values(BTreeMap<String, Vec<Setting>>);

impl Values {
    /// Merges the command line over the file; a key unknown to this host
    /// is an error naming where it was given and the closest known key.
    pub fn merge(command_line: Vec<Setting>, file: Vec<Setting>) -> Result<Self> {
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

    /// A service's values: the top level's, with each key its table gives
    /// replaced by the table's values — except keys the command line gave,
    /// which win everywhere. Only per-service options belong in a table.
    pub fn for_service(
        &self,
        on_command_line: &BTreeSet<String>,
        table: &ServiceTable,
    ) -> Result<Self> {
        let mut own: BTreeMap<String, Vec<Setting>> = BTreeMap::new();
        for setting in &table.settings {
            match options::find(&setting.key) {
                None => bail!(unknown_key(setting)),
                Some(spec) if spec.scope == Scope::Server => bail!(
                    "{}: {}: applies to the whole server, not to one service: set it at the top level",
                    setting.source,
                    setting.key
                ),
                Some(_) => {}
            }
            if !on_command_line.contains(&setting.key) {
                own.entry(setting.key.clone())
                    .or_default()
                    .push(setting.clone());
            }
        }
        let mut values = self.0.clone();
        values.extend(own);
        let values = Self(values);
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
                options::parse(spec.kind, &setting.value).map_err(|why| bad(setting, &why))?;
            }
        }
        Ok(())
    }

    /// Every option's effective typed value and where it came from, as
    /// `--check` prints them: a repeatable option gives a list.
    pub fn report(&self) -> Report {
        options::OPTIONS
            .iter()
            .map(|spec| {
                let typed = self.typed_all(spec.name);
                let json = |typed: &Typed| typed.to_json();
                let value = if spec.repeat {
                    typed.iter().map(|(t, _)| json(t)).collect()
                } else {
                    typed
                        .last()
                        .map_or(serde_json::Value::Null, |(t, _)| json(t))
                };
                let source = self
                    .last(spec.name)
                    .map_or(Source::Default, |s| s.source.clone());
                (spec.name.to_owned(), (value, source))
            })
            .collect()
    }

    /// Every value given for `key`.
    pub fn all(&self, key: &str) -> &[Setting] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// The value given last for `key`.
    pub fn last(&self, key: &str) -> Option<&Setting> {
        self.all(key).last()
    }

    /// The typed values of `key`, each with the setting it came from: the
    /// values given, or its default (as a setting of source `default`), or
    /// none. Every value was checked when the values were merged.
    pub fn typed_all(&self, key: &str) -> Vec<(Typed, Setting)> {
        let spec = spec(key);
        let given = self.all(key);
        let defaulted;
        let settings = match (given, spec.default) {
            ([], Some(default)) => {
                defaulted = [default_setting(spec, default)];
                &defaulted[..]
            }
            (given, _) => given,
        };
        settings
            .iter()
            .map(|setting| {
                let typed = options::parse(spec.kind, &setting.value).unwrap_or_else(|why| {
                    panic!("{key}: '{}' was checked, yet: {why}", setting.value)
                });
                (typed, setting.clone())
            })
            .collect()
    }

    /// The typed value of a single-valued option: the last one given, else
    /// its default; `None` when it has neither.
    pub fn typed(&self, key: &str) -> Option<Typed> {
        self.typed_all(key).pop().map(|(typed, _)| typed)
    }

    /// A whole number option, in the type its field has.
    pub fn int<T: TryFrom<i64>>(&self, key: &str) -> T {
        match self.typed(key) {
            Some(Typed::Int(n)) => T::try_from(n).unwrap_or_else(|_| {
                panic!(
                    "{key}: the range of the option table does not fit {}",
                    std::any::type_name::<T>()
                )
            }),
            other => mismatch(key, "a whole number", other),
        }
    }

    /// A seconds option with a default.
    pub fn secs(&self, key: &str) -> Duration {
        match self.opt_secs(key) {
            Some(secs) => secs,
            None => mismatch(key, "seconds with a default", None),
        }
    }

    /// A seconds option without a default: `None` when not given.
    pub fn opt_secs(&self, key: &str) -> Option<Duration> {
        match self.typed(key) {
            Some(Typed::Seconds(secs)) => Some(secs),
            None => None,
            other => mismatch(key, "seconds", other),
        }
    }

    /// An address option: `None` when not given.
    pub fn addr(&self, key: &str) -> Option<std::net::SocketAddr> {
        match self.typed(key) {
            Some(Typed::Addr(addr)) => Some(addr),
            None => None,
            other => mismatch(key, "an address", other),
        }
    }

    /// A size option, in bytes.
    pub fn size(&self, key: &str) -> u64 {
        match self.typed(key) {
            Some(Typed::Size(n)) => n,
            other => mismatch(key, "a size", other),
        }
    }

    /// A size option without a default: `None` when not given.
    pub fn opt_size(&self, key: &str) -> Option<u64> {
        match self.typed(key) {
            Some(Typed::Size(n)) => Some(n),
            None => None,
            other => mismatch(key, "a size", other),
        }
    }

    /// A boolean option (false when neither given nor defaulted).
    pub fn flag(&self, key: &str) -> bool {
        match self.typed(key) {
            Some(Typed::Bool(b)) => b,
            None => false,
            other => mismatch(key, "a boolean", other),
        }
    }

    /// A choice option: the table's word.
    pub fn choice(&self, key: &str) -> &'static str {
        match self.typed(key) {
            Some(Typed::Choice(word)) => word,
            other => mismatch(key, "a choice", other),
        }
    }

    /// A text option (also a user or group name, a pattern or a port
    /// specification), when set.
    pub fn text(&self, key: &str) -> Option<String> {
        match self.typed(key) {
            Some(Typed::Text(text) | Typed::Name(text)) => Some(text),
            None => None,
            other => mismatch(key, "text", other),
        }
    }

    /// Every value of a repeatable text option (patterns, port specs, …).
    pub fn texts(&self, key: &str) -> Vec<String> {
        self.typed_all(key)
            .into_iter()
            .map(|(typed, _)| match typed {
                Typed::Text(text) | Typed::Name(text) => text,
                other => mismatch(key, "text", Some(other)),
            })
            .collect()
    }

    /// Every value of a repeatable `KEY=VALUE` option.
    pub fn pairs(&self, key: &str) -> Vec<(String, String)> {
        self.typed_all(key)
            .into_iter()
            .map(|(typed, _)| match typed {
                Typed::Pair(key, value) => (key, value),
                other => mismatch(key, "pairs", Some(other)),
            })
            .collect()
    }

    /// Every network of a repeatable CIDR option.
    pub fn cidrs(&self, key: &str) -> Vec<ipnet::IpNet> {
        self.typed_all(key)
            .into_iter()
            .map(|(typed, _)| match typed {
                Typed::Cidr(net) => net,
                other => mismatch(key, "networks", Some(other)),
            })
            .collect()
    }

    /// A path option, when set.
    pub fn path(&self, key: &str) -> Option<std::path::PathBuf> {
        match self.typed(key) {
            Some(Typed::Path(path)) => Some(path),
            None => None,
            other => mismatch(key, "a path", other),
        }
    }
}

/// The option `key` of the table: the resolution only asks for options
/// that exist.
fn spec(key: &str) -> &'static Spec {
    options::find(key).unwrap_or_else(|| panic!("no option '{key}' in the table"))
}

/// The setting an option's default stands for.
pub fn default_setting(spec: &Spec, value: &str) -> Setting {
    Setting {
        key: spec.name.to_owned(),
        value: value.to_owned(),
        source: Source::Default,
    }
}

/// The resolution read `key` as a kind of value the table does not give
/// it: a mistake in this program, which the test of every option catches.
fn mismatch(key: &str, wanted: &str, got: Option<Typed>) -> ! {
    let kind: Option<Kind> = options::find(key).map(|s| s.kind);
    panic!("option {key} ({kind:?}) read as {wanted}, but it is {got:?}")
}

/// The error for a key this host does not know, with the closest one.
pub fn unknown_key(setting: &Setting) -> anyhow::Error {
    let closest = options::closest(&setting.key)
        .map(|key| format!(" (did you mean '{key}'?)"))
        .unwrap_or_default();
    anyhow::anyhow!(
        "{}: unknown option '{}'{closest}",
        setting.source,
        shown(&setting.key, MAX_SHOWN)
    )
}

/// The error for an invalid value: one line naming where it was given, the
/// option and the value.
pub fn bad(setting: &Setting, why: &str) -> anyhow::Error {
    let Setting { key, value, source } = setting;
    let (value, why) = (shown(value, MAX_SHOWN), shown(why, 4 * MAX_SHOWN));
    match source {
        Source::CommandLine | Source::Default => anyhow::anyhow!(
            "--{}: invalid value '{value}': {why}",
            key.replace('_', "-")
        ),
        Source::File { .. } => anyhow::anyhow!("{source}: {key}: invalid value '{value}': {why}"),
    }
}

/// The most characters of a value an error line shows.
pub const MAX_SHOWN: usize = 100;

/// `text` as an error line shows it: on one line (control characters
/// escaped) and at most `max` characters, the rest said in bytes.
pub fn shown(text: &str, max: usize) -> String {
    let mut out = String::new();
    for (count, c) in text.chars().enumerate() {
        if count == max {
            let rest = text.len()
                - text
                    .char_indices()
                    .nth(count)
                    .map_or(text.len(), |(i, _)| i);
            out.push_str(&format!("… ({rest} more bytes)"));
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::test_settings::{cli, file};

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
        assert_eq!(values.texts("port"), ["1", "2"]);
        assert_eq!(values.int::<u8>("log_level"), 4);
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
        assert_eq!(report["host"], (serde_json::json!(["*"]), Source::Default));
    }

    #[test]
    fn typed_values_come_from_the_table_when_not_given() {
        let values = Values::merge(vec![cli("idle_timeout", "2.5")], Vec::new()).unwrap();
        assert_eq!(values.secs("idle_timeout"), Duration::from_millis(2500));
        assert_eq!(values.secs("cpu_limit"), Duration::from_secs(10));
        assert_eq!(values.opt_secs("connection_timeout"), None);
        assert_eq!(values.size("max_memory"), 64 << 20);
        assert_eq!(values.int::<u32>("workers"), 1);
        assert!(!values.flag("background"));
        assert_eq!(values.choice("server_type"), "multiplex");
        assert_eq!(values.text("user"), None);
        assert_eq!(values.texts("port"), ["20203"]);
        assert_eq!(values.texts("allow"), Vec::<String>::new());
    }

    #[test]
    fn values_are_shown_on_one_line_and_cut() {
        let long = "x".repeat(1 << 20);
        let cases = [
            ("80", "80".to_owned()),
            ("a\nb\0c", "a\\nb\\u{0}c".to_owned()),
            (
                &long[..],
                format!(
                    "{}… ({} more bytes)",
                    &long[..MAX_SHOWN],
                    (1 << 20) - MAX_SHOWN
                ),
            ),
            ("ééé", "ééé".to_owned()),
        ];
        for (text, want) in cases {
            assert_eq!(shown(text, MAX_SHOWN), want);
        }
        let Err(err) = Values::merge(vec![cli("log_level", &long)], Vec::new()) else {
            panic!("a million x is no log level");
        };
        assert!(
            err.to_string().len() < 1000,
            "{} bytes",
            err.to_string().len()
        );
    }

    #[test]
    fn errors_name_the_setting_and_the_value() {
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
                vec![file("idle_timeout", "0", 4)],
                "s.conf:4: idle_timeout: invalid value '0': must be a number of seconds above 0 (at most a year)",
            ),
            (
                vec![file("max_memory", "1K", 5)],
                "s.conf:5: max_memory: invalid value '1K': must be a size from 64K to 4G, e.g. 64M",
            ),
            (
                vec![file("property", "novalue", 6)],
                "s.conf:6: property: invalid value 'novalue': must be KEY=VALUE",
            ),
            (
                vec![file("sig_passthrough", "USR1,KILL", 8)],
                "s.conf:8: sig_passthrough: invalid value 'USR1,KILL': signal KILL cannot be passed on (it cannot be caught, or means a crash)",
            ),
        ];
        for (settings, want) in cases {
            let err = Values::merge(Vec::new(), settings).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
        let err = Values::merge(vec![cli("log_level", "7")], Vec::new()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--log-level: invalid value '7': must be a whole number from 0 to 4"
        );
    }
}
