//! netserver: Perl's Net::Server rebuilt in Rust, with the handler code in a
//! WebAssembly sandbox.
//!
//! The host reads its configuration, binds the listening sockets, compiles the
//! handler component once, and serves each accepted connection with a fresh
//! instance of it, calling Net::Server's hooks in Net::Server's order.
//!
//! Map of the modules, in layers: a module uses only modules of the layers
//! below its own (and leaves, which use nothing of the host), never one
//! above; no two modules import each other, directly or around a circle.
//!
//! | layer | module | concern |
//! | --- | --- | --- |
//! | 7 | this one | the run modes: serve, `--check`, `inetd` |
//! | 6 | [`process`] | the personalities: the master, workers, signals, HUP's hand-over, `inetd` |
//! | 5 | [`connection`] | a connection's life in the hooks world, and in the mux world (one instance per worker, its driver) |
//! | 4 | [`service`] | one service: its handler and policy; the admission prefix of a connection |
//! | 3 | [`wasm`] | the engine, the WIT bindings (both worlds), per-Store state (a mux instance's connections and timers), guest stdio, loading handlers |
//! | 3 | [`listen`] | binding the listening sockets, or taking them over |
//! | 3 | [`daemon`] | leaving the terminal (`background`, `setsid`) and the `pid_file` |
//! | 3 | [`capacity`] | a service's places in a worker; evicting to make room when one client holds them |
//! | 2 | [`transport`] | the kinds of socket: listening, accepted, and a stream as its guest uses it |
//! | 2 | [`gate`] | what a connection passes before its guest: per-address limits, reverse lookups, access rules |
//! | 1 | [`access`], [`busy`], [`fairness`], [`log`], [`privileges`], [`cli`], [`tls`], [`metrics`] | access rules; a tenant process's watch over how busy it is, and its slices while it is; CPU turns and throttling between a worker's services (a throttled service's tasks set aside on threads of their own); the log; dropping root; the command line as typed; certificates and the rustls configuration; the metrics endpoint (the board's sums, over HTTP) |
//! | 0 | [`config`] | the configuration, resolved and checked: the ground floor |
//! | leaf | [`client`], [`threads`], [`proxy`], [`board`], [`title`], [`machine`], [`slice`], [`rate`] | what the host knows of a client; threads and the stop signals; the PROXY protocol's parser; the table of workers and their clients the processes share; the process titles `ps` shows; the memory the machine (or its cgroup) gives the server; the time slice a thread asks the kernel for; the token bucket of the rate limits |

pub mod access;
pub mod board;
pub mod busy;
pub mod capacity;
pub mod cli;
pub mod client;
pub mod config;
pub mod connection;
pub mod daemon;
pub mod fairness;
pub mod gate;
pub mod listen;
pub mod log;
pub mod machine;
pub mod metrics;
pub mod privileges;
pub mod process;
pub mod proxy;
pub mod rate;
pub mod service;
pub mod slice;
pub mod threads;
pub mod title;
pub mod tls;
pub mod transport;
pub mod wasm;

use std::process::ExitCode;

use anyhow::Result;

