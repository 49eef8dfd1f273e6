//! Resolving the merged values into the typed [`Config`]. Every value is
//! read through the option table (see `raw`), so an option's type, range
//! and default are the ones `--check` reports and the documentation lists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

use super::options::{self, Scope, Typed};
use super::port::Proto;
use super::raw::{Values, bad};
use super::tls::{self, NamePattern, TlsSettings, TlsVersion, Verify};
use super::{
    AcceptSerialization, AccessConfig, CacheDir, Config, DaemonSettings, Grants, InstanceMode,
    Isolation, Listener, LogTarget, OwnProcesses, Port, PortDefaults, Privileges, ProcessConfig,
    Report, ServerType, ServiceConfig, Setting, Source, Syslog, SyslogSocket, port, sources,
};
use super::{HttpSettings, RECV_FLAGS_ALLOWED, SocketSettings};

impl Config {
    /// Resolves the command line's `settings` and, when given, the conf
    /// file at `conf_file`, and validates every value. The command line
    /// wins over the file, the file over the defaults; a key the command
    /// line gives replaces all the file's values for it (in every
    /// `[[service]]` table too), as in Net::Server. A service table's own
    /// value replaces the top level's.
    pub fn resolve(settings: Vec<Setting>, conf_file: Option<&Path>) -> Result<Self> {
        let conf = match conf_file {
            Some(path) => sources::read_conf_file(path)?,
            None => sources::ConfFile::default(),
        };
        Self::from_sources(settings, conf)
    }

    /// Resolves settings already read (see [`Config::resolve`]).
    pub fn from_sources(command_line: Vec<Setting>, conf: sources::ConfFile) -> Result<Self> {
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
                let mut service = ServiceConfig::from_values(&own, table.source.clone())?;
                service.own = own_processes(&own, &values, service.isolation)?;
                check_distinct(&services, &service)?;
                services.push(service);
            }
            services
        };
        let mut options = report(&values);
        if let ([only], Some((value, _))) = (services.as_slice(), options.get_mut("service")) {
            // Derived from the module when not given.
            *value = only.name.as_str().into();
        }
        Ok(Self {
            services,
            process: ProcessConfig::from_values(&values)?,
            module_cache: match values.text("module_cache") {
                Some(dir) if dir.eq_ignore_ascii_case("off") => CacheDir::Off,
                Some(dir) => CacheDir::At(PathBuf::from(dir)),
                None => CacheDir::Default,
            },
            listen_backlog: values.int("listen"),
            metrics: values.addr("metrics_port"),
            log_level: values.int("log_level"),
            log_target: log_target(&values)?,
            privileges: Privileges {
                user: values.text("user"),
                group: values.text("group"),
                chroot: values.path("chroot"),
            },
            daemon: DaemonSettings {
                background: values.flag("background"),
                setsid: values.flag("setsid"),
                pid_file: values.path("pid_file"),
            },
            options,
        })
    }

    /// Logs a warning for each option that was set but does not take effect
    /// yet (see [`options::Status::Planned`]), and for options that do not
    /// apply to the personality.
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
        let server_type = self.process.server_type;
        let one_connection_each = matches!(server_type, ServerType::Fork | ServerType::Inetd);
        for service in &self.services {
            if server_type == ServerType::Inetd && service.max_connections > 0 {
                tracing::warn!(
                    "service {}: max_connections counts across the worker processes; \
                     with server_type inetd each process serves one connection, so it does not apply",
                    service.name
                );
            }
            if one_connection_each && (service.max_conn_per_ip > 0 || service.max_rate_per_ip > 0) {
                tracing::warn!(
                    "service {}: max_conn_per_ip and max_rate_per_ip count per worker process; \
                     with server_type {} each process serves one connection, so they do not apply",
                    service.name,
                    server_type.name()
                );
            }
        }
    }
}

