//! Logging: Net::Server's levels 0–4 on top of `tracing`.
//!
//! | Net::Server | name | tracing |
//! | --- | --- | --- |
//! | 0 | err | `ERROR` |
//! | 1 | warning | `WARN` |
//! | 2 | notice | `INFO` |
//! | 3 | info | `DEBUG` |
//! | 4 | debug | `TRACE` |
//!
//! Lines go to stderr or `log_file` as `TIMESTAMP LEVEL span{fields}:
//! message` (a connection's lines as `conn{service=S peer=P}: message`,
//! see [`tag`]), with Net::Server's level names; with `log_file Sys::Syslog`
//! to the system log, each at the syslog severity of its level.

use std::fmt;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

pub mod access;
pub mod every;
pub mod tag;

pub use crate::config::{LogTarget as Target, Syslog, SyslogSocket};

/// The `tracing` level of Net::Server log level `level` (0–4; above 4 is 4).
pub fn tracing_level(level: u8) -> Level {
    match level {
        0 => Level::ERROR,
        1 => Level::WARN,
        2 => Level::INFO,
        3 => Level::DEBUG,
        _ => Level::TRACE,
    }
}

/// Net::Server's name for a `tracing` level.
pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "err",
        Level::WARN => "warning",
        Level::INFO => "notice",
        Level::DEBUG => "info",
        Level::TRACE => "debug",
    }
}

/// Checks, without creating it, that the log file of `target` could be
/// opened by this process (for `--check`, and so for a HUP, which
/// re-executes the server only when its `--check` passes).
pub fn check_target(target: &Target) -> Result<()> {
    use nix::unistd::{AccessFlags, access};
    let Target::File(path) = target else {
        return Ok(());
    };
    let (what, flags) = if path.exists() {
        (path.as_path(), AccessFlags::W_OK)
    } else {
        let dir = match path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => std::path::Path::new("."),
        };
        (dir, AccessFlags::W_OK | AccessFlags::X_OK)
    };
    access(what, flags).with_context(|| {
        format!(
            "log_file {}: cannot be written by uid {}",
            path.display(),
            nix::unistd::geteuid()
        )
    })
}

/// Installs the global subscriber writing to `target` at `log_level`
/// (0–4). Later calls do nothing. Fails when the log file cannot be opened
/// or the system log cannot be reached.
///
/// The host's own lines and the guests' (target `guest`) are written at
/// `log_level`; the libraries underneath (wasmtime, cranelift, tokio) only
/// their warnings and errors, however verbose the host is.
pub fn init(log_level: u8, target: &Target) -> Result<()> {
    let level = LevelFilter::from_level(tracing_level(log_level));
    let filter = Targets::new()
        .with_default(level.min(LevelFilter::WARN))
        .with_target(env!("CARGO_CRATE_NAME"), level)
        .with_target("guest", level);
    let builder = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false);
    let _ = match target {
        Target::Stderr => builder
            .with_writer(std::io::stderr)
            .event_format(NetServerFormat { stamp: true })
            .finish()
            .with(filter)
            .try_init(),
        Target::File(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("log_file {}: cannot open", path.display()))?;
            builder
                .with_writer(Arc::new(file))
                .event_format(NetServerFormat { stamp: true })
                .finish()
                .with(filter)
                .try_init()
        }
        Target::Syslog(config) => builder
            .with_writer(SyslogSink::connect(config)?)
            .event_format(NetServerFormat { stamp: false })
            .finish()
            .with(filter)
            .try_init(),
    };
    Ok(())
}

/// The system log, shared by every line of this process (and its forked
/// workers, which inherit the socket).
struct SyslogSink {
    logger: Mutex<syslog::Logger<syslog::LoggerBackend, syslog::Formatter3164>>,
    pid: bool,
}

impl SyslogSink {
    fn connect(config: &Syslog) -> Result<Self> {
        let formatter = syslog::Formatter3164 {
            facility: config.facility,
            hostname: None,
            process: config.ident.clone(),
            pid: std::process::id(),
        };
        let mut errors = Vec::new();
        for socket in &config.sockets {
            let logger = match socket {
                SyslogSocket::Unix(None) => syslog::unix(formatter.clone()),
                SyslogSocket::Unix(Some(path)) => syslog::unix_custom(formatter.clone(), path),
                SyslogSocket::Udp => syslog::udp(formatter.clone(), "127.0.0.1:0", "127.0.0.1:514"),
                SyslogSocket::Tcp => syslog::tcp(formatter.clone(), "127.0.0.1:514"),
            };
            match logger {
                Ok(logger) => {
                    return Ok(Self {
                        logger: Mutex::new(logger),
                        pid: config.pid,
                    });
                }
                Err(err) => errors.push(format!("{socket}: {err}")),
            }
        }
        bail!(
            "log_file Sys::Syslog: cannot reach the system log ({})",
            errors.join("; ")
        )
    }
}

impl<'a> MakeWriter<'a> for SyslogSink {
    type Writer = SyslogLine<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        SyslogLine {
            sink: self,
            level: Level::INFO,
            line: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        SyslogLine {
            sink: self,
            level: *meta.level(),
            line: Vec::new(),
        }
    }
}

/// One log line on its way to syslog, sent whole when dropped, with the
/// severity of its level.
struct SyslogLine<'a> {
    sink: &'a SyslogSink,
    level: Level,
    line: Vec<u8>,
}

impl std::io::Write for SyslogLine<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for SyslogLine<'_> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let text = text.trim_end();
        if text.is_empty() {
            return;
        }
        // A poisoned lock only means another line failed half-way.
        let mut logger = self
            .sink
            .logger
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if self.sink.pid {
            // Forked workers give their own pid.
            logger.formatter.pid = std::process::id();
        }
        // Nowhere to report a lost log line.
        let _ = match self.level {
            Level::ERROR => logger.err(text),
            Level::WARN => logger.warning(text),
            Level::INFO => logger.notice(text),
            Level::DEBUG => logger.info(text),
            Level::TRACE => logger.debug(text),
        };
    }
}

/// Logs nothing (for `inetd` when standard error is the client's socket
/// and there is no log file).
pub fn init_silent() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::OFF)
        .try_init();
}

/// Formats an event as `TIMESTAMP LEVEL span{fields}: conn{tag}: message
/// fields`
/// (without `TIMESTAMP LEVEL` for syslog, which has its own).
struct NetServerFormat {
    stamp: bool,
}

impl<S, N> FormatEvent<S, N> for NetServerFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if self.stamp {
            SystemTime.format_time(&mut writer)?;
            write!(writer, " {} ", level_name(*event.metadata().level()))?;
        }
        for span in ctx.event_scope().into_iter().flat_map(|s| s.from_root()) {
            write!(writer, "{}", span.name())?;
            if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                && !fields.is_empty()
            {
                write!(writer, "{{{fields}}}")?;
            }
            write!(writer, ": ")?;
        }
        tag::write_current(&mut writer)?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_round_trip_to_net_server_names() {
        let names = ["err", "warning", "notice", "info", "debug"];
        for (level, name) in names.iter().enumerate() {
            assert_eq!(level_name(tracing_level(level as u8)), *name);
        }
        assert_eq!(tracing_level(9), Level::TRACE);
    }
}
