//! The line-echo protocol of netserver-host's built-in handler (Net::Server's
//! default `process_request`): each line `L` is answered `You said 'L'\r\n`;
//! a line containing `quit` is answered, then the connection closes.
//!
//! Over UDP each datagram `D` is answered with one datagram `You said "D"`
//! (Net::Server's default `process_request` for `proto udp`, which
//! netserver's built-in echo gives too): no line ends, no `quit`.

/// The most bytes one line (or one reply) may have here; longer ones are a
/// protocol error for the load generator and close the connection in the
/// native echo server.
pub const MAX_LINE: usize = 1 << 20;

/// The reply the server must send for `line` (given without its line end).
///
/// ```
/// assert_eq!(netserver_bench::protocol::reply(b"hello"), b"You said 'hello'\r\n");
/// ```
pub fn reply(line: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(line.len() + 13);
    push_reply(&mut out, line);
    out
}

/// Appends the reply for `line` to `out`.
pub fn push_reply(out: &mut Vec<u8>, line: &[u8]) {
    out.extend_from_slice(b"You said '");
    out.extend_from_slice(line);
    out.extend_from_slice(b"'\r\n");
}

/// The most bytes one datagram may have.
pub const MAX_DATAGRAM: usize = 65_536;

/// The datagram the server must send for the datagram `request`.
///
/// ```
/// assert_eq!(netserver_bench::protocol::udp_reply(b"hi-1-2"), b"You said \"hi-1-2\"");
/// ```
pub fn udp_reply(request: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(request.len() + 11);
    push_udp_reply(&mut out, request);
    out
}

/// Appends the reply for the datagram `request` to `out`.
pub fn push_udp_reply(out: &mut Vec<u8>, request: &[u8]) {
    out.extend_from_slice(b"You said \"");
    out.extend_from_slice(request);
    out.push(b'"');
}

/// `line` without a trailing `\n` and one `\r` right before it (Perl's
/// `s/\r?\n$//`).
///
/// ```
/// use netserver_bench::protocol::strip_line_end;
/// assert_eq!(strip_line_end(b"a\r\n"), b"a");
/// assert_eq!(strip_line_end(b"a\r\r\n"), b"a\r");
/// assert_eq!(strip_line_end(b"a"), b"a");
/// ```
pub fn strip_line_end(line: &[u8]) -> &[u8] {
    match line.strip_suffix(b"\n") {
        Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
        None => line,
    }
}

/// Whether the server closes the connection after answering `line`.
pub fn is_quit(line: &[u8]) -> bool {
    line.windows(4).any(|w| w == b"quit")
}

/// Whether `line` can be sent as one request: no line end inside, no `quit`
/// (which would close a persistent connection), not too long.
pub fn is_sendable(line: &[u8]) -> bool {
    !line.contains(&b'\n') && !line.contains(&b'\r') && !is_quit(line) && line.len() < MAX_LINE / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_and_quit() {
        assert_eq!(reply(b""), b"You said ''\r\n");
        assert!(is_quit(b"please quit now"));
        assert!(!is_quit(b"QUIT"));
        assert!(is_sendable(b"hello"));
        assert!(!is_sendable(b"quit"));
        assert!(!is_sendable(b"a\nb"));
    }
}
