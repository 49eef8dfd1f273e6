//! Conf files: Net::Server's `key value` format and TOML, and how they
//! combine with the command line.

use std::path::PathBuf;

use serde_json::{Value, json};

use crate::util::{Server, guests, run};

/// Writes a conf file named `name` and returns its path.
fn conf(name: &str, text: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("conf");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_owned()
}

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

/// The port a service is served on, from its `Serving … as service NAME on
/// ADDR` line.
fn service_addr(server: &mut Server, name: &str) -> std::net::SocketAddr {
    let line = server.wait_for_log(&format!("as service {name} on "));
    let addr = line.rsplit(" on ").next().unwrap();
    addr.split(", ").next().unwrap().parse().unwrap()
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
    let plain = service_addr(&mut server, "plain");
    let traced = service_addr(&mut server, "traced");
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
    let liar = service_addr(&mut server, "liar");
    let refuser = service_addr(&mut server, "refuser");
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
