//! Every option: its name (Net::Server's), the kind of value it takes, its
//! default, and a doc line. The command line, the conf-file check, the
//! resolution into typed values (see `resolve`), what `--check` prints and
//! `docs/configuration.md` all come from this one table: an option's type,
//! range and default are written here and nowhere else.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

use super::files::{self, io_reason};
use super::tls;

/// The kind of value an option takes, and how it is checked.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// A whole number in a range.
    Int(i64, i64),
    /// Seconds, above 0.
    Seconds,
    /// A size in bytes, `K`/`M`/`G` suffixes allowed, from 64K to 4G (a
    /// linear memory's range).
    Size,
    /// A size in bytes in a range, `K`/`M`/`G`/`T` suffixes allowed; a
    /// range from 0 means 0 is no limit.
    Bytes(u64, u64),
    /// `1`/`0`, `yes`/`no`, `on`/`off`, `true`/`false`.
    Bool,
    /// Any text.
    Text,
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// A regular expression (matched against the whole text).
    Regex,
    /// An IP network, `ADDR/LEN`, or a single address.
    Cidr,
    /// A user name or uid that exists on this machine.
    User,
    /// A group name or gid that exists on this machine.
    Group,
    /// A file mode, octal (`0660`).
    Mode,
    /// A port specification (see `config::port`).
    Port,
    /// `KEY=VALUE`.
    KeyValue,
    /// A file this host reads: it must exist and be readable.
    ReadableFile,
    /// A file this host creates or writes: its directory must exist.
    FileToWrite,
    /// An existing directory.
    Directory,
    /// A file to write, or `Sys::Syslog` for the system log.
    LogTarget,
    /// A directory granted to the guest: `HOST[:GUEST][:ro|rw]`.
    DirGrant,
    /// An environment variable granted to the guest: `KEY=VALUE`, or `KEY`
    /// for the host's own value.
    EnvGrant,
    /// Signal names (`USR1`, `SIGHUP`), several separated by `,` or spaces.
    Signals,
    /// `SSL_verify_mode`: 0, 1 or 3.
    VerifyMode,
    /// `SSL_version`: the lowest TLS version served.
    TlsVersion,
    /// `SSL_cipher_list`: cipher suite names.
    CipherList,
    /// `SSL_alpn`: application protocol names.
    Alpn,
    /// A DNS name, or `*.` and one.
    ServerName,
    /// A TCP address to listen on: `PORT` (on 127.0.0.1) or `ADDRESS:PORT`.
    Address,
    /// Apache's `LogFormat` directives (`access_log_format`).
    AccessFormat,
}

/// Whether an option belongs to the whole server or to each hosted service
/// (a `[[service]]` table sets its own; the top level gives the default).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// One value for the whole server: process model, privileges, logging.
    Server,
    /// Each service may set its own: module, ports, limits, rules.
    Service,
}

/// Whether an option already acts, or is accepted and checked ahead of the
/// feature that uses it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The option takes effect.
    Active,
    /// Accepted and validated; the feature that uses it is still to come.
    Planned,
}

/// One option.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    /// Net::Server's name, with underscores.
    pub name: &'static str,
    /// What it takes.
    pub kind: Kind,
    /// Its default, as text; `None` when unset by default.
    pub default: Option<&'static str>,
    /// Whether repeating it accumulates values (`port`, `allow`, …) rather
    /// than the last one winning.
    pub repeat: bool,
    /// One line of documentation.
    pub doc: &'static str,
    /// Whether it takes effect yet.
    pub status: Status,
    /// The whole server's, or each service's.
    pub scope: Scope,
}

const fn spec(
    name: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    repeat: bool,
    status: Status,
    doc: &'static str,
) -> Spec {
    Spec {
        name,
        kind,
        default,
        repeat,
        doc,
        status,
        scope: Scope::Server,
    }
}

impl Spec {
    /// The same option, set per service.
    const fn per_service(self) -> Self {
        Self {
            scope: Scope::Service,
            ..self
        }
    }
}

use Kind::*;
use Status::*;

/// The largest size a `Bytes` option takes: 64 TiB.
const MAX_BYTES: u64 = 64 << 40;

const SERVER_TYPES: &[&str] = &[
    "multiplex",
    "single",
    "inetd",
    "fork",
    "prefork-simple",
    "prefork",
];

