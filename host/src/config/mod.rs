//! Configuration: the command line and the conf file resolved once into a
//! checked [`Config`].
//!
//! Every value is validated here, before anything is bound or compiled; an
//! error names where the value was given (`--option`, or `file:line` and
//! the key) and the value at fault.

pub mod options;
pub mod port;
pub mod sources;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use serde::Serialize;

use crate::cli::Cli;
use options::Scope;
pub use port::{Ipv, Listener, Port, PortDefaults, Proto};
pub use sources::{ServiceTable, Setting, Source};

/// Net::Server's default port.
pub const DEFAULT_PORT: &str = "20203";

/// Every option's effective value and the source it came from.
pub type Report = BTreeMap<String, (serde_json::Value, Source)>;

/// The resolved configuration of one `netserver-host`.
#[derive(Clone, Debug)]
pub struct Config {
    /// The hosted services: one per `[[service]]` table of a TOML conf file,
    /// or the one the top-level options describe.
    pub services: Vec<ServiceConfig>,
    /// Net::Server's log level, 0 (err) to 4 (debug).
    pub log_level: u8,
    /// Where the log goes (`log_file` and the `syslog_*` options).
    pub log_target: crate::log::Target,
    /// Who the server becomes after binding, and where (`user`, `group`,
    /// `chroot`).
    pub privileges: crate::privileges::Wanted,
    /// Whether and how the server leaves the terminal, and its pid file
    /// (`background`, `setsid`, `pid_file`).
    pub daemon: crate::daemon::Settings,
    /// The personality and its process options.
    pub process: ProcessConfig,
    /// Where compiled modules are kept between starts (`None`: nowhere).
    pub module_cache: Option<PathBuf>,
    /// Every option's effective top-level value and where it came from.
    pub options: Report,
    /// Validate, print and exit (`--check`).
    pub check: bool,
}

/// Net::Server's personalities (`server_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ServerType {
    /// Worker processes each serving many connections at once.
    Multiplex,
    /// One connection at a time.
    Single,
    /// The one connection on stdin/stdout.
    Inetd,
    /// A child process per connection.
    Fork,
    /// A fixed number of children, each serving one connection at a time.
    PreforkSimple,
    /// Children between spare bounds, each serving one connection at a time.
    Prefork,
}

impl ServerType {
    fn parse(text: &str) -> Option<Self> {
        Some(match text.to_ascii_lowercase().as_str() {
            "multiplex" => Self::Multiplex,
            "single" => Self::Single,
            "inetd" => Self::Inetd,
            "fork" => Self::Fork,
            "prefork-simple" => Self::PreforkSimple,
            "prefork" => Self::Prefork,
            _ => return None,
        })
    }
}

/// How children take turns accepting (`serialize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AcceptSerialization {
    /// An exclusive `flock` on the lock file around accept (also what
    /// `semaphore` and `pipe` select).
    Flock,
    /// Every idle child waits on every socket.
    None,
}

/// The process model: the personality and its options.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessConfig {
    /// The personality.
    pub server_type: ServerType,
    /// `multiplex`: worker processes.
    pub workers: u32,
    /// `prefork`: children started at first.
    pub min_servers: u32,
    /// Most children (`fork`: concurrent connections; `prefork-simple`:
    /// the number of children).
    pub max_servers: u32,
    /// `prefork`: least idle children.
    pub min_spare_servers: u32,
    /// `prefork`: most idle children.
    pub max_spare_servers: u32,
    /// Connections a child serves before it is replaced.
    pub max_requests: u64,
    /// How often the parent checks idle children.
    #[serde(serialize_with = "as_secs")]
    pub check_for_waiting: Duration,
    /// How often the parent looks for children that died unseen.
    #[serde(serialize_with = "as_secs")]
    pub check_for_dead: Duration,
    /// How often the parent tops up idle children.
    #[serde(serialize_with = "as_secs")]
    pub check_for_spawn: Duration,
    /// The least a child lives before it may be retired for being spare.
    #[serde(serialize_with = "as_secs")]
    pub min_child_ttl: Duration,
    /// How children take turns accepting.
    pub serialize: AcceptSerialization,
    /// The file `serialize flock` locks (default: a fresh temporary file).
    pub lock_file: Option<PathBuf>,
    /// Across a HUP, leave the old children alone rather than asking them
    /// to finish their connections and exit.
    pub leave_children_open_on_hup: bool,
    /// Signals the parent passes on to every child.
    pub sig_passthrough: Vec<String>,
    /// QUIT: how long open connections may take to finish.
    #[serde(serialize_with = "as_secs")]
    pub quit_timeout: Duration,
}

