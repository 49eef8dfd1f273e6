//! HTTP services (issue 27): the wasi:http component `http-hello` served
//! to curl over HTTP and HTTPS (HTTP/1.1 and HTTP/2 by ALPN), kept-alive
//! connections, the access log, the size limits, a trapping guest,
//! outgoing requests only where granted, and `instance per-worker`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output};

use crate::pki::Pki;
use crate::util::{
    BIN, PATIENCE, Server, SteadyLoad, fresh_dir, guests, per_personality, require_command,
};

/// Serves `http-hello` over plain HTTP with `args`.
fn http_server(args: &[&str]) -> Server {
    let mut all = vec!["--module", guests::HTTP_HELLO];
    all.extend_from_slice(args);
    Server::start(&all)
}

/// Runs curl with `args`; its output.
fn curl(args: &[&str]) -> Output {
    let curl = require_command("curl").expect("curl");
    Command::new(curl)
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .output()
        .unwrap()
}

/// curl's stdout for `args`, which must succeed.
fn curl_ok(args: &[&str]) -> String {
    let out = curl(args);
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// `http://ADDR/PATH` of `server`.
fn url(server: &Server, path: &str) -> String {
    format!("http://{}{path}", server.addr)
}

#[test]
fn curl_gets_http_hello_over_http() {
    if require_command("curl").is_none() {
        return;
    }
    let mut server = http_server(&[]);
    let out = curl_ok(&["-i", &url(&server, "/")]);
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(
        out.ends_with("\r\n\r\nHello from a wasi:http component!\n"),
        "{out}"
    );
    // Apache's combined format, in the main log.
    server.wait_for_log(r#"- - ["#);
    server.wait_for_log(r#""GET / HTTP/1.1" 200 34 "-" "curl/"#);
    server.wait_for_log_all(&["connection ended", "served"]);
    // Methods, headers and bodies reach the guest and come back.
    let echoed = curl_ok(&[
        "-i",
        "-X",
        "PUT",
        "-H",
        "content-type: text/x-test",
        "--data-binary",
        "a body",
        &url(&server, "/echo"),
    ]);
    assert!(echoed.contains("x-method: PUT\r\n"), "{echoed}");
    assert!(echoed.contains("content-type: text/x-test\r\n"), "{echoed}");
    assert!(echoed.ends_with("\r\n\r\na body"), "{echoed}");
    let streamed = curl_ok(&["-i", &url(&server, "/stream?n=3")]);
    assert!(
        streamed.contains("transfer-encoding: chunked\r\n"),
        "{streamed}"
    );
    assert!(streamed.ends_with("line 0\nline 1\nline 2\n"), "{streamed}");
}

#[test]
fn curl_gets_http_hello_over_https_by_http1_and_http2() {
    if require_command("curl").is_none() {
        return;
    }
    let pki = Pki::new("http-hello");
    let mut command = Command::new(BIN);
    command
        .args(["--port", "127.0.0.1:0/ssl", "--log-level", "4"])
        .args(pki.server_args())
        .args(["--ssl-alpn", "h2,http/1.1", "--module", guests::HTTP_HELLO]);
    let mut server = Server::spawn_until(command, None, "SSL");
    let port = server.addr.port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let https = format!("https://localhost:{port}/");
    let ca = pki.path("ca.pem");
    let common = ["--cacert", ca.as_str(), "--resolve", resolve.as_str()];
    for (flag, version) in [("--http1.1", "1.1"), ("--http2", "2")] {
        let mut args = common.to_vec();
        args.extend([flag, "-w", "\n%{http_version}", https.as_str()]);
        let out = curl_ok(&args);
        assert_eq!(
            out,
            format!("Hello from a wasi:http component!\n\n{version}"),
            "{flag}"
        );
    }
    server.wait_for_log(r#""GET / HTTP/1.1" 200 34"#);
    server.wait_for_log(r#""GET / HTTP/2.0" 200 34"#);
    // The guest is told the scheme: its request came over https.
    let mut args = common.to_vec();
    let headers = format!("https://localhost:{port}/headers");
    args.push(headers.as_str());
    assert!(curl_ok(&args).contains("user-agent: curl/"));
}

#[test]
fn a_kept_alive_connection_serves_requests_in_turn_until_timeout_idle() {
    let mut server = http_server(&["--timeout-idle", "1"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let request = b"GET /status/201 HTTP/1.1\r\nhost: a.test\r\n\r\n";
    for _ in 0..2 {
        stream.write_all(request).unwrap();
        let mut got = Vec::new();
        let mut buf = [0; 1024];
        while !got.ends_with(b"\r\n\r\n201\n") {
            let n = stream.read(&mut buf).unwrap();
            assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
        }
    }
    // Then, with no next request, the server closes it.
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    let lines = server.wait_for_log_lines(r#""GET /status/201 HTTP/1.1" 201 4"#, 2);
    assert_eq!(lines.len(), 2);
    server.wait_for_log_all(&["connection ended", "served"]);
}

#[test]
fn a_request_head_not_whole_within_timeout_header_ends_the_connection() {
    // Kept-alive connections wait longer (timeout_idle) than a head may take.
    let mut server = http_server(&["--timeout-header", "1", "--timeout-idle", "600"]);
    let mut stream = TcpStream::connect(server.addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: a.test\r\n\r\n")
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0; 1024];
    while !got.ends_with(b"component!\n") {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    // The next head starts and never ends.
    stream.write_all(b"GET / HTTP/1.1\r\nhost:").unwrap();
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    server.wait_for_log("header timeout: no whole request head within 1s (timeout_header)");
}

#[test]
fn limits_and_a_trapping_guest_end_the_request_not_the_server() {
    if require_command("curl").is_none() {
        return;
    }
    let mut server = http_server(&["--max-body-size", "10", "--max-header-size", "8K"]);
    let code =
        |args: &[&str]| curl_ok(&[&["-o", "/dev/null", "-w", "%{http_code}"], args].concat());
    assert_eq!(
        code(&["--data-binary", "0123456789", &url(&server, "/echo")]),
        "200"
    );
    assert_eq!(
        code(&["--data-binary", "0123456789a", &url(&server, "/echo")]),
        "413"
    );
    server.wait_for_log("refused with 413");
    let big = format!("x-big: {}", "y".repeat(9000));
    assert_eq!(code(&["-H", &big, &url(&server, "/")]), "431");
    assert_eq!(code(&[&url(&server, "/trap")]), "500");
    server.wait_for_log_all(&["GET /trap: guest trapped", "(answered 500)"]);
    assert_eq!(code(&[&url(&server, "/")]), "200");
}

#[test]
fn the_access_log_goes_to_its_file_in_its_format() {
    if require_command("curl").is_none() {
        return;
    }
    let dir = fresh_dir("http", "access-log");
    let file = dir.join("access.log");
    let mut server = http_server(&[
        "--access-log-file",
        file.to_str().unwrap(),
        "--access-log-format",
        "%m %U%q %>s %b %{X-Test}i",
    ]);
    curl_ok(&["-H", "x-test: seen", &url(&server, "/status/202?a=1")]);
    server.wait_for_log_all(&["connection ended", "served"]);
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text, "GET /status/202?a=1 202 4 seen\n");
    assert!(!server.log().iter().any(|l| l.contains("/status/202")));
}

#[test]
fn an_unknown_access_log_directive_is_a_config_error() {
    let out = Command::new(BIN)
        .args([
            "--module",
            guests::HTTP_HELLO,
            "--access-log-format",
            "%h %Z",
            "--check",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "netserver-host: --access-log-format: invalid value '%h %Z': unknown directive %Z\n"
    );
}

#[test]
fn outgoing_requests_go_only_where_granted() {
    if require_command("curl").is_none() {
        return;
    }
    let mut refused = http_server(&[]);
    let own = url(&refused, "/");
    let out = curl_ok(&[&url(&refused, &format!("/fetch?url={own}"))]);
    assert_eq!(
        out,
        "outgoing request failed: ErrorCode::HttpRequestDenied\n"
    );
    refused.wait_for_log("not in grant_connect");
    let granted = http_server(&["--grant-connect", "127.0.0.1/32"]);
    let own = url(&granted, "/");
    let out = curl_ok(&[&url(&granted, &format!("/fetch?url={own}"))]);
    assert_eq!(out, "Hello from a wasi:http component!\n");
}

#[test]
fn access_rules_close_a_denied_client_before_its_request() {
    if require_command("curl").is_none() {
        return;
    }
    let mut server = http_server(&["--cidr-deny", "127.0.0.0/8"]);
    let out = curl(&[&url(&server, "/")]);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    server.wait_for_log("denied by cidr_deny 127.0.0.0/8");
}

#[test]
fn a_worker_instance_serves_request_after_request() {
    if require_command("curl").is_none() {
        return;
    }
    let mut server = http_server(&["--instance", "per-worker"]);
    for _ in 0..3 {
        assert_eq!(curl_ok(&[&url(&server, "/status/200")]), "200\n");
    }
    // A trap drops the worker's instance; the next request gets a new one.
    curl(&[&url(&server, "/trap")]);
    server.wait_for_log("guest trapped");
    assert_eq!(curl_ok(&[&url(&server, "/status/200")]), "200\n");
}

#[test]
fn a_datagram_port_is_refused_for_a_wasi_http_component() {
    let out = Command::new(BIN)
        .args([
            "--module",
            guests::HTTP_HELLO,
            "--port",
            "127.0.0.1:0/udp",
            "--check",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a wasi:http component") && err.contains("not datagrams"),
        "{err}"
    );
}

fn served_by(personality: &str, args: &[&str]) {
    if require_command("curl").is_none() {
        return;
    }
    let mut all = vec!["--server-type", personality];
    all.extend_from_slice(args);
    let mut server = http_server(&all);
    for i in 0..3 {
        let path = format!("/status/{}", 200 + i);
        assert_eq!(curl_ok(&[&url(&server, &path)]), format!("{}\n", 200 + i));
    }
    server.wait_for_log(r#""GET /status/202 HTTP/1.1" 202 4"#);
}

per_personality!(
    served_by: single(&[]),
    fork(&[]),
    prefork_simple(&["--max-servers", "2"]),
    prefork(&["--min-servers", "2", "--max-servers", "4"]),
    multiplex(&[]),
    multiplex_2_workers as multiplex(&["--workers", "2"]),
);

/// Sends `head` then a `GET path` with `Connection: close` to `addr`; the
/// whole response.
fn get_raw(addr: std::net::SocketAddr, head: &[u8], path: &str) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    let mut request = head.to_vec();
    request.extend_from_slice(
        format!("GET {path} HTTP/1.1\r\nhost: a.test\r\nconnection: close\r\n\r\n").as_bytes(),
    );
    stream.write_all(&request).unwrap();
    let mut got = Vec::new();
    // A refused client may see a reset instead of an orderly close.
    let _ = stream.read_to_end(&mut got);
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn a_proxy_header_gives_rules_and_access_log_the_client_behind_it() {
    let mut server = http_server(&[
        "--proxy-from",
        "127.0.0.1/32",
        "--cidr-deny",
        "192.0.2.66/32",
        "--cidr-allow",
        "0.0.0.0/0",
    ]);
    let reply = get_raw(
        server.addr,
        b"PROXY TCP4 192.0.2.7 198.51.100.1 4000 80\r\n",
        "/status/202",
    );
    assert!(reply.starts_with("HTTP/1.1 202 "), "{reply:?}");
    assert!(reply.ends_with("\r\n\r\n202\n"), "{reply:?}");
    server.wait_for_log(r#"192.0.2.7 - - ["#);
    server.wait_for_log(r#""GET /status/202 HTTP/1.1" 202 4"#);
    // The deny rule applies to the client behind the proxy, before its
    // request is read: no response, no access log line.
    let reply = get_raw(
        server.addr,
        b"PROXY TCP4 192.0.2.66 198.51.100.1 4000 80\r\n",
        "/status/203",
    );
    assert_eq!(reply, "");
    server.wait_for_log("denied by cidr_deny 192.0.2.66/32");
    assert!(
        !server.log().iter().any(|l| l.contains("/status/203")),
        "a denied request reached the guest"
    );
}

/// HUP under a steady load of requests: every request is answered, by the
/// old generation of workers or the new one.
fn hup_under_load_refuses_no_request(personality: &str) {
    let mut server = http_server(&["--server-type", personality, "--min-servers", "2"]);
    let addr = server.addr;
    let load = SteadyLoad::start(move |i| {
        let status = 200 + i % 4;
        let reply = get_raw(addr, b"", &format!("/status/{status}"));
        if reply.ends_with(&format!("\r\n\r\n{status}\n")) {
            Ok(())
        } else {
            Err(format!("{reply:?}"))
        }
    });
    load.wait_for_more(&server, "load before HUP", 20);
    server.signal("HUP");
    server.wait_for_log("Received HUP: restarting");
    server.wait_for_log("(inherited across a restart)");
    load.wait_for_more(&server, "load after HUP", 50);
    load.stop_and_check(&format!("{personality}: requests across HUP"));
}
per_personality!(hup_under_load_refuses_no_request: multiplex, prefork);

#[test]
fn responses_are_counted_by_status_class() {
    let mut server = http_server(&["--metrics-port", "0"]);
    let metrics = crate::metrics::endpoint(&mut server);
    for path in ["/status/200", "/status/201", "/status/404", "/status/503"] {
        let status = &path["/status/".len()..];
        let reply = get_raw(server.addr, b"", path);
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status} ")),
            "{reply:?}"
        );
    }
    let series = |code: &str| {
        format!(r#"netserver_http_responses_total{{service="http_hello",code="{code}"}}"#)
    };
    crate::metrics::until(&server, metrics, &series("2xx"), 2.0);
    crate::metrics::until(&server, metrics, &series("4xx"), 1.0);
    crate::metrics::until(&server, metrics, &series("5xx"), 1.0);
    assert_eq!(crate::metrics::value(metrics, &series("3xx")), 0.0);
}

/// One TLS port shared by server name: `web.test` is the wasi:http
/// component, `a.test` a line service; curl gets the component's page by
/// its name, and the line service still echoes by the other.
#[test]
fn sni_routes_one_tls_port_to_an_http_service_and_a_line_service() {
    if require_command("curl").is_none() || require_command("openssl").is_none() {
        return;
    }
    let pki = Pki::new("http-sni");
    let port = crate::util::free_port();
    let conf = pki.dir.join("sni.toml");
    std::fs::write(
        &conf,
        format!(
            r#"log_level = 4
[[service]]
service = "web"
module = "{http}"
port = "127.0.0.1:{port}/ssl"
server_name = "*.b.test"
SSL_cert_file = "{cert}"
SSL_key_file = "{key}"

[[service]]
service = "lines"
module = "{echo}"
port = "127.0.0.1:{port}/ssl"
server_name = "a.test"
SSL_cert_file = "{cert}"
SSL_key_file = "{key}"
"#,
            http = guests::HTTP_HELLO,
            echo = guests::ECHO,
            cert = pki.path("server.pem"),
            key = pki.path("server.key"),
        ),
    )
    .unwrap();
    let mut command = Command::new(BIN);
    command.args(["--conf-file", conf.to_str().unwrap()]);
    let mut server = Server::spawn_until(command, None, "SSL");
    let ca = pki.path("ca.pem");
    let resolve = format!("web.b.test:{port}:127.0.0.1");
    let out = curl_ok(&[
        "--cacert",
        &ca,
        "--resolve",
        &resolve,
        &format!("https://web.b.test:{port}/"),
    ]);
    assert_eq!(out, "Hello from a wasi:http component!\n");
    server.wait_for_log(r#""GET / HTTP/1.1" 200 34"#);
    // The line service, by its name, through openssl s_client.
    let openssl = require_command("openssl").unwrap();
    let mut client = Command::new(openssl)
        .args(["s_client", "-quiet", "-verify_return_error", "-CAfile", &ca])
        .args([
            "-servername",
            "a.test",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    client
        .stdin
        .take()
        .unwrap()
        .write_all(b"over tls\r\nquit\r\n")
        .unwrap();
    let out = client.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "You said 'over tls'\r\nYou said 'quit'\r\n"
    );
}
