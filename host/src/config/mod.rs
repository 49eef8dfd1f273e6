//! Configuration: the command line and the conf file resolved once into a
//! checked [`Config`]. The ground floor of the host: it uses no other
//! module of it.
//!
//! Every value is validated here, before anything is bound or compiled; an
//! error names where the value was given (`--option`, or `file:line` and
//! the key) and the value at fault.
//!
//! | module | concern |
//! | --- | --- |
//! | [`options`] | every option once: name, kind, range, default, scope, doc |
//! | [`sources`] | where values come from: the command line's settings, conf files (TOML or Net::Server's) |
//! | `raw` | the values of every option as given, merged by precedence, each with its source |
//! | `resolve` | the typed [`Config`], read through the option table |
//! | [`port`] | the port grammar, without I/O |
//! | [`tls`] | the TLS settings (`SSL_*`), cipher and version names, SNI name patterns |

pub mod access_format;
pub mod files;
pub mod options;
pub mod port;
mod raw;
mod resolve;
pub mod sources;
pub mod tls;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;

pub use port::{Ipv, Listener, Port, PortDefaults, Proto};
pub use sources::{ConfFile, ServiceTable, Setting, Source};

/// Settings as the tests of this module write them.
#[cfg(test)]
mod test_settings {
    use super::Setting;

    /// `key value` on the command line.
    pub fn cli(key: &str, value: &str) -> Setting {
        Setting::command_line(key, value)
    }

    /// `key value` on line `line` of `s.conf`.
    pub fn file(key: &str, value: &str, line: usize) -> Setting {
        Setting::in_file("s.conf", line, key, value)
    }
}

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
    pub log_target: LogTarget,
    /// Who the server becomes after binding, and where (`user`, `group`,
    /// `chroot`).
    pub privileges: Privileges,
    /// Whether and how the server leaves the terminal, and its pid file
    /// (`background`, `setsid`, `pid_file`).
    pub daemon: DaemonSettings,
    /// The personality and its process options.
    pub process: ProcessConfig,
    /// Where compiled modules are kept between starts.
    pub module_cache: CacheDir,
    /// The backlog of each listening socket (`listen`).
    pub listen_backlog: u32,
    /// Where the master serves its metrics (`metrics_port`).
    pub metrics: Option<std::net::SocketAddr>,
    /// Every option's effective top-level value and where it came from.
    pub options: Report,
}

impl Config {
    /// The configuration of `pairs` given on the command line, without a
    /// conf file.
    pub fn from_command_line(pairs: &[(&str, &str)]) -> anyhow::Result<Self> {
        let settings = pairs
            .iter()
            .map(|(key, value)| Setting::command_line(key, value))
            .collect();
        Self::from_sources(settings, ConfFile::default())
    }

    /// Every service's listeners, in order.
    pub fn listeners(&self) -> impl Iterator<Item = &Listener> {
        self.services.iter().flat_map(|s| &s.listeners)
    }
}

/// Net::Server's personalities (`server_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
    /// Every personality, by the name `server_type` takes.
    pub const NAMES: &[(&str, Self)] = &[
        ("multiplex", Self::Multiplex),
        ("single", Self::Single),
        ("inetd", Self::Inetd),
        ("fork", Self::Fork),
        ("prefork-simple", Self::PreforkSimple),
        ("prefork", Self::Prefork),
    ];

    /// The name `server_type` gives this personality.
    pub fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(_, t)| *t == self)
            .map_or("multiplex", |(name, _)| name)
    }

    /// Whether each of its processes serves one connection at a time.
    pub fn is_sequential(self) -> bool {
        !matches!(self, Self::Multiplex)
    }
}

/// How children take turns accepting (`serialize`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcceptSerialization {
    /// An exclusive `flock` on the lock file around accept (also what
    /// `semaphore` and `pipe` select).
    Flock,
    /// Every idle child waits on every socket.
    None,
}

