//! INT and TERM stop the server cleanly.

use crate::util::Server;

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
