//! The access log of HTTP services, Net::Server::HTTP's habit: one line
//! per request, in Apache's `LogFormat` directives (`access_log_format`,
//! Apache's combined format by default), to `access_log_file` or the main
//! log.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Result, anyhow};

pub use crate::config::access_format::{AccessFormat, Piece};

/// Looks a header up by name (any case): its value, if present.
pub type HeaderLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// What one request gives its access log line.
#[derive(Default)]
pub struct Entry<'a> {
    /// The client's host name (when looked up) or address.
    pub host: &'a str,
    /// The client's address.
    pub addr: &'a str,
    /// When the request came.
    pub time: Option<SystemTime>,
    /// Its method.
    pub method: &'a str,
    /// Its target: path and query.
    pub path: &'a str,
    /// Its query, without the `?`.
    pub query: Option<&'a str>,
    /// Its protocol, `HTTP/1.1`.
    pub protocol: &'a str,
    /// The response's status.
    pub status: u16,
    /// Bytes of the response body sent.
    pub bytes: u64,
    /// How long it took.
    pub took: std::time::Duration,
    /// The service's name.
    pub service: &'a str,
    /// The request's headers, looked up by name (any case).
    pub request_header: Option<HeaderLookup<'a>>,
    /// The response's headers, looked up by name (any case).
    pub response_header: Option<HeaderLookup<'a>>,
}

/// Renders access log lines.
pub trait Render {
    /// The line of `entry`, without its newline.
    fn line(&self, entry: &Entry<'_>) -> String;
}

impl Render for AccessFormat {
    fn line(&self, entry: &Entry<'_>) -> String {
        let mut line = String::with_capacity(160);
        for piece in &self.0 {
            let _ = match piece {
                Piece::Text(text) => write!(line, "{text}"),
                Piece::Host => write!(line, "{}", entry.host),
                Piece::Addr => write!(line, "{}", entry.addr),
                Piece::Unknown => write!(line, "-"),
                Piece::Time => write!(
                    line,
                    "[{}]",
                    clf_time(entry.time.unwrap_or_else(SystemTime::now))
                ),
                Piece::RequestLine => match entry.query {
                    Some(query) => write!(
                        line,
                        "{} {}?{query} {}",
                        entry.method, entry.path, entry.protocol
                    ),
                    None => write!(line, "{} {} {}", entry.method, entry.path, entry.protocol),
                },
                Piece::Method => write!(line, "{}", entry.method),
                Piece::Path => write!(line, "{}", entry.path),
                Piece::Query => match entry.query {
                    Some(query) => write!(line, "?{query}"),
                    None => Ok(()),
                },
                Piece::Protocol => write!(line, "{}", entry.protocol),
                Piece::Status => write!(line, "{}", entry.status),
                Piece::BytesClf if entry.bytes == 0 => write!(line, "-"),
                Piece::BytesClf | Piece::Bytes => write!(line, "{}", entry.bytes),
                Piece::Micros => write!(line, "{}", entry.took.as_micros()),
                Piece::Seconds => write!(line, "{}", entry.took.as_secs()),
                Piece::Service => write!(line, "{}", entry.service),
                Piece::RequestHeader(name) => header(&mut line, entry.request_header, name),
                Piece::ResponseHeader(name) => header(&mut line, entry.response_header, name),
            };
        }
        line
    }
}

/// A header's value as Apache logs it: `-` when absent, quotes and
/// control characters escaped.
fn header(line: &mut String, lookup: Option<HeaderLookup<'_>>, name: &str) -> std::fmt::Result {
    match lookup.and_then(|lookup| lookup(name)) {
        Some(value) => {
            for c in value.chars() {
                match c {
                    '"' => line.push_str("\\\""),
                    '\\' => line.push_str("\\\\"),
                    c if c.is_control() => write!(line, "\\x{:02x}", u32::from(c))?,
                    c => line.push(c),
                }
            }
            Ok(())
        }
        None => write!(line, "-"),
    }
}

/// `10/Oct/2000:13:55:36 +0000` (UTC: the host reads no time zone).
fn clf_time(at: SystemTime) -> String {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{day:02}/{}/{year}:{:02}:{:02}:{:02} +0000",
        MONTHS[month as usize - 1],
        rest / 3600,
        rest / 60 % 60,
        rest % 60
    )
}

/// The date `days` after 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Where access log lines go.
#[derive(Debug)]
pub enum Sink {
    /// The main log, at `info`.
    MainLog,
    /// Appended to this file (opened once, before the workers fork).
    File(File),
}

impl Sink {
    /// Opens `path` for appending (creating it), or the main log.
    pub fn open(path: Option<&Path>) -> Result<Self> {
        match path {
            None => Ok(Self::MainLog),
            Some(path) => std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(Self::File)
                .map_err(|e| anyhow!("access_log_file {}: cannot open: {e}", path.display())),
        }
    }

    /// Writes `line`: to the file in one `write` (appends of whole lines
    /// from several workers do not interleave), or to the main log.
    pub fn write(&self, line: &str) {
        match self {
            Self::MainLog => tracing::info!("{line}"),
            Self::File(file) => {
                let mut file: &File = file;
                let mut bytes = Vec::with_capacity(line.len() + 1);
                bytes.extend_from_slice(line.as_bytes());
                bytes.push(b'\n');
                if let Err(e) = file.write_all(&bytes)
                    && ACCESS_WARNED.due(std::time::Instant::now())
                {
                    tracing::warn!("cannot write the access log: {e}");
                }
            }
        }
    }
}

/// When a failed access log write was last said (at most every 10 s).
static ACCESS_WARNED: super::every::Every =
    super::every::Every::new(std::time::Duration::from_secs(10));

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn combined_format_as_apache_writes_it() {
        let format = AccessFormat::parse(crate::config::DEFAULT_ACCESS_LOG_FORMAT).unwrap();
        let request = |name: &str| match name.to_ascii_lowercase().as_str() {
            "user-agent" => Some("curl/8.0 \"x\"".to_owned()),
            _ => None,
        };
        let entry = Entry {
            host: "127.0.0.1",
            addr: "127.0.0.1",
            time: Some(UNIX_EPOCH + Duration::from_secs(971_186_136)),
            method: "GET",
            path: "/apache_pb.gif",
            query: Some("a=1"),
            protocol: "HTTP/1.0",
            status: 200,
            bytes: 2326,
            request_header: Some(&request),
            ..Entry::default()
        };
        assert_eq!(
            format.line(&entry),
            r#"127.0.0.1 - - [10/Oct/2000:13:55:36 +0000] "GET /apache_pb.gif?a=1 HTTP/1.0" 200 2326 "-" "curl/8.0 \"x\"""#
        );
    }

    #[test]
    fn other_directives() {
        let format = AccessFormat::parse("%v %m %U%q %H %B %b %D %{X-Id}o 100%%").unwrap();
        let response = |name: &str| (name == "X-Id").then(|| "7".to_owned());
        let entry = Entry {
            method: "POST",
            path: "/p",
            protocol: "HTTP/2.0",
            service: "web",
            took: Duration::from_micros(1500),
            response_header: Some(&response),
            ..Entry::default()
        };
        assert_eq!(format.line(&entry), "web POST /p HTTP/2.0 0 - 1500 7 100%");
    }

    #[test]
    fn dates_from_days() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(20_790), (2026, 12, 3));
    }
}