impl ProcessConfig {
    fn from_values(values: &Values) -> Result<Self> {
        let server_type = values
            .last("server_type")
            .map_or(Ok(ServerType::Multiplex), |s| {
                ServerType::parse(&s.value).ok_or_else(|| bad(s, "unknown server_type"))
            })?;
        let serialize = match values
            .last("serialize")
            .map(|s| s.value.to_ascii_lowercase())
        {
            Some(word) if word == "none" => AcceptSerialization::None,
            _ => AcceptSerialization::Flock,
        };
        let mut sig_passthrough = Vec::new();
        for setting in values.all("sig_passthrough") {
            for name in setting.value.split([',', ' ']).filter(|n| !n.is_empty()) {
                let name = name.trim_start_matches("SIG").to_ascii_uppercase();
                if crate::process::signal_number(&name).is_none() {
                    return Err(bad(setting, &format!("unknown signal '{name}'")));
                }
                sig_passthrough.push(name);
            }
        }
        let config = Self {
            server_type,
            workers: parse_num(values.last("workers"), 1, 1..=1024)?,
            min_servers: parse_num(values.last("min_servers"), 5, 1..=100_000)?,
            max_servers: parse_num(values.last("max_servers"), 50, 1..=100_000)?,
            min_spare_servers: parse_num(values.last("min_spare_servers"), 2, 0..=100_000)?,
            max_spare_servers: parse_num(values.last("max_spare_servers"), 10, 1..=100_000)?,
            max_requests: parse_num(values.last("max_requests"), 1000, 1..=u64::MAX)?,
            check_for_waiting: parse_secs(values.last("check_for_waiting"), 10.0)?,
            check_for_dead: parse_secs(values.last("check_for_dead"), 30.0)?,
            check_for_spawn: parse_secs(values.last("check_for_spawn"), 30.0)?,
            min_child_ttl: parse_secs(values.last("min_child_ttl"), 10.0)?,
            serialize,
            lock_file: values.last("lock_file").map(|s| PathBuf::from(&s.value)),
            leave_children_open_on_hup: values
                .last("leave_children_open_on_hup")
                .and_then(|s| options::parse_bool(&s.value))
                .unwrap_or(false),
            sig_passthrough,
            quit_timeout: parse_secs(values.last("quit_timeout"), 30.0)?,
        };
        if config.server_type == ServerType::Prefork {
            let at = |key| values.last(key).or(values.last("max_servers"));
            if config.min_servers > config.max_servers
                && let Some(s) = at("min_servers")
            {
                return Err(bad(s, "min_servers is above max_servers"));
            }
            if config.min_spare_servers > config.max_spare_servers
                && let Some(s) = at("min_spare_servers")
            {
                return Err(bad(s, "min_spare_servers is above max_spare_servers"));
            }
        }
        Ok(config)
    }
}

/// How instances are made (`instance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceMode {
    /// A fresh instance for every connection.
    PerConnection,
    /// One instance per worker serves its connections in turn.
    PerWorker,
}

/// One hosted service: a handler, the ports it is served on, its limits.
#[derive(Clone, Debug, Serialize)]
pub struct ServiceConfig {
    /// The service name given to the handler and used in the log.
    pub name: String,
    /// The handler's file; `None` serves the built-in echo handler.
    pub module: Option<PathBuf>,
    /// The sockets to listen on, as specified (before name resolution).
    pub listeners: Vec<Listener>,
    /// How long a connection may move no byte before it is closed.
    #[serde(serialize_with = "as_secs")]
    pub idle_timeout: Duration,
    /// CPU time one hook call may use before it is interrupted.
    #[serde(serialize_with = "as_secs")]
    pub cpu_limit: Duration,
    /// Bytes of linear memory one instance may use.
    pub max_memory: u64,
    /// Instances (connections) of this service served at once.
    pub max_instances: u32,
    /// Properties handed to the handler.
    pub properties: BTreeMap<String, String>,
    /// A fresh instance per connection, or one per worker.
    pub instance: InstanceMode,
    /// How often the guest's `dequeue` runs, when it does.
    #[serde(serialize_with = "as_opt_secs")]
    pub check_for_dequeue: Option<Duration>,
    /// `dequeue` runs at once, at most.
    pub max_dequeue: u32,
    /// How long a connection may last in all, when limited.
    #[serde(serialize_with = "as_opt_secs")]
    pub connection_timeout: Option<Duration>,
    /// What the guest may use beyond its client: directories, environment,
    /// outbound networks.
    pub grants: Grants,
    /// The access rules (`allow`, `deny`, `cidr_allow`, `cidr_deny`,
    /// `allow_uid`, reverse lookups).
    #[serde(skip)]
    pub access: crate::access::Rules,
    /// Proxies whose connections start with a PROXY protocol header.
    #[serde(serialize_with = "as_strings")]
    pub proxy_from: Vec<ipnet::IpNet>,
    /// Connections one client address may hold open at once (0: no limit).
    pub max_conn_per_ip: u32,
    /// New connections per second one client address may open (0: no
    /// limit).
    pub max_rate_per_ip: u32,
    /// Where the service is defined: its `[[service]]` table, or the
    /// top level.
    #[serde(skip)]
    pub source: Source,
    /// The effective value and source of each per-service option.
    #[serde(skip)]
    pub options: Report,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

fn as_opt_secs<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_f64(d.as_secs_f64()),
        None => s.serialize_none(),
    }
}

