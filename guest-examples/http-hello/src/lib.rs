//! A wasi:http component, built with the `wasip2` crate's bindings only.
//! Its routes show what a request and a response can carry:
//!
//! | route | response |
//! | --- | --- |
//! | `GET /` | `Hello from a wasi:http component!` |
//! | `/echo` (any method) | the request body, with its `content-type`; `x-method` says the method |
//! | `/headers` | the request's headers, one `name: value` a line, sorted |
//! | `/stream?n=N` | `N` lines (at most 10 000), each written on its own (a chunked body) |
//! | `/status/NNN` | status `NNN`, its number as the body |
//! | `/fetch?url=URL` | `GET URL` from the component (an outgoing request): its status and body, or `502` and why |
//! | `/trap` | the component panics (the host answers for it) |
//! | anything else | `404` |

use wasip2::exports::http::incoming_handler::Guest;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingRequest, Method, OutgoingBody, OutgoingRequest,
    OutgoingResponse, ResponseOutparam, Scheme,
};
use wasip2::io::streams::StreamError;

struct Hello;

impl Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_else(|| "/".to_owned());
        let (path, query) = match target.split_once('?') {
            Some((path, query)) => (path.to_owned(), query.to_owned()),
            None => (target.clone(), String::new()),
        };
        match path.as_str() {
            "/" => reply(
                out,
                200,
                &[("content-type", "text/plain")],
                b"Hello from a wasi:http component!\n",
            ),
            "/echo" => echo(request, out),
            "/headers" => headers(&request, out),
            "/stream" => stream(
                out,
                param(&query, "n").and_then(|n| n.parse().ok()).unwrap_or(3),
            ),
            "/fetch" => fetch(out, &param(&query, "url").unwrap_or_default()),
            "/trap" => panic!("asked to trap"),
            p if p.starts_with("/status/") => {
                let code = p["/status/".len()..].parse().unwrap_or(500);
                reply(
                    out,
                    code,
                    &[("content-type", "text/plain")],
                    format!("{code}\n").as_bytes(),
                );
            }
            _ => reply(out, 404, &[("content-type", "text/plain")], b"not found\n"),
        }
    }
}

wasip2::http::proxy::export!(Hello);

/// The value of `key` in query string `query`.
fn param(query: &str, key: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_owned())
}

/// Sends a whole response.
fn reply(out: ResponseOutparam, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut all: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    all.push((
        "content-length".to_owned(),
        body.len().to_string().into_bytes(),
    ));
    let (response_body, stream) = start(out, status, &all);
    write(&stream, body);
    drop(stream);
    OutgoingBody::finish(response_body, None).expect("finish the body");
}

/// Sends the status and headers; gives the body to write.
fn start(
    out: ResponseOutparam,
    status: u16,
    headers: &[(String, Vec<u8>)],
) -> (OutgoingBody, wasip2::io::streams::OutputStream) {
    let fields = Fields::from_list(headers).expect("valid headers");
    let response = OutgoingResponse::new(fields);
    response.set_status_code(status).expect("a valid status");
    let body = response.body().expect("the body");
    ResponseOutparam::set(out, Ok(response));
    let stream = body.write().expect("the body's stream");
    (body, stream)
}

/// Writes `bytes` whole (at most 4096 at a time, as the stream allows).
fn write(stream: &wasip2::io::streams::OutputStream, bytes: &[u8]) {
    for chunk in bytes.chunks(4096) {
        stream
            .blocking_write_and_flush(chunk)
            .expect("write the body");
    }
}

/// Reads a whole body.
fn read_all(body: IncomingBody) -> Result<Vec<u8>, String> {
    let mut all = Vec::new();
    {
        let stream = body.stream().map_err(|()| "no body stream".to_owned())?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => all.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => return Err(e.to_debug_string()),
            }
        }
    }
    let _ = IncomingBody::finish(body);
    Ok(all)
}

fn echo(request: IncomingRequest, out: ResponseOutparam) {
    let method = method_name(&request.method());
    let content_type = request.headers().get("content-type");
    let body = request
        .consume()
        .map_err(|()| "no body".to_owned())
        .and_then(read_all);
    match body {
        Ok(body) => {
            let mut headers = vec![("x-method".to_owned(), method.into_bytes())];
            if let Some(ct) = content_type.into_iter().next() {
                headers.push(("content-type".to_owned(), ct));
            }
            headers.push((
                "content-length".to_owned(),
                body.len().to_string().into_bytes(),
            ));
            let (response_body, stream) = start(out, 200, &headers);
            write(&stream, &body);
            drop(stream);
            OutgoingBody::finish(response_body, None).expect("finish the body");
        }
        Err(why) => reply(
            out,
            400,
            &[("content-type", "text/plain")],
            format!("cannot read the body: {why}\n").as_bytes(),
        ),
    }
}

fn headers(request: &IncomingRequest, out: ResponseOutparam) {
    let mut lines: Vec<String> = request
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(&value)))
        .collect();
    lines.sort();
    reply(
        out,
        200,
        &[("content-type", "text/plain")],
        lines.concat().as_bytes(),
    );
}

fn stream(out: ResponseOutparam, n: u32) {
    let headers = [("content-type".to_owned(), b"text/plain".to_vec())];
    let (body, stream) = start(out, 200, &headers);
    for i in 0..n.min(10_000) {
        write(&stream, format!("line {i}\n").as_bytes());
    }
    drop(stream);
    OutgoingBody::finish(body, None).expect("finish the body");
}

fn fetch(out: ResponseOutparam, url: &str) {
    match get(url) {
        Ok((status, body)) => reply(out, status, &[("content-type", "text/plain")], &body),
        Err(why) => reply(
            out,
            502,
            &[("content-type", "text/plain")],
            format!("{why}\n").as_bytes(),
        ),
    }
}

/// `GET url`: its status and body.
fn get(url: &str) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = url.split_once("://").ok_or("not an absolute URL")?;
    let (authority, path) = match rest.find('/') {
        Some(at) => (&rest[..at], &rest[at..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    request
        .set_scheme(Some(&match scheme {
            "https" => Scheme::Https,
            _ => Scheme::Http,
        }))
        .map_err(|()| "bad scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|()| "bad authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|()| "bad path")?;
    let body = request.body().map_err(|()| "no body")?;
    OutgoingBody::finish(body, None).map_err(|e| format!("{e:?}"))?;
    let future = outgoing_handler::handle(request, None).map_err(describe)?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken")?
        .map_err(describe)?;
    let status = response.status();
    let body = read_all(response.consume().map_err(|()| "no body")?)?;
    Ok((status, body))
}

fn describe(code: ErrorCode) -> String {
    format!("outgoing request failed: {code:?}")
}

fn method_name(method: &Method) -> String {
    match method {
        Method::Get => "GET".into(),
        Method::Head => "HEAD".into(),
        Method::Post => "POST".into(),
        Method::Put => "PUT".into(),
        Method::Delete => "DELETE".into(),
        Method::Connect => "CONNECT".into(),
        Method::Options => "OPTIONS".into(),
        Method::Trace => "TRACE".into(),
        Method::Patch => "PATCH".into(),
        Method::Other(other) => other.clone(),
    }
}