/// Every option this host knows, sorted by name.
pub const OPTIONS: &[Spec] = &[
    spec(
        "access_log_file",
        FileToWrite,
        None,
        false,
        Active,
        "HTTP services: append the access log (one line per request) to this file instead of the main log",
    )
    .per_service(),
    spec(
        "access_log_format",
        AccessFormat,
        Some(crate::config::DEFAULT_ACCESS_LOG_FORMAT),
        false,
        Active,
        "HTTP services: the access log's line, in Apache's LogFormat directives (the default is Apache's combined format)",
    )
    .per_service(),
    spec(
        "allow",
        Regex,
        None,
        true,
        Active,
        "a client address or host name to serve (regex, whole match)",
    )
    .per_service(),
    spec(
        "allow_uid",
        User,
        None,
        true,
        Active,
        "a user whose unix-socket clients are served (by SO_PEERCRED)",
    )
    .per_service(),
    spec(
        "background",
        Bool,
        Some("0"),
        false,
        Active,
        "fork into the background after binding",
    ),
    spec(
        "busy_slice",
        Int(0, 100),
        Some("100"),
        false,
        Active,
        "isolation process: the time slice, in ms, this service's workers ask the kernel for while they keep a CPU busy, so that processes that wake for their clients run first (0: never; Linux 6.12+)",
    )
    .per_service(),
    spec(
        "check_for_dead",
        Seconds,
        Some("30"),
        false,
        Active,
        "prefork: how often the parent looks for dead children",
    ),
    spec(
        "check_for_dequeue",
        Seconds,
        None,
        false,
        Active,
        "run the guest's dequeue export every N seconds",
    )
    .per_service(),
    spec(
        "check_for_idle",
        Seconds,
        Some("4"),
        false,
        Active,
        "one-connection-at-a-time workers: run a per-worker instance's idle-hook after N seconds without a client (Net::Waiter's TIMEOUT)",
    ),
    spec(
        "check_for_spawn",
        Seconds,
        Some("30"),
        false,
        Active,
        "prefork: how often the parent checks the spare children",
    ),
    spec(
        "check_for_waiting",
        Seconds,
        Some("10"),
        false,
        Active,
        "prefork: how often the parent checks idle children",
    ),
    spec(
        "chroot",
        Directory,
        None,
        false,
        Active,
        "directory to chroot into after binding",
    ),
    spec(
        "cidr_allow",
        Cidr,
        None,
        true,
        Active,
        "a client network to serve (CIDR)",
    )
    .per_service(),
    spec(
        "cidr_deny",
        Cidr,
        None,
        true,
        Active,
        "a client network to refuse (CIDR)",
    )
    .per_service(),
    spec(
        "connection_timeout",
        Seconds,
        None,
        false,
        Active,
        "close a connection this many seconds after it was accepted, busy or not",
    )
    .per_service(),
    spec(
        "cpu_limit",
        Seconds,
        Some("10"),
        false,
        Active,
        "seconds of CPU time a hook may compute without waiting for the client",
    )
    .per_service(),
    spec(
        "cpu_share",
        Int(1, 10_000),
        Some("100"),
        false,
        Active,
        "multiplex: this service's weight when several services' guests keep computing",
    )
    .per_service(),
    spec(
        "deny",
        Regex,
        None,
        true,
        Active,
        "a client address or host name to refuse (regex, whole match)",
    )
    .per_service(),
    spec(
        "double_reverse_lookups",
        Bool,
        Some("0"),
        false,
        Active,
        "check that a reverse-looked-up name resolves back to the client",
    )
    .per_service(),
    spec(
        "fault_log_rate",
        Int(0, 1_000_000),
        Some("100"),
        false,
        Active,
        "lines a second that may say, in each worker, that one of this service's connections ended by a fault (a trap, a limit: `err` lines); more are not written, and said once a second with how many (0: no limit)",
    )
    .per_service(),
    spec(
        "grant_connect",
        Cidr,
        None,
        true,
        Active,
        "a network the guest may open TCP connections and send UDP to (none by default)",
    )
    .per_service(),
    spec(
        "grant_dir",
        DirGrant,
        None,
        true,
        Active,
        "a host directory the guest may use: HOST[:GUEST][:ro|rw] (read-only by default)",
    )
    .per_service(),
    spec(
        "grant_env",
        EnvGrant,
        None,
        true,
        Active,
        "an environment variable for the guest: KEY=VALUE, or KEY for the host's value",
    )
    .per_service(),
    spec(
        "group",
        Group,
        None,
        false,
        Active,
        "group to become after binding (default nogroup when started as root); in a service table, the group of that service's own workers (isolation process only; default the service's user's group)",
    )
    .per_service(),
    spec(
        "guest_log_rate",
        Int(0, 1_000_000),
        Some("1000"),
        false,
        Active,
        "log lines a second (log calls and stderr lines) this service's guests may write in each worker, in bursts of as many; more are dropped and counted (0: no limit)",
    )
    .per_service(),
    spec(
        "host",
        Text,
        Some("*"),
        true,
        Active,
        "host to bind for port specs that name none; `*` is every address",
    )
    .per_service(),
    spec(
        "idle_timeout",
        Seconds,
        Some("30"),
        false,
        Active,
        "close a connection when no byte moved for this many seconds",
    )
    .per_service(),
    spec(
        "instance",
        Choice(&["per-connection", "per-worker"]),
        Some("per-connection"),
        false,
        Active,
        "a fresh instance per client, or one per worker",
    )
    .per_service(),
    spec(
        "ipv",
        Text,
        Some("*"),
        true,
        Active,
        "IP versions for port specs that name none: 4, 6 or *",
    )
    .per_service(),
    spec(
        "isolation",
        Choice(&["shared", "process"]),
        Some("shared"),
        false,
        Active,
        "shared: the service is served by the workers every shared service has; process: by worker processes of its own (see personalities)",
    )
    .per_service(),
    spec(
        "leave_children_open_on_hup",
        Bool,
        Some("0"),
        false,
        Active,
        "let children finish their clients across a HUP",
    ),
    spec(
        "listen",
        Int(1, 65535),
        Some("1024"),
        false,
        Active,
        "the listen backlog of each listening socket (the kernel caps it at net.core.somaxconn)",
    ),
    spec(
        "lock_file",
        FileToWrite,
        None,
        false,
        Active,
        "prefork: the file flock serializes accept on",
    ),
    spec(
        "log_file",
        LogTarget,
        None,
        false,
        Active,
        "write the log here (a path, or Sys::Syslog) instead of stderr",
    ),
    spec(
        "log_level",
        Int(0, 4),
        Some("2"),
        false,
        Active,
        "0 err, 1 warning, 2 notice, 3 info, 4 debug",
    ),
    spec(
        "max_body_size",
        Bytes(0, MAX_BYTES),
        Some("10M"),
        false,
        Active,
        "HTTP services: bytes of a request body the guest may read; a larger declared body gets 413 (0: no limit)",
    )
    .per_service(),
    spec(
        "max_bytes_written",
        Bytes(0, MAX_BYTES),
        Some("0"),
        false,
        Active,
        "bytes a connection's guest may write to its client (a datagram's: to its reply) before the connection is cut off (0: no limit)",
    )
    .per_service(),
    spec(
        "max_conn_per_ip",
        Int(0, 1_000_000),
        Some("0"),
        false,
        Active,
        "connections one client address may hold open at once (0: no limit; per worker process)",
    )
    .per_service(),
    spec(
        "max_connections",
        Int(0, 100_000_000),
        Some("0"),
        false,
        Active,
        "connections of the service open at once across all its worker processes; one past it is closed before any instance is made (0: no limit)",
    )
    .per_service(),
    spec(
        "max_dequeue",
        Int(1, 1000),
        Some("1"),
        false,
        Active,
        "dequeue workers at once",
    )
    .per_service(),
    spec(
        "max_header_size",
        Bytes(8192, 16 << 20),
        Some("100K"),
        false,
        Active,
        "HTTP services: bytes of a request's line and headers; a larger one gets 431",
    )
    .per_service(),
    spec(
        "max_instances",
        Int(1, 100_000),
        Some("1000"),
        false,
        Active,
        "instances (connections) served at once per process",
    )
    .per_service(),
    spec(
        "max_memory",
        Size,
        Some("64M"),
        false,
        Active,
        "linear memory of one instance",
    )
    .per_service(),
    spec(
        "max_rate_per_ip",
        Int(0, 1_000_000),
        Some("0"),
        false,
        Active,
        "new connections per second one client address may open, in bursts of as many (0: no limit; per worker process)",
    )
    .per_service(),
    spec(
        "max_requests",
        Int(1, i64::MAX),
        Some("1000"),
        false,
        Active,
        "prefork: connections a child serves before it is replaced",
    ),
    spec(
        "max_servers",
        Int(1, 100_000),
        Some("50"),
        false,
        Active,
        "most child processes; in a service table, of that service's own (isolation process only)",
    )
    .per_service(),
    spec(
        "max_spare_servers",
        Int(1, 100_000),
        Some("10"),
        false,
        Active,
        "prefork: most idle children",
    ),
    spec(
        "memory_budget",
        Bytes(64 << 10, MAX_BYTES),
        None,
        false,
        Active,
        "linear memory all of the service's live instances in one worker process may hold together (default: worker_memory shared evenly among the services, at most the instances a worker runs at once times max_memory)",
    )
    .per_service(),
    spec(
        "metrics_port",
        Address,
        None,
        false,
        Active,
        "serve Prometheus metrics over HTTP at /metrics on this port (127.0.0.1 unless ADDRESS:PORT is given), from the master",
    ),
    spec(
        "min_child_ttl",
        Seconds,
        Some("10"),
        false,
        Active,
        "prefork: least a child lives before it may be retired",
    ),
    spec(
        "min_servers",
        Int(1, 100_000),
        Some("5"),
        false,
        Active,
        "prefork: children started at first",
    ),
    spec(
        "min_spare_servers",
        Int(0, 100_000),
        Some("2"),
        false,
        Active,
        "prefork: least idle children",
    ),
    spec(
        "module",
        ReadableFile,
        None,
        false,
        Active,
        "the handler component or WASI command, a regular file of at most 512 MiB (default: built-in echo)",
    )
    .per_service(),
    spec(
        "module_cache",
        Text,
        None,
        false,
        Active,
        "directory of compiled modules kept between starts (default /var/cache/netserver as root, ~/.cache/netserver otherwise; off: none)",
    ),
    spec(
        "mux_input_cap",
        Size,
        Some("64K"),
        false,
        Active,
        "mux world: input a connection's guest left unconsumed beyond which it is closed",
    )
    .per_service(),
    spec(
        "mux_write_cap",
        Size,
        Some("256K"),
        false,
        Active,
        "mux world: output queued for a client beyond which it is cut off (its input pauses from half of it)",
    )
    .per_service(),
    spec(
        "no_close_by_child",
        Bool,
        Some("0"),
        false,
        Active,
        "accepted for Net::Server conf files: children (and guests) can never stop the server here",
    ),
    spec(
        "pid_file",
        FileToWrite,
        None,
        false,
        Active,
        "write the server's pid here",
    ),
    spec(
        "port",
        Port,
        Some("20203"),
        true,
        Active,
        "a port to listen on (see the port grammar)",
    )
    .per_service(),
    spec(
        "property",
        KeyValue,
        None,
        true,
        Active,
        "a KEY=VALUE setting handed to the handler",
    )
    .per_service(),
    spec(
        "proto",
        Text,
        Some("tcp"),
        true,
        Active,
        "protocol for port specs that name none",
    )
    .per_service(),
    spec(
        "proxy_from",
        Cidr,
        None,
        true,
        Active,
        "a proxy network whose connections must start with a PROXY v1 or v2 header",
    )
    .per_service(),
    spec(
        "quit_timeout",
        Seconds,
        Some("30"),
        false,
        Active,
        "QUIT: how long open connections may take to finish before the server exits",
    ),
    spec(
        "reverse_lookups",
        Bool,
        Some("0"),
        false,
        Active,
        "look up the client's host name",
    )
    .per_service(),
    spec(
        "serialize",
        Choice(&["flock", "semaphore", "pipe", "none"]),
        Some("flock"),
        false,
        Active,
        "prefork: how accept is serialized across several ports",
    ),
    spec(
        "server_name",
        ServerName,
        None,
        true,
        Active,
        "a TLS server name (SNI) this service answers on a port it shares with other services: a DNS name or *.name",
    )
    .per_service(),
    spec(
        "server_type",
        Choice(SERVER_TYPES),
        Some("multiplex"),
        false,
        Active,
        "the personality: multiplex, single, inetd, fork, prefork-simple, prefork",
    ),
    spec(
        "service",
        Text,
        None,
        false,
        Active,
        "the service name: at most 64 letters, digits, '.', '_', '-' (default: the module's file stem, other characters as '_', or echo)",
    )
    .per_service(),
    spec(
        "setsid",
        Bool,
        Some("0"),
        false,
        Active,
        "start a new session when backgrounding",
    ),
    spec(
        "sig_passthrough",
        Signals,
        None,
        true,
        Active,
        "signals the parent passes on to its children (names, separated by commas; not KILL, STOP, ILL, FPE, SEGV)",
    ),
    spec(
        "sni_default",
        Bool,
        Some("0"),
        false,
        Active,
        "take the clients of a shared TLS port whose server name matches no service's server_name",
    )
    .per_service(),
    spec(
        "socket_group",
        Group,
        None,
        false,
        Active,
        "the group of the service's unix socket files (chgrp after binding)",
    )
    .per_service(),
    spec(
        "socket_mode",
        Mode,
        None,
        false,
        Active,
        "the permissions of the service's unix socket files, octal (e.g. 0660; default: from the umask)",
    )
    .per_service(),
    spec(
        "ssl_alpn",
        Alpn,
        None,
        false,
        Active,
        "application protocols offered by ALPN, in order of preference (e.g. h2,http/1.1)",
    )
    .per_service(),
    spec(
        "ssl_ca_file",
        ReadableFile,
        None,
        false,
        Active,
        "PEM certificates trusted to sign client certificates",
    )
    .per_service(),
    spec(
        "ssl_ca_path",
        Directory,
        None,
        false,
        Active,
        "a directory of PEM files of certificates trusted to sign client certificates",
    )
    .per_service(),
    spec(
        "ssl_cert_file",
        ReadableFile,
        None,
        false,
        Active,
        "the server's certificate chain (PEM), for its ssl ports",
    )
    .per_service(),
    spec(
        "ssl_cipher_list",
        CipherList,
        None,
        false,
        Active,
        "the cipher suites allowed (rustls, IANA or OpenSSL names; default: all of rustls's)",
    )
    .per_service(),
    spec(
        "ssl_handshake_timeout",
        Seconds,
        Some("10"),
        false,
        Active,
        "how long a TLS client may take from connecting to the end of its handshake",
    )
    .per_service(),
    spec(
        "ssl_key_file",
        ReadableFile,
        None,
        false,
        Active,
        "the private key of ssl_cert_file (PEM: PKCS#8, PKCS#1 or SEC1)",
    )
    .per_service(),
    spec(
        "ssl_verify_mode",
        VerifyMode,
        Some("0"),
        false,
        Active,
        "client certificates: 0 not asked for, 1 verified if sent, 3 required (against ssl_ca_file/ssl_ca_path)",
    )
    .per_service(),
    spec(
        "ssl_version",
        TlsVersion,
        Some("TLSv1_2"),
        false,
        Active,
        "the lowest TLS version served: TLSv1_2 or TLSv1_3",
    )
    .per_service(),
    spec(
        "syslog_facility",
        Text,
        Some("daemon"),
        false,
        Active,
        "syslog facility when log_file is Sys::Syslog",
    ),
    spec(
        "syslog_ident",
        Text,
        Some("net_server"),
        false,
        Active,
        "syslog identity when log_file is Sys::Syslog",
    ),
    spec(
        "syslog_logopt",
        Text,
        Some("pid"),
        false,
        Active,
        "syslog options when log_file is Sys::Syslog",
    ),
    spec(
        "syslog_logsock",
        Text,
        Some("unix"),
        false,
        Active,
        "syslog socket when log_file is Sys::Syslog: unix, inet, tcp or a socket path (list: try in order)",
    ),
    spec(
        "term_drains",
        Bool,
        Some("0"),
        false,
        Active,
        "TERM drains as QUIT does (open connections finish) instead of stopping at once; INT still stops at once (ours, not Net::Server's: for systemd, Kubernetes and other managers that stop with TERM)",
    ),
    spec(
        "timeout_header",
        Seconds,
        Some("15"),
        false,
        Active,
        "HTTP services: seconds a client has to send a whole request head, from its first byte",
    )
    .per_service(),
    spec(
        "timeout_idle",
        Seconds,
        Some("60"),
        false,
        Active,
        "HTTP services: seconds a kept-alive connection may wait for its next request",
    )
    .per_service(),
    spec(
        "udp_amplification",
        Int(0, 1000),
        Some("3"),
        false,
        Active,
        "a UDP reply may take at most this many times its request's bytes on the wire, 28 bytes of headers counted per datagram (0: no cap)",
    )
    .per_service(),
    spec(
        "udp_broadcast",
        Bool,
        Some("0"),
        false,
        Active,
        "set SO_BROADCAST on UDP sockets (replies to broadcast addresses)",
    )
    .per_service(),
    spec(
        "udp_recv_flags",
        Int(0, 0xffff),
        Some("0"),
        false,
        Active,
        "recv flags for datagram sockets: 0, or MSG_TRUNC (32) and MSG_DONTWAIT (64), which change nothing here",
    )
    .per_service(),
    spec(
        "udp_recv_len",
        Int(1, 65535),
        Some("4096"),
        false,
        Active,
        "bytes read of each datagram (UDP and unix datagram); the rest of a longer one is lost",
    )
    .per_service(),
    spec(
        "user",
        User,
        None,
        false,
        Active,
        "user to become after binding (default nobody when started as root); in a service table, the user of that service's own workers (isolation process only)",
    )
    .per_service(),
    spec(
        "watch_module",
        Bool,
        Some("0"),
        false,
        Active,
        "serve the module anew when its file changes, without restarting (new connections get the new module)",
    )
    .per_service(),
    spec(
        "worker_memory",
        Bytes(1 << 20, MAX_BYTES),
        None,
        false,
        Active,
        "linear memory all instances of one worker process may hold together (default: half the machine's memory, or its cgroup's limit, shared evenly among the worker processes that may run at once)",
    ),
    spec(
        "workers",
        Int(1, 1024),
        Some("1"),
        false,
        Active,
        "multiplex: processes sharing the listening sockets; in a service table, that service's own (isolation process only)",
    )
    .per_service(),
];

