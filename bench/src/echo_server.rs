//! The native echo server: the line-echo protocol on plain tokio, with no
//! sandbox, no processes and no logging per connection, over TCP, TLS
//! (rustls) or a unix stream socket; and the UDP echo (`You said "D"` per
//! datagram). It is the limit a sandboxed server can approach.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket, UnixListener, UnixStream};
use tokio_rustls::TlsAcceptor;

use crate::protocol::{
    MAX_DATAGRAM, MAX_LINE, is_quit, push_reply, push_udp_reply, strip_line_end,
};

/// Accepts connections on `listener` and serves each in a task of its own,
/// until the process is stopped. Accept errors (such as running out of file
/// descriptors) are reported on stderr and retried after a short pause.
pub async fn serve(listener: TcpListener) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    // A client that goes away mid-line is its own business.
                    let _ = handle(stream).await;
                });
            }
            Err(err) => accept_failed(err).await,
        }
    }
}

/// [`serve`] over TLS: each connection's handshake (with `acceptor`) and
/// lines in a task of its own. A failed handshake ends that connection.
pub async fn serve_tls(listener: TcpListener, acceptor: TlsAcceptor) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = handle_tls(stream, &acceptor).await;
                });
            }
            Err(err) => accept_failed(err).await,
        }
    }
}

/// [`serve`] on a unix stream socket.
pub async fn serve_unix(listener: UnixListener) -> io::Result<()> {
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(async move {
                    let _ = handle_unix(stream).await;
                });
            }
            Err(err) => accept_failed(err).await,
        }
    }
}

