//! Where option values come from: the command line, a conf file (TOML, or
//! Net::Server's `key value` lines), or the built-in defaults — each value
//! kept with its [`Source`] so that errors and `--check` can name it.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};
use serde::Serialize;

use super::files;

/// Where a value was given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// A conf file, at a line (1-based).
    File {
        /// The conf file.
        path: PathBuf,
        /// The line the value is on.
        line: usize,
    },
    /// The command line.
    CommandLine,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("default"),
            Self::File { path, line } => write!(f, "{}:{line}", path.display()),
            Self::CommandLine => f.write_str("command line"),
        }
    }
}

impl Serialize for Source {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// One value of one option, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Setting {
    /// The option's name, with dashes turned into underscores.
    pub key: String,
    /// The value as written (trimmed).
    pub value: String,
    /// Where it was given.
    pub source: Source,
}

impl Setting {
    /// `key` given `value` on the command line.
    pub fn command_line(key: &str, value: &str) -> Self {
        Self {
            key: key.to_owned(),
            value: value.to_owned(),
            source: Source::CommandLine,
        }
    }

    /// `key` given `value` on line `line` of the conf file `path`.
    pub fn in_file(path: &str, line: usize, key: &str, value: &str) -> Self {
        Self {
            key: key.to_owned(),
            value: value.to_owned(),
            source: Source::File {
                path: path.into(),
                line,
            },
        }
    }
}

/// Option names are Net::Server's, with underscores; `log-level` is
/// `log_level`.
pub fn normalize_key(key: &str) -> String {
    key.trim().replace('-', "_").to_ascii_lowercase()
}

/// What a conf file gives: top-level settings (the server's, and every
/// service's defaults) and one table per hosted service.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfFile {
    /// The top-level settings.
    pub settings: Vec<Setting>,
    /// The `[[service]]` tables, in order (TOML only).
    pub services: Vec<ServiceTable>,
}

/// One `[[service]]` table of a TOML conf file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceTable {
    /// Where the table starts.
    pub source: Source,
    /// Its settings; its `name` is the `service` option.
    pub settings: Vec<Setting>,
}

/// Reads a conf file: TOML when its name ends in `.toml`, otherwise
/// Net::Server's `key value` lines.
pub fn read_conf_file(path: &Path) -> Result<ConfFile> {
    let text = files::read_regular(path, files::MAX_CONF_FILE)
        .map_err(|why| anyhow::anyhow!("--conf-file {}: cannot read: {why}", path.display()))?;
    let text = String::from_utf8(text)
        .map_err(|_| anyhow::anyhow!("--conf-file {}: not UTF-8 text", path.display()))?;
    // A byte-order mark some editors write is not part of the first key.
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
    {
        parse_toml(text, path)
    } else {
        Ok(ConfFile {
            settings: parse_key_value(text, path)?,
            services: Vec::new(),
        })
    }
}

/// Parses Net::Server's conf format: one `key value` pair per line, also
/// written `key=value`, `key: value`, `key = value` or `--key value` (see
/// [`split_line`]); blank lines and `#` comments are ignored. Unlike
/// Net::Server, a trailing ` # comment`, trailing white space and the CR
/// of a CRLF line are not part of the value. A key repeated accumulates
/// (`port`, `allow`, …).
pub fn parse_key_value(text: &str, path: &Path) -> Result<Vec<Setting>> {
    let mut settings = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let source = Source::File {
            path: path.to_owned(),
            line: index + 1,
        };
        let line = strip_comment(raw.trim_end_matches('\r')).trim();
        if line.is_empty() {
            continue;
        }
        let (key, value) = split_line(line);
        if value.is_empty() {
            bail!("{source}: {key}: no value given (expected `{key} VALUE`)");
        }
        settings.push(Setting {
            key: normalize_key(key),
            value: value.to_owned(),
            source,
        });
    }
    Ok(settings)
}

