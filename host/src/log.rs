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
//! Lines go to stderr as `TIMESTAMP LEVEL span{fields}: message`, with
//! Net::Server's level names.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;

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

/// Installs the global subscriber writing to stderr at `log_level` (0–4).
/// Later calls do nothing.
///
/// The host's own lines and the guests' (target `guest`) are written at
/// `log_level`; the libraries underneath (wasmtime, cranelift, tokio) only
/// their warnings and errors, however verbose the host is.
pub fn init(log_level: u8) {
    let level = LevelFilter::from_level(tracing_level(log_level));
    let filter = Targets::new()
        .with_default(level.min(LevelFilter::WARN))
        .with_target(env!("CARGO_CRATE_NAME"), level)
        .with_target("guest", level);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .event_format(NetServerFormat)
        .finish()
        .with(filter)
        .try_init();
}

/// Logs nothing (for `inetd` when standard error is the client's socket
/// and there is no log file).
pub fn init_silent() {
    let _ = tracing_subscriber::fmt()
        .with_max_level(LevelFilter::OFF)
        .try_init();
}

/// Formats an event as `TIMESTAMP LEVEL span{fields}: message fields`.
struct NetServerFormat;

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
        SystemTime.format_time(&mut writer)?;
        write!(writer, " {} ", level_name(*event.metadata().level()))?;
        for span in ctx.event_scope().into_iter().flat_map(|s| s.from_root()) {
            write!(writer, "{}", span.name())?;
            if let Some(fields) = span.extensions().get::<FormattedFields<N>>()
                && !fields.is_empty()
            {
                write!(writer, "{{{fields}}}")?;
            }
            write!(writer, ": ")?;
        }
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