/// An option's name as Net::Server's users write it: the `ssl_*` options
/// in IO::Socket::SSL's spelling (`SSL_cert_file`), the others as named.
pub fn net_server_name(name: &str) -> std::borrow::Cow<'_, str> {
    match name.strip_prefix("ssl_") {
        Some(rest) => format!("SSL_{rest}").into(),
        None => name.into(),
    }
}

/// The option named `name` (underscores).
pub fn find(name: &str) -> Option<&'static Spec> {
    OPTIONS.iter().find(|s| s.name == name)
}

/// The known option closest to `name`, if one is close enough to suggest.
pub fn closest(name: &str) -> Option<&'static str> {
    OPTIONS
        .iter()
        .map(|s| (strsim::jaro_winkler(s.name, name), s.name))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .filter(|(score, _)| *score > 0.8)
        .map(|(_, name)| name)
}

/// A value checked against its option's [`Kind`]: what the resolution
/// reads and what `--check` prints ([`Typed::to_json`]).
#[derive(Clone, Debug, PartialEq)]
pub enum Typed {
    /// [`Kind::Int`].
    Int(i64),
    /// [`Kind::Seconds`].
    Seconds(Duration),
    /// [`Kind::Size`], in bytes.
    Size(u64),
    /// [`Kind::Bool`].
    Bool(bool),
    /// [`Kind::Text`], [`Kind::Port`] (parsed with the other port
    /// options), [`Kind::Regex`] (compiled by the access rules), trimmed.
    Text(String),
    /// [`Kind::Choice`]: the table's spelling of the word given.
    Choice(&'static str),
    /// [`Kind::Cidr`].
    Cidr(ipnet::IpNet),
    /// [`Kind::User`] and [`Kind::Group`]: the name of the one that exists.
    Name(String),
    /// [`Kind::KeyValue`] and [`Kind::EnvGrant`].
    Pair(String, String),
    /// [`Kind::ReadableFile`], [`Kind::FileToWrite`], [`Kind::Directory`].
    Path(PathBuf),
    /// [`Kind::LogTarget`]: a file, or `None` for the system log.
    Log(Option<PathBuf>),
    /// [`Kind::DirGrant`].
    Dir(DirGrant),
    /// [`Kind::Signals`].
    Signals(Vec<Signal>),
    /// [`Kind::Address`].
    Addr(std::net::SocketAddr),
}

impl Typed {
    /// The value as `--check` prints it.
    pub fn to_json(&self) -> Value {
        match self {
            Self::Int(n) => (*n).into(),
            Self::Seconds(d) => d.as_secs_f64().into(),
            Self::Size(n) => (*n).into(),
            Self::Bool(b) => (*b).into(),
            Self::Text(text) | Self::Name(text) => text.as_str().into(),
            Self::Choice(word) => (*word).into(),
            Self::Cidr(net) => net.to_string().into(),
            Self::Addr(addr) => addr.to_string().into(),
            Self::Pair(key, value) => format!("{key}={value}").into(),
            Self::Path(path) => path.display().to_string().into(),
            Self::Log(None) => SYSLOG.into(),
            Self::Log(Some(path)) => path.display().to_string().into(),
            Self::Dir(grant) => grant.to_string().into(),
            Self::Signals(signals) => signals
                .iter()
                .map(|s| s.as_str().trim_start_matches("SIG"))
                .collect::<Vec<_>>()
                .join(",")
                .into(),
        }
    }
}

/// Checks `text` against `kind`: the typed value, or why it is wrong.
pub fn parse(kind: Kind, text: &str) -> Result<Typed, String> {
    let text = text.trim();
    match kind {
        Int(min, max) => match text.parse::<i64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(Typed::Int(n)),
            _ if max == i64::MAX => Err(format!("must be a whole number from {min} up")),
            _ => Err(format!("must be a whole number from {min} to {max}")),
        },
        Seconds => match text.parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs <= 31_536_000.0 => {
                Ok(Typed::Seconds(Duration::from_secs_f64(secs)))
            }
            _ => Err("must be a number of seconds above 0 (at most a year)".to_owned()),
        },
        Size => size_bytes(text)
            .filter(|&n| (64 << 10..=4 << 30).contains(&n))
            .map(Typed::Size)
            .ok_or_else(|| "must be a size from 64K to 4G, e.g. 64M".to_owned()),
        Bytes(min, max) => size_bytes(text)
            .filter(|n| (min..=max).contains(n))
            .map(Typed::Size)
            .ok_or_else(|| bytes_range(min, max)),
        Bool => parse_bool(text)
            .map(Typed::Bool)
            .ok_or_else(|| "must be 1 or 0 (yes/no, on/off, true/false)".to_owned()),
        Text | Port => Ok(Typed::Text(text.to_owned())),
        AccessFormat => {
            super::access_format::AccessFormat::parse(text).map(|_| Typed::Text(text.to_owned()))
        }
        Choice(words) => words
            .iter()
            .find(|w| w.eq_ignore_ascii_case(text))
            .map(|w| Typed::Choice(w))
            .ok_or_else(|| format!("must be one of {}", words.join(", "))),
        Regex => regex::Regex::new(text)
            .map(|_| Typed::Text(text.to_owned()))
            .map_err(|e| format!("not a valid regex: {}", first_line(&e.to_string()))),
        Cidr => parse_cidr(text).map(Typed::Cidr),
        Address => parse_address(text).map(Typed::Addr),
        User => lookup_user(text).map(Typed::Name),
        Group => lookup_group(text).map(Typed::Name),
        Mode => u32::from_str_radix(text, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
            .map(|m| Typed::Text(format!("{m:04o}")))
            .ok_or_else(|| "must be an octal file mode, 0000 to 7777 (e.g. 0660)".to_owned()),
        KeyValue => match text.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok(Typed::Pair(key.trim().to_owned(), value.to_owned()))
            }
            _ => Err("must be KEY=VALUE".to_owned()),
        },
        ReadableFile => check_readable(text).map(|()| Typed::Path(text.into())),
        FileToWrite => check_file_to_write(text).map(|()| Typed::Path(text.into())),
        Directory => match std::fs::metadata(text) {
            Ok(meta) if meta.is_dir() => Ok(Typed::Path(text.into())),
            Ok(_) => Err("not a directory".to_owned()),
            Err(err) => Err(io_reason(&err)),
        },
        DirGrant => parse_dir_grant(text).map(Typed::Dir),
        EnvGrant => parse_env_grant(text).map(|(k, v)| Typed::Pair(k, v)),
        LogTarget if text.eq_ignore_ascii_case(SYSLOG) => Ok(Typed::Log(None)),
        LogTarget => check_file_to_write(text).map(|()| Typed::Log(Some(text.into()))),
        Signals => parse_signals(text).map(Typed::Signals),
        VerifyMode => tls::Verify::parse(text).map(|v| Typed::Int(v.bits().into())),
        TlsVersion => tls::TlsVersion::parse(text).map(|v| Typed::Choice(v.name())),
        CipherList => tls::parse_cipher_list(text).map(|s| Typed::Text(s.join(":"))),
        Alpn => tls::parse_alpn(text).map(|p| Typed::Text(p.join(","))),
        ServerName => tls::NamePattern::parse(text).map(|p| Typed::Text(p.to_string())),
    }
}