/// The process model: the personality and its options.
#[derive(Clone, Debug)]
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
    pub check_for_waiting: Duration,
    /// How long a one-connection-at-a-time worker waits for a client
    /// before its per-worker instances' `idle-hook` runs (and again).
    pub check_for_idle: Duration,
    /// How often the parent looks for children that died unseen.
    pub check_for_dead: Duration,
    /// How often the parent tops up idle children.
    pub check_for_spawn: Duration,
    /// The least a child lives before it may be retired for being spare.
    pub min_child_ttl: Duration,
    /// How children take turns accepting.
    pub serialize: AcceptSerialization,
    /// The file `serialize flock` locks (default: a fresh temporary file).
    pub lock_file: Option<PathBuf>,
    /// Across a HUP, leave the old children alone rather than asking them
    /// to finish their connections and exit.
    pub leave_children_open_on_hup: bool,
    /// Signals the parent passes on to every child.
    pub sig_passthrough: Vec<Signal>,
    /// QUIT: how long open connections may take to finish.
    pub quit_timeout: Duration,
    /// TERM drains as QUIT does, instead of stopping at once.
    pub term_drains: bool,
    /// `worker_memory`: the linear memory all instances of one worker
    /// process may hold together; `None`: derived from the machine (see
    /// `wasm::budget`).
    pub worker_memory: Option<u64>,
    /// `no_close_by_child`, as given: accepted for Net::Server conf files,
    /// without effect (children and guests can never stop the server here).
    pub no_close_by_child: bool,
}

/// How instances are made (`instance`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InstanceMode {
    /// A fresh instance for every connection.
    PerConnection,
    /// One instance per worker serves its connections in turn.
    PerWorker,
}

/// Which processes serve a service (`isolation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isolation {
    /// The workers every shared service has (one pool for all of them).
    Shared,
    /// Worker processes of its own: a pool for this service alone.
    Process,
}

impl Isolation {
    /// The word `isolation` takes.
    pub fn name(self) -> &'static str {
        match self {
            Self::Shared => "shared",
            Self::Process => "process",
        }
    }
}

/// What a service with worker processes of its own (`isolation process`)
/// sets for them in its `[[service]]` table; each `None` is the server's
/// (the top level's).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OwnProcesses {
    /// `user`: who its workers run as (a name).
    pub user: Option<String>,
    /// `group`: their group (a name).
    pub group: Option<String>,
    /// `workers`: how many (`multiplex`).
    pub workers: Option<u32>,
    /// `max_servers`: how many at most (the other personalities).
    pub max_servers: Option<u32>,
}

/// One hosted service: a handler, the ports it is served on, its limits.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The service name given to the handler and used in the log.
    pub name: String,
    /// The handler's file; `None` serves the built-in echo handler.
    pub module: Option<PathBuf>,
    /// The sockets to listen on, as specified (service names resolved).
    pub listeners: Vec<Listener>,
    /// Whether `port` was given, rather than defaulted (under socket
    /// activation only a given port is bound).
    pub port_given: bool,
    /// How long a connection may move no byte before it is closed.
    pub idle_timeout: Duration,
    /// CPU time one hook call may use before it is interrupted.
    pub cpu_limit: Duration,
    /// Its weight when several services' guests keep computing in one
    /// worker (see `fairness`).
    pub cpu_share: u32,
    /// The time slice its own workers (`isolation process`) ask for while
    /// they keep a CPU busy, in milliseconds (`busy_slice`; 0: never; see
    /// `busy`).
    pub busy_slice: u32,
    /// Bytes of linear memory one instance may use.
    pub max_memory: u64,
    /// Instances (connections) of this service served at once.
    pub max_instances: u32,
    /// `memory_budget`: the linear memory all of this service's live
    /// instances in one worker process may hold together; `None`: derived
    /// (see `wasm::budget`).
    pub memory_budget: Option<u64>,
    /// Bytes a connection's guest may write to its client (0: no limit).
    pub max_bytes_written: u64,
    /// Log lines a second its guests may write in each worker (0: no
    /// limit).
    pub guest_log_rate: u32,
    /// Lines a second in each worker that may say its connections ended
    /// by a fault (a trap, a limit; 0: no limit).
    pub fault_log_rate: u32,
    /// Connections open at once across every worker process (0: no
    /// limit).
    pub max_connections: u32,
    /// Mux world: output queued for one client beyond which it is cut off.
    pub mux_write_cap: u64,
    /// Mux world: input left unconsumed beyond which a connection closes.
    pub mux_input_cap: u64,
    /// Properties handed to the handler.
    pub properties: BTreeMap<String, String>,
    /// A fresh instance per connection, or one per worker.
    pub instance: InstanceMode,
    /// How often the guest's `dequeue` runs, when it does.
    pub check_for_dequeue: Option<Duration>,
    /// `dequeue` runs at once, at most.
    pub max_dequeue: u32,
    /// How long a connection may last in all, when limited.
    pub connection_timeout: Option<Duration>,
    /// Whether its module is served anew when the file changes.
    pub watch_module: bool,
    /// What the guest may use beyond its client: directories, environment,
    /// outbound networks.
    pub grants: Grants,
    /// The access rules, as given.
    pub access: AccessConfig,
    /// Proxies whose connections start with a PROXY protocol header.
    pub proxy_from: Vec<ipnet::IpNet>,
    /// How it serves HTTP, when its guest is a wasi:http component.
    pub http: HttpSettings,
    /// Connections one client address may hold open at once (0: no limit).
    pub max_conn_per_ip: u32,
    /// New connections per second one client address may open (0: no
    /// limit).
    pub max_rate_per_ip: u32,
    /// How its sockets are set up beyond their address.
    pub sockets: SocketSettings,
    /// Its TLS settings, for its `ssl` ports.
    pub tls: tls::TlsSettings,
    /// Whether it shares the workers of the other shared services or has
    /// its own.
    pub isolation: Isolation,
    /// What its `[[service]]` table sets for its own workers (`isolation
    /// process` only: on a shared service each is a configuration error).
    pub own: OwnProcesses,
    /// Where the service is defined: its `[[service]]` table, or the
    /// top level.
    pub source: Source,
    /// The effective value and source of each per-service option.
    pub options: Report,
}