/// The capabilities a service's guests are granted. Without any, a guest
/// has no files, no environment and no network.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Grants {
    /// Host directories, pre-opened for the guest.
    #[serde(serialize_with = "as_strings")]
    pub dirs: Vec<options::DirGrant>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Networks the guest may connect (TCP) and send (UDP) to.
    #[serde(serialize_with = "as_strings")]
    pub connect: Vec<ipnet::IpNet>,
}

fn as_strings<S: serde::Serializer, T: std::fmt::Display>(
    items: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(ToString::to_string))
}

impl Grants {
    fn from_values(values: &Values) -> Result<Self> {
        let each = |key: &str| values.all(key).iter();
        Ok(Self {
            dirs: each("grant_dir")
                .map(|s| options::parse_dir_grant(&s.value).map_err(|why| bad(s, &why)))
                .collect::<Result<_>>()?,
            env: each("grant_env")
                .map(|s| options::parse_env_grant(&s.value).map_err(|why| bad(s, &why)))
                .collect::<Result<_>>()?,
            connect: each("grant_connect")
                .map(|s| options::parse_cidr(&s.value).map_err(|why| bad(s, &why)))
                .collect::<Result<_>>()?,
        })
    }
}

impl Config {
    /// Resolves the command line and, with `--conf-file`, the conf file,
    /// and validates every value. The command line wins over the file, the
    /// file over the defaults; a key the command line gives replaces all the
    /// file's values for it (in every `[[service]]` table too), as in
    /// Net::Server. A service table's own value replaces the top level's.
    pub fn resolve(cli: Cli) -> Result<Self> {
        let conf = match &cli.conf_file {
            Some(path) => sources::read_conf_file(path)?,
            None => sources::ConfFile::default(),
        };
        Self::from_sources(cli.settings, conf, cli.check)
    }

    /// Resolves settings already read (see [`Config::resolve`]).
    pub fn from_sources(
        command_line: Vec<Setting>,
        conf: sources::ConfFile,
        check: bool,
    ) -> Result<Self> {
        let on_command_line: BTreeSet<String> =
            command_line.iter().map(|s| s.key.clone()).collect();
        let values = Values::merge(command_line, conf.settings)?;
        let services = if conf.services.is_empty() {
            vec![ServiceConfig::from_values(&values, Source::Default)?]
        } else {
            let mut services: Vec<ServiceConfig> = Vec::new();
            for table in &conf.services {
                let own = values.for_service(&on_command_line, table)?;
                if own.last("module").is_none() {
                    bail!(
                        "{}: [[service]]{}: no module given (every service needs `module = \"PATH\"`)",
                        table.source,
                        own.last("service")
                            .map(|s| format!(" '{}'", s.value))
                            .unwrap_or_default()
                    );
                }
                let service = ServiceConfig::from_values(&own, table.source.clone())?;
                check_distinct(&services, &service)?;
                services.push(service);
            }
            services
        };
        let mut options = values.report();
        if let ([only], Some((value, _))) = (services.as_slice(), options.get_mut("service")) {
            // Derived from the module when not given.
            *value = only.name.as_str().into();
        }
        Ok(Self {
            services,
            process: ProcessConfig::from_values(&values)?,
            module_cache: match values.last("module_cache") {
                Some(s) if s.value.eq_ignore_ascii_case("off") => None,
                Some(s) => Some(PathBuf::from(&s.value)),
                None => crate::wasm::cache::default_dir(),
            },
            log_level: parse_num(values.last("log_level"), 2, 0..=4)?,
            log_target: log_target(&values)?,
            privileges: crate::privileges::Wanted {
                user: values.last("user").map(|s| s.value.clone()),
                group: values.last("group").map(|s| s.value.clone()),
                chroot: values.last("chroot").map(|s| PathBuf::from(&s.value)),
            },
            daemon: crate::daemon::Settings {
                background: flag(&values, "background"),
                setsid: flag(&values, "setsid"),
                pid_file: values.last("pid_file").map(|s| PathBuf::from(&s.value)),
            },
            options,
            check,
        })
    }

