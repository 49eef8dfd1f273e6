//! `--check` and option errors: validated before anything is bound.

use std::net::TcpListener;

use serde_json::Value;

use crate::util::run;

fn check(args: &[&str]) -> Value {
    let mut all = vec!["--check"];
    all.extend_from_slice(args);
    let out = run(&all);
    assert!(
        out.status.success(),
        "--check failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("--check prints JSON")
}

#[test]
fn check_prints_listeners() {
    let cases: &[(&[&str], Value)] = &[
        (
            &[],
            serde_json::json!([{"host": "*", "port": 20203, "proto": "tcp", "ipv": "*"}]),
        ),
        (
            &[
                "--port",
                "127.0.0.1:0",
                "--port",
                "[::1]:8080/IPv6",
                "--port",
                "*:7/tcp",
            ],
            serde_json::json!([
                {"host": "127.0.0.1", "port": 0, "proto": "tcp", "ipv": "*"},
                {"host": "::1", "port": 8080, "proto": "tcp", "ipv": "6"},
                {"host": "*", "port": 7, "proto": "tcp", "ipv": "*"},
            ]),
        ),
        (
            &[
                "--host",
                "localhost",
                "--ipv",
                "4",
                "--port",
                "9000",
                "--port",
                "9000",
            ],
            serde_json::json!([{"host": "localhost", "port": 9000, "proto": "tcp", "ipv": "4"}]),
        ),
    ];
    for (args, want) in cases {
        assert_eq!(check(args)["listeners"], *want, "{args:?}");
    }
}

#[test]
fn check_reports_module_and_options() {
    let got = check(&["--property", "a=b", "--log-level", "3"]);
    assert_eq!(got["module"]["source"], "built-in echo");
    assert_eq!(got["module"]["kind"], "handler");
    let option = |key: &str| {
        (
            got["options"][key]["value"].clone(),
            got["options"][key]["source"].clone(),
        )
    };
    assert_eq!(option("log_level"), (3.into(), "command line".into()));
    assert_eq!(option("idle_timeout"), (30.0.into(), "default".into()));
    assert_eq!(option("property").0, serde_json::json!(["a=b"]));
    assert_eq!(option("service"), ("echo".into(), "default".into()));
}

#[test]
fn check_binds_nothing() {
    // The port is taken: --check still succeeds because it never binds.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let spec = taken.local_addr().unwrap().to_string();
    check(&["--port", &spec]);
    // Serving on it fails, naming the address.
    let out = run(&["--port", &spec]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot bind to TCP port {}",
            taken.local_addr().unwrap().port()
        )),
        "{err}"
    );
}

#[test]
fn bad_options_exit_2_with_one_line() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--log-levle", "3"],
            "unexpected argument '--log-levle' found; a similar argument exists: '--log-level'",
        ),
        (
            &["--log-level", "9"],
            "--log-level: invalid value '9': must be a whole number from 0 to 4",
        ),
        (
            &["--port", "70000"],
            "--port: invalid value '70000': port 70000 is out of range (0-65535)",
        ),
        (
            &["--port", "80/bogus"],
            "--port: invalid value '80/bogus': unknown protocol or IP version 'bogus'",
        ),
        (
            &["--port", "127.0.0.1:80/IPv6"],
            "--port: invalid value '127.0.0.1:80/IPv6': host 127.0.0.1 is not an IPv6 address",
        ),
        (
            &["--ipv", "5"],
            "--ipv: invalid value '5': must be 4, 6 or *",
        ),
        (
            &["--idle-timeout", "-1"],
            "--idle-timeout: invalid value '-1': must be a number of seconds above 0 (at most a year)",
        ),
        (
            &["--max-memory", "lots"],
            "--max-memory: invalid value 'lots': must be a size from 64K to 4G, e.g. 64M",
        ),
        (
            &["--property", "x"],
            "--property: invalid value 'x': must be KEY=VALUE",
        ),
    ];
    for (args, message) in cases {
        let mut all = vec!["--check"];
        all.extend_from_slice(args);
        let out = run(&all);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stderr),
            format!("netserver-host: {message}\n"),
            "{args:?}"
        );
    }
}