/// Signals the host must keep for itself, whatever `sig_passthrough` says:
/// they cannot be caught (KILL, STOP), or mean the process itself is
/// broken (ILL, FPE, SEGV), so no handler may be registered for them.
const UNPASSABLE: [Signal; 5] = [
    Signal::SIGKILL,
    Signal::SIGSTOP,
    Signal::SIGILL,
    Signal::SIGFPE,
    Signal::SIGSEGV,
];

/// Parses signal names separated by `,` or white space (`HUP`, `SIGUSR1`,
/// any case).
pub fn parse_signals(text: &str) -> Result<Vec<Signal>, String> {
    let mut signals = Vec::new();
    for name in text.split([',', ' ', '\t']).filter(|n| !n.is_empty()) {
        let signal = signal_named(name).ok_or_else(|| format!("unknown signal '{name}'"))?;
        if UNPASSABLE.contains(&signal) {
            return Err(format!(
                "signal {} cannot be passed on (it cannot be caught, or means a crash)",
                signal.as_str().trim_start_matches("SIG")
            ));
        }
        if !signals.contains(&signal) {
            signals.push(signal);
        }
    }
    if signals.is_empty() {
        return Err("no signal given".to_owned());
    }
    Ok(signals)
}

/// The signal named `name` (`HUP`, `SIGUSR1`, any case), if there is one.
fn signal_named(name: &str) -> Option<Signal> {
    let name = name.trim().to_ascii_uppercase();
    let name = if name.starts_with("SIG") {
        name
    } else {
        format!("SIG{name}")
    };
    name.parse().ok()
}

