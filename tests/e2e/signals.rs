//! INT and TERM stop the server cleanly.

use crate::util::{BIN, Server, eventually, kill};

#[test]
fn term_and_int_stop_the_server() {
    for signal in ["TERM", "INT"] {
        let mut server = Server::start(&[]);
        let mut client = server.connect();
        client.send(b"before\n");
        assert_eq!(client.read_line(), "You said 'before'\r\n");
        server.signal(signal);
        assert_eq!(server.wait_exit(), Some(0), "{signal}");
        server.wait_for_log(&format!("Received {signal}: server closing"));
    }
}

/// A signal sent the moment the master shows its title (before it binds,
/// long before its loop runs) waits for the loop instead of taking its
/// default action, which would end the server without a word: a HUP then
/// restarts it, and it serves.
#[test]
fn a_signal_before_the_masters_loop_is_acted_on() {
    for _ in 0..3 {
        let mut command = std::process::Command::new(BIN);
        command.args(["--port", "127.0.0.1:0", "--log-level", "4"]);
        let mut server = Server::spawn_unbound(command, None);
        let pid = server.pid();
        eventually("the master's title", || {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.starts_with(b"netserver-host: master"))
        });
        assert!(kill("HUP", pid));
        server.wait_bound("TCP");
        server.wait_for_log("inherited across a restart");
        server.assert_echoes("after", "after an early HUP");
    }
}