async fn accept_failed(err: io::Error) {
    eprintln!("native-echo: accept: {err}");
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// Answers each datagram `D` on `socket` with `You said "D"`, in this one
/// task, until the process is stopped. Errors are reported on stderr (a
/// reply that cannot be sent is dropped, as a datagram may be).
pub async fn serve_udp(socket: UdpSocket) -> io::Result<()> {
    let mut request = vec![0; MAX_DATAGRAM];
    let mut reply = Vec::with_capacity(256);
    loop {
        let (n, peer) = match socket.recv_from(&mut request).await {
            Ok(received) => received,
            Err(err) => {
                eprintln!("native-echo: recv_from: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        reply.clear();
        push_udp_reply(&mut reply, &request[..n]);
        if let Err(err) = socket.send_to(&reply, peer).await {
            eprintln!("native-echo: send_to {peer}: {err}");
        }
    }
}

/// Serves one connection: each line is answered `You said '<line>'\r\n`;
/// after a line containing `quit`, or at end of input, the connection is
/// closed. Replies to lines that arrived together are sent in one write.
pub async fn handle(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, write) = stream.into_split();
    lines(read, write).await
}

/// [`handle`] over TLS: the handshake with `acceptor`, then the lines; at
/// the end, close_notify.
pub async fn handle_tls(stream: TcpStream, acceptor: &TlsAcceptor) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let stream = acceptor.accept(stream).await?;
    let (read, write) = tokio::io::split(stream);
    lines(read, write).await
}

/// [`handle`] for a unix stream connection.
pub async fn handle_unix(stream: UnixStream) -> io::Result<()> {
    let (read, write) = stream.into_split();
    lines(read, write).await
}

async fn lines(read: impl AsyncRead + Unpin, mut write: impl AsyncWrite + Unpin) -> io::Result<()> {
    let mut reader = BufReader::new(read);
    let mut line = Vec::new();
    let mut out = Vec::new();
    loop {
        line.clear();
        let limit = u64::try_from(MAX_LINE).unwrap_or(u64::MAX);
        let n = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut line)
            .await?;
        if n == 0 {
            return write.shutdown().await;
        }
        if n == MAX_LINE && line.last() != Some(&b'\n') {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "line too long"));
        }
        let text = strip_line_end(&line);
        push_reply(&mut out, text);
        let quit = is_quit(text);
        if quit || !reader.buffer().contains(&b'\n') {
            write.write_all(&out).await?;
            out.clear();
        }
        if quit {
            return write.shutdown().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the server answers to `input` sent at once, read until it closes.
    async fn exchange(input: &[u8]) -> Vec<u8> {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            handle(stream).await
        });
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(input).await.unwrap();
        client.shutdown().await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        server.await.unwrap().unwrap();
        reply
    }

    #[tokio::test]
    async fn answers_lines_like_the_builtin_echo() {
        assert_eq!(
            exchange(b"a\r\nb\nlast").await,
            b"You said 'a'\r\nYou said 'b'\r\nYou said 'last'\r\n"
        );
        assert_eq!(
            exchange(b"one\nplease quit\nnever\n").await,
            b"You said 'one'\r\nYou said 'please quit'\r\n"
        );
        assert_eq!(exchange(b"").await, b"");
    }

    #[tokio::test]
    async fn serves_tls_and_resumes_sessions() {
        use std::sync::Arc;

        use crate::loadgen::client::{Tls, connect_tls};
        use crate::tls::{client_config, server_config};

        let dir = std::env::temp_dir().join(format!("native-echo-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert, TEST_CERT).unwrap();
        std::fs::write(&key, TEST_KEY).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&cert, &key).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_tls(listener, acceptor));
        let exchange = crate::loadgen::Exchange {
            request: b"over tls\r\n".to_vec(),
            expected: b"You said 'over tls'\r\n".to_vec(),
        };
        for resume in [false, true] {
            let tls = Tls::new(client_config(&cert, None, resume).unwrap(), "localhost").unwrap();
            for n in 0..3 {
                let mut connection = connect_tls(addr, None, &tls).await.unwrap();
                connection.round_trip(&exchange).await.unwrap();
                let handshake = connection.handshake().unwrap();
                assert_eq!(handshake.version, "TLS 1.3");
                assert_eq!(handshake.resumed, n > 0 && resume, "{n}");
                connection.close().await;
            }
        }
        // TLS 1.2, forced by the client, resumes too.
        let tls12 = Some(crate::tls::TlsVersion::Tls12);
        let tls = Tls::new(client_config(&cert, tls12, true).unwrap(), "localhost").unwrap();
        for n in 0..2 {
            let mut connection = connect_tls(addr, None, &tls).await.unwrap();
            connection.round_trip(&exchange).await.unwrap();
            let handshake = connection.handshake().unwrap();
            assert_eq!((handshake.version, handshake.resumed), ("TLS 1.2", n > 0));
        }
        // Another name than the certificate's is refused.
        let tls = Tls::new(client_config(&cert, None, false).unwrap(), "example.com").unwrap();
        let (kind, why) = connect_tls(addr, None, &tls).await.unwrap_err();
        assert_eq!(kind, crate::loadgen::ErrorKind::Connect, "{why}");
        server.abort();
        // Another certificate for the same name is not the one trusted.
        let (other_cert, other_key) = (dir.join("other-cert.pem"), dir.join("other-key.pem"));
        std::fs::write(&other_cert, OTHER_CERT).unwrap();
        std::fs::write(&other_key, OTHER_KEY).unwrap();
        let acceptor = TlsAcceptor::from(Arc::new(server_config(&other_cert, &other_key).unwrap()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_tls(listener, acceptor));
        let tls = Tls::new(client_config(&cert, None, false).unwrap(), "localhost").unwrap();
        let (kind, why) = connect_tls(addr, None, &tls).await.unwrap_err();
        assert_eq!(kind, crate::loadgen::ErrorKind::Connect, "{why}");
        assert!(why.contains("UnknownIssuer"), "{why}");
        server.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn serves_a_unix_socket() {
        let dir = std::env::temp_dir().join(format!("native-echo-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("echo.sock");
        let _ = std::fs::remove_file(&path);
        let server = tokio::spawn(serve_unix(UnixListener::bind(&path).unwrap()));
        let mut client = UnixStream::connect(&path).await.unwrap();
        client.write_all(b"over unix\r\nquit\n").await.unwrap();
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply, b"You said 'over unix'\r\nYou said 'quit'\r\n");
        server.abort();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn answers_datagrams_like_net_server() {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let server = tokio::spawn(serve_udp(socket));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(addr).await.unwrap();
        let mut reply = [0; 64];
        for request in [&b"hello-0-1"[..], b"a line\r\n", b""] {
            client.send(request).await.unwrap();
            let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut reply))
                .await
                .expect("a reply in time")
                .unwrap();
            assert_eq!(&reply[..n], crate::protocol::udp_reply(request));
        }
        server.abort();
    }

    /// A self-signed ECDSA P-256 certificate for `localhost` (CA:FALSE),
    /// made as `bench/run` makes its own (valid until 2126).
    const TEST_CERT: &str = include_str!("../tests/data/localhost-cert.pem");
    const TEST_KEY: &str = include_str!("../tests/data/localhost-key.pem");
    /// Another such certificate, and its key.
    const OTHER_CERT: &str = include_str!("../tests/data/other-localhost-cert.pem");
    const OTHER_KEY: &str = include_str!("../tests/data/other-localhost-key.pem");
}