/// Runs `netserver-host` with the process's arguments: validates everything
/// first, then either prints the resolved configuration (`--check`) or serves
/// until interrupted. An `Err` is a configuration or start-up error: `main`
/// prints it as one line and exits 2.
pub fn run() -> Result<ExitCode> {
    // Sockets handed over (across a HUP, or by systemd) are taken before
    // anything else, while no thread exists.
    let mut handed = listen::inherit::Handed::from_env()?;
    let cli = cli::Cli::parse_args()?;
    let config = config::Config::resolve(cli.settings, cli.conf_file.as_deref())?;
    listen::check_services(&config.services)?;
    let inetd = config.process.server_type == config::ServerType::Inetd;
    let to_stderr = cli.check || matches!(config.log_target, log::Target::Stderr);
    if inetd && to_stderr && stderr_is_the_client() {
        // Under inetd the log must not reach the client.
        log::init_silent();
    } else if cli.check {
        // `--check` creates no log file and reaches no syslog.
        log::init(config.log_level, &log::Target::Stderr)?;
    } else {
        log::init(config.log_level, &config.log_target)?;
    }
    config.warn_planned();
    // Certificates and keys are read and checked before anything is
    // compiled or bound.
    let tls = tls::load_all(&config.services)?;
    let handlers = load_handlers(&config)?;
    // Who to become is settled before anything is bound.
    let privileges = privileges::Plans::new(&config, nix::unistd::geteuid())?;
    if cli.check {
        log::check_target(&config.log_target)?;
        let (report, bind_error) = check_report(&config, &handlers);
        print_report(&report)?;
        // The report is complete either way; a socket that could not be
        // bound here fails the check as it would fail the start.
        return match bind_error {
            Some(err) => Err(err),
            None => Ok(ExitCode::SUCCESS),
        };
    }
    if let log::Target::File(path) = &config.log_target {
        privileges.server.hand_over(&[path])?;
    }
    if inetd {
        if config.daemon.detaches() || config.daemon.pid_file.is_some() {
            tracing::warn!("background, setsid and pid_file do not apply to server_type inetd");
        }
        if config.metrics.is_some() {
            tracing::warn!(
                "metrics_port does not apply to server_type inetd (no master serves it)"
            );
        }
        // The connection is already open: drop root before serving it (to
        // the user of the service that serves it, if it names its own).
        privileges.of_service(0).apply()?;
        let status = process::inetd::run(&config, handlers, tls)?;
        return Ok(ExitCode::from(u8::try_from(status).unwrap_or(1)));
    }
    // From here on the master's signals wait, blocked, until its loop
    // catches them (`Signals::new`): a HUP or TERM sent as soon as the
    // server says it is bound, shows its title or (`background`) its
    // launcher returns, is acted on instead of killing the process with the
    // default action. The mask survives `daemon::detach`'s fork.
    process::signals::hold(&process::signals::MASTER_SIGNALS)?;
    // Room for the process titles is made while the master is still root
    // (and before it forks): see `title`.
    title::prepare();
    title::set(&title::Title::Master);
    if let Some(path) = &config.daemon.pid_file {
        daemon::check_pid_file(path)?;
    }
    let services = service::bind_all(&config, handlers, tls, &mut handed)?;
    // Bound as root, as the services' sockets are (a HUP hands it over).
    let metrics = match config.metrics {
        Some(addr) => Some(metrics::http::Endpoint::open(addr)?),
        None => {
            metrics::http::close_handed_over();
            None
        }
    };
    for (service, settings) in services.iter().zip(&config.services) {
        for path in service.sockets.iter().filter_map(|b| b.file.as_deref()) {
            privileges
                .server
                .hand_over_socket(path, settings.sockets.socket_group)?;
        }
    }
    // Removed as the server ends (not across a HUP: `exec` keeps them).
    let socket_files = listen::files::SocketFiles::new(
        services
            .iter()
            .flat_map(|s| &s.sockets)
            .filter_map(|b| b.file.clone()),
    );
    // Bound (so that a port in use is reported here, status 2) and still
    // without threads: leave the terminal, then become the server's user.
    let launcher = daemon::detach(&config.daemon, &config.log_target, handed.restarted)?;
    let pid_file = match settle(&config, &privileges, handed.restarted) {
        Ok(pid_file) => pid_file,
        Err(err) => {
            let Some(launcher) = launcher else {
                return Err(err);
            };
            // The process started from the terminal prints the error.
            if !matches!(config.log_target, log::Target::Stderr) {
                tracing::error!("{err:#}");
            }
            launcher.failed(&err);
            return Ok(ExitCode::from(2));
        }
    };
    if let Some(launcher) = launcher {
        // Ready means ready for signals too: they are held since before
        // binding, so one sent as soon as the launcher returns waits for
        // the master's handlers.
        launcher.ready();
    }
    process::master::run(&config, services, handed, metrics, &privileges)?;
    // Removed as the server ends (not across a HUP: `exec` keeps them).
    drop(pid_file);
    drop(socket_files);
    Ok(ExitCode::SUCCESS)
}

/// Prints `--check`'s report on standard output. A reader that went away
/// (`--check | head -1`) is not an error: what it wanted, it got.
fn print_report(report: &serde_json::Value) -> Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(report)?;
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(err) if err.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(err).context("writing the report"))
        }
        _ => Ok(()),
    }
}