/// Splits a conf line (trimmed, without its comment) into its key and value
/// as Net::Server's `_read_conf` does (`^\s*((?:--)?\w+)(?:\s*[=:]\s*|\s+)(.+)`):
/// a key of letters, digits, `_` and `-`, after an optional `--`, then
/// `=` or `:` (with or without white space around it) or white space, then
/// the value. Where Net::Server would take the first `:` of an IPv6
/// address's `::` for the separator (`host ::1`, read as `:1`), the `::`
/// is part of the value. Any other line is split at its first white space,
/// the first word the key (which then names itself in the error:
/// `log.level 3`, `host::1`).
fn split_line(line: &str) -> (&str, &str) {
    let body = line.strip_prefix("--").unwrap_or(line);
    let key_len = body
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
        .unwrap_or(body.len());
    if key_len > 0 {
        let (key, rest) = body.split_at(key_len);
        let after = rest.trim_start();
        let spaced = after.len() < rest.len();
        if let Some(value) = after.strip_prefix('=') {
            return (key, value.trim());
        }
        // `::1` starts a value; `:::1` is `:` then `::1`.
        if let Some(value) = after.strip_prefix(':')
            && (!value.starts_with(':') || value.starts_with("::"))
        {
            return (key, value.trim());
        }
        if spaced || after.is_empty() {
            return (key, after.trim_end());
        }
    }
    line.split_once(char::is_whitespace)
        .map(|(k, v)| (k, v.trim()))
        .unwrap_or((line, ""))
}

/// A line without its comment: `#` at the start, or after white space.
fn strip_comment(line: &str) -> &str {
    if line.trim_start().starts_with('#') {
        return "";
    }
    let bytes = line.as_bytes();
    for (i, &b) in bytes.iter().enumerate() {
        if b == b'#' && i > 0 && bytes[i - 1].is_ascii_whitespace() {
            return &line[..i];
        }
    }
    line
}

/// Parses a TOML conf file: top-level `key = value` pairs, where a value is
/// a string, number, boolean or an array of them (an array is a repeated
/// key), `property` may be a table of `KEY = VALUE`, and `[[service]]`
/// tables hold each hosted service's own settings.
pub fn parse_toml(text: &str, path: &Path) -> Result<ConfFile> {
    use toml::{Spanned, Value};
    type Table = std::collections::BTreeMap<String, Spanned<Value>>;
    let table: Table = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        anyhow::anyhow!("{}:{line}: invalid TOML: {}", path.display(), e.message())
    })?;
    let at = |span: std::ops::Range<usize>| Source::File {
        path: path.to_owned(),
        line: line_of(text, span.start),
    };
    let mut conf = ConfFile::default();
    for (key, value) in &table {
        let tables =
            matches!(value.get_ref(), Value::Array(items) if items.iter().all(Value::is_table));
        if key == "service" && tables {
            conf.services = service_tables(text, path, value.span())?;
        } else {
            push_toml(&mut conf.settings, key, value.get_ref(), &at(value.span()))?;
        }
    }
    Ok(conf)
}

/// The `[[service]]` tables of a TOML file, each with the line of its
/// header (or of the `service` array, for an inline array of tables).
fn service_tables(
    text: &str,
    path: &Path,
    array: std::ops::Range<usize>,
) -> Result<Vec<ServiceTable>> {
    use toml::{Spanned, Value};
    #[derive(serde::Deserialize)]
    struct Services {
        service: Vec<std::collections::BTreeMap<String, Spanned<Value>>>,
    }
    let at = |offset: usize| Source::File {
        path: path.to_owned(),
        line: line_of(text, offset),
    };
    let services: Services = toml::from_str(text)?;
    let headers = table_headers(text, "service");
    let mut tables = Vec::new();
    for (index, service) in services.service.iter().enumerate() {
        let source = match headers.get(index) {
            Some(&line) if headers.len() == services.service.len() => Source::File {
                path: path.to_owned(),
                line,
            },
            _ => at(array.start),
        };
        let mut settings = Vec::new();
        for (key, value) in service {
            let key = if key == "name" { "service" } else { key };
            push_toml(&mut settings, key, value.get_ref(), &at(value.span().start))?;
        }
        tables.push(ServiceTable { source, settings });
    }
    Ok(tables)
}

/// The lines (1-based) of each `[[name]]` header in `text`.
fn table_headers(text: &str, name: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim();
            line.strip_prefix("[[")
                .and_then(|rest| rest.split_once("]]"))
                .is_some_and(|(inner, tail)| {
                    inner.trim() == name && {
                        let tail = tail.trim();
                        tail.is_empty() || tail.starts_with('#')
                    }
                })
        })
        .map(|(index, _)| index + 1)
        .collect()
}