impl ProcessConfig {
    fn from_values(values: &Values) -> Result<Self> {
        let server_type = values.choice("server_type");
        let server_type = ServerType::NAMES
            .iter()
            .find(|(name, _)| *name == server_type)
            .map(|(_, t)| *t)
            .unwrap_or_else(|| panic!("server_type {server_type} is in the table, not in NAMES"));
        let serialize = match values.choice("serialize") {
            "none" => AcceptSerialization::None,
            // `semaphore` and `pipe` serialize as `flock` does.
            _ => AcceptSerialization::Flock,
        };
        let mut sig_passthrough = Vec::new();
        for (typed, _) in values.typed_all("sig_passthrough") {
            let Typed::Signals(signals) = typed else {
                unreachable!("sig_passthrough is of kind Signals")
            };
            for signal in signals {
                if !sig_passthrough.contains(&signal) {
                    sig_passthrough.push(signal);
                }
            }
        }
        let config = Self {
            server_type,
            workers: values.int("workers"),
            min_servers: values.int("min_servers"),
            max_servers: values.int("max_servers"),
            min_spare_servers: values.int("min_spare_servers"),
            max_spare_servers: values.int("max_spare_servers"),
            max_requests: values.int("max_requests"),
            check_for_waiting: values.secs("check_for_waiting"),
            check_for_idle: values.secs("check_for_idle"),
            check_for_dead: values.secs("check_for_dead"),
            check_for_spawn: values.secs("check_for_spawn"),
            min_child_ttl: values.secs("min_child_ttl"),
            serialize,
            lock_file: values.path("lock_file"),
            leave_children_open_on_hup: values.flag("leave_children_open_on_hup"),
            sig_passthrough,
            quit_timeout: values.secs("quit_timeout"),
            term_drains: values.flag("term_drains"),
            worker_memory: values.opt_size("worker_memory"),
            no_close_by_child: values.flag("no_close_by_child"),
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

impl Grants {
    fn from_values(values: &Values) -> Self {
        Self {
            dirs: values
                .typed_all("grant_dir")
                .into_iter()
                .map(|(typed, _)| match typed {
                    Typed::Dir(grant) => grant,
                    other => unreachable!("grant_dir gives directories, not {other:?}"),
                })
                .collect(),
            env: values.pairs("grant_env"),
            connect: values.cidrs("grant_connect"),
        }
    }
}

/// A second service may not take an existing one's name (that it may not
/// take its sockets either is checked once they are planned:
/// `listen::check_services`).
fn check_distinct(services: &[ServiceConfig], new: &ServiceConfig) -> Result<()> {
    if let Some(old) = services.iter().find(|old| old.name == new.name) {
        bail!(
            "{}: service '{}' is already defined at {}",
            new.source,
            new.name,
            old.source
        );
    }
    Ok(())
}

impl ServiceConfig {
    fn from_values(values: &Values, source: Source) -> Result<Self> {
        let listeners = listeners(values)?;
        let module = values.path("module");
        let name = match (values.last("service"), &module) {
            (Some(s), _) if s.value.is_empty() => return Err(bad(s, "must not be empty")),
            (Some(s), _) if !is_service_name(&s.value) => return Err(bad(s, SERVICE_NAMES)),
            (Some(s), _) => s.value.clone(),
            (None, Some(path)) => path
                .file_stem()
                .map(|s| service_name_from(&s.to_string_lossy()))
                .unwrap_or_else(|| "handler".to_owned()),
            (None, None) => "echo".to_owned(),
        };
        let mut options: Report = report(values)
            .into_iter()
            .filter(|(key, _)| options::find(key).is_some_and(|s| s.scope == Scope::Service))
            .collect();
        if let Some((value, _)) = options.get_mut("service") {
            *value = name.as_str().into();
        }
        let service = Self {
            name,
            module,
            listeners,
            port_given: !values.all("port").is_empty(),
            idle_timeout: values.secs("idle_timeout"),
            cpu_limit: values.secs("cpu_limit"),
            cpu_share: values.int("cpu_share"),
            busy_slice: values.int("busy_slice"),
            max_memory: values.size("max_memory"),
            max_instances: values.int("max_instances"),
            memory_budget: values.opt_size("memory_budget"),
            max_bytes_written: values.size("max_bytes_written"),
            guest_log_rate: values.int("guest_log_rate"),
            fault_log_rate: values.int("fault_log_rate"),
            max_connections: values.int("max_connections"),
            mux_write_cap: values.size("mux_write_cap"),
            mux_input_cap: values.size("mux_input_cap"),
            // The last value of each key wins.
            properties: values.pairs("property").into_iter().collect(),
            instance: match values.choice("instance") {
                "per-worker" => InstanceMode::PerWorker,
                _ => InstanceMode::PerConnection,
            },
            check_for_dequeue: values.opt_secs("check_for_dequeue"),
            max_dequeue: values.int("max_dequeue"),
            connection_timeout: values.opt_secs("connection_timeout"),
            watch_module: values.flag("watch_module"),
            grants: Grants::from_values(values),
            access: access(values),
            proxy_from: values.cidrs("proxy_from"),
            http: HttpSettings {
                timeout_header: values.secs("timeout_header"),
                timeout_idle: values.secs("timeout_idle"),
                max_header_size: values.size("max_header_size"),
                max_body_size: values.size("max_body_size"),
                access_log_file: values.path("access_log_file"),
                access_log_format_text: values
                    .text("access_log_format")
                    .unwrap_or_else(|| super::DEFAULT_ACCESS_LOG_FORMAT.to_owned()),
                // Checked as the value was read.
                access_log_format: super::access_format::AccessFormat::parse(
                    &values
                        .text("access_log_format")
                        .unwrap_or_else(|| super::DEFAULT_ACCESS_LOG_FORMAT.to_owned()),
                )
                .unwrap_or_else(|_| super::access_format::AccessFormat(Vec::new())),
            },
            max_conn_per_ip: values.int("max_conn_per_ip"),
            max_rate_per_ip: values.int("max_rate_per_ip"),
            sockets: socket_settings(values)?,
            tls: tls_settings(values),
            isolation: match values.choice("isolation") {
                "process" => Isolation::Process,
                _ => Isolation::Shared,
            },
            // What its own table sets: see `own_processes`.
            own: OwnProcesses::default(),
            source,
            options,
        };
        check_tls(&service)?;
        Ok(service)
    }
}

/// The options a service's table may set for its own worker processes,
/// with why a shared service may not.
const OWN_PROCESS_KEYS: [(&str, &str); 5] = [
    ("user", WHOSE_USER),
    ("group", WHOSE_USER),
    ("workers", HOW_MANY),
    ("max_servers", HOW_MANY),
    ("busy_slice", WHOSE_SLICE),
];
const WHOSE_USER: &str = "a service runs as a user of its own only with isolation process \
     (shared workers run as the server's user, set at the top level)";
const HOW_MANY: &str = "a service has a number of workers of its own only with isolation process \
     (the shared workers' number is set at the top level)";

const WHOSE_SLICE: &str = "a service's workers ask for long time slices while busy only with isolation process \
     (shared workers serve several services)";

/// What a service's table sets for its own worker processes (`user`,
/// `group`, `workers`, `max_servers` given in the table itself: a value
/// from the top level or the command line is every process's). Only a
/// service with `isolation process` has workers of its own to set them
/// for; on a shared one each is an error naming where it was given.
fn own_processes(own: &Values, top: &Values, isolation: Isolation) -> Result<OwnProcesses> {
    let given = |key: &str| own.last(key).filter(|s| Some(*s) != top.last(key));
    if isolation == Isolation::Shared {
        for (key, why) in OWN_PROCESS_KEYS {
            if let Some(setting) = given(key) {
                return Err(bad(setting, why));
            }
        }
    }
    Ok(OwnProcesses {
        user: given("user").and_then(|_| own.text("user")),
        group: given("group").and_then(|_| own.text("group")),
        workers: given("workers").map(|_| own.int("workers")),
        max_servers: given("max_servers").map(|_| own.int("max_servers")),
    })
}

/// How a service's sockets are set up beyond their address: the
/// datagram options (`udp_*`) and unix socket files' permissions.
fn socket_settings(values: &Values) -> Result<SocketSettings> {
    let flags: i32 = values.int("udp_recv_flags");
    if flags & !RECV_FLAGS_ALLOWED != 0 {
        let setting = values.last("udp_recv_flags").expect("checked above");
        return Err(bad(
            setting,
            "only MSG_TRUNC (32) and MSG_DONTWAIT (64) may be given: other recv flags would change what a request is",
        ));
    }
    let group = values.text("socket_group").map(|name| {
        nix::unistd::Group::from_name(&name)
            .ok()
            .flatten()
            .map_or(0, |g| g.gid.as_raw())
    });
    Ok(SocketSettings {
        udp_recv_len: values.int("udp_recv_len"),
        udp_recv_flags: flags,
        udp_amplification: values.int("udp_amplification"),
        udp_broadcast: values.flag("udp_broadcast"),
        socket_mode: values
            .text("socket_mode")
            .and_then(|m| u32::from_str_radix(&m, 8).ok()),
        socket_group: group,
    })
}

/// A service's TLS settings (`SSL_*`, `server_name`, `sni_default`).
fn tls_settings(values: &Values) -> TlsSettings {
    TlsSettings {
        cert_file: values.path("ssl_cert_file"),
        key_file: values.path("ssl_key_file"),
        ca_file: values.path("ssl_ca_file"),
        ca_path: values.path("ssl_ca_path"),
        verify: match values.int::<u8>("ssl_verify_mode") {
            0 => Verify::None,
            1 => Verify::IfSent,
            _ => Verify::Required,
        },
        min_version: match values.choice("ssl_version") {
            "TLSv1_3" => TlsVersion::V1_3,
            _ => TlsVersion::V1_2,
        },
        ciphers: values
            .text("ssl_cipher_list")
            .and_then(|list| tls::parse_cipher_list(&list).ok())
            .unwrap_or_default(),
        alpn: values
            .text("ssl_alpn")
            .and_then(|list| tls::parse_alpn(&list).ok())
            .unwrap_or_default(),
        server_names: values
            .texts("server_name")
            .iter()
            .filter_map(|name| NamePattern::parse(name).ok())
            .collect(),
        sni_default: values.flag("sni_default"),
        handshake_timeout: values.secs("ssl_handshake_timeout"),
    }
}

/// A service with an `ssl` port has a certificate and key for it, and
/// trust for client certificates when it asks for them.
fn check_tls(service: &ServiceConfig) -> Result<()> {
    let Some(port) = service.listeners.iter().find(|l| l.proto == Proto::Ssl) else {
        return Ok(());
    };
    let tls = &service.tls;
    let missing = match (&tls.cert_file, &tls.key_file) {
        (None, None) => Some("SSL_cert_file and SSL_key_file"),
        (None, Some(_)) => Some("SSL_cert_file"),
        (Some(_), None) => Some("SSL_key_file"),
        _ if tls.verify != Verify::None && tls.ca_file.is_none() && tls.ca_path.is_none() => {
            Some("SSL_ca_file or SSL_ca_path (SSL_verify_mode asks for client certificates)")
        }
        _ => None,
    };
    let Some(what) = missing else {
        return Ok(());
    };
    match service.options.get("port").or(service.options.get("proto")) {
        Some((_, given @ Source::File { .. })) => bail!(
            "{given}: service '{}': port {port} needs {what}",
            service.name
        ),
        _ => bail!("--port {port}: needs {}", what.replace("SSL_", "--SSL_")),
    }
}

/// What `--check` reports: every option's value, and the values other
/// options imply (`double_reverse_lookups` turns `reverse_lookups` on).
fn report(values: &Values) -> Report {
    let mut report = values.report();
    if values.flag("double_reverse_lookups")
        && let Some((value, _)) = report.get_mut("reverse_lookups")
    {
        *value = true.into();
    }
    report
}

/// What a service name may be: it is written into every log line of its
/// connections, so nothing that could split or forge one.
const SERVICE_NAMES: &str = "must be at most 64 letters, digits, '.', '_' or '-'";

/// Whether `c` may be part of a service name.
fn in_service_name(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

/// Whether `name` is a valid service name (see [`SERVICE_NAMES`]).
fn is_service_name(name: &str) -> bool {
    (1..=64).contains(&name.len()) && name.chars().all(in_service_name)
}

/// A service name made of a module's file name: each character a name may
/// not hold becomes `_`, and it is cut to 64.
fn service_name_from(stem: &str) -> String {
    let name: String = stem
        .chars()
        .map(|c| if in_service_name(c) { c } else { '_' })
        .take(64)
        .collect();
    if name.is_empty() {
        "handler".to_owned()
    } else {
        name
    }
}

/// Where the log goes: stderr, a file, or syslog as the `syslog_*`
/// options say.
fn log_target(values: &Values) -> Result<LogTarget> {
    match values.typed("log_file") {
        None => return Ok(LogTarget::Stderr),
        Some(Typed::Log(Some(path))) => return Ok(LogTarget::File(path)),
        Some(Typed::Log(None)) => {}
        Some(other) => unreachable!("log_file gives a log target, not {other:?}"),
    }
    // The setting that gave the value (or its default), for errors.
    let setting = |key: &str| -> Setting {
        let (_, setting) = values
            .typed_all(key)
            .pop()
            .unwrap_or_else(|| unreachable!("{key} has a default"));
        setting
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
    Ok(LogTarget::Syslog(Syslog {
        ident: setting("syslog_ident").value,
        facility,
        pid,
        sockets,
    }))
}

/// The access rules of a service.
fn access(values: &Values) -> AccessConfig {
    let allow_uid = values
        .texts("allow_uid")
        .iter()
        .filter_map(|name| nix::unistd::User::from_name(name).ok().flatten())
        .map(|user| user.uid.as_raw())
        .collect();
    let double_reverse_lookups = values.flag("double_reverse_lookups");
    AccessConfig {
        deny: values.texts("deny"),
        cidr_deny: values.cidrs("cidr_deny"),
        allow: values.texts("allow"),
        cidr_allow: values.cidrs("cidr_allow"),
        allow_uid,
        reverse_lookups: values.flag("reverse_lookups") || double_reverse_lookups,
        double_reverse_lookups,
    }
}

/// The listeners of every `port` value. The i-th port takes the i-th
/// `host`, `proto` and `ipv` (the last one when there are fewer), as in
/// Net::Server; a port spec's own host, proto or ipv wins. Service names
/// are looked up in /etc/services here, once. Listeners given twice are
/// listed once.
fn listeners(values: &Values) -> Result<Vec<Listener>> {
    let ports = values.typed_all("port");
    let hosts = values.typed_all("host");
    let protos = values.typed_all("proto");
    let ipvs = values.typed_all("ipv");
    let nth = |all: &[(Typed, Setting)], i: usize| -> Setting {
        let (_, setting) = all
            .get(i)
            .or(all.last())
            .expect("host, proto, ipv have defaults");
        setting.clone()
    };
    let mut listeners = Vec::new();
    for (i, (_, spec)) in ports.iter().enumerate() {
        let host = nth(&hosts, i);
        let (host, host_ipv) =
            port::split_host_value(&host.value).map_err(|why| bad(&host, &why))?;
        let proto = nth(&protos, i);
        let (proto, proto_ipv) =
            port::split_proto_value(&proto.value).map_err(|why| bad(&proto, &why))?;
        let ipv = match host_ipv.or(proto_ipv) {
            Some(ipv) => ipv,
            None => {
                let ipv = nth(&ipvs, i);
                port::parse_ipv_list(&ipv.value).map_err(|_| bad(&ipv, "must be 4, 6 or *"))?
            }
        };
        let defaults = PortDefaults { host, proto, ipv };
        for mut listener in
            port::parse_listeners(&spec.value, &defaults).map_err(|why| bad(spec, &why))?
        {
            if let Port::Service { name, number } = &mut listener.port
                && let Some(proto) = listener.proto.service_proto()
            {
                let Some(found) = port::resolve_service(name, proto) else {
                    let why = format!("unknown service '{name}' (not in /etc/services)");
                    return Err(bad(spec, &why));
                };
                *number = Some(found);
            }
            if !listeners.contains(&listener) {
                listeners.push(listener);
            }
        }
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use super::*;
    use crate::config::sources::ConfFile;

    use crate::config::test_settings::{cli, file};

    fn table(line: usize, settings: Vec<Setting>) -> sources::ServiceTable {
        sources::ServiceTable {
            source: Source::File {
                path: "s.toml".into(),
                line,
            },
            settings,
        }
    }

    #[test]
    fn service_precedence_command_line_table_top_level_default() {
        let conf = ConfFile {
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
        let config = Config::from_sources(vec![cli("idle_timeout", "9")], conf).unwrap();
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
    fn a_service_of_its_own_sets_its_workers_user_and_number() {
        let module = |line| file("module", "/etc/passwd", line);
        let conf = || ConfFile {
            settings: vec![file("user", "daemon", 1), file("workers", "3", 2)],
            services: vec![
                table(
                    3,
                    vec![
                        file("service", "own", 4),
                        module(5),
                        file("isolation", "process", 6),
                        file("user", "nobody", 7),
                        file("workers", "1", 8),
                    ],
                ),
                table(9, vec![file("service", "shared", 10), module(11)]),
                table(
                    12,
                    vec![
                        file("service", "plain", 13),
                        module(14),
                        file("isolation", "Process", 15),
                    ],
                ),
            ],
        };
        let config = Config::from_sources(Vec::new(), conf()).unwrap();
        let [own, shared, plain] = config.services.as_slice() else {
            panic!("three services")
        };
        let isolation = |s: &ServiceConfig| s.isolation;
        assert_eq!(
            (isolation(own), isolation(shared), isolation(plain)),
            (Isolation::Process, Isolation::Shared, Isolation::Process)
        );
        assert_eq!(
            own.own,
            OwnProcesses {
                user: Some("nobody".into()),
                workers: Some(1),
                ..OwnProcesses::default()
            }
        );
        // The top level's values are the server's, not a service's own.
        assert_eq!(shared.own, OwnProcesses::default());
        assert_eq!(plain.own, OwnProcesses::default());
        // busy_slice, its default, is each service's.
        let slices: Vec<u32> = config.services.iter().map(|s| s.busy_slice).collect();
        assert_eq!(slices, [100, 100, 100]);
        assert_eq!(config.privileges.user.as_deref(), Some("daemon"));
        assert_eq!(plain.options["user"].0, "daemon");
        // The command line's value is every process's.
        let config = Config::from_sources(vec![cli("user", "root")], conf()).unwrap();
        assert_eq!(config.services[0].own.user, None);
        assert_eq!(config.services[0].own.workers, Some(1));
        // busy_slice from the top level or the command line is each
        // service's (used where it has workers of its own).
        let config = Config::from_sources(vec![cli("busy_slice", "40")], conf()).unwrap();
        let slices: Vec<u32> = config.services.iter().map(|s| s.busy_slice).collect();
        assert_eq!(slices, [40, 40, 40]);
    }

    #[test]
    fn a_shared_service_sets_no_user_or_number_of_its_own() {
        let cases = [
            (
                "user",
                "nobody",
                "s.conf:4: user: invalid value 'nobody': a service runs as a user of its own only with isolation process (shared workers run as the server's user, set at the top level)",
            ),
            (
                "group",
                "nogroup",
                "s.conf:4: group: invalid value 'nogroup': a service runs as a user of its own only with isolation process (shared workers run as the server's user, set at the top level)",
            ),
            (
                "workers",
                "2",
                "s.conf:4: workers: invalid value '2': a service has a number of workers of its own only with isolation process (the shared workers' number is set at the top level)",
            ),
            (
                "max_servers",
                "9",
                "s.conf:4: max_servers: invalid value '9': a service has a number of workers of its own only with isolation process (the shared workers' number is set at the top level)",
            ),
            (
                "busy_slice",
                "5",
                "s.conf:4: busy_slice: invalid value '5': a service's workers ask for long time slices while busy only with isolation process (shared workers serve several services)",
            ),
        ];
        for (key, value, want) in cases {
            let conf = ConfFile {
                settings: Vec::new(),
                services: vec![table(
                    1,
                    vec![
                        file("service", "a", 2),
                        file("module", "/etc/passwd", 3),
                        file(key, value, 4),
                    ],
                )],
            };
            let err = Config::from_sources(Vec::new(), conf).unwrap_err();
            assert_eq!(err.to_string(), want, "{key}");
        }
    }

    #[test]
    fn file_errors_name_file_line_key_and_value() {
        let cases = [
            (
                vec![file("port", "1", 1), file("port", "99999", 2)],
                "s.conf:2: port: invalid value '99999': port 99999 is out of range (0-65535)",
            ),
            (
                vec![file("port", "no-such-service-here", 3)],
                "s.conf:3: port: invalid value 'no-such-service-here': unknown service 'no-such-service-here' (not in /etc/services)",
            ),
        ];
        for (settings, want) in cases {
            let conf = ConfFile {
                settings,
                services: Vec::new(),
            };
            let err = Config::from_sources(Vec::new(), conf).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn service_names_cannot_split_a_log_line() {
        let cases = [
            ("chat", Ok("chat")),
            ("chat-2.v1_a", Ok("chat-2.v1_a")),
            (
                "a\nb",
                Err(
                    "--service: invalid value 'a\\nb': must be at most 64 letters, digits, '.', '_' or '-'",
                ),
            ),
            (
                "a b",
                Err(
                    "--service: invalid value 'a b': must be at most 64 letters, digits, '.', '_' or '-'",
                ),
            ),
        ];
        for (name, want) in cases {
            let got = Config::from_command_line(&[("service", name)])
                .map(|c| c.services[0].name.clone())
                .map_err(|e| e.to_string());
            assert_eq!(
                got,
                want.map(str::to_owned).map_err(str::to_owned),
                "{name:?}"
            );
        }
        let derived = [
            ("my handler", "my_handler"),
            ("é\u{0}x", "__x"),
            ("", "handler"),
        ];
        for (stem, want) in derived {
            assert_eq!(service_name_from(stem), want, "{stem:?}");
        }
        assert_eq!(service_name_from(&"x".repeat(100)).len(), 64);
    }

    #[test]
    fn properties_keep_last_value() {
        let settings = vec![
            cli("property", "a=1"),
            cli("property", "b=x=y"),
            cli("property", "a=2"),
        ];
        let config = Config::from_sources(settings, ConfFile::default()).unwrap();
        let got = &config.services[0].properties;
        assert_eq!(got.get("a").map(String::as_str), Some("2"));
        assert_eq!(got.get("b").map(String::as_str), Some("x=y"));
    }

    #[test]
    fn service_names_are_resolved_once_into_the_listener() {
        let settings = vec![cli("port", "127.0.0.1:http")];
        let config = Config::from_sources(settings, ConfFile::default()).unwrap();
        let listener = &config.services[0].listeners[0];
        assert_eq!(
            listener.port,
            Port::Service {
                name: "http".to_owned(),
                number: Some(80)
            }
        );
        assert_eq!(listener.to_string(), "127.0.0.1:http/tcp");
    }

    /// The value the resolved configuration runs with for option `key`, as
    /// `--check` prints option values, read from the typed fields the
    /// server uses (not from the values given).
    fn effective(config: &Config, key: &str) -> serde_json::Value {
        use serde_json::{Value, json};
        let secs = |d: Duration| json!(d.as_secs_f64());
        let opt_secs = |d: Option<Duration>| d.map_or(Value::Null, secs);
        let path = |p: &Option<PathBuf>| json!(p.as_ref().map(|p| p.display().to_string()));
        let strings = |items: &[String]| json!(items);
        let nets = |items: &[ipnet::IpNet]| {
            json!(items.iter().map(ToString::to_string).collect::<Vec<_>>())
        };
        let p = &config.process;
        let s = &config.services[0];
        let syslog = match &config.log_target {
            LogTarget::Syslog(syslog) => Some(syslog),
            _ => None,
        };
        match key {
            "allow" => strings(&s.access.allow),
            "allow_uid" => json!(
                s.access
                    .allow_uid
                    .iter()
                    .map(|uid| nix::unistd::User::from_uid((*uid).into())
                        .unwrap()
                        .unwrap()
                        .name)
                    .collect::<Vec<_>>()
            ),
            "background" => json!(config.daemon.background),
            "watch_module" => json!(s.watch_module),
            "check_for_dead" => secs(p.check_for_dead),
            "check_for_dequeue" => opt_secs(s.check_for_dequeue),
            "check_for_spawn" => secs(p.check_for_spawn),
            "check_for_waiting" => secs(p.check_for_waiting),
            "check_for_idle" => secs(p.check_for_idle),
            "chroot" => path(&config.privileges.chroot),
            "cidr_allow" => nets(&s.access.cidr_allow),
            "cidr_deny" => nets(&s.access.cidr_deny),
            "connection_timeout" => opt_secs(s.connection_timeout),
            "cpu_limit" => secs(s.cpu_limit),
            "deny" => strings(&s.access.deny),
            "double_reverse_lookups" => json!(s.access.double_reverse_lookups),
            "grant_connect" => nets(&s.grants.connect),
            "grant_dir" => json!(
                s.grants
                    .dirs
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
            "grant_env" => json!(
                s.grants
                    .env
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
            ),
            "group" => json!(s.own.group.clone().or(config.privileges.group.clone())),
            // The listeners carry host, proto and ipv: each is compared
            // through them (see the test).
            "host" | "proto" | "ipv" | "port" => json!(
                s.listeners
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
            "idle_timeout" => secs(s.idle_timeout),
            "timeout_header" => secs(s.http.timeout_header),
            "timeout_idle" => secs(s.http.timeout_idle),
            "max_header_size" => json!(s.http.max_header_size),
            "max_body_size" => json!(s.http.max_body_size),
            "access_log_file" => path(&s.http.access_log_file),
            "access_log_format" => json!(s.http.access_log_format_text),
            "instance" => json!(match s.instance {
                InstanceMode::PerConnection => "per-connection",
                InstanceMode::PerWorker => "per-worker",
            }),
            "isolation" => json!(s.isolation.name()),
            "leave_children_open_on_hup" => json!(p.leave_children_open_on_hup),
            "listen" => json!(config.listen_backlog),
            "metrics_port" => json!(config.metrics.map(|a| a.to_string())),
            "lock_file" => path(&p.lock_file),
            "log_file" => match &config.log_target {
                LogTarget::Stderr => Value::Null,
                LogTarget::File(file) => json!(file.display().to_string()),
                LogTarget::Syslog(_) => json!(options::SYSLOG),
            },
            "log_level" => json!(config.log_level),
            "max_conn_per_ip" => json!(s.max_conn_per_ip),
            "max_dequeue" => json!(s.max_dequeue),
            "max_instances" => json!(s.max_instances),
            "busy_slice" => json!(s.busy_slice),
            "cpu_share" => json!(s.cpu_share),
            "guest_log_rate" => json!(s.guest_log_rate),
            "fault_log_rate" => json!(s.fault_log_rate),
            "max_memory" => json!(s.max_memory),
            "memory_budget" => json!(s.memory_budget),
            "max_bytes_written" => json!(s.max_bytes_written),
            "max_connections" => json!(s.max_connections),
            "worker_memory" => json!(p.worker_memory),
            "mux_input_cap" => json!(s.mux_input_cap),
            "mux_write_cap" => json!(s.mux_write_cap),
            "max_rate_per_ip" => json!(s.max_rate_per_ip),
            "max_requests" => json!(p.max_requests),
            "max_servers" => json!(s.own.max_servers.unwrap_or(p.max_servers)),
            "max_spare_servers" => json!(p.max_spare_servers),
            "min_child_ttl" => secs(p.min_child_ttl),
            "min_servers" => json!(p.min_servers),
            "min_spare_servers" => json!(p.min_spare_servers),
            "module" => path(&s.module),
            "module_cache" => match &config.module_cache {
                CacheDir::Default => Value::Null,
                CacheDir::Off => json!("off"),
                CacheDir::At(dir) => json!(dir.display().to_string()),
            },
            "no_close_by_child" => json!(p.no_close_by_child),
            "pid_file" => path(&config.daemon.pid_file),
            "property" => json!(
                s.properties
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
            ),
            "proxy_from" => nets(&s.proxy_from),
            "quit_timeout" => secs(p.quit_timeout),
            "reverse_lookups" => json!(s.access.reverse_lookups),
            "serialize" => json!(match p.serialize {
                AcceptSerialization::Flock => "flock",
                AcceptSerialization::None => "none",
            }),
            "server_type" => json!(p.server_type.name()),
            "service" => json!(s.name),
            "setsid" => json!(config.daemon.setsid),
            "sig_passthrough" => json!(
                p.sig_passthrough
                    .iter()
                    .map(|s| s.as_str().trim_start_matches("SIG"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            "socket_group" => json!(s.sockets.socket_group.map(|gid| {
                nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
                    .unwrap()
                    .unwrap()
                    .name
            })),
            "socket_mode" => json!(s.sockets.socket_mode.map(|m| format!("{m:04o}"))),
            "term_drains" => json!(p.term_drains),
            "server_name" => json!(
                s.tls
                    .server_names
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
            ),
            "sni_default" => json!(s.tls.sni_default),
            "ssl_alpn" => {
                json!((!s.tls.alpn.is_empty()).then(|| s.tls.alpn.join(",")))
            }
            "ssl_ca_file" => json!(s.tls.ca_file.as_ref().map(|p| p.display().to_string())),
            "ssl_ca_path" => json!(s.tls.ca_path.as_ref().map(|p| p.display().to_string())),
            "ssl_cert_file" => {
                json!(s.tls.cert_file.as_ref().map(|p| p.display().to_string()))
            }
            "ssl_cipher_list" => {
                json!((!s.tls.ciphers.is_empty()).then(|| s.tls.ciphers.join(":")))
            }
            "ssl_handshake_timeout" => secs(s.tls.handshake_timeout),
            "ssl_key_file" => json!(s.tls.key_file.as_ref().map(|p| p.display().to_string())),
            "ssl_verify_mode" => json!(s.tls.verify.bits()),
            "ssl_version" => json!(s.tls.min_version.name()),
            "udp_amplification" => json!(s.sockets.udp_amplification),
            "udp_broadcast" => json!(s.sockets.udp_broadcast),
            "udp_recv_flags" => json!(s.sockets.udp_recv_flags),
            "udp_recv_len" => json!(s.sockets.udp_recv_len),
            "syslog_facility" => json!(syslog.map(|s| format!("{:?}", s.facility))),
            "syslog_ident" => json!(syslog.map(|s| s.ident.clone())),
            "syslog_logopt" => json!(syslog.map(|s| s.pid)),
            "syslog_logsock" => json!(syslog.map(|s| s.sockets.len())),
            "user" => json!(s.own.user.clone().or(config.privileges.user.clone())),
            "workers" => json!(s.own.workers.unwrap_or(p.workers)),
            other => panic!("no effective value for option {other}: add it here"),
        }
    }

    /// What `--check` reports for `key` in `config`, in the form
    /// [`effective`] gives it.
    fn reported(config: &Config, key: &str) -> serde_json::Value {
        use serde_json::json;
        let report = if options::find(key).is_some_and(|s| s.scope == Scope::Service) {
            &config.services[0].options
        } else {
            &config.options
        };
        let value = report[key].0.clone();
        let syslog = match &config.log_target {
            LogTarget::Syslog(syslog) => Some(syslog),
            _ => None,
        };
        match key {
            // Given as port specs with host, proto and ipv defaults: the
            // listeners they make.
            "host" | "proto" | "ipv" | "port" => {
                let texts = |key: &str| -> Vec<String> {
                    serde_json::from_value(report[key].0.clone()).unwrap()
                };
                let (hosts, protos, ipvs) = (texts("host"), texts("proto"), texts("ipv"));
                let nth = |all: &[String], i: usize| all.get(i).or(all.last()).unwrap().clone();
                let mut listeners: Vec<String> = Vec::new();
                for (i, spec) in texts("port").iter().enumerate() {
                    let (host, host_ipv) = port::split_host_value(&nth(&hosts, i)).unwrap();
                    let (proto, proto_ipv) = port::split_proto_value(&nth(&protos, i)).unwrap();
                    let ipv = host_ipv
                        .or(proto_ipv)
                        .unwrap_or_else(|| port::parse_ipv_list(&nth(&ipvs, i)).unwrap());
                    let defaults = PortDefaults { host, proto, ipv };
                    for listener in port::parse_listeners(spec, &defaults).unwrap() {
                        let text = listener.to_string();
                        if !listeners.contains(&text) {
                            listeners.push(text);
                        }
                    }
                }
                json!(listeners)
            }
            // Each key once, the last value winning.
            "property" => {
                let pairs: Vec<String> = serde_json::from_value(value).unwrap();
                let map: BTreeMap<&str, &str> =
                    pairs.iter().filter_map(|p| p.split_once('=')).collect();
                json!(
                    map.iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                )
            }
            "sig_passthrough" => {
                let lists: Vec<String> = serde_json::from_value(value).unwrap();
                let mut names: Vec<String> = Vec::new();
                for name in lists.iter().flat_map(|l| l.split(',')) {
                    if !names.iter().any(|n| n == name) {
                        names.push(name.to_owned());
                    }
                }
                json!(names.join(","))
            }
            "module_cache" => match value.as_str() {
                Some(dir) if dir.eq_ignore_ascii_case("off") => json!("off"),
                _ => value,
            },
            // The syslog options are in effect with `log_file Sys::Syslog`
            // only: compared through what they resolved to.
            "syslog_facility" => json!(syslog.map(|_| {
                let name = value.as_str().unwrap();
                format!("{:?}", name.parse::<syslog::Facility>().unwrap())
            })),
            "syslog_ident" => json!(syslog.map(|_| value.clone())),
            "syslog_logopt" => json!(syslog.map(|_| value.as_str().unwrap().contains("pid"))),
            "syslog_logsock" => json!(syslog.map(|_| {
                value
                    .as_str()
                    .unwrap()
                    .split(['|', ',', ' '])
                    .filter(|w| !w.is_empty())
                    .count()
            })),
            "serialize" => json!(if value == "none" { "none" } else { "flock" }),
            _ => value,
        }
    }

    /// A valid value other than the default for every option, so that the
    /// test sees each one resolved from a given value too.
    fn other_value(key: &str) -> Option<&'static str> {
        Some(match key {
            "allow" => r"127\.0\.0\.\d+",
            "allow_uid" => "root",
            "background"
            | "setsid"
            | "reverse_lookups"
            | "double_reverse_lookups"
            | "leave_children_open_on_hup"
            | "term_drains"
            | "watch_module" => "1",
            "no_close_by_child" => "1",
            "check_for_dead" | "check_for_spawn" | "check_for_waiting" | "check_for_idle"
            | "min_child_ttl" | "quit_timeout" | "idle_timeout" | "cpu_limit"
            | "check_for_dequeue" | "connection_timeout" | "timeout_header" | "timeout_idle" => {
                "2.5"
            }
            "access_log_file" => "/tmp/ns-test-access.log",
            "access_log_format" => "%h %>s %b",
            "max_header_size" => "16K",
            "max_body_size" => "1M",
            "chroot" => "/tmp",
            "cidr_allow" | "cidr_deny" | "grant_connect" | "proxy_from" => "10.0.0.0/8",
            "deny" => "evil.example",
            "grant_dir" => "/tmp:/data:rw",
            "grant_env" => "LANG=C",
            "group" => "root",
            "host" => "127.0.0.1",
            "instance" => "per-worker",
            "ipv" => "4",
            "isolation" => "process",
            "listen" => "17",
            "metrics_port" => "9100",
            "lock_file" => "/tmp/ns-test.lock",
            "log_file" => "/tmp/ns-test.log",
            "log_level" => "4",
            "max_conn_per_ip" | "max_rate_per_ip" => "3",
            "max_dequeue" => "2",
            "max_instances" => "7",
            "busy_slice" => "40",
            "cpu_share" => "300",
            "guest_log_rate" => "7",
            "fault_log_rate" => "9",
            "max_memory" => "8M",
            "memory_budget" => "1G",
            "worker_memory" => "6G",
            "max_bytes_written" => "10M",
            "max_connections" => "40",
            "mux_input_cap" => "128K",
            "mux_write_cap" => "1M",
            "max_requests" => "9",
            "max_servers" => "11",
            "max_spare_servers" => "12",
            "min_servers" => "3",
            "min_spare_servers" => "1",
            "module" => "/etc/passwd",
            "module_cache" => "off",
            "pid_file" => "/tmp/ns-test.pid",
            "port" => "127.0.0.1:http",
            "property" => "a=1",
            "proto" => "tcp/IPv4",
            "serialize" => "none",
            "server_type" => "prefork",
            "service" => "svc",
            "sig_passthrough" => "USR1, sigusr2",
            "syslog_facility" | "syslog_ident" | "syslog_logopt" | "syslog_logsock" => {
                return None;
            }
            "socket_group" => "root",
            "socket_mode" => "0660",
            "server_name" => "*.Example.com",
            "sni_default" => "1",
            "ssl_alpn" => "h2, http/1.1",
            "ssl_ca_file" | "ssl_cert_file" | "ssl_key_file" => "/etc/passwd",
            "ssl_ca_path" => "/etc",
            "ssl_cipher_list" => "TLS_AES_128_GCM_SHA256:ECDHE-RSA-AES128-GCM-SHA256",
            "ssl_handshake_timeout" => "2.5",
            // Asks for client certificates: needs a CA, given with it below.
            "ssl_verify_mode" => return None,
            "ssl_version" => "tlsv1.3",
            "udp_amplification" => "5",
            "udp_broadcast" => "1",
            "udp_recv_flags" => "32",
            "udp_recv_len" => "512",
            "user" => "root",
            "workers" => "3",
            other => panic!("no other value for option {other}: add one here"),
        })
    }

    #[test]
    fn every_option_runs_with_the_value_check_reports() {
        let check = |settings: Vec<Setting>, what: &str| {
            let config = Config::from_sources(settings, ConfFile::default())
                .unwrap_or_else(|e| panic!("{what}: {e:#}"));
            for spec in options::OPTIONS {
                assert_eq!(
                    effective(&config, spec.name),
                    reported(&config, spec.name),
                    "{what}: option {}",
                    spec.name
                );
            }
        };
        check(Vec::new(), "defaults");
        for spec in options::OPTIONS {
            if let Some(value) = other_value(spec.name) {
                check(
                    vec![cli(spec.name, value)],
                    &format!("--{} {value}", spec.name),
                );
            }
        }
        let syslog = [
            cli("log_file", "Sys::Syslog"),
            cli("syslog_facility", "local3"),
            cli("syslog_ident", "ns"),
            cli("syslog_logopt", "ndelay"),
            cli("syslog_logsock", "udp,tcp"),
        ];
        check(syslog[..1].to_vec(), "syslog, defaults");
        check(syslog.to_vec(), "syslog, given");
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        /// Any option given any value, a few at a time: a configuration,
        /// or one line that names the option and says why.
        #[test]
        fn any_settings_resolve_or_give_one_line(
            given in proptest::collection::vec(
                (
                    proptest::sample::select(options::OPTIONS.iter().map(|s| s.name).collect::<Vec<_>>()),
                    "(\\PC|[0-9.:/*,| \\[\\]]){0,24}",
                ),
                0..4,
            )
        ) {
            let settings = given.iter().map(|(k, v)| Setting::command_line(k, v)).collect();
            if let Err(err) = Config::from_sources(settings, ConfFile::default()) {
                let err = format!("{err:#}");
                proptest::prop_assert!(err.starts_with("--"), "{}", err);
                proptest::prop_assert!(!err.contains('\n'), "{}", err);
            }
        }
    }
}
