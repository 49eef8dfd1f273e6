//! `access_log_format`: Apache's `LogFormat` directives, parsed once (the
//! lines are written by `log::access`).

/// One piece of a parsed format.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Piece {
    /// Text copied as it is.
    Text(String),
    /// `%h`: the client's host name, or its address.
    Host,
    /// `%a`: the client's address.
    Addr,
    /// `%l`, `%u`: the identity and user, which the host does not know
    /// (`-`).
    Unknown,
    /// `%t`: when the request came, `[10/Oct/2000:13:55:36 +0000]`.
    Time,
    /// `%r`: the request line.
    RequestLine,
    /// `%m`: the method.
    Method,
    /// `%U`: the path.
    Path,
    /// `%q`: the query string, with its `?` (or nothing).
    Query,
    /// `%H`: the protocol (`HTTP/1.1`).
    Protocol,
    /// `%s`, `%>s`: the status.
    Status,
    /// `%b`: bytes of the response body, `-` for none.
    BytesClf,
    /// `%B`: bytes of the response body.
    Bytes,
    /// `%D`: microseconds taken.
    Micros,
    /// `%T`: seconds taken.
    Seconds,
    /// `%v`: the service's name.
    Service,
    /// `%{NAME}i`: a request header.
    RequestHeader(String),
    /// `%{NAME}o`: a response header.
    ResponseHeader(String),
}

/// A parsed `access_log_format`.
#[derive(Clone, Debug)]
pub struct AccessFormat(pub Vec<Piece>);

impl AccessFormat {
    /// Whether a line logs request headers (`%{NAME}i`).
    pub fn logs_request_headers(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Piece::RequestHeader(_)))
    }

    /// Parses `text`; the error names the directive this host does not
    /// know.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut text_run = String::new();
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '%' {
                text_run.push(c);
                continue;
            }
            let mut arg = None;
            if chars.peek() == Some(&'{') {
                chars.next();
                let name: String = chars.by_ref().take_while(|&c| c != '}').collect();
                arg = Some(name);
            }
            if chars.peek() == Some(&'>') || chars.peek() == Some(&'<') {
                chars.next();
            }
            let Some(directive) = chars.next() else {
                return Err("ends with a lone %".to_owned());
            };
            let piece = match (directive, arg) {
                ('%', None) => {
                    text_run.push('%');
                    continue;
                }
                ('h', None) => Piece::Host,
                ('a', None) => Piece::Addr,
                ('l' | 'u', None) => Piece::Unknown,
                ('t', None) => Piece::Time,
                ('r', None) => Piece::RequestLine,
                ('m', None) => Piece::Method,
                ('U', None) => Piece::Path,
                ('q', None) => Piece::Query,
                ('H', None) => Piece::Protocol,
                ('s', None) => Piece::Status,
                ('b', None) => Piece::BytesClf,
                ('B', None) => Piece::Bytes,
                ('D', None) => Piece::Micros,
                ('T', None) => Piece::Seconds,
                ('v', None) => Piece::Service,
                ('i', Some(name)) => Piece::RequestHeader(name),
                ('o', Some(name)) => Piece::ResponseHeader(name),
                (other, Some(name)) => return Err(format!("unknown directive %{{{name}}}{other}")),
                (other, None) => return Err(format!("unknown directive %{other}")),
            };
            if !text_run.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut text_run)));
            }
            pieces.push(piece);
        }
        if !text_run.is_empty() {
            pieces.push(Piece::Text(text_run));
        }
        Ok(Self(pieces))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_directives_are_refused() {
        let why = |text: &str| AccessFormat::parse(text).unwrap_err();
        assert_eq!(why("%Z"), "unknown directive %Z");
        assert_eq!(why("%{x}z"), "unknown directive %{x}z");
        assert_eq!(why("a %"), "ends with a lone %");
        let ok = AccessFormat::parse("%% %>s %{Host}i").unwrap();
        assert_eq!(
            ok.0,
            [
                Piece::Text("% ".to_owned()),
                Piece::Status,
                Piece::Text(" ".to_owned()),
                Piece::RequestHeader("Host".to_owned())
            ]
        );
    }
}