/// Adds one TOML key's values: an array is a repeated key; a `property`
/// table gives one `KEY=VALUE` each.
fn push_toml(
    settings: &mut Vec<Setting>,
    key: &str,
    value: &toml::Value,
    source: &Source,
) -> Result<()> {
    let key = normalize_key(key);
    let items = match value {
        toml::Value::Array(items) => items.clone(),
        toml::Value::Table(table) if key == "property" => table
            .iter()
            .map(|(k, v)| {
                let v = scalar(v).unwrap_or_else(|| v.to_string());
                toml::Value::String(format!("{k}={v}"))
            })
            .collect(),
        other => vec![other.clone()],
    };
    // `true` and `false` are values of on/off options only: `port = true`
    // is a mistake, not port 1. (An unknown key is reported later.)
    let takes_bool = super::options::find(&key)
        .is_none_or(|spec| matches!(spec.kind, super::options::Kind::Bool));
    for item in items {
        if item.is_bool() && !takes_bool {
            bail!(
                "{source}: {key}: invalid value {item}: expected a string or number (true and false are for on/off options)"
            );
        }
        let value = scalar(&item).ok_or_else(|| {
            anyhow::anyhow!(
                "{source}: {key}: invalid value {}: expected a string, number or boolean",
                super::raw::shown(&item.to_string(), super::raw::MAX_SHOWN)
            )
        })?;
        settings.push(Setting {
            key: key.clone(),
            value,
            source: source.clone(),
        });
    }
    Ok(())
}

fn scalar(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(s) => Some(s.trim().to_owned()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        toml::Value::Boolean(b) => Some(if *b { "1" } else { "0" }.to_owned()),
        _ => None,
    }
}

