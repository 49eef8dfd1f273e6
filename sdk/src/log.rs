//! The server log (Net::Server's `log`).
//!
//! [`log`] writes a message at a [`Level`]; the host writes it when the level
//! is at most its `log_level`, tagged with the service and, during a
//! connection, the client. The functions named after the levels skip
//! formatting a message the host would drop, so pass them
//! [`format_args!`] rather than a [`format!`]ed string:
//!
//! ```no_run
//! use netserver_sdk::log;
//!
//! # let (peer, bytes) = ("127.0.0.1", 42);
//! log::info(format_args!("{peer} sent {bytes} bytes"));
//! log::err("the backend is gone");
//! ```
//!
//! Whatever a handler writes to stderr (`eprintln!`, a panic's message) is
//! logged too, one log line per line.

use std::fmt::Display;

use crate::bindings::netserver::handler::log as wit;

/// Net::Server's log levels 0–4, which map to syslog's priorities. Lower is
/// more severe: `Level::Err < Level::Debug`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Level {
    /// 0: `err`.
    Err = 0,
    /// 1: `warning`.
    Warning = 1,
    /// 2: `notice`.
    Notice = 2,
    /// 3: `info`.
    Info = 3,
    /// 4: `debug`.
    Debug = 4,
}

impl From<Level> for wit::Level {
    fn from(level: Level) -> Self {
        match level {
            Level::Err => Self::Err,
            Level::Warning => Self::Warning,
            Level::Notice => Self::Notice,
            Level::Info => Self::Info,
            Level::Debug => Self::Debug,
        }
    }
}

/// Writes `message` to the server log at `level`. Each line of a multi-line
/// message becomes its own log line.
pub fn log(level: Level, message: &str) {
    wit::log(level.into(), message);
}

/// Whether a message at `level` would be written: lets a handler skip
/// building an expensive message that would be dropped.
pub fn enabled(level: Level) -> bool {
    wit::enabled(level.into())
}

/// Formats and writes `message` only when `level` is enabled.
fn log_display(level: Level, message: impl Display) {
    if enabled(level) {
        log(level, &message.to_string());
    }
}

/// Logs `message` at [`Level::Err`].
pub fn err(message: impl Display) {
    log_display(Level::Err, message);
}

/// Logs `message` at [`Level::Warning`].
pub fn warning(message: impl Display) {
    log_display(Level::Warning, message);
}

/// Logs `message` at [`Level::Notice`].
pub fn notice(message: impl Display) {
    log_display(Level::Notice, message);
}

/// Logs `message` at [`Level::Info`].
pub fn info(message: impl Display) {
    log_display(Level::Info, message);
}

/// Logs `message` at [`Level::Debug`].
pub fn debug(message: impl Display) {
    log_display(Level::Debug, message);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_match_the_wit_enum_and_net_server_numbers() {
        let levels = [
            Level::Err,
            Level::Warning,
            Level::Notice,
            Level::Info,
            Level::Debug,
        ];
        for (number, level) in levels.into_iter().enumerate() {
            assert_eq!(level as usize, number);
            assert_eq!(wit::Level::from(level) as usize, number);
        }
        assert!(Level::Err < Level::Debug);
    }
}
