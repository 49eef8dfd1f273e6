//! netserver: Perl's Net::Server rebuilt in Rust, with the handler code in a
//! WebAssembly sandbox.
//!
//! The host reads its configuration, binds the listening sockets, compiles the
//! handler component once, and serves each accepted connection with a fresh
//! instance of it, calling Net::Server's hooks in Net::Server's order.
//!
//! Map of the modules:
//!
//! | module | concern |
//! | --- | --- |
//! | [`cli`] | the command line as typed |
//! | [`config`] | resolving options into a checked [`config::Config`]; port specs |
//! | [`log`] | Net::Server's log levels 0–4 on top of `tracing` |
//! | [`listen`] | binding the listening sockets |
//! | [`server`] | the accept loop and shutdown |
//! | [`connection`] | one client connection: the hooks in order |
//! | [`client`] | what the host knows about a client |
//! | [`wasm`] | the engine, the WIT bindings, per-Store state, guest stdio |

pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod listen;
pub mod log;
pub mod server;
pub mod wasm;

use std::process::ExitCode;

use anyhow::Result;

/// Runs `netserver-host` with the process's arguments: validates everything
/// first, then either prints the resolved configuration (`--check`) or serves
/// until interrupted. An `Err` is a configuration or start-up error: `main`
/// prints it as one line and exits 2.
pub fn run() -> Result<ExitCode> {
    let cli = cli::Cli::parse_args()?;
    let config = config::Config::resolve(cli)?;
    log::init(config.log_level);
    config.warn_planned();
    let handler = wasm::Handler::load(&config)?;
    if config.check {
        println!(
            "{}",
            serde_json::to_string_pretty(&check_report(&config, &handler))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    server::serve(config, handler)?;
    Ok(ExitCode::SUCCESS)
}

/// What `--check` prints: the resolved configuration and what the module is.
pub fn check_report(config: &config::Config, handler: &wasm::Handler) -> serde_json::Value {
    serde_json::json!({
        "listeners": config.listeners,
        "module": {
            "source": handler.source(),
            "kind": handler.kind(),
        },
        "options": options_with_sources(config),
    })
}

/// Every option's effective value with the source it came from.
fn options_with_sources(config: &config::Config) -> serde_json::Value {
    let options = config
        .options
        .iter()
        .map(|(key, (value, source))| {
            (
                key.clone(),
                serde_json::json!({ "value": value, "source": source }),
            )
        })
        .collect();
    serde_json::Value::Object(options)
}