/// A directory granted to a guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: String,
    /// The path the guest sees it at.
    pub guest: String,
    /// Whether the guest may change it.
    pub writable: bool,
}

impl std::fmt::Display for DirGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mode = if self.writable { "rw" } else { "ro" };
        write!(f, "{}:{}:{mode}", self.host, self.guest)
    }
}

/// Parses `HOST[:GUEST][:ro|rw]`; the host directory must exist.
pub fn parse_dir_grant(text: &str) -> Result<DirGrant, String> {
    let mut parts: Vec<&str> = text.split(':').collect();
    let writable = match parts.last() {
        Some(&"rw") if parts.len() > 1 => {
            parts.pop();
            true
        }
        Some(&"ro") if parts.len() > 1 => {
            parts.pop();
            false
        }
        _ => false,
    };
    let (host, guest) = match parts.as_slice() {
        [host] => (*host, *host),
        [host, guest] => (*host, *guest),
        _ => return Err("must be HOST[:GUEST][:ro|rw]".to_owned()),
    };
    if host.is_empty() || guest.is_empty() {
        return Err("must be HOST[:GUEST][:ro|rw]".to_owned());
    }
    match std::fs::metadata(host) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{host} is not a directory")),
        Err(err) => return Err(format!("{host}: {}", io_reason(&err))),
    }
    Ok(DirGrant {
        host: host.to_owned(),
        guest: guest.to_owned(),
        writable,
    })
}