#[test]
fn other_protocols_pass_check_and_ssl_needs_a_certificate() {
    let got = check(&[
        "--port",
        "80/udp",
        "--port",
        "/tmp/ns.sock|sock_dgram|unix",
        "--port",
        "127.0.0.1:http/IPv4",
        "--port",
        "*:20203/IPv4/IPv6",
    ]);
    assert_eq!(
        got["listeners"],
        serde_json::json!([
            {"host": "*", "port": 80, "proto": "udp", "ipv": "*"},
            {"host": "*", "port": "/tmp/ns.sock", "proto": "unixdgram", "ipv": "*"},
            {"host": "127.0.0.1", "port": "http", "proto": "tcp", "ipv": "4"},
            {"host": "*", "port": 20203, "proto": "tcp", "ipv": "4"},
            {"host": "*", "port": 20203, "proto": "tcp", "ipv": "6"},
        ])
    );
    let out = run(&["--port", "127.0.0.1:0/ssl"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "netserver-host: --port 127.0.0.1:0/ssl: needs --SSL_cert_file and --SSL_key_file\n"
    );
    let out = run(&["--port", "127.0.0.1:no-such-service"]);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "netserver-host: --port: invalid value '127.0.0.1:no-such-service': \
         unknown service 'no-such-service' (not in /etc/services)\n"
    );
}

