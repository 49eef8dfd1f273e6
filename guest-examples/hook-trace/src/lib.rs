//! A test guest: logs `hook <name>` at level notice in every hook (the
//! worker's hooks with their argument: `hook signal-hook USR1`,
//! `hook server-close-hook drain`, `hook idle-hook`), shows the
//! client info (a unix client's credentials, a TLS client's handshake)
//! and a property, refuses
//! clients when property `deny` is `yes`, panics in `signal-hook` when
//! property `panic_in` is `signal-hook`.

use std::io::{Write, stdin, stdout};

use netserver_sdk::{
    CloseReason, Error, Handler, Level, Signal, client, credentials, log, property, tls,
};

struct HookTrace;

/// Logs that hook `name` runs.
fn trace(name: &str) {
    log(Level::Notice, &format!("hook {name}"));
}

/// Writes `line` and `\r\n` to the client.
fn say(line: &str) {
    let mut out = stdout().lock();
    // The client may be gone; nothing to do about it here.
    let _ = write!(out, "{line}\r\n").and_then(|()| out.flush());
}

impl Handler for HookTrace {
    fn child_init_hook() {
        trace("child-init-hook");
    }

    fn post_accept_hook() {
        trace("post-accept-hook");
        if let Some(c) = client() {
            let host = c.peer_host.as_deref().unwrap_or("-");
            say(&format!(
                "peer={}:{} local={}:{} proto={} service={} host={host}",
                c.peer_addr, c.peer_port, c.local_addr, c.local_port, c.proto, c.service
            ));
        }
        if let Some(cred) = credentials() {
            say(&format!(
                "uid={} gid={} pid={}",
                cred.uid, cred.gid, cred.pid
            ));
        }
        if let Some(tls) = tls() {
            let cert = tls.client_certificate.as_ref();
            say(&format!(
                "tls version={} cipher={} sni={} alpn={} subject={} issuer={} sha256={}",
                tls.version,
                tls.cipher,
                tls.server_name.as_deref().unwrap_or("-"),
                tls.alpn.as_deref().unwrap_or("-"),
                cert.map_or("-", |c| c.subject.as_str()),
                cert.map_or("-", |c| c.issuer.as_str()),
                cert.map_or("-", |c| c.sha256.as_str()),
            ));
        }
        let greeting = property("greeting");
        say(&format!(
            "prop greeting={}",
            greeting.as_deref().unwrap_or("-")
        ));
    }

    fn allow_deny_hook() -> bool {
        trace("allow-deny-hook");
        property("deny").as_deref() != Some("yes")
    }

    fn request_denied_hook() {
        trace("request-denied-hook");
        say("denied");
    }

    fn process_request() -> Result<(), Error> {
        trace("process-request");
        eprintln!("stderr from hook-trace");
        netserver_sdk::echo::serve(stdin().lock(), stdout())?;
        Ok(())
    }

    fn post_process_request_hook() {
        trace("post-process-request-hook");
        say("bye");
    }

    fn post_client_connection_hook() {
        trace("post-client-connection-hook");
    }

    fn child_finish_hook() {
        trace("child-finish-hook");
    }

    fn dequeue() {
        trace("dequeue");
    }

    fn signal_hook(signal: Signal) {
        trace(&format!("signal-hook {signal}"));
        // A hostile handler, for the tests: its worker hook traps.
        if property("panic_in").as_deref() == Some("signal-hook") {
            panic!("asked to panic in signal-hook");
        }
    }

    fn server_close_hook(reason: CloseReason) {
        trace(&format!("server-close-hook {reason}"));
    }

    fn idle_hook() {
        trace("idle-hook");
    }
}

netserver_sdk::export!(HookTrace);