    /// Every service's listeners, in order.
    pub fn listeners(&self) -> impl Iterator<Item = &Listener> {
        self.services.iter().flat_map(|s| &s.listeners)
    }
}

/// A second service may not take an existing one's name or port.
fn check_distinct(services: &[ServiceConfig], new: &ServiceConfig) -> Result<()> {
    for old in services {
        if old.name == new.name {
            bail!(
                "{}: service '{}' is already defined at {}",
                new.source,
                new.name,
                old.source
            );
        }
        // Port 0 asks the kernel for a fresh port each time: never shared.
        let shared = |l: &&Listener| l.port != Port::Number(0) && old.listeners.contains(l);
        if let Some(listener) = new.listeners.iter().find(shared) {
            bail!(
                "{}: service '{}': port {listener} is already served by service '{}'",
                new.source,
                new.name,
                old.name
            );
        }
    }
    Ok(())
}

impl ServiceConfig {
    fn from_values(values: &Values, source: Source) -> Result<Self> {
        let listeners = listeners(values)?;
        let module = values.last("module").map(|s| PathBuf::from(&s.value));
        let name = match (values.last("service"), &module) {
            (Some(s), _) if s.value.is_empty() => return Err(bad(s, "must not be empty")),
            (Some(s), _) => s.value.clone(),
            (None, Some(path)) => path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "handler".to_owned()),
            (None, None) => "echo".to_owned(),
        };
        let mut options: Report = values
            .report()
            .into_iter()
            .filter(|(key, _)| options::find(key).is_some_and(|s| s.scope == Scope::Service))
            .collect();
        if let Some((value, _)) = options.get_mut("service") {
            *value = name.as_str().into();
        }
        Ok(Self {
            name,
            module,
            listeners,
            idle_timeout: parse_secs(values.last("idle_timeout"), 30.0)?,
            cpu_limit: parse_secs(values.last("cpu_limit"), 10.0)?,
            max_memory: parse_size(values.last("max_memory"), 64 << 20)?,
            max_instances: parse_num(values.last("max_instances"), 1000, 1..=100_000)?,
            properties: parse_properties(values.all("property"))?,
            instance: match values
                .last("instance")
                .map(|s| s.value.to_ascii_lowercase())
            {
                Some(mode) if mode == "per-worker" => InstanceMode::PerWorker,
                _ => InstanceMode::PerConnection,
            },
            check_for_dequeue: values
                .last("check_for_dequeue")
                .map(|s| parse_secs(Some(s), 0.0))
                .transpose()?,
            max_dequeue: parse_num(values.last("max_dequeue"), 1, 1..=1000)?,
            connection_timeout: values
                .last("connection_timeout")
                .map(|s| parse_secs(Some(s), 0.0))
                .transpose()?,
            grants: Grants::from_values(values)?,
            access: access_rules(values)?,
            proxy_from: values
                .all("proxy_from")
                .iter()
                .map(|s| options::parse_cidr(&s.value).map_err(|why| bad(s, &why)))
                .collect::<Result<_>>()?,
            max_conn_per_ip: parse_num(values.last("max_conn_per_ip"), 0, 0..=1_000_000)?,
            max_rate_per_ip: parse_num(values.last("max_rate_per_ip"), 0, 0..=1_000_000)?,
            source,
            options,
        })
    }
}