/// After binding (and leaving the terminal): writes the pid file, as the
/// process that stays, then drops root (or, when some service's workers
/// run as their own user, only enters the chroot: see
/// [`privileges::Plans`]). The pid file, written as root, stays root's.
/// Re-executed by a HUP (`restarted`), the server keeps serving even if it
/// cannot write its pid file again.
fn settle(
    config: &config::Config,
    privileges: &privileges::Plans,
    restarted: bool,
) -> Result<Option<daemon::PidFile>> {
    let mut pid_file = None;
    if let Some(path) = &config.daemon.pid_file {
        match daemon::PidFile::write(path) {
            Ok(mut file) => {
                if let Some(dir) = &privileges.server.chroot {
                    file.enter_chroot(dir);
                }
                pid_file = Some(file);
            }
            Err(err) if restarted => tracing::warn!("{err:#}; going on without it"),
            Err(err) => return Err(err),
        }
    }
    privileges.settle_master()?;
    Ok(pid_file)
}

/// Whether stderr is the same socket as stdin (inetd, systemd with the
/// socket as standard error).
fn stderr_is_the_client() -> bool {
    use std::os::fd::AsFd;
    let same = |a: nix::sys::stat::FileStat, b: nix::sys::stat::FileStat| {
        a.st_dev == b.st_dev && a.st_ino == b.st_ino
    };
    match (
        nix::sys::stat::fstat(std::io::stdin().as_fd()),
        nix::sys::stat::fstat(std::io::stderr().as_fd()),
    ) {
        (Ok(a), Ok(b)) => same(a, b),
        _ => false,
    }
}

/// Builds the one engine and loads every service's handler on it, in the
/// order of `config.services`, each with its memory budget in a worker
/// (see [`wasm::budget`]; said in the log).
pub fn load_handlers(config: &config::Config) -> Result<Vec<wasm::Handler>> {
    let engine = wasm::engine::build(config)?;
    let cache = wasm::cache::ModuleCache::configured(&config.module_cache);
    let machine = machine::memory();
    let plan = wasm::budget::plan(config, machine);
    if let (Some(given), Some(machine)) = (config.process.worker_memory, machine)
        && given > machine
    {
        tracing::warn!(
            "worker_memory {} is more than the machine's {}",
            wasm::budget::shown(given),
            wasm::budget::shown(machine)
        );
    }
    let described = plan.describe(config);
    let handlers = config
        .services
        .iter()
        .zip(plan.services)
        .enumerate()
        .map(|(index, (service, budgets))| {
            wasm::Handler::load(&engine, service, index, cache.as_ref(), budgets)
        })
        .collect::<Result<Vec<_>>>()?;
    check_worlds(config, &handlers)?;
    tracing::debug!("{described}");
    Ok(handlers)
}

/// Refuses what a mux handler cannot be served by: one instance per
/// worker holds every connection, so the worker must serve many at once
/// (`server_type multiplex`), over streams (no datagram port).
fn check_worlds(config: &config::Config, handlers: &[wasm::Handler]) -> Result<()> {
    use config::{Proto, ServerType};
    for (service, handler) in config.services.iter().zip(handlers) {
        if handler.kind() == wasm::GuestKind::Http
            && let Some(datagram) = service
                .listeners
                .iter()
                .find(|l| matches!(l.proto, Proto::Udp | Proto::UnixDgram))
        {
            anyhow::bail!(
                "{}: a wasi:http component ({}) serves HTTP over streams, not datagrams",
                service.origin("port", &datagram.to_string()),
                handler.source()
            );
        }
        if handler.kind() != wasm::GuestKind::Mux {
            continue;
        }
        if service.watch_module {
            anyhow::bail!(
                "{}: a mux handler ({}) holds every connection of its worker in one instance: it is replaced by a restart (HUP), not watched",
                service.origin("watch_module", "1"),
                handler.source()
            );
        }
        let server_type = config.process.server_type;
        if server_type != ServerType::Multiplex {
            anyhow::bail!(
                "{}: a mux handler is served by server_type multiplex only, not {}",
                service.module_origin(handler.source()),
                server_type.name()
            );
        }
        if let Some(listener) = service
            .listeners
            .iter()
            .find(|l| matches!(l.proto, Proto::Udp | Proto::UnixDgram))
        {
            anyhow::bail!(
                "{}: a mux handler ({}) serves stream sockets only (tcp, ssl, unix), not datagrams",
                service.origin("port", &listener.to_string()),
                handler.source()
            );
        }
    }
    Ok(())
}

