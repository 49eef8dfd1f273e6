//! Where option values come from: the command line, a conf file (TOML, or
//! Net::Server's `key value` lines), or the built-in defaults — each value
//! kept with its [`Source`] so that errors and `--check` can name it.

use std::fmt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;

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

/// Option names are Net::Server's, with underscores; `log-level` is
/// `log_level`.
pub fn normalize_key(key: &str) -> String {
    key.trim().replace('-', "_").to_ascii_lowercase()
}

/// Reads a conf file: TOML when its name ends in `.toml`, otherwise
/// Net::Server's `key value` lines.
pub fn read_conf_file(path: &Path) -> Result<Vec<Setting>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("--conf-file {}: cannot read", path.display()))?;
    if path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("toml"))
    {
        parse_toml(&text, path)
    } else {
        parse_key_value(&text, path)
    }
}

/// Parses Net::Server's conf format: one `key value` pair per line; blank
/// lines and `#` comments are ignored. Unlike Net::Server, a trailing
/// ` # comment`, trailing white space and the CR of a CRLF line are not
/// part of the value. A key repeated accumulates (`port`, `allow`, …).
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
        let (key, value) = line
            .split_once(char::is_whitespace)
            .map(|(k, v)| (k, v.trim()))
            .unwrap_or((line, ""));
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
/// key).
pub fn parse_toml(text: &str, path: &Path) -> Result<Vec<Setting>> {
    use toml::{Spanned, Value};
    let table: toml::map::Map<String, Value> = toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of(text, s.start));
        anyhow::anyhow!("{}:{line}: invalid TOML: {}", path.display(), e.message())
    })?;
    let spanned: std::collections::BTreeMap<String, Spanned<Value>> =
        toml::from_str(text).context("invalid TOML")?;
    let mut settings = Vec::new();
    for key in table.keys() {
        let value = &spanned[key];
        let source = Source::File {
            path: path.to_owned(),
            line: line_of(text, value.span().start),
        };
        let items = match value.get_ref() {
            Value::Array(items) => items.clone(),
            other => vec![other.clone()],
        };
        for item in items {
            let value = scalar(&item).ok_or_else(|| {
                anyhow::anyhow!(
                    "{source}: {key}: invalid value {item}: expected a string, number or boolean"
                )
            })?;
            settings.push(Setting {
                key: normalize_key(key),
                value,
                source: source.clone(),
            });
        }
    }
    Ok(settings)
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
    fn toml_errors_name_file_and_line() {
        let cases = [
            ("a = 1\nb = \n", "t.toml:2: invalid TOML"),
            ("x = { y = 1 }\n", "t.toml:1: x: invalid value { y = 1 }"),
        ];
        for (text, want) in cases {
            let err = parse_toml(text, Path::new("t.toml"))
                .unwrap_err()
                .to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }
}
