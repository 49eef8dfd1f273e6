//! Conf files: Net::Server's `key value` format and TOML, and how they
//! combine with the command line.

use serde_json::{Value, json};

use crate::util::{Server, conf, guests, run};

fn check(args: &[&str]) -> Value {
    let out = run(&[&["--check"], args].concat());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

const NET_SERVER_CONF: &str = "\
# a Net::Server conf file, CRLF line ends and all\r
\r
log_level   3          # trailing comment\r
port        127.0.0.1:20204/IPv4\r
port        20205\r
host        127.0.0.1   \r
property    greeting=hello # from the file\r
";

const TOML_CONF: &str = r#"
# the same settings in TOML
log_level = 3
port = ["127.0.0.1:20204/IPv4", 20205]
host = "127.0.0.1"
property = "greeting=hello"
"#;

#[test]
fn net_server_and_toml_files_give_the_same_configuration() {
    let plain = conf("same.conf", NET_SERVER_CONF);
    let toml = conf("same.toml", TOML_CONF);
    let from_plain = check(&["--conf-file", &plain]);
    let from_toml = check(&["--conf_file", &toml]);
    let want = json!([
        {"host": "127.0.0.1", "port": 20204, "proto": "tcp", "ipv": "4"},
        {"host": "127.0.0.1", "port": 20205, "proto": "tcp", "ipv": "*"},
    ]);
    for got in [&from_plain, &from_toml] {
        assert_eq!(got["listeners"], want);
        assert_eq!(got["options"]["log_level"]["value"], 3);
        assert_eq!(
            got["options"]["property"]["value"],
            json!(["greeting=hello"])
        );
    }
    assert_eq!(
        from_plain["options"]["log_level"]["source"],
        format!("{plain}:3")
    );
    assert_eq!(
        from_toml["options"]["log_level"]["source"],
        format!("{toml}:3")
    );
    assert_eq!(
        from_plain["options"]["port"]["source"],
        format!("{plain}:5")
    );
}

#[test]
fn command_line_wins_over_the_file() {
    let path = conf(
        "override.conf",
        "port 127.0.0.1:1\nport 127.0.0.1:2\nlog_level 4\n",
    );
    let got = check(&[
        "--conf-file",
        &path,
        "--port",
        "127.0.0.1:3",
        "--log_level",
        "1",
    ]);
    assert_eq!(
        got["listeners"],
        json!([{"host": "127.0.0.1", "port": 3, "proto": "tcp", "ipv": "*"}])
    );
    assert_eq!(got["options"]["log_level"]["value"], 1);
    assert_eq!(got["options"]["log_level"]["source"], "command line");
}

#[test]
fn a_conf_file_configures_a_running_server() {
    let text = format!(
        "module {}\nproperty greeting=from the file\n",
        guests::HOOK_TRACE
    );
    let path = conf("serve.conf", &text);
    let server = Server::start(&["--conf-file", &path]);
    let mut client = server.connect();
    client.send(b"quit\n");
    let reply = client.read_all();
    assert!(
        reply.contains("prop greeting=from the file\r\n"),
        "{reply:?}"
    );
}

#[test]
fn bad_files_exit_2_naming_file_line_and_key() {
    let cases = [
        (
            "unknown.conf",
            "log_level 2\nlog_levle 80\n",
            "{}:2: unknown option 'log_levle' (did you mean 'log_level'?)",
        ),
        (
            "badvalue.conf",
            "\n\nlog_level 9\n",
            "{}:3: log_level: invalid value '9': must be a whole number from 0 to 4",
        ),
        (
            "noval.conf",
            "background\n",
            "{}:1: background: no value given (expected `background VALUE`)",
        ),
        (
            "badport.toml",
            "log_level = 1\nport = [\"80/bogus\"]\n",
            "{}:2: port: invalid value '80/bogus': unknown protocol or IP version 'bogus'",
        ),
        ("broken.toml", "log_level = \n", "{}:1: invalid TOML"),
    ];
    for (name, text, want) in cases {
        let path = conf(name, text);
        let out = run(&["--check", "--conf-file", &path]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {err}");
        assert_eq!(err.lines().count(), 1, "{name}: {err}");
        let want = format!("netserver-host: {}", want.replace("{}", &path));
        assert!(err.starts_with(&want), "{name}:\n got {err}\nwant {want}");
    }
    let out = run(&["--check", "--conf-file", "/nonexistent/x.conf"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .starts_with("netserver-host: --conf-file /nonexistent/x.conf: cannot read")
    );
}

#[test]
fn two_services_each_serve_their_own_handler_on_their_own_ports() {
    let toml = conf(
        "two-services.toml",
        &format!(
            r#"
property = {{ greeting = "from the top" }}
host = "127.0.0.1"

[[service]]
name = "plain"
module = "{echo}"
port = 0

[[service]]
name = "traced"
module = "{trace}"
port = 0
property = {{ greeting = "own" }}
max_instances = 2
"#,
            echo = guests::ECHO,
            trace = guests::HOOK_TRACE
        ),
    );
    let mut server = Server::start_args(&["--conf-file", &toml]);
    let plain = server.service_addr("plain");
    let traced = server.service_addr("traced");
    assert_ne!(plain, traced);

    let mut client = crate::util::Client::connect(plain);
    client.send(b"hi\r\nquit\r\n");
    assert_eq!(client.read_all(), "You said 'hi'\r\nYou said 'quit'\r\n");

    let mut client = crate::util::Client::connect(traced);
    client.send(b"hi\nquit\n");
    let reply = client.read_all();
    assert!(reply.contains(" service=traced "), "{reply}");
    assert!(reply.contains("prop greeting=own\r\n"), "{reply}");
    assert!(
        reply.ends_with("You said 'hi'\r\nYou said 'quit'\r\nbye\r\n"),
        "{reply}"
    );
}

#[test]
fn a_hook_hint_binds_only_the_service_that_gave_it() {
    // One module, two services: the liar says its refusing allow-deny-hook
    // does nothing, the other refuses honestly.
    let toml = conf(
        "hook-hints.toml",
        &format!(
            r#"
host = "127.0.0.1"

[[service]]
name = "liar"
module = "{misbehave}"
port = 0
property = {{ allow_deny = "lie" }}

[[service]]
name = "refuser"
module = "{misbehave}"
port = 0
property = {{ allow_deny = "refuse" }}
"#,
            misbehave = guests::MISBEHAVE
        ),
    );
    let mut server = Server::start_args(&["--conf-file", &toml]);
    let liar = server.service_addr("liar");
    let refuser = server.service_addr("refuser");
    // A refused client sends nothing (unread bytes would make the close a
    // reset); a served one gets its line back.
    let session = |addr, line: &str| {
        let mut client = crate::util::Client::connect(addr);
        client.send(line.as_bytes());
        client.shutdown_write();
        client.read_all()
    };
    // The liar's first client is refused by the hook itself; from then on
    // the host skips the hook and serves.
    assert_eq!(session(liar, ""), "");
    assert_eq!(session(liar, "hi\n"), "ok hi\r\n");
    assert_eq!(session(liar, "again\n"), "ok again\r\n");
    // The same module as another service: its hook still runs every time.
    assert_eq!(session(refuser, ""), "");
    assert_eq!(session(refuser, ""), "");
    server.wait_for_log_lines("denied by allow-deny-hook", 3);
    server.wait_for_log("service liar: allow-deny-hook does nothing");
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.contains("service refuser: allow-deny")),
        "{:#?}",
        server.log()
    );
}

/// Runs `--check ARGS`, expecting exit 2 and one line; returns the line
/// without the program name.
fn refused(args: &[&str]) -> String {
    let out = run(&[&["--check"], args].concat());
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
    err.trim_end()
        .strip_prefix("netserver-host: ")
        .unwrap_or_else(|| panic!("{args:?}: {err}"))
        .to_owned()
}

/// Net::Server's `_read_conf` also reads `key=value`, `key: value`,
/// `key = value` and `--key value`; values keep their own `=` and `:`.
#[test]
fn net_server_conf_line_forms() {
    let path = conf(
        "line-forms.conf",
        "\
log_level=3
max_servers: 7
idle_timeout = 12
--max_requests 99
--cpu-limit=5 # a comment
property = greeting=hello
property: KEY=VALUE
port=127.0.0.1:20801
port: [::1]:20802
host = 127.0.0.1
port 20803
",
    );
    let got = check(&["--conf-file", &path]);
    let option = |key: &str| {
        let option = &got["options"][key];
        (option["value"].clone(), option["source"].clone())
    };
    let at = |line: usize| Value::from(format!("{path}:{line}"));
    assert_eq!(option("log_level"), (json!(3), at(1)));
    assert_eq!(option("max_servers"), (json!(7), at(2)));
    assert_eq!(option("idle_timeout"), (json!(12.0), at(3)));
    assert_eq!(option("max_requests"), (json!(99), at(4)));
    assert_eq!(option("cpu_limit"), (json!(5.0), at(5)));
    assert_eq!(option("property").0, json!(["greeting=hello", "KEY=VALUE"]));
    assert_eq!(
        got["listeners"],
        json!([
            {"host": "127.0.0.1", "port": 20801, "proto": "tcp", "ipv": "*"},
            {"host": "::1", "port": 20802, "proto": "tcp", "ipv": "*"},
            {"host": "127.0.0.1", "port": 20803, "proto": "tcp", "ipv": "*"},
        ])
    );
    // A key with `=` and nothing after it, or a `::` glued to the key,
    // stays an error naming the file, the line and the key.
    for (name, text, want) in [
        (
            "equals-nothing.conf",
            "log_level 3\nbackground =\n",
            "{}:2: background: no value given (expected `background VALUE`)",
        ),
        (
            "dashes-nothing.conf",
            "--background\n",
            "{}:1: background: no value given (expected `background VALUE`)",
        ),
        (
            "glued-colons.conf",
            "host::1\n",
            "{}:1: host::1: no value given (expected `host::1 VALUE`)",
        ),
        (
            "not-a-key.conf",
            "log.level=3 x\n",
            "{}:1: unknown option 'log.level=3'",
        ),
    ] {
        let path = conf(name, text);
        let line = refused(&["--conf-file", &path]);
        let want = want.replace("{}", &path);
        assert!(line.starts_with(&want), "{name}:\n got {line}\nwant {want}");
    }
}

/// Port specs, `proto` and `ipv` values Net::Server's parse_info reads:
/// protocol class names, IP versions between host and port, several
/// versions in one word.
#[test]
fn net_server_port_forms() {
    let cases: &[(&[&str], Value)] = &[
        (
            &["--port", "[127.0.0.1]:IPv4:20811"],
            json!([{"host": "127.0.0.1", "port": 20811, "proto": "tcp", "ipv": "4"}]),
        ),
        (
            &[
                "--port",
                "[::1]:IPv6:20812",
                "--port",
                "localhost/IPv4:20813",
            ],
            json!([
                {"host": "::1", "port": 20812, "proto": "tcp", "ipv": "6"},
                {"host": "localhost", "port": 20813, "proto": "tcp", "ipv": "4"},
            ]),
        ),
        (
            &["--port", "127.0.0.1:20814/Net::Server::Proto::TCP"],
            json!([{"host": "127.0.0.1", "port": 20814, "proto": "tcp", "ipv": "*"}]),
        ),
        (
            &["--port", "127.0.0.1:IPv4:20815:Net::Server::Proto::UDP"],
            json!([{"host": "127.0.0.1", "port": 20815, "proto": "udp", "ipv": "4"}]),
        ),
        (
            &[
                "--port",
                "20816|Net::Server::Proto::SSL",
                "--host",
                "127.0.0.1",
            ],
            json!([{"host": "127.0.0.1", "port": 20816, "proto": "ssl", "ipv": "*"}]),
        ),
        (
            &[
                "--port",
                "/tmp/netserver-e2e.sock|Net::Server::Proto::UNIXDGRAM",
            ],
            json!([{"host": "*", "port": "/tmp/netserver-e2e.sock", "proto": "unixdgram", "ipv": "*"}]),
        ),
        (
            &[
                "--proto",
                "Net::Server::Proto::UDP",
                "--port",
                "127.0.0.1:20817",
            ],
            json!([{"host": "127.0.0.1", "port": 20817, "proto": "udp", "ipv": "*"}]),
        ),
        (
            &["--proto", "Net::Server::Proto::TCP/IPv6", "--port", "20818"],
            json!([{"host": "*", "port": 20818, "proto": "tcp", "ipv": "6"}]),
        ),
        (
            &["--port", "*:20819/IPv46"],
            json!([
                {"host": "*", "port": 20819, "proto": "tcp", "ipv": "4"},
                {"host": "*", "port": 20819, "proto": "tcp", "ipv": "6"},
            ]),
        ),
    ];
    // An ssl port needs a certificate and its key.
    let pki = crate::pki::Pki::new("conf-port-forms");
    let tls = pki.server_args();
    for (args, want) in cases {
        let mut all = args.to_vec();
        if args.iter().any(|a| a.contains("SSL")) {
            all.extend(tls.iter().map(String::as_str));
        }
        assert_eq!(check(&all)["listeners"], *want, "{args:?}");
    }
    // `ipv IPv4v6`, `v4v6`: both families, on the command line and in a file.
    let both = json!([
        {"host": "*", "port": 20820, "proto": "tcp", "ipv": "4"},
        {"host": "*", "port": 20820, "proto": "tcp", "ipv": "6"},
    ]);
    for ipv in ["IPv4v6", "v4v6", "46", "IPv4IPv6"] {
        let got = check(&["--ipv", ipv, "--port", "20820"]);
        assert_eq!(got["listeners"], both, "--ipv {ipv}");
    }
    let path = conf("ipv-v4v6.conf", "ipv IPv4v6\nport 20820\n");
    assert_eq!(check(&["--conf-file", &path])["listeners"], both);
}

/// What Net::Server cannot use either stays an error of one line.
#[test]
fn near_port_forms_stay_refused() {
    let class = |name: &str| {
        format!(
            "unknown protocol class '{name}' (known: Net::Server::Proto::TCP, UDP, SSL, SSLEAY, UNIX, UNIXDGRAM)"
        )
    };
    let cases: &[(&[&str], String)] = &[
        (
            &["--port", "20203/Net::Server::Proto::Tcp"],
            format!(
                "--port: invalid value '20203/Net::Server::Proto::Tcp': {}",
                class("Net::Server::Proto::Tcp")
            ),
        ),
        (
            &["--proto", "net::server::proto::udp"],
            format!(
                "--proto: invalid value 'net::server::proto::udp': {}",
                class("net::server::proto::udp")
            ),
        ),
        (
            &["--port", "20203/IPv4v6"],
            "--port: invalid value '20203/IPv4v6': unknown protocol or IP version 'IPv4v6'"
                .to_owned(),
        ),
        (
            &["--port", "127.0.0.1:IPv6:20203"],
            "--port: invalid value '127.0.0.1:IPv6:20203': host 127.0.0.1 is not an IPv6 address"
                .to_owned(),
        ),
        (
            &["--ipv", "IPv5"],
            "--ipv: invalid value 'IPv5': must be 4, 6 or *".to_owned(),
        ),
        (
            &["--ipv", "foo4"],
            "--ipv: invalid value 'foo4': must be 4, 6 or *".to_owned(),
        ),
    ];
    for (args, want) in cases {
        assert_eq!(refused(args), *want, "{args:?}");
    }
}

/// A single-valued option given twice on the command line: the last one
/// wins, as in Net::Server (clap refused it); repeatable ones collect.
#[test]
fn repeated_single_valued_options_last_one_wins() {
    let got = check(&[
        "--log-level",
        "1",
        "--log_level=3",
        "--max-servers",
        "9",
        "--max-servers",
        "4",
        "--background",
        "--background",
        "0",
        "--port",
        "127.0.0.1:20831",
        "--port",
        "127.0.0.1:20832",
    ]);
    assert_eq!(got["options"]["log_level"]["value"], 3);
    assert_eq!(got["options"]["max_servers"]["value"], 4);
    assert_eq!(got["options"]["background"]["value"], false);
    assert_eq!(
        got["listeners"],
        json!([
            {"host": "127.0.0.1", "port": 20831, "proto": "tcp", "ipv": "*"},
            {"host": "127.0.0.1", "port": 20832, "proto": "tcp", "ipv": "*"},
        ])
    );
    // A flag followed by another option is 1, as Net::Server's `--setsid`.
    let got = check(&["--background", "--log-level", "4"]);
    assert_eq!(got["options"]["background"]["value"], true);
    assert_eq!(got["options"]["log_level"]["value"], 4);
    // The last value is the one checked.
    assert_eq!(
        refused(&["--log-level", "3", "--log-level", "9"]),
        "--log-level: invalid value '9': must be a whole number from 0 to 4"
    );
    // And the command line's last value beats the file's.
    let path = conf("repeat.conf", "log_level 1\nlog_level 2\n");
    let got = check(&["--conf-file", &path, "--log-level", "0", "--log-level", "4"]);
    assert_eq!(got["options"]["log_level"]["value"], 4);
    assert_eq!(got["options"]["log_level"]["source"], "command line");
}

/// A server configured in these forms serves: a conf file of `key=value`
/// lines, a class-name protocol, an IP version before the port, and
/// `--log-level` given twice (the helper gives it first).
#[test]
fn a_server_configured_in_net_server_forms_serves() {
    let path = conf(
        "forms-serve.conf",
        "port=127.0.0.1:IPv4:0\nproto: Net::Server::Proto::TCP\n--idle_timeout 5\n",
    );
    let server = Server::start_args(&["--conf-file", &path, "--log-level", "3"]);
    let log = server.log();
    assert!(
        log.iter()
            .any(|l| l.contains("Binding to TCP port") && l.contains("on host 127.0.0.1 with IPv4")),
        "{log:#?}"
    );
    server.assert_echoes("hi", "forms-serve.conf");
}

#[test]
fn a_mux_service_and_a_hooks_service_side_by_side() {
    let toml = conf(
        "mux-beside-hooks.toml",
        &format!(
            r#"
host = "127.0.0.1"
idle_timeout = 600

[[service]]
name = "room"
module = "{chat}"
port = 0

[[service]]
name = "plain"
module = "{echo}"
port = 0
"#,
            chat = guests::CHAT,
            echo = guests::ECHO
        ),
    );
    let mut server = Server::start_args(&["--conf-file", &toml]);
    let room = server.service_addr("room");
    let plain = server.service_addr("plain");
    server.wait_for_log("a netserver mux handler) as service room");
    let mut a = crate::util::Client::connect(room);
    assert!(a.read_line().starts_with("Welcome, you are number 1"));
    let mut b = crate::util::Client::connect(room);
    assert!(b.read_line().starts_with("Welcome, you are number 2"));
    b.send(b"hi\n");
    assert_eq!(a.read_line(), "JOIN: guest2 from 127.0.0.1\r\n");
    assert_eq!(a.read_line(), "[guest2] hi\r\n");
    let mut echo = crate::util::Client::connect(plain);
    echo.send(b"hello\nquit\n");
    assert_eq!(echo.read_all(), "You said 'hello'\r\nYou said 'quit'\r\n");
}