/// What `--check` prints: every listener as parsed, the sockets they bind,
/// each service with its module, and every option's value and source.
/// With a single service its module is also given at the top. A listener
/// whose sockets cannot be worked out here (a host that does not resolve,
/// or lacks an address of the IP version asked for) shows its error in
/// `bind`, and the first such error is returned beside the report.
pub fn check_report(
    config: &config::Config,
    handlers: &[wasm::Handler],
) -> (serde_json::Value, Option<anyhow::Error>) {
    let mut first_error = None;
    let mut plan = |listeners: &[config::Listener]| -> Vec<serde_json::Value> {
        let mut bind = Vec::new();
        let mut seen = Vec::new();
        for listener in listeners {
            match listen::plan(std::slice::from_ref(listener)) {
                Ok(plans) => {
                    for (plan, _) in plans {
                        if !seen.contains(&plan) {
                            bind.push(serde_json::json!(plan));
                            seen.push(plan);
                        }
                    }
                }
                Err(err) => {
                    bind.push(serde_json::json!({ "error": err.to_string() }));
                    first_error.get_or_insert(err);
                }
            }
        }
        bind
    };
    let services: Vec<serde_json::Value> = config
        .services
        .iter()
        .zip(handlers)
        .map(|(service, handler)| {
            serde_json::json!({
                "name": service.name,
                "module": module_report(handler),
                "listeners": service.listeners,
                "bind": plan(&service.listeners),
                "options": with_sources(&service.options),
            })
        })
        .collect();
    let listeners: Vec<config::Listener> = config.listeners().cloned().collect();
    // A TLS port several services share is bound once (other overlaps
    // are refused); port 0 asks for a fresh port each time it is listed.
    let mut bind: Vec<serde_json::Value> = Vec::new();
    for socket in services
        .iter()
        .flat_map(|s| s["bind"].as_array().cloned().unwrap_or_default())
    {
        let fresh = socket["address"]
            .as_str()
            .is_some_and(|a| a.ends_with(":0"));
        if fresh || !bind.contains(&socket) {
            bind.push(socket);
        }
    }
    let mut report = serde_json::json!({
        "listeners": listeners,
        "bind": bind,
        "services": services,
        "options": with_sources(&config.options),
    });
    if let [handler] = handlers {
        report["module"] = module_report(handler);
    }
    (report, first_error)
}

fn module_report(handler: &wasm::Handler) -> serde_json::Value {
    serde_json::json!({
        "source": handler.source(),
        "kind": handler.kind(),
        "server_hooks": handler.has_server_hooks(),
    })
}

/// Every option's effective value with the source it came from.
fn with_sources(options: &config::Report) -> serde_json::Value {
    let options = options
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

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    /// The layers of the module map above: a module may use leaves and the
    /// modules of lower layers only.
    const LAYERS: &[(&str, i32)] = &[
        ("client", -1),
        ("threads", -1),
        ("proxy", -1),
        ("board", -1),
        ("title", -1),
        ("machine", -1),
        ("slice", -1),
        ("rate", -1),
        ("config", 0),
        ("access", 1),
        ("busy", 1),
        ("fairness", 1),
        ("log", 1),
        ("privileges", 1),
        ("cli", 1),
        ("tls", 1),
        ("metrics", 1),
        ("transport", 2),
        ("gate", 2),
        ("wasm", 3),
        ("listen", 3),
        ("daemon", 3),
        ("capacity", 3),
        ("service", 4),
        ("connection", 5),
        ("process", 6),
    ];

    /// The text of a module: its file, or every file of its folder.
    fn source(module: &str) -> String {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let file = src.join(format!("{module}.rs"));
        if file.exists() {
            return std::fs::read_to_string(file).unwrap();
        }
        let mut text = String::new();
        let mut dirs = vec![src.join(module)];
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    dirs.push(path);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    text.push_str(&std::fs::read_to_string(path).unwrap());
                }
            }
        }
        text
    }

    #[test]
    fn modules_use_only_leaves_and_lower_layers() {
        let layer: BTreeMap<&str, i32> = LAYERS.iter().copied().collect();
        let mut wrong = Vec::new();
        for &(module, own) in LAYERS {
            let text = source(module);
            for (other, &theirs) in &layer {
                let uses = regex::Regex::new(&format!(r"crate::{other}\b")).unwrap();
                if *other == module || !uses.is_match(&text) {
                    continue;
                }
                let allowed = if own < 0 { false } else { theirs < own };
                if !allowed {
                    wrong.push(format!(
                        "{module} (layer {own}) uses {other} (layer {theirs})"
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        // Every module of the crate has its layer.
        let src = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs"))
            .unwrap();
        for line in src.lines().filter_map(|l| l.strip_prefix("pub mod ")) {
            let module = line.trim_end_matches(';');
            assert!(layer.contains_key(module), "{module} has no layer");
        }
    }
}