/// Parses `KEY=VALUE`, or `KEY` for the value the host has now (an error
/// when it has none).
pub fn parse_env_grant(text: &str) -> Result<(String, String), String> {
    let (key, value) = match text.split_once('=') {
        Some((key, value)) => (key.trim(), value.to_owned()),
        None => {
            let value = std::env::var(text.trim())
                .map_err(|_| "the host has no such environment variable (use KEY=VALUE)")?;
            (text.trim(), value)
        }
    };
    if key.is_empty() || key.contains(char::is_whitespace) {
        return Err("must be KEY=VALUE or KEY".to_owned());
    }
    Ok((key.to_owned(), value))
}

/// The `log_file` value that sends the log to syslog, as in Net::Server.
pub const SYSLOG: &str = "Sys::Syslog";

fn check_readable(path: &str) -> Result<(), String> {
    files::check_regular(std::path::Path::new(path))
}

/// A file to write needs a directory that exists, and must not itself be a
/// directory, a fifo or a socket.
fn check_file_to_write(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("must not be empty".to_owned());
    }
    let path = std::path::Path::new(path);
    files::check_writable_kind(path)?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(format!("{} is not a directory", dir.display())),
        Err(err) => Err(format!("directory {}: {}", dir.display(), io_reason(&err))),
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// What a [`Kind::Bytes`] value must be.
fn bytes_range(min: u64, max: u64) -> String {
    if min == 0 {
        format!(
            "must be 0 (no limit) or a size up to {}, e.g. 10M",
            shown_size(max)
        )
    } else {
        format!(
            "must be a size from {} to {}, e.g. 512M",
            shown_size(min),
            shown_size(max)
        )
    }
}

/// A size as the table and errors show it: in the largest unit (`K`, `M`,
/// `G`, `T`) that divides it, else in bytes.
pub fn shown_size(bytes: u64) -> String {
    for (shift, unit) in [(40, 'T'), (30, 'G'), (20, 'M'), (10, 'K')] {
        if bytes != 0 && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// Net::Server's booleans: `1`/`0` and the usual words.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "1" | "yes" | "on" | "true" => Some(true),
        "0" | "no" | "off" | "false" | "" => Some(false),
        _ => None,
    }
}

/// Parses a size in bytes with an optional `K`, `M`, `G` or `T` suffix
/// (powers of 1024, any case, an optional trailing `B` or `iB`).
pub fn size_bytes(text: &str) -> Option<u64> {
    let lower = text.trim().to_ascii_lowercase();
    let unitless = lower
        .strip_suffix("ib")
        .or_else(|| lower.strip_suffix('b'))
        .unwrap_or(&lower);
    let (digits, shift) = match unitless.chars().last()? {
        'k' => (&unitless[..unitless.len() - 1], 10),
        'm' => (&unitless[..unitless.len() - 1], 20),
        'g' => (&unitless[..unitless.len() - 1], 30),
        't' => (&unitless[..unitless.len() - 1], 40),
        _ => (unitless, 0),
    };
    digits.trim().parse::<u64>().ok()?.checked_mul(1 << shift)
}

