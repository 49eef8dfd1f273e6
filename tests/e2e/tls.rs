//! TLS (`proto ssl`, issue 21): real clients — `openssl s_client` and a
//! rustls client — against the real host; TLS 1.2 and 1.3; client
//! certificates; two services on one port picked by server name; hostile
//! clients closed within the handshake timeout while others are served;
//! the handshake in every personality, under inetd and under socket
//! activation; what the guest learns; certificates re-read on HUP.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, StreamOwned, SupportedProtocolVersion};

use crate::pki::Pki;
use crate::util::{
    BIN, PATIENCE, Server, eventually, free_port, fresh_dir, guests, per_personality,
    require_command,
};

/// How a test client presents itself.
#[derive(Clone, Copy, Default)]
struct Hello<'a> {
    /// The server name it sends (SNI); `localhost` when `None`.
    name: Option<&'a str>,
    /// Its certificate and key, by their PKI file stem (`client`).
    cert: Option<&'a str>,
    /// The one version it speaks; both when `None`.
    version: Option<&'static SupportedProtocolVersion>,
}

/// A client that asks for server name `name`.
fn sni(name: &str) -> Hello<'_> {
    Hello {
        name: Some(name),
        ..Hello::default()
    }
}

/// A client with the certificate `stem` (`client`, `other-client`).
fn with_cert(stem: &str) -> Hello<'_> {
    Hello {
        cert: Some(stem),
        ..Hello::default()
    }
}