/// Where the log goes: stderr, a file, or syslog as the `syslog_*`
/// options say.
fn log_target(values: &Values) -> Result<crate::log::Target> {
    use crate::log::{Syslog, SyslogSocket, Target};
    let Some(file) = values.last("log_file") else {
        return Ok(Target::Stderr);
    };
    if !file.value.eq_ignore_ascii_case(options::SYSLOG) {
        return Ok(Target::File(PathBuf::from(&file.value)));
    }
    let setting = |key: &str| {
        values.last(key).cloned().unwrap_or_else(|| Setting {
            key: key.to_owned(),
            value: options::find(key)
                .and_then(|s| s.default)
                .unwrap_or_default()
                .to_owned(),
            source: Source::Default,
        })
    };
    let facility = setting("syslog_facility");
    let facility = facility.value.parse::<syslog::Facility>().map_err(|()| {
        bad(
            &facility,
            "not a syslog facility (daemon, user, local0 … local7, …)",
        )
    })?;
    let logopt = setting("syslog_logopt");
    let mut pid = false;
    for word in logopt
        .value
        .split(['|', ',', ' '])
        .filter(|w| !w.is_empty())
    {
        match word.to_ascii_lowercase().as_str() {
            "pid" => pid = true,
            // The host connects at once and never writes to the console.
            "ndelay" | "nowait" | "odelay" | "cons" | "perror" => {}
            _ => return Err(bad(&logopt, "options are pid, ndelay, nowait, cons")),
        }
    }
    let logsock = setting("syslog_logsock");
    let mut sockets = Vec::new();
    for word in logsock
        .value
        .split(['|', ',', ' '])
        .filter(|w| !w.is_empty())
    {
        sockets.push(match word.to_ascii_lowercase().as_str() {
            _ if word.starts_with('/') => SyslogSocket::Unix(Some(PathBuf::from(word))),
            "unix" | "native" | "stream" => SyslogSocket::Unix(None),
            "inet" | "udp" => SyslogSocket::Udp,
            "tcp" => SyslogSocket::Tcp,
            _ => {
                return Err(bad(
                    &logsock,
                    "sockets are unix, native, stream, inet, udp, tcp or a socket path",
                ));
            }
        });
    }
    Ok(Target::Syslog(Syslog {
        ident: setting("syslog_ident").value,
        facility,
        pid,
        sockets,
    }))
}

/// The access rules of a service.
fn access_rules(values: &Values) -> Result<crate::access::Rules> {
    let texts =
        |key: &str| -> Vec<String> { values.all(key).iter().map(|s| s.value.clone()).collect() };
    let mut uids = Vec::new();
    for setting in values.all("allow_uid") {
        let user = match setting.value.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(uid.into()),
            Err(_) => nix::unistd::User::from_name(&setting.value),
        };
        match user {
            Ok(Some(user)) => uids.push(user.uid.as_raw()),
            _ => return Err(bad(setting, "no such user on this machine")),
        }
    }
    let mut rules = crate::access::Rules::new(
        &texts("deny"),
        &texts("cidr_deny"),
        &texts("allow"),
        &texts("cidr_allow"),
        uids,
    )?;
    rules.double_reverse_lookups = flag(values, "double_reverse_lookups");
    rules.reverse_lookups = flag(values, "reverse_lookups") || rules.double_reverse_lookups;
    Ok(rules)
}

/// A boolean option's value (checked when the values were read).
fn flag(values: &Values, key: &str) -> bool {
    values
        .last(key)
        .and_then(|s| options::parse_bool(&s.value))
        .unwrap_or(false)
}

/// The listeners of every `port` value. The i-th port takes the i-th
/// `host`, `proto` and `ipv` (the last one when there are fewer), as in
/// Net::Server; a port spec's own host, proto or ipv wins. Listeners given
/// twice are listed once.
fn listeners(values: &Values) -> Result<Vec<Listener>> {
    let default_port = Setting {
        key: "port".to_owned(),
        value: DEFAULT_PORT.to_owned(),
        source: Source::Default,
    };
    let ports = match values.all("port") {
        [] => std::slice::from_ref(&default_port),
        ports => ports,
    };
    let nth = |key: &str, i: usize| {
        let all = values.all(key);
        all.get(i).or(all.last())
    };
    let mut listeners = Vec::new();
    for (i, spec) in ports.iter().enumerate() {
        let (host, host_ipv) = match nth("host", i) {
            None => ("*".to_owned(), None),
            Some(s) => port::split_host_value(&s.value).map_err(|why| bad(s, &why))?,
        };
        let (proto, proto_ipv) = match nth("proto", i) {
            None => (Proto::Tcp, None),
            Some(s) => port::split_proto_value(&s.value).map_err(|why| bad(s, &why))?,
        };
        let ipv = match (host_ipv.or(proto_ipv), nth("ipv", i)) {
            (Some(ipv), _) => ipv,
            (None, None) => vec![Ipv::Any],
            (None, Some(s)) => {
                port::parse_ipv_list(&s.value).map_err(|_| bad(s, "must be 4, 6 or *"))?
            }
        };
        let defaults = PortDefaults { host, proto, ipv };
        for listener in
            port::parse_listeners(&spec.value, &defaults).map_err(|why| bad(spec, &why))?
        {
            if let (Port::Service { name, .. }, Some(proto)) =
                (&listener.port, listener.proto.service_proto())
                && port::resolve_service(name, proto).is_none()
            {
                let why = format!("unknown service '{name}' (not in /etc/services)");
                return Err(bad(spec, &why));
            }
            if !listeners.contains(&listener) {
                listeners.push(listener);
            }
        }
    }
    Ok(listeners)
}