/// The 1-based line of byte `offset` in `text`.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(text: &str) -> Result<Vec<(String, String, usize)>> {
        Ok(parse_key_value(text, Path::new("t.conf"))?
            .into_iter()
            .map(|s| match s.source {
                Source::File { line, .. } => (s.key, s.value, line),
                _ => unreachable!(),
            })
            .collect())
    }

    fn owned(rows: &[Row]) -> Vec<(String, String, usize)> {
        rows.iter()
            .map(|&(k, v, l)| (k.to_owned(), v.to_owned(), l))
            .collect()
    }

    /// A key, its value and the line it is on.
    type Row<'a> = (&'a str, &'a str, usize);

    #[test]
    fn key_value_lines() {
        let cases: &[(&str, &[Row])] = &[
            ("port 20203\n", &[("port", "20203", 1)]),
            ("  log_level   3  \n", &[("log_level", "3", 1)]),
            ("log-level 3\r\n", &[("log_level", "3", 1)]),
            ("# comment\n\n   \nuser nobody\n", &[("user", "nobody", 4)]),
            ("port 1 # trailing comment\n", &[("port", "1", 1)]),
            ("allow .+\\.(net|com)\n", &[("allow", ".+\\.(net|com)", 1)]),
            ("allow a#b\n", &[("allow", "a#b", 1)]),
            (
                "port localhost, 20203, tcp, IPv*\n",
                &[("port", "localhost, 20203, tcp, IPv*", 1)],
            ),
            ("port 1\nport 2\n", &[("port", "1", 1), ("port", "2", 2)]),
            ("\tLOG_LEVEL\t4\n", &[("log_level", "4", 1)]),
        ];
        for &(text, want) in cases {
            assert_eq!(kv(text).unwrap(), owned(want), "{text:?}");
        }
    }

    /// The line forms Net::Server's `_read_conf` reads besides `key value`,
    /// with what it made of each (its key and value) where that differs.
    #[test]
    fn net_server_line_forms() {
        let cases: &[(&str, &[Row])] = &[
            ("port=20203\n", &[("port", "20203", 1)]),
            ("log_level: 3\n", &[("log_level", "3", 1)]),
            ("host = 127.0.0.1\n", &[("host", "127.0.0.1", 1)]),
            ("port\t=\t7\n", &[("port", "7", 1)]),
            // Net::Server: key `--user`, which its process_args reads as user.
            ("--user nobody\n", &[("user", "nobody", 1)]),
            ("--group=nogroup\n", &[("group", "nogroup", 1)]),
            ("  --max_servers :  7  \r\n", &[("max_servers", "7", 1)]),
            // Dashes in keys, as netserver takes them in `key value` lines
            // (Net::Server skips `log-level=3`: not a \w+ key).
            ("log-level=3\n", &[("log_level", "3", 1)]),
            ("--log-level: 3\n", &[("log_level", "3", 1)]),
            // Values keep their own `=` and `:`.
            ("port localhost:20204\n", &[("port", "localhost:20204", 1)]),
            ("port: localhost:20203\n", &[("port", "localhost:20203", 1)]),
            ("port=[::1]:80\n", &[("port", "[::1]:80", 1)]),
            ("property KEY=VALUE\n", &[("property", "KEY=VALUE", 1)]),
            ("property=KEY=VALUE\n", &[("property", "KEY=VALUE", 1)]),
            ("property = a = b\n", &[("property", "a = b", 1)]),
            (
                "property greeting = hello\n",
                &[("property", "greeting = hello", 1)],
            ),
            ("allow=a=b\n", &[("allow", "a=b", 1)]),
            (
                "port = localhost, 20203, tcp, IPv*\n",
                &[("port", "localhost, 20203, tcp, IPv*", 1)],
            ),
            ("cidr_allow: ::/0\n", &[("cidr_allow", "::/0", 1)]),
            ("host = ::1\n", &[("host", "::1", 1)]),
            ("host: ::1\n", &[("host", "::1", 1)]),
            ("host:::1\n", &[("host", "::1", 1)]),
            // Net::Server: `:1` (the first `:` of `::1` taken for `key: `).
            ("host ::1\n", &[("host", "::1", 1)]),
            ("port ::1 | 80\n", &[("port", "::1 | 80", 1)]),
            ("port :80\n", &[("port", "80", 1)]),
            // Net::Server: `3 ` (it keeps what follows, comments aside).
            ("log_level=3 # three\n", &[("log_level", "3", 1)]),
            (
                "port=1\nport: 2\n--port 3\nport 4\n",
                &[
                    ("port", "1", 1),
                    ("port", "2", 2),
                    ("port", "3", 3),
                    ("port", "4", 4),
                ],
            ),
            // Not a key Net::Server would read: split at white space as before.
            ("log.level 3\n", &[("log.level", "3", 1)]),
            ("a/b=c d\n", &[("a/b=c", "d", 1)]),
        ];
        for &(text, want) in cases {
            assert_eq!(kv(text).unwrap(), owned(want), "{text:?}");
        }
    }

    /// Lines with a key and no value (Net::Server skips all but the
    /// third, which it reads as background `:`).
    #[test]
    fn line_forms_without_a_value() {
        let cases = [
            ("background=\n", "background"),
            ("background = \n", "background"),
            ("background :\n", "background"),
            ("--background\n", "background"),
            ("--background=\n", "background"),
            ("host::1\n", "host::1"),
            ("--\n", "--"),
        ];
        for (text, key) in cases {
            let err = kv(text).unwrap_err().to_string();
            assert_eq!(
                err,
                format!("t.conf:1: {key}: no value given (expected `{key} VALUE`)"),
                "{text:?}"
            );
        }
    }

    #[test]
    fn key_without_value_names_file_and_line() {
        let err = kv("port 1\nbackground\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "t.conf:2: background: no value given (expected `background VALUE`)"
        );
    }

    #[test]
    fn toml_values_and_lines() {
        let text =
            "log_level = 3\n\nport = [\"127.0.0.1:0\", 20204]\nbackground = true\nhost = \"*\"\n";
        let got: Vec<(String, String, usize)> = parse_toml(text, Path::new("t.toml"))
            .unwrap()
            .settings
            .into_iter()
            .map(|s| match s.source {
                Source::File { line, .. } => (s.key, s.value, line),
                _ => unreachable!(),
            })
            .collect();
        let want = owned(&[
            ("background", "1", 4),
            ("host", "*", 5),
            ("log_level", "3", 1),
            ("port", "127.0.0.1:0", 3),
            ("port", "20204", 3),
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn toml_service_tables() {
        let text = "\
port = 1
[[service]]
name = \"a\"   # the first
module = \"a.wasm\"
port = [2, 3]
property = { greeting = \"hi\", n = 5 }

[[service]]
module = \"b.wasm\"
";
        let conf = parse_toml(text, Path::new("t.toml")).unwrap();
        let rows = |settings: &[Setting]| -> Vec<(String, String, usize)> {
            settings
                .iter()
                .map(|s| match &s.source {
                    Source::File { line, .. } => (s.key.clone(), s.value.clone(), *line),
                    _ => unreachable!(),
                })
                .collect()
        };
        assert_eq!(rows(&conf.settings), owned(&[("port", "1", 1)]));
        assert_eq!(conf.services.len(), 2);
        let lines: Vec<String> = conf.services.iter().map(|s| s.source.to_string()).collect();
        assert_eq!(lines, ["t.toml:2", "t.toml:8"]);
        assert_eq!(
            rows(&conf.services[0].settings),
            owned(&[
                ("module", "a.wasm", 4),
                ("service", "a", 3),
                ("port", "2", 5),
                ("port", "3", 5),
                ("property", "greeting=hi", 6),
                ("property", "n=5", 6),
            ])
        );
        assert_eq!(
            rows(&conf.services[1].settings),
            owned(&[("module", "b.wasm", 9)])
        );
    }

    #[test]
    fn booleans_are_for_on_off_options() {
        let conf = parse_toml("background = true\nsetsid = false\n", Path::new("t.toml")).unwrap();
        let values: Vec<&str> = conf.settings.iter().map(|s| s.value.as_str()).collect();
        assert_eq!(values, ["1", "0"]);
    }

    #[test]
    fn a_byte_order_mark_is_not_part_of_the_first_key() {
        let dir = std::env::temp_dir().join(format!("ns-bom-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("bom.conf");
        std::fs::write(&path, "\u{feff}log_level 3\n").unwrap();
        let conf = read_conf_file(&path).unwrap();
        assert_eq!(conf.settings[0].key, "log_level");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn toml_errors_name_file_and_line() {
        let cases = [
            ("a = 1\nb = \n", "t.toml:2: invalid TOML"),
            ("x = { y = 1 }\n", "t.toml:1: x: invalid value { y = 1 }"),
            (
                "log_level = 2\nport = true\n",
                "t.toml:2: port: invalid value true: expected a string or number (true and false are for on/off options)",
            ),
            ("port = [1, false]\n", "t.toml:1: port: invalid value false"),
        ];
        for (text, want) in cases {
            let err = parse_toml(text, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(512))]

        /// Whatever a Net::Server conf file holds: settings, or one line
        /// naming the file, the line and the key.
        #[test]
        fn any_conf_text_parses_or_gives_one_line(text in "(\\PC|\n|\r|#|=|:| |\t){0,200}") {
            match parse_key_value(&text, Path::new("t.conf")) {
                Ok(settings) => {
                    for setting in settings {
                        proptest::prop_assert!(!setting.key.is_empty());
                    }
                }
                Err(err) => {
                    let err = err.to_string();
                    proptest::prop_assert!(err.starts_with("t.conf:"), "{}", err);
                    proptest::prop_assert!(!err.contains('\n'), "{}", err);
                }
            }
        }

        /// Whatever a TOML conf file holds: settings and tables, or one
        /// line naming the file and the line.
        #[test]
        fn any_toml_text_parses_or_gives_one_line(
            text in "([a-z_]{1,12} = (\"[^\"\n]{0,12}\"|[0-9]{1,6}|true|false|\\[[0-9, \"a]{0,12}\\]|\\{[a-z =0-9\"]{0,12}\\})\n|\\[\\[service\\]\\]\n|\\PC{0,8}\n){0,12}"
        ) {
            if let Err(err) = parse_toml(&text, Path::new("t.toml")) {
                let err = err.to_string();
                proptest::prop_assert!(err.starts_with("t.toml:"), "{}", err);
                proptest::prop_assert!(!err.contains('\n'), "{}", err);
            }
        }
    }
}