fn config(pki: &Pki, hello: Hello<'_>) -> Arc<ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let versions: Vec<&'static SupportedProtocolVersion> = match hello.version {
        Some(v) => vec![v],
        None => vec![&rustls::version::TLS13, &rustls::version::TLS12],
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(pki.path("ca.pem")).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&versions)
        .unwrap()
        .with_root_certificates(roots);
    let config = match hello.cert {
        Some(stem) => {
            let chain = CertificateDer::pem_file_iter(pki.path(&format!("{stem}.pem")))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            let key = PrivateKeyDer::from_pem_file(pki.path(&format!("{stem}.key"))).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    Arc::new(config)
}

type Tls = StreamOwned<ClientConnection, TcpStream>;

/// A TLS client of `addr`, its handshake done (or why it failed).
fn connect(pki: &Pki, addr: SocketAddr, hello: Hello<'_>) -> std::io::Result<Tls> {
    let name = ServerName::try_from(hello.name.unwrap_or("localhost").to_owned()).unwrap();
    let conn = ClientConnection::new(config(pki, hello), name).unwrap();
    let tcp = TcpStream::connect(addr)?;
    tcp.set_read_timeout(Some(PATIENCE))?;
    tcp.set_write_timeout(Some(PATIENCE))?;
    let mut tls = StreamOwned::new(conn, tcp);
    while tls.conn.is_handshaking() {
        tls.conn.complete_io(&mut tls.sock)?;
    }
    Ok(tls)
}

/// Sends `request` and reads until the server closes (or the stream
/// fails): what came.
fn exchange(tls: &mut Tls, request: &str) -> String {
    if tls
        .write_all(request.as_bytes())
        .and_then(|()| tls.flush())
        .is_err()
    {
        return String::new();
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A new client's line and `quit`, answered by the built-in echo.
fn echoes(pki: &Pki, addr: SocketAddr, hello: Hello<'_>, line: &str) -> String {
    match connect(pki, addr, hello) {
        Ok(mut tls) => exchange(&mut tls, &format!("{line}\r\nquit\r\n")),
        Err(err) => format!("handshake failed: {err}"),
    }
}

fn said(line: &str) -> String {
    format!("You said '{line}'\r\nYou said 'quit'\r\n")
}

/// A server with `args` and the PKI's server certificate, on a TLS port
/// only; its address.
fn tls_server(pki: &Pki, args: &[&str]) -> Server {
    let mut command = Command::new(BIN);
    command
        .args(["--port", "127.0.0.1:0/ssl", "--log-level", "4"])
        .args(pki.server_args())
        .args(args);
    Server::spawn_until(command, None, "SSL")
}

#[test]
fn openssl_s_client_gets_the_echo() {
    let Some(openssl) = require_command("openssl") else {
        return;
    };
    let pki = Pki::new("s_client");
    let mut server = tls_server(&pki, &[]);
    let mut client = Command::new(openssl)
        .args(["s_client", "-quiet", "-verify_return_error"])
        .args(["-connect", &server.addr.to_string()])
        .args(["-servername", "localhost", "-CAfile", &pki.path("ca.pem")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    client
        .stdin
        .take()
        .unwrap()
        .write_all(b"over openssl\r\nquit\r\n")
        .unwrap();
    let out = client.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        said("over openssl"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.wait_for_log_all(&["127.0.0.1", "served"]);
}

#[test]
fn tls_1_2_and_1_3_are_served_and_the_guest_sees_which() {
    let pki = Pki::new("versions");
    let server = tls_server(&pki, &["--module", guests::HOOK_TRACE]);
    for (version, name) in [
        (&rustls::version::TLS12, "TLSv1.2"),
        (&rustls::version::TLS13, "TLSv1.3"),
    ] {
        let hello = Hello {
            version: Some(version),
            ..Hello::default()
        };
        let reply = echoes(&pki, server.addr, hello, name);
        let lines: Vec<&str> = reply.lines().collect();
        assert!(lines[0].contains(" proto=ssl "), "{reply}");
        assert!(
            lines[1].starts_with(&format!("tls version={name} cipher=TLS")),
            "{reply}"
        );
        assert!(
            lines[1].contains(" sni=localhost alpn=- subject=- "),
            "{reply}"
        );
        assert!(reply.contains(&format!("You said '{name}'")), "{reply}");
    }
    // The lowest version served is a setting.
    let mut strict = tls_server(&pki, &["--SSL_version", "TLSv1_3"]);
    let old = Hello {
        version: Some(&rustls::version::TLS12),
        ..Hello::default()
    };
    let refused = echoes(&pki, strict.addr, old, "old");
    assert!(refused.starts_with("handshake failed"), "{refused}");
    strict.wait_for_log("TLS handshake failed");
    assert_eq!(
        echoes(&pki, strict.addr, Hello::default(), "new"),
        said("new")
    );
}

fn every_personality(personality: &str, args: &[&str]) {
    let pki = Pki::new(&format!("personality-{personality}"));
    let mut all = vec!["--server-type", personality];
    all.extend_from_slice(args);
    let server = tls_server(&pki, &all);
    for i in 0..3 {
        let line = format!("{personality} {i}");
        assert_eq!(
            echoes(&pki, server.addr, Hello::default(), &line),
            said(&line)
        );
    }
}

per_personality!(
    every_personality: single(&[]),
    fork(&[]),
    prefork_simple(&["--max-servers", "2"]),
    prefork(&["--min-servers", "2", "--max-servers", "4"]),
    multiplex(&[]),
    multiplex_2_workers as multiplex(&["--workers", "2"]),
);

#[test]
fn tcp_and_tls_ports_side_by_side_in_one_service() {
    let pki = Pki::new("side-by-side");
    let mut command = Command::new(BIN);
    command
        .args(["--port", "127.0.0.1:0", "--port", "127.0.0.1:0/ssl"])
        .args(["--log-level", "4"])
        .args(pki.server_args());
    let mut server = Server::spawn(command);
    let tls = server.bound_of("SSL", 1)[0];
    server.assert_echoes("plain", "the TCP port");
    assert_eq!(
        echoes(&pki, tls, Hello::default(), "secure"),
        said("secure")
    );
    server.wait_for_log("(TLS)");
}

#[test]
fn client_certificates_required_verified_and_shown() {
    let pki = Pki::new("mtls");
    let mut server = tls_server(
        &pki,
        &[
            "--module",
            guests::HOOK_TRACE,
            "--SSL_verify_mode",
            "3",
            "--SSL_ca_file",
            &pki.path("ca.pem"),
        ],
    );
    let alice = with_cert("client");
    let reply = echoes(&pki, server.addr, alice, "alice");
    let tls = reply.lines().nth(1).unwrap_or_default();
    assert!(
        tls.contains(
            " subject=CN=alice, O=netserver tests issuer=CN=Test CA, O=netserver tests sha256="
        ),
        "{reply}"
    );
    let sha256 = tls.rsplit("sha256=").next().unwrap();
    assert_eq!(sha256.len(), 64, "{tls}");
    assert!(reply.contains("You said 'alice'"), "{reply}");
    // No certificate: refused.
    let reply = echoes(&pki, server.addr, Hello::default(), "anonymous");
    assert!(!reply.contains("You said"), "{reply}");
    server.wait_for_log_all(&["TLS handshake failed", "no certificate"]);
    // A certificate from another CA: refused.
    let mallory = with_cert("other-client");
    let reply = echoes(&pki, server.addr, mallory, "mallory");
    assert!(!reply.contains("You said"), "{reply}");
    server.wait_for_log_all(&["TLS handshake failed", "UnknownIssuer"]);
    // Meanwhile the others were served.
    let reply = echoes(&pki, server.addr, alice, "again");
    assert!(reply.contains("You said 'again'"), "{reply}");
}

#[test]
fn a_client_certificate_is_optional_with_verify_mode_1() {
    let pki = Pki::new("mtls-optional");
    let server = tls_server(
        &pki,
        &[
            "--module",
            guests::HOOK_TRACE,
            "--ssl-verify-mode",
            "1",
            "--ssl-ca-file",
            &pki.path("ca.pem"),
        ],
    );
    let reply = echoes(&pki, server.addr, Hello::default(), "anonymous");
    assert!(reply.contains(" subject=- "), "{reply}");
    assert!(reply.contains("You said 'anonymous'"), "{reply}");
    let alice = with_cert("client");
    let reply = echoes(&pki, server.addr, alice, "alice");
    assert!(reply.contains(" subject=CN=alice"), "{reply}");
    // One that is sent is verified.
    let mallory = with_cert("other-client");
    let reply = echoes(&pki, server.addr, mallory, "mallory");
    assert!(!reply.contains("You said"), "{reply}");
}

/// A conf file with two services on one TLS port, told apart by server
/// name, and `extra` lines in the second's table.
fn sni_conf(pki: &Pki, dir: &std::path::Path, port: u16, extra: &str) -> String {
    let conf = dir.join("sni.toml");
    let text = format!(
        r#"log_level = 4
[[service]]
service = "alpha"
module = "{echo}"
port = "127.0.0.1:{port}/ssl"
server_name = "a.test"
SSL_cert_file = "{cert}"
SSL_key_file = "{key}"

[[service]]
service = "beta"
module = "{trace}"
port = "127.0.0.1:{port}/ssl"
server_name = ["b.test", "*.b.test"]
SSL_cert_file = "{cert}"
SSL_key_file = "{key}"
{extra}
"#,
        echo = guests::ECHO,
        trace = guests::HOOK_TRACE,
        cert = pki.path("server.pem"),
        key = pki.path("server.key"),
    );
    std::fs::write(&conf, text).unwrap();
    conf.display().to_string()
}

#[test]
fn two_services_on_one_tls_port_are_picked_by_server_name() {
    let pki = Pki::new("sni");
    let port = free_port();
    let conf = sni_conf(&pki, &pki.dir, port, "");
    let mut command = Command::new(BIN);
    command.args(["--conf-file", &conf]);
    let mut server = Server::spawn_until(command, None, "SSL");
    server.wait_for_log("shared with service alpha by server name");
    let a = sni("a.test");
    assert_eq!(echoes(&pki, server.addr, a, "to alpha"), said("to alpha"));
    for name in ["b.test", "x.b.test"] {
        let b = sni(name);
        let reply = echoes(&pki, server.addr, b, "to beta");
        assert!(reply.contains(" service=beta "), "{name}: {reply}");
        assert!(reply.contains(&format!(" sni={name} ")), "{name}: {reply}");
    }
    // A name no service lists, with no default: closed.
    let other = sni("localhost");
    let reply = echoes(&pki, server.addr, other, "nobody");
    assert!(reply.starts_with("handshake failed"), "{reply}");
    server.wait_for_log("TLS server name 'localhost' matches no service");
}

#[test]
fn a_shared_port_sends_unknown_names_to_its_default_service() {
    let pki = Pki::new("sni-default");
    let port = free_port();
    let conf = sni_conf(&pki, &pki.dir, port, "sni_default = 1");
    let mut command = Command::new(BIN);
    command.args(["--conf-file", &conf, "--server-type", "prefork"]);
    let server = Server::spawn_until(command, None, "SSL");
    let other = sni("localhost");
    let reply = echoes(&pki, server.addr, other, "default");
    assert!(reply.contains(" service=beta "), "{reply}");
    let a = sni("a.test");
    assert_eq!(
        echoes(&pki, server.addr, a, "still alpha"),
        said("still alpha")
    );
}

/// Opens a TCP connection to `addr` and sends `bytes`.
fn raw(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(PATIENCE)).unwrap();
    stream.write_all(bytes).unwrap();
    stream
}

/// Whether the server closed `stream` (it reads the end, or a reset),
/// waiting at most `PATIENCE`.
fn closed(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 256];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn hostile_clients(personality: &str, args: &[&str]) {
    let pki = Pki::new(&format!("hostile-{personality}"));
    let mut all = vec!["--server-type", personality, "--ssl-handshake-timeout", "1"];
    all.extend_from_slice(args);
    let mut server = tls_server(&pki, &all);
    let started = Instant::now();
    // Stalls after the first bytes of a ClientHello.
    let mut stalled = raw(server.addr, &[0x16, 0x03, 0x01, 0x00, 0xc8, 0x01]);
    // Not TLS at all.
    let mut plain = raw(server.addr, b"GET / HTTP/1.0\r\n\r\n");
    // A handshake record whose ClientHello is garbage.
    let mut garbage = raw(
        server.addr,
        &[
            0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x00, 0x00, 0x04, 0xde, 0xad, 0xbe, 0xef,
        ],
    );
    // Others are served meanwhile.
    assert_eq!(
        echoes(&pki, server.addr, Hello::default(), "meanwhile"),
        said("meanwhile")
    );
    assert!(closed(&mut plain), "the plain-text client is closed");
    assert!(closed(&mut garbage), "the malformed ClientHello is closed");
    assert!(closed(&mut stalled), "the stalled handshake is closed");
    // Within the timeout (1 s), give or take a loaded machine.
    assert!(started.elapsed() < PATIENCE);
    server.wait_for_log("TLS handshake timed out");
    server.wait_for_log("TLS handshake failed reading the ClientHello");
    assert_eq!(
        echoes(&pki, server.addr, Hello::default(), "after"),
        said("after")
    );
}

// Each stalled client holds one prefork child: four leave one free.
per_personality!(
    hostile_clients: multiplex(&[]),
    prefork(&["--min-servers", "4", "--max-servers", "8"]),
);

#[test]
fn a_client_the_rules_refuse_costs_no_handshake() {
    let pki = Pki::new("denied");
    let mut server = tls_server(
        &pki,
        &["--module", guests::HOOK_TRACE, "--deny", "127\\.0\\.0\\.1"],
    );
    let reply = echoes(&pki, server.addr, Hello::default(), "denied");
    assert!(reply.starts_with("handshake failed"), "{reply}");
    // The hooks ran (request-denied-hook), with nothing to read and no
    // reply sent: the client saw its connection closed.
    server.wait_for_log("hook request-denied-hook");
    server.wait_for_log_all(&["connection ended", "denied by deny"]);
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.contains("TLS handshake failed")),
        "no handshake was attempted"
    );
}

#[test]
fn a_command_guest_gets_ucspi_ssl_variables() {
    let pki = Pki::new("command");
    let server = tls_server(&pki, &["--module", guests::COMMAND_ENV]);
    let reply = echoes(&pki, server.addr, Hello::default(), "x");
    let lines: Vec<&str> = reply.lines().collect();
    assert!(lines[0].ends_with(" PROTO=SSL"), "{reply}");
    assert_eq!(
        lines[1],
        "SSLREMOTEIP=127.0.0.1 SSL_PROTOCOL=TLSv1.3 SSL_SERVER_NAME=localhost SSL_CLIENT_VERIFY=NONE SSL_CLIENT_S_DN=-",
        "{reply}"
    );
}

#[test]
fn inetd_serves_tls_on_stdin() {
    let pki = Pki::new("inetd");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let client = std::thread::spawn({
        let dir = pki.dir.clone();
        move || echoes(&Pki { dir }, addr, Hello::default(), "inetd")
    });
    let (accepted, _) = listener.accept().unwrap();
    let out = accepted.try_clone().unwrap();
    let status = Command::new(BIN)
        .args(["--server-type", "inetd", "--proto", "ssl"])
        .args(pki.server_args())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(accepted)))
        .stdout(Stdio::from(std::os::fd::OwnedFd::from(out)))
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(client.join().unwrap(), said("inetd"));
}

#[test]
fn a_tls_port_handed_over_by_systemd_is_served_as_tls() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let pki = Pki::new("systemd");
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = tcp.local_addr().unwrap();
    let fd = tcp.as_raw_fd();
    let mut command = Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""])
        .arg(BIN)
        .args(["--log-level", "4", "--port", &format!("{addr}/ssl")])
        .args(pki.server_args());
    // SAFETY: between fork and exec only async-signal-safe calls: the
    // socket is moved to descriptor 3, as systemd passes it, its
    // close-on-exec flag cleared.
    unsafe {
        command.pre_exec(move || {
            if nix::libc::dup2(fd, 3) < 0 || nix::libc::fcntl(3, nix::libc::F_SETFD, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut server = Server::spawn_until(command, None, "SSL");
    server.wait_for_log("inherited from systemd");
    drop(tcp);
    assert_eq!(
        echoes(&pki, addr, Hello::default(), "activated"),
        said("activated")
    );
}

/// The SHA-256 of the certificate the server at `addr` presents.
fn served_certificate(pki: &Pki, addr: SocketAddr) -> Vec<u8> {
    let tls = connect(pki, addr, Hello::default()).unwrap();
    tls.conn.peer_certificates().unwrap()[0].to_vec()
}

#[test]
fn certificates_are_read_again_on_hup_and_a_bad_one_keeps_the_old() {
    let pki = Pki::new("reload");
    let dir = fresh_dir("tls", "reload-live");
    let (cert, key) = (dir.join("live.pem"), dir.join("live.key"));
    std::fs::copy(pki.dir.join("server.pem"), &cert).unwrap();
    std::fs::copy(pki.dir.join("server.key"), &key).unwrap();
    let mut command = Command::new(BIN);
    command
        .args(["--port", "127.0.0.1:0/ssl", "--log-level", "4"])
        .args(["--SSL_cert_file", &cert.display().to_string()])
        .args(["--SSL_key_file", &key.display().to_string()]);
    let mut server = Server::spawn_until(command, None, "SSL");
    let addr = server.addr;
    let first = served_certificate(&pki, addr);
    // A new certificate, from a second PKI (the client trusts its CA).
    let next = Pki::new("reload-next");
    std::fs::copy(next.dir.join("server.pem"), &cert).unwrap();
    std::fs::copy(next.dir.join("server.key"), &key).unwrap();
    server.signal("HUP");
    server.wait_for_log("Received HUP: restarting");
    let second = eventually("the new certificate to be served", || {
        let got = connect(&next, addr, Hello::default()).ok()?;
        let der = got.conn.peer_certificates()?[0].to_vec();
        (der != first).then_some(der)
    });
    // A broken certificate: the server goes on with the one it has.
    std::fs::write(&cert, "not a certificate\n").unwrap();
    server.signal("HUP");
    server.wait_for_log("does not load; still serving the old one");
    assert_eq!(served_certificate(&next, addr), second);
    assert!(server.is_running());
}

#[test]
fn keys_in_pkcs1_sec1_and_pkcs8_are_taken_and_an_encrypted_one_is_named() {
    let Some(openssl) = require_command("openssl") else {
        return;
    };
    let dir = fresh_dir("tls", "key-forms");
    let sh = |script: &str| {
        let out = Command::new("sh")
            .current_dir(&dir)
            .env("OPENSSL", &openssl)
            .args(["-c", script])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{script}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let cert =
        "\"$OPENSSL\" req -x509 -days 60 -subj /CN=localhost -addext subjectAltName=DNS:localhost";
    // PKCS#1 (RSA PRIVATE KEY), SEC1 (EC PRIVATE KEY), PKCS#8 (PRIVATE KEY).
    sh(&format!(
        "\"$OPENSSL\" genrsa -traditional -out rsa.key 2048 && {cert} -key rsa.key -out rsa.pem"
    ));
    sh(&format!(
        "\"$OPENSSL\" ecparam -name prime256v1 -genkey -noout -out ec.key && {cert} -key ec.key -out ec.pem"
    ));
    sh(&format!(
        "\"$OPENSSL\" genpkey -algorithm ed25519 -out ed.key && {cert} -key ed.key -out ed.pem"
    ));
    sh("\"$OPENSSL\" pkey -in ec.key -out enc.key -aes256 -passout pass:secret");
    for (form, begins) in [
        ("rsa", "-----BEGIN RSA PRIVATE KEY-----"),
        ("ec", "-----BEGIN EC PRIVATE KEY-----"),
        ("ed", "-----BEGIN PRIVATE KEY-----"),
    ] {
        let key = dir.join(format!("{form}.key"));
        assert!(
            std::fs::read_to_string(&key).unwrap().starts_with(begins),
            "{form}"
        );
        let mut command = Command::new(BIN);
        command
            .args(["--port", "127.0.0.1:0/ssl", "--log-level", "4"])
            .args([
                "--SSL_cert_file",
                &dir.join(format!("{form}.pem")).display().to_string(),
            ])
            .args(["--SSL_key_file", &key.display().to_string()]);
        let server = Server::spawn_until(command, None, "SSL");
        let out = Command::new(&openssl)
            .args(["s_client", "-quiet", "-verify_return_error"])
            .args([
                "-connect",
                &server.addr.to_string(),
                "-servername",
                "localhost",
            ])
            .args([
                "-CAfile",
                &dir.join(format!("{form}.pem")).display().to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                child.stdin.take().unwrap().write_all(b"x\r\nquit\r\n")?;
                child.wait_with_output()
            })
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), said("x"), "{form}");
    }
    let out = crate::util::run(&[
        "--check",
        "--port",
        "127.0.0.1:0/ssl",
        "--SSL_cert_file",
        &dir.join("ec.pem").display().to_string(),
        "--SSL_key_file",
        &dir.join("enc.key").display().to_string(),
    ]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("enc.key: holds an encrypted private key"),
        "{err}"
    );
    assert_eq!(err.lines().count(), 1, "{err}");
}

#[test]
fn a_key_the_servers_user_cannot_read_is_named_at_start() {
    if !crate::util::require_root() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let pki = Pki::new("unreadable");
    let key = pki.dir.join("server.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The directory must be searchable by nobody; the key is root's alone.
    std::fs::set_permissions(&pki.dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .arg(BIN)
        .args([
            "--check",
            "--module-cache",
            "off",
            "--port",
            "127.0.0.1:0/ssl",
        ])
        .args(pki.server_args())
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(
        err.trim(),
        format!(
            "netserver-host: --ssl-key-file: invalid value '{}': permission denied",
            key.display()
        )
    );
}