impl ServiceConfig {
    /// Where its `module` was given, as an error about it should name it:
    /// `file:line: module PATH`, or `--module PATH`.
    pub fn module_origin(&self, shown: &str) -> String {
        self.origin("module", shown)
    }

    /// Where option `key` was given with value `shown`, as an error about
    /// it should name it: `file:line: KEY VALUE`, or `--KEY VALUE`
    /// (`ssl_*` options in Net::Server's spelling, `SSL_cert_file`).
    pub fn origin(&self, key: &str, shown: &str) -> String {
        let name = options::net_server_name(key);
        match self.options.get(key) {
            Some((_, given @ Source::File { .. })) => format!("{given}: {name} {shown}"),
            _ => format!("--{name} {shown}"),
        }
    }
}

/// The `recv` flags a datagram socket may be given (`udp_recv_flags`):
/// `MSG_TRUNC` and `MSG_DONTWAIT` change nothing here (truncation is
/// always detected, every socket is non-blocking); any other flag would
/// change what a request is (`MSG_PEEK` would read one datagram forever).
/// `access_log_format`'s default: Apache's combined format, as
/// Net::Server::HTTP logs.
pub const DEFAULT_ACCESS_LOG_FORMAT: &str =
    r#"%h %l %u %t "%r" %>s %b "%{Referer}i" "%{User-Agent}i""#;

/// How a service whose guest is a wasi:http component serves HTTP (see
/// `docs/http.md`); the other guests ignore it.
#[derive(Clone, Debug)]
pub struct HttpSettings {
    /// `timeout_header`: how long a client has to send a request head.
    pub timeout_header: Duration,
    /// `timeout_idle`: how long a kept-alive connection may wait for its
    /// next request.
    pub timeout_idle: Duration,
    /// `max_header_size`: bytes of a request's line and headers.
    pub max_header_size: u64,
    /// `max_body_size`: bytes of a request body (0: no limit).
    pub max_body_size: u64,
    /// `access_log_file`: where the access log goes (`None`: the main log).
    pub access_log_file: Option<PathBuf>,
    /// `access_log_format`: the access log's line (Apache's directives).
    pub access_log_format: access_format::AccessFormat,
    /// `access_log_format` as given.
    pub access_log_format_text: String,
}

pub const RECV_FLAGS_ALLOWED: i32 = nix::libc::MSG_TRUNC | nix::libc::MSG_DONTWAIT;

/// How a service's sockets are set up beyond their address: datagram
/// sockets' receive settings and reply cap, unix socket files' mode and
/// group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SocketSettings {
    /// `udp_recv_len`: bytes read of each datagram.
    pub udp_recv_len: usize,
    /// `udp_recv_flags`: extra `recv` flags (only harmless ones).
    pub udp_recv_flags: i32,
    /// `udp_amplification`: the cap on a UDP reply, as a multiple of its
    /// request (0: none).
    pub udp_amplification: u32,
    /// `udp_broadcast`: `SO_BROADCAST` on UDP sockets.
    pub udp_broadcast: bool,
    /// `socket_mode`: the permissions of unix socket files.
    pub socket_mode: Option<u32>,
    /// `socket_group`: the group of unix socket files (a gid).
    pub socket_group: Option<u32>,
}

