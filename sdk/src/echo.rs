//! Net::Server's default `process_request`: the echo server.
//!
//! ```text
//! $ printf 'hello\r\nquit\r\n' | nc 127.0.0.1 20203
//! You said 'hello'
//! You said 'quit'
//! ```

use std::io::{self, BufRead, Write};

/// Answers every line read from `input` with `You said '<line>'\r\n` on
/// `output`, as Net::Server's default `process_request` does:
///
/// - a line ends at `\n`; that `\n` and one `\r` right before it are not
///   part of the line (Perl's `s/\r?\n$//`), and a last line without `\n`
///   is answered too;
/// - each reply is flushed before the next line is read;
/// - after answering a line that contains `quit` (case-sensitive, anywhere
///   in the line), it returns without reading further;
/// - at end of input it returns `Ok`.
///
/// It works on bytes: a line that is not UTF-8 is echoed byte for byte.
///
/// ```
/// let mut reply = Vec::new();
/// netserver_sdk::echo::serve(&b"hello\r\nquit\r\nignored\r\n"[..], &mut reply).unwrap();
/// assert_eq!(reply, b"You said 'hello'\r\nYou said 'quit'\r\n");
/// ```
pub fn serve(mut input: impl BufRead, mut output: impl Write) -> io::Result<()> {
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        let text = strip_line_end(&line);
        output.write_all(b"You said '")?;
        output.write_all(text)?;
        output.write_all(b"'\r\n")?;
        output.flush()?;
        if contains(text, b"quit") {
            return Ok(());
        }
    }
}

/// Net::Server's echo for one datagram: reads all of `input` and answers
/// `You said "DATA"` (no line end) in one flush, one reply datagram.
///
/// ```
/// let mut reply = Vec::new();
/// netserver_sdk::echo::answer_datagram(&b"hello"[..], &mut reply).unwrap();
/// assert_eq!(reply, b"You said \"hello\"");
/// ```
pub fn answer_datagram(mut input: impl io::Read, mut output: impl Write) -> io::Result<()> {
    let mut data = Vec::new();
    input.read_to_end(&mut data)?;
    let mut reply = Vec::with_capacity(data.len() + 12);
    reply.extend_from_slice(b"You said \"");
    reply.extend_from_slice(&data);
    reply.extend_from_slice(b"\"");
    output.write_all(&reply)?;
    output.flush()
}

/// `line` without a trailing `\n` and one `\r` right before it.
fn strip_line_end(line: &[u8]) -> &[u8] {
    match line.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None => line,
    }
}

/// Whether `needle` occurs in `haystack`.
fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `serve` writes for `input`, and the input it left unread.
    fn echo(input: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut input = input;
        let mut output = Vec::new();
        serve(&mut input, &mut output).unwrap();
        (output, input.to_vec())
    }

    /// What the case shows, the input, the output, the input left unread.
    type Case = (&'static str, &'static [u8], &'static [u8], &'static [u8]);

    #[test]
    fn table() {
        #[rustfmt::skip]
        let cases: &[Case] = &[
            ("empty input", b"", b"", b""),
            ("plain lines", b"hello\nworld\n", b"You said 'hello'\r\nYou said 'world'\r\n", b""),
            ("crlf", b"hello\r\n", b"You said 'hello'\r\n", b""),
            ("bare lf", b"a\nb\r\nc\n", b"You said 'a'\r\nYou said 'b'\r\nYou said 'c'\r\n", b""),
            ("no newline at eof", b"one\ntwo", b"You said 'one'\r\nYou said 'two'\r\n", b""),
            ("cr alone at eof is kept", b"two\r", b"You said 'two\r'\r\n", b""),
            ("only one cr is stripped", b"x\r\r\n", b"You said 'x\r'\r\n", b""),
            ("cr inside a line is kept", b"a\rb\n", b"You said 'a\rb'\r\n", b""),
            ("empty line", b"\n\r\n", b"You said ''\r\nYou said ''\r\n", b""),
            ("quit stops reading", b"quit\nnever\n", b"You said 'quit'\r\n", b"never\n"),
            ("quit mid-line", b"one\nplease quit now\nlater\n",
                b"You said 'one'\r\nYou said 'please quit now'\r\n", b"later\n"),
            ("quit without newline", b"quit", b"You said 'quit'\r\n", b""),
            ("QUIT is not quit", b"QUIT\nQuit\n", b"You said 'QUIT'\r\nYou said 'Quit'\r\n", b""),
            ("qu it is not quit", b"qu it\n", b"You said 'qu it'\r\n", b""),
            ("binary bytes", b"\xff\xfe\x00bin\n", b"You said '\xff\xfe\x00bin'\r\n", b""),
            ("invalid utf-8 then quit", b"\xc3quit\xc3\nx\n", b"You said '\xc3quit\xc3'\r\n", b"x\n"),
            ("utf-8", "ünïcödé\n".as_bytes(), "You said 'ünïcödé'\r\n".as_bytes(), b""),
        ];
        for (what, input, output, unread) in cases {
            let (got, left) = echo(input);
            assert_eq!(
                got.escape_ascii().to_string(),
                output.escape_ascii().to_string(),
                "{what}"
            );
            assert_eq!(
                left.escape_ascii().to_string(),
                unread.escape_ascii().to_string(),
                "{what}"
            );
        }
    }

    #[test]
    fn long_line() {
        let long = vec![b'x'; 200_000];
        let mut input = long.clone();
        input.push(b'\n');
        let mut want = b"You said '".to_vec();
        want.extend_from_slice(&long);
        want.extend_from_slice(b"'\r\n");
        assert_eq!(echo(&input).0, want);
    }

    /// A writer that counts flushes and records what was written when.
    #[derive(Default)]
    struct Recorder {
        written: Vec<u8>,
        flushed_at: Vec<usize>,
    }

    impl Write for Recorder {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.written.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            self.flushed_at.push(self.written.len());
            Ok(())
        }
    }

    #[test]
    fn every_reply_is_flushed() {
        let mut recorder = Recorder::default();
        serve(&b"a\nbc\n"[..], &mut recorder).unwrap();
        let first = "You said 'a'\r\n".len();
        let second = "You said 'bc'\r\n".len();
        assert_eq!(recorder.flushed_at, [first, first + second]);
    }

    #[test]
    fn errors_are_returned() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let error = serve(&b"x\n"[..], Broken).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }
}
