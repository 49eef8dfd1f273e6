//! The native echo server: the line-echo protocol on plain tokio, with no
//! sandbox, no processes and no logging per connection. It is the limit a
//! sandboxed server can approach.

use std::io;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

use crate::protocol::{MAX_LINE, is_quit, push_reply, strip_line_end};

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
            Err(err) => {
                eprintln!("native-echo: accept: {err}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Serves one connection: each line is answered `You said '<line>'\r\n`;
/// after a line containing `quit`, or at end of input, the connection is
/// closed. Replies to lines that arrived together are sent in one write.
pub async fn handle(stream: TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let (read, mut write) = stream.into_split();
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
}