/// `ADDR/LEN`, or one address (a /32 or /128). An IPv4-mapped IPv6
/// `PORT` (on 127.0.0.1: loopback unless said otherwise) or `ADDRESS:PORT`
/// (`0.0.0.0:9100`, `[::1]:9100`).
fn parse_address(text: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(port) = text.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    text.parse()
        .map_err(|_| "must be PORT or ADDRESS:PORT (9100, 0.0.0.0:9100, [::1]:9100)".to_owned())
}

/// network stays as written; matching handles mapped clients.
pub fn parse_cidr(text: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = text.parse::<ipnet::IpNet>() {
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| "not a valid CIDR network (e.g. 192.0.2.0/24 or 2001:db8::/32)".to_owned())
}

fn lookup_user(text: &str) -> Result<String, String> {
    let found = match text.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(uid.into()),
        Err(_) => nix::unistd::User::from_name(text),
    };
    match found {
        Ok(Some(user)) => Ok(user.name),
        _ => Err("no such user on this machine".to_owned()),
    }
}

fn lookup_group(text: &str) -> Result<String, String> {
    let found = match text.parse::<u32>() {
        Ok(gid) => nix::unistd::Group::from_gid(gid.into()),
        Err(_) => nix::unistd::Group::from_name(text),
    };
    match found {
        Ok(Some(group)) => Ok(group.name),
        _ => Err("no such group on this machine".to_owned()),
    }
}

/// The options as the Markdown table of `docs/configuration.md`.
pub fn markdown_table() -> String {
    let mut table = String::from(
        "| option | value | default | scope | in effect | meaning |\n| --- | --- | --- | --- | --- | --- |\n",
    );
    for spec in OPTIONS {
        let default = spec.default.map_or("—".to_owned(), |d| format!("`{d}`"));
        let status = match spec.status {
            Active => "yes",
            Planned => "not yet",
        };
        let repeat = if spec.repeat { " (repeatable)" } else { "" };
        let scope = match spec.scope {
            Scope::Server => "server",
            Scope::Service => "service",
        };
        table.push_str(&format!(
            "| `{}` | {} | {default} | {scope} | {status} | {}{repeat} |\n",
            spec.name,
            describe(spec.kind),
            spec.doc.replace('|', "\\|")
        ));
    }
    table
}