/// Every port string of the reference's `port`, `host` and `ipv` sections,
/// with the options it is shown with, and the listeners `--check` reports.
/// Where the machine cannot bind what a string asks for (here `localhost`
/// may have no IPv6 address), `--check` still prints the parse and exits 2
/// naming the address family that is missing.
#[test]
fn every_reference_port_string_parses_as_documented() {
    use serde_json::json;
    let l = |host: &str, port: Value, proto: &str, ipv: &str| json!({"host": host, "port": port, "proto": proto, "ipv": ipv});
    let cases: Vec<(Vec<&str>, Vec<Value>)> = vec![
        // The `port` section.
        (
            vec!["--port", "20203"],
            vec![l("*", json!(20203), "tcp", "*")],
        ),
        (
            vec!["--port", "localhost:20203"],
            vec![l("localhost", json!(20203), "tcp", "*")],
        ),
        (
            vec!["--port", "localhost:http"],
            vec![l("localhost", json!("http"), "tcp", "*")],
        ),
        (
            vec!["--port", "localhost:20203/tcp"],
            vec![l("localhost", json!(20203), "tcp", "*")],
        ),
        (
            vec!["--port", "localhost:20203/tcp/IPv*"],
            vec![l("localhost", json!(20203), "tcp", "*")],
        ),
        (
            vec!["--port", "localhost, 20203, tcp, IPv*"],
            vec![l("localhost", json!(20203), "tcp", "*")],
        ),
        (
            vec!["--port", "localhost | 20203 | tcp | IPv*"],
            vec![l("localhost", json!(20203), "tcp", "*")],
        ),
        (
            vec!["--port", "localhost:20203/IPv*"],
            vec![l("localhost", json!(20203), "tcp", "*")],
        ),
        (
            vec!["--port", "localhost:20203/IPv4/IPv6"],
            vec![
                l("localhost", json!(20203), "tcp", "4"),
                l("localhost", json!(20203), "tcp", "6"),
            ],
        ),
        (
            vec!["--port", "*:20203"],
            vec![l("*", json!(20203), "tcp", "*")],
        ),
        (
            vec!["--port", "[::1]:80"],
            vec![l("::1", json!(80), "tcp", "*")],
        ),
        (
            vec!["--port", "/tmp/ns.sock|unix"],
            vec![l("*", json!("/tmp/ns.sock"), "unix", "*")],
        ),
        (
            vec!["--port", "/tmp/ns.sock|SOCK_DGRAM|unix"],
            vec![l("*", json!("/tmp/ns.sock"), "unixdgram", "*")],
        ),
        (
            vec!["--port", "/tmp/ns.sock|SOCK_STREAM|unix"],
            vec![l("*", json!("/tmp/ns.sock"), "unix", "*")],
        ),
        (vec!["--port", "0"], vec![l("*", json!(0), "tcp", "*")]),
        // The `host` section.
        (
            vec!["--host", "127.0.0.1", "--port", "1"],
            vec![l("127.0.0.1", json!(1), "tcp", "*")],
        ),
        (
            vec!["--host", "::1", "--port", "1"],
            vec![l("::1", json!(1), "tcp", "*")],
        ),
        (
            vec!["--host", "localhost", "--port", "1"],
            vec![l("localhost", json!(1), "tcp", "*")],
        ),
        (
            vec!["--host", "localhost/IPv*", "--port", "1"],
            vec![l("localhost", json!(1), "tcp", "*")],
        ),
        (
            vec!["--ipv", "6", "--host", "localhost", "--port", "1"],
            vec![l("localhost", json!(1), "tcp", "6")],
        ),
        (
            vec!["--ipv", "4", "--host", "localhost", "--port", "1"],
            vec![l("localhost", json!(1), "tcp", "4")],
        ),
        (
            vec!["--ipv", "IPv4 IPv6", "--host", "localhost", "--port", "1"],
            vec![
                l("localhost", json!(1), "tcp", "4"),
                l("localhost", json!(1), "tcp", "6"),
            ],
        ),
        (
            vec!["--host", "*", "--port", "1"],
            vec![l("*", json!(1), "tcp", "*")],
        ),
        (
            vec!["--host", "*/IPv*", "--port", "1"],
            vec![l("*", json!(1), "tcp", "*")],
        ),
        (
            vec!["--ipv", "4", "--host", "*", "--port", "1"],
            vec![l("*", json!(1), "tcp", "4")],
        ),
        // The `proto` section: the proto option may carry the ipv.
        (
            vec!["--proto", "udp", "--port", "1"],
            vec![l("*", json!(1), "udp", "*")],
        ),
        (
            vec!["--proto", "tcp/IPv6", "--port", "1"],
            vec![l("*", json!(1), "tcp", "6")],
        ),
        // The `ipv` section.
        (
            vec!["--port", "localhost:20203"],
            vec![l("localhost", json!(20203), "tcp", "*")],
        ),
        (
            vec!["--port", "localhost:20203:IPv*"],
            vec![l("localhost", json!(20203), "tcp", "*")],
        ),
        (
            vec!["--port", "localhost:20203:IPv6"],
            vec![l("localhost", json!(20203), "tcp", "6")],
        ),
        (
            vec!["--port", "[::1]:20203"],
            vec![l("::1", json!(20203), "tcp", "*")],
        ),
        (
            vec!["--port", "localhost:20203:IPv4"],
            vec![l("localhost", json!(20203), "tcp", "4")],
        ),
        (
            vec!["--port", "127.0.0.1:20203"],
            vec![l("127.0.0.1", json!(20203), "tcp", "*")],
        ),
        (
            vec!["--port", "localhost:20203:IPv4:IPv6"],
            vec![
                l("localhost", json!(20203), "tcp", "4"),
                l("localhost", json!(20203), "tcp", "6"),
            ],
        ),
    ];
    let localhost_has_ipv6 = std::net::ToSocketAddrs::to_socket_addrs(&("localhost", 1))
        .unwrap()
        .any(|a| a.is_ipv6());
    for (args, want) in cases {
        let mut all = vec!["--check"];
        all.extend(&args);
        let out = run(&all);
        let got: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "{args:?}: no JSON; {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        assert_eq!(got["listeners"], Value::Array(want.clone()), "{args:?}");
        let needs_v6 = want
            .iter()
            .any(|w| w["host"] == "localhost" && w["ipv"] == "6");
        if needs_v6 && !localhost_has_ipv6 {
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.ends_with("host 'localhost' has no IPv6 address\n"),
                "{args:?}: {err}"
            );
        } else {
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}