/// The access rules of a service as given (`allow`, `deny`, `cidr_allow`,
/// `cidr_deny`, `allow_uid`, reverse lookups); every pattern is a valid
/// regular expression.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccessConfig {
    /// `deny` patterns.
    pub deny: Vec<String>,
    /// `cidr_deny` networks.
    pub cidr_deny: Vec<ipnet::IpNet>,
    /// `allow` patterns.
    pub allow: Vec<String>,
    /// `cidr_allow` networks.
    pub cidr_allow: Vec<ipnet::IpNet>,
    /// `allow_uid`: the uids of the users given.
    pub allow_uid: Vec<u32>,
    /// Look up the client's host name.
    pub reverse_lookups: bool,
    /// Trust a looked-up name only when it resolves back to the client.
    pub double_reverse_lookups: bool,
}

/// The capabilities a service's guests are granted. Without any, a guest
/// has no files, no environment and no network.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Grants {
    /// Host directories, pre-opened for the guest.
    pub dirs: Vec<options::DirGrant>,
    /// Environment variables.
    pub env: Vec<(String, String)>,
    /// Networks the guest may connect (TCP) and send (UDP) to.
    pub connect: Vec<ipnet::IpNet>,
}

/// Where the log goes (`log_file`).
#[derive(Clone, Debug, Default)]
pub enum LogTarget {
    /// Standard error (no `log_file`).
    #[default]
    Stderr,
    /// Appended to this file; a HUP (which re-executes the server) opens
    /// it again, so a rotated file is followed.
    File(PathBuf),
    /// The system log (`log_file Sys::Syslog`).
    Syslog(Syslog),
}

/// `log_file Sys::Syslog` and its `syslog_*` options.
#[derive(Clone, Debug)]
pub struct Syslog {
    /// `syslog_ident`: the program name in each line.
    pub ident: String,
    /// `syslog_facility`.
    pub facility: syslog::Facility,
    /// `syslog_logopt pid`: the pid is given (the line format always
    /// carries one; without `pid` it is the master's).
    pub pid: bool,
    /// `syslog_logsock`: the sockets to try, in order.
    pub sockets: Vec<SyslogSocket>,
}

/// One way to reach the system log.
#[derive(Clone, Debug, PartialEq)]
pub enum SyslogSocket {
    /// A unix socket: the system's (`/dev/log`, …) or this path.
    Unix(Option<PathBuf>),
    /// UDP to the local syslog port (514).
    Udp,
    /// TCP to the local syslog port (514).
    Tcp,
}

impl fmt::Display for SyslogSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unix(None) => f.write_str("unix (the system's socket)"),
            Self::Unix(Some(path)) => write!(f, "unix {}", path.display()),
            Self::Udp => f.write_str("udp 127.0.0.1:514"),
            Self::Tcp => f.write_str("tcp 127.0.0.1:514"),
        }
    }
}

/// Who the server becomes after binding, as given (`user`, `group`,
/// `chroot`); each user and group exists.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Privileges {
    /// `user`: a name.
    pub user: Option<String>,
    /// `group`: a name.
    pub group: Option<String>,
    /// `chroot`: the directory to enter.
    pub chroot: Option<PathBuf>,
}

/// The daemon options (`background`, `setsid`, `pid_file`).
#[derive(Clone, Debug, Default)]
pub struct DaemonSettings {
    /// `background`: fork after binding; the first process exits.
    pub background: bool,
    /// `setsid`: as `background`, and a new session with no terminal.
    pub setsid: bool,
    /// `pid_file`: where the server's (master's) pid is written.
    pub pid_file: Option<PathBuf>,
}

impl DaemonSettings {
    /// Whether the server leaves the terminal (`setsid` implies
    /// `background`, as in Net::Server).
    pub fn detaches(&self) -> bool {
        self.background || self.setsid
    }
}

/// Where compiled modules are kept between starts (`module_cache`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheDir {
    /// Not set: the cache's own default for this user.
    Default,
    /// `off`: nowhere.
    Off,
    /// This directory.
    At(PathBuf),
}