fn describe(kind: Kind) -> String {
    match kind {
        Int(min, i64::MAX) => format!("{min} or more"),
        Int(min, max) => format!("{min} to {max}"),
        Seconds => "seconds".to_owned(),
        Size => "size (K, M, G)".to_owned(),
        Bytes(0, max) => format!("0 or a size up to {}", shown_size(max)),
        Bytes(min, max) => format!("size, {} to {}", shown_size(min), shown_size(max)),
        Bool => "0 or 1".to_owned(),
        Text => "text".to_owned(),
        Choice(words) => words.join(", "),
        Regex => "regex".to_owned(),
        Cidr => "CIDR".to_owned(),
        Address => "PORT or ADDRESS:PORT".to_owned(),
        User => "user".to_owned(),
        Group => "group".to_owned(),
        Mode => "octal mode".to_owned(),
        Port => "port spec".to_owned(),
        KeyValue => "KEY=VALUE".to_owned(),
        ReadableFile => "file".to_owned(),
        FileToWrite => "path".to_owned(),
        Directory => "directory".to_owned(),
        LogTarget => "path or Sys::Syslog".to_owned(),
        DirGrant => "HOST[:GUEST][:ro\\|rw]".to_owned(),
        EnvGrant => "KEY[=VALUE]".to_owned(),
        Signals => "signal names".to_owned(),
        VerifyMode => "0, 1 or 3".to_owned(),
        TlsVersion => "TLSv1_2, TLSv1_3".to_owned(),
        CipherList => "suite names".to_owned(),
        Alpn => "protocol names".to_owned(),
        ServerName => "DNS name or *.name".to_owned(),
        AccessFormat => "Apache LogFormat".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docs_list_every_option_as_the_table_says() {
        let docs = include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../docs/configuration.md"
        ));
        let table = markdown_table();
        if std::env::var_os("WRITE_OPTIONS_TABLE").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/configuration.md");
            std::fs::write(path, with_table(docs, &table)).unwrap();
            return;
        }
        for line in table.lines() {
            assert!(
                docs.contains(line),
                "docs/configuration.md lacks (or has another version of):\n{line}\n\
                 regenerate with: WRITE_OPTIONS_TABLE=1 cargo test -p netserver-host \
                 docs_list_every_option"
            );
        }
    }

    /// `docs` with its options table (from its `| option |` header to the
    /// next blank line) replaced by `table`.
    fn with_table(docs: &str, table: &str) -> String {
        let start = docs.find("| option |").expect("the docs have a table");
        let end = docs[start..]
            .find("\n\n")
            .map_or(docs.len(), |at| start + at + 1);
        format!("{}{table}{}", &docs[..start], &docs[end..])
    }

    #[test]
    fn table_is_sorted_unique_and_defaults_are_valid() {
        for pair in OPTIONS.windows(2) {
            assert!(
                pair[0].name < pair[1].name,
                "{} then {}",
                pair[0].name,
                pair[1].name
            );
        }
        for spec in OPTIONS {
            if let Some(default) = spec.default {
                assert!(
                    parse(spec.kind, default).is_ok(),
                    "{}: {default}",
                    spec.name
                );
            }
        }
    }

    #[test]
    fn values_by_kind() {
        let cases: &[(Kind, &str, Result<Value, &str>)] = &[
            (Int(0, 4), "3", Ok(3.into())),
            (Int(0, 4), "5", Err("must be a whole number from 0 to 4")),
            (
                Int(1, i64::MAX),
                "0",
                Err("must be a whole number from 1 up"),
            ),
            (Seconds, "0.5", Ok(0.5.into())),
            (
                Seconds,
                "0",
                Err("must be a number of seconds above 0 (at most a year)"),
            ),
            (Size, "64M", Ok((64u64 << 20).into())),
            (Size, "1K", Err("must be a size from 64K to 4G, e.g. 64M")),
            (Bytes(0, 1 << 40), "0", Ok(0.into())),
            (Bytes(0, 1 << 40), "100", Ok(100.into())),
            (
                Bytes(0, 1 << 40),
                "2T",
                Err("must be 0 (no limit) or a size up to 1T, e.g. 10M"),
            ),
            (Bytes(64 << 10, 64 << 40), "8G", Ok((8u64 << 30).into())),
            (Bytes(64 << 10, 64 << 40), "1T", Ok((1u64 << 40).into())),
            (
                Bytes(64 << 10, 64 << 40),
                "1K",
                Err("must be a size from 64K to 64T, e.g. 512M"),
            ),
            (
                Bytes(1 << 20, 64 << 40),
                "lots",
                Err("must be a size from 1M to 64T, e.g. 512M"),
            ),
            (Bool, "yes", Ok(true.into())),
            (Bool, "OFF", Ok(false.into())),
            (
                Bool,
                "maybe",
                Err("must be 1 or 0 (yes/no, on/off, true/false)"),
            ),
            (Choice(SERVER_TYPES), "PreFork", Ok("prefork".into())),
            (
                Choice(SERVER_TYPES),
                "thread",
                Err("must be one of multiplex, single, inetd, fork, prefork-simple, prefork"),
            ),
            (Regex, r".+\.(net|com)", Ok(r".+\.(net|com)".into())),
            (Cidr, "192.0.2.0/24", Ok("192.0.2.0/24".into())),
            (Cidr, "::1", Ok("::1/128".into())),
            (
                Cidr,
                "192.0.2.0/33",
                Err("not a valid CIDR network (e.g. 192.0.2.0/24 or 2001:db8::/32)"),
            ),
            (User, "root", Ok("root".into())),
            (User, "0", Ok("root".into())),
            (
                User,
                "no-such-user-here",
                Err("no such user on this machine"),
            ),
            (Group, "root", Ok("root".into())),
            (
                Group,
                "no-such-group-here",
                Err("no such group on this machine"),
            ),
            (KeyValue, "a=b", Ok("a=b".into())),
            (KeyValue, "=b", Err("must be KEY=VALUE")),
            (ReadableFile, "/etc/passwd", Ok("/etc/passwd".into())),
            (
                ReadableFile,
                "/no/such/file",
                Err("no such file or directory"),
            ),
            (ReadableFile, "/etc", Err("is a directory")),
            (FileToWrite, "/tmp/x.pid", Ok("/tmp/x.pid".into())),
            (FileToWrite, "x.pid", Ok("x.pid".into())),
            (
                FileToWrite,
                "/no/such/dir/x.pid",
                Err("directory /no/such/dir: no such file or directory"),
            ),
            (
                FileToWrite,
                "/etc/passwd/x.pid",
                Err("/etc/passwd is not a directory"),
            ),
            (FileToWrite, "/tmp", Err("is a directory")),
            (Directory, "/tmp", Ok("/tmp".into())),
            (Directory, "/etc/passwd", Err("not a directory")),
            (Directory, "/no/such", Err("no such file or directory")),
            (DirGrant, "/tmp", Ok("/tmp:/tmp:ro".into())),
            (DirGrant, "/tmp:/data:rw", Ok("/tmp:/data:rw".into())),
            (DirGrant, "/tmp:rw", Ok("/tmp:/tmp:rw".into())),
            (DirGrant, "/tmp:/data", Ok("/tmp:/data:ro".into())),
            (
                DirGrant,
                "/etc/passwd",
                Err("/etc/passwd is not a directory"),
            ),
            (
                DirGrant,
                "/no/such",
                Err("/no/such: no such file or directory"),
            ),
            (DirGrant, "/a:/b:/c", Err("must be HOST[:GUEST][:ro|rw]")),
            (DirGrant, ":/b", Err("must be HOST[:GUEST][:ro|rw]")),
            (EnvGrant, "LANG=C", Ok("LANG=C".into())),
            (EnvGrant, "EMPTY=", Ok("EMPTY=".into())),
            (EnvGrant, "=x", Err("must be KEY=VALUE or KEY")),
            (
                EnvGrant,
                "NETSERVER_SURELY_UNSET_VAR",
                Err("the host has no such environment variable (use KEY=VALUE)"),
            ),
            (LogTarget, "sys::syslog", Ok("Sys::Syslog".into())),
            (LogTarget, "/tmp/ns.log", Ok("/tmp/ns.log".into())),
            (
                LogTarget,
                "/no/such/dir/ns.log",
                Err("directory /no/such/dir: no such file or directory"),
            ),
        ];
        for (kind, text, want) in cases {
            let got = parse(*kind, text).map(|typed| typed.to_json());
            assert_eq!(got, want.clone().map_err(str::to_owned), "{kind:?} {text}");
        }
        assert!(
            parse(Regex, "a(")
                .unwrap_err()
                .starts_with("not a valid regex")
        );
    }

    #[test]
    fn sizes() {
        let cases: &[(&str, Option<u64>)] = &[
            ("65536", Some(65536)),
            ("64K", Some(64 << 10)),
            ("64m", Some(64 << 20)),
            ("1G", Some(1 << 30)),
            ("1GiB", Some(1 << 30)),
            ("2T", Some(2 << 40)),
            ("2mb", Some(2 << 20)),
            ("", None),
            ("M", None),
            ("-1M", None),
            ("1.5M", None),
            ("99999999999999999999G", None),
        ];
        for &(text, want) in cases {
            assert_eq!(size_bytes(text), want, "{text}");
        }
        let shown = [
            (0, "0"),
            (100, "100"),
            (64 << 10, "64K"),
            (1536 << 10, "1536K"),
            (3 << 30, "3G"),
            (64 << 40, "64T"),
        ];
        for (bytes, want) in shown {
            assert_eq!(shown_size(bytes), want, "{bytes}");
        }
    }

    #[test]
    fn suggestions() {
        let cases = [
            ("prot", Some("proto")),
            ("prt", Some("port")),
            ("log_levle", Some("log_level")),
            ("zzz", None),
        ];
        for (name, want) in cases {
            assert_eq!(closest(name), want, "{name}");
        }
    }
}