impl Config {
    /// Logs a warning for each option that was set but does not take effect
    /// yet (see [`options::Status::Planned`]).
    pub fn warn_planned(&self) {
        let reports =
            std::iter::once(&self.options).chain(self.services.iter().map(|s| &s.options));
        let mut warned = BTreeSet::new();
        for report in reports {
            for (key, (_, source)) in report {
                let planned =
                    options::find(key).is_some_and(|s| s.status == options::Status::Planned);
                if planned && *source != Source::Default && warned.insert((key, source.to_string()))
                {
                    tracing::warn!(
                        "{source}: option '{key}' is accepted but does not take effect yet"
                    );
                }
            }
        }
        let one_connection_each = matches!(
            self.process.server_type,
            ServerType::Fork | ServerType::Inetd
        );
        for service in &self.services {
            if one_connection_each && (service.max_conn_per_ip > 0 || service.max_rate_per_ip > 0) {
                tracing::warn!(
                    "service {}: max_conn_per_ip and max_rate_per_ip count per worker process; \
                     with server_type {} each process serves one connection, so they do not apply",
                    service.name,
                    self.options
                        .get("server_type")
                        .and_then(|(v, _)| v.as_str())
                        .unwrap_or_default()
                );
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

    /// A service's values: the top level's, with each key its table gives
    /// replaced by the table's values — except keys the command line gave,
    /// which win everywhere. Only per-service options belong in a table.
    fn for_service(
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
                options::check(spec.kind, &setting.value).map_err(|why| bad(setting, &why))?;
            }
        }
        Ok(())
    }

    /// Every option's effective typed value and where it came from, as
    /// `--check` prints them: a repeatable option gives a list.
    fn report(&self) -> Report {
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
        assert_eq!(report["host"], (serde_json::json!(["*"]), Source::Default));
    }

    fn table(line: usize, settings: Vec<Setting>) -> ServiceTable {
        ServiceTable {
            source: Source::File {
                path: "s.toml".into(),
                line,
            },
            settings,
        }
    }

    #[test]
    fn service_precedence_command_line_table_top_level_default() {
        let conf = sources::ConfFile {
            settings: vec![
                file("max_memory", "32M", 1),
                file("idle_timeout", "5", 2),
                file("port", "1000", 3),
            ],
            services: vec![
                table(
                    4,
                    vec![
                        file("service", "a", 5),
                        file("module", "/etc/passwd", 6),
                        file("max_memory", "8M", 7),
                        file("idle_timeout", "7", 8),
                        file("port", "2000", 9),
                    ],
                ),
                table(
                    10,
                    vec![file("service", "b", 11), file("module", "/etc/passwd", 12)],
                ),
            ],
        };
        let config = Config::from_sources(vec![cli("idle_timeout", "9")], conf, false).unwrap();
        let [a, b] = config.services.as_slice() else {
            panic!("two services")
        };
        // Table over top level; command line over both; default last.
        assert_eq!((a.max_memory, b.max_memory), (8 << 20, 32 << 20));
        let nine = Duration::from_secs(9);
        assert_eq!((a.idle_timeout, b.idle_timeout), (nine, nine));
        assert_eq!(
            (a.cpu_limit, b.cpu_limit),
            (Duration::from_secs(10), Duration::from_secs(10))
        );
        let port = |s: &ServiceConfig| s.listeners[0].port.clone();
        assert_eq!((port(a), port(b)), (Port::Number(2000), Port::Number(1000)));
        assert_eq!(a.options["max_memory"].1.to_string(), "s.conf:7");
        assert_eq!(b.options["max_memory"].1.to_string(), "s.conf:1");
        assert_eq!(a.options["idle_timeout"].1, Source::CommandLine);
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
                .and_then(|v| ServiceConfig::from_values(&v, Source::Default))
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
