//! A small, strict HTTP/1.1 client for the cloud metadata servers: plain HTTP to a link-local
//! address, one request per connection (`Connection: close`), no redirects, no proxies, no
//! compression, everything bounded.
//!
//! - the whole exchange (connect, send, response) must finish before a deadline; each read
//!   waits at most until then;
//! - the status line must be `HTTP/1.1` or `HTTP/1.0`, three digits, a reason without control
//!   characters; header lines end in CRLF, hold `NAME: VALUE` with a token name and no control
//!   character in the value, no obsolete line folding; at most [`MAX_HEAD`] bytes and
//!   [`MAX_HEADERS`] lines;
//! - the body (read only for status 200) is framed by `Content-Length` (every copy equal; a
//!   shorter body is [`HttpError::Truncated`]), by `Transfer-Encoding: chunked` (decoded,
//!   trailers bounded and ignored; not with a `Content-Length`, not in HTTP/1.0), or by the
//!   end of the connection; any other transfer coding is refused; never more than the caller's
//!   limit ([`HttpError::BodyTooLarge`]).

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// Largest response header (status line, header lines, the empty line).
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines in a response header (and in chunked trailers).
pub const MAX_HEADERS: usize = 64;
/// Longest chunk-size line (the size and any chunk extensions).
const MAX_CHUNK_LINE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("connecting to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("no complete response within {0:.1} s")]
    Timeout(f64),
    #[error("the server closed the connection {0}")]
    Closed(&'static str),
    #[error("the body ends after {got} of the {expected} bytes its Content-Length announced")]
    Truncated { got: usize, expected: usize },
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("the response header is larger than {MAX_HEAD} bytes or {MAX_HEADERS} lines")]
    HeadTooLarge,
    #[error("the body is larger than {limit} bytes{}", length.map(|l| format!(" ({l})")).unwrap_or_default())]
    BodyTooLarge { limit: usize, length: Option<usize> },
    #[error("transfer coding {0:?} is not supported (only chunked)")]
    TransferEncoding(String),
    #[error("request header {0:?} holds a control character")]
    BadRequestHeader(String),
}

impl HttpError {
    /// Worth another attempt: the server did not answer (yet), or the connection broke.
    /// A response that breaks the protocol, or is too large, is not.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            HttpError::Connect { .. }
                | HttpError::Io { .. }
                | HttpError::Timeout(_)
                | HttpError::Closed(_)
                | HttpError::Truncated { .. }
        )
    }
}

/// One request: no body (`PUT` sends `Content-Length: 0`).
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub method: &'a str,
    /// Absolute path and query, e.g. `/latest/user-data`.
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
}

#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub reason: String,
    /// In order received; names as sent (compare them case-insensitively: [`Response::headers`]).
    pub header_lines: Vec<(String, String)>,
    /// Read only for status 200; empty otherwise.
    pub body: Vec<u8>,
}

impl Response {
    /// Every value of the header `name` (case-insensitive).
    pub fn headers<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.header_lines
            .iter()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Send `req` to `addr` and read the response (the body only if the status is 200, at most
/// `max_body` bytes), all before `deadline`.
pub fn send(
    addr: SocketAddr,
    req: &Request,
    deadline: Instant,
    max_body: usize,
) -> Result<Response, HttpError> {
    let text = render(addr, req)?;
    let left = remaining(deadline)?;
    let stream = TcpStream::connect_timeout(&addr, left).map_err(|source| {
        if matches!(source.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) {
            HttpError::Timeout(left.as_secs_f64())
        } else {
            HttpError::Connect { addr, source }
        }
    })?;
    let mut c = Conn {
        stream,
        buf: Vec::new(),
        deadline,
        started: Instant::now(),
    };
    c.write_all(text.as_bytes())?;
    let head = c.read_head()?;
    if head.status != 200 {
        return Ok(head);
    }
    let body = c.read_body(&head, max_body)?;
    Ok(Response { body, ..head })
}

fn render(addr: SocketAddr, req: &Request) -> Result<String, HttpError> {
    let host = match addr {
        SocketAddr::V4(a) if a.port() == 80 => a.ip().to_string(),
        SocketAddr::V6(a) if a.port() == 80 => format!("[{}]", a.ip()),
        a => a.to_string(),
    };
    let mut text = format!(
        "{} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: nacre-init\r\nAccept: */*\r\nConnection: close\r\n",
        req.method, req.path
    );
    for (name, value) in req.headers {
        if name
            .bytes()
            .chain(value.bytes())
            .any(|b| b.is_ascii_control())
            || name.contains(':')
        {
            return Err(HttpError::BadRequestHeader((*name).to_owned()));
        }
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    if req.method != "GET" {
        text.push_str("Content-Length: 0\r\n");
    }
    text.push_str("\r\n");
    Ok(text)
}

fn remaining(deadline: Instant) -> Result<Duration, HttpError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        Err(HttpError::Timeout(0.0))
    } else {
        Ok(left)
    }
}

struct Conn {
    stream: TcpStream,
    /// Read but not yet consumed.
    buf: Vec<u8>,
    deadline: Instant,
    started: Instant,
}

impl Conn {
    fn timeout(&self) -> HttpError {
        HttpError::Timeout(self.started.elapsed().as_secs_f64())
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), HttpError> {
        let left = remaining(self.deadline).map_err(|_| self.timeout())?;
        self.stream
            .set_write_timeout(Some(left))
            .map_err(|source| HttpError::Io {
                what: "setting the write timeout",
                source,
            })?;
        self.stream.write_all(bytes).map_err(|source| {
            if matches!(source.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) {
                self.timeout()
            } else {
                HttpError::Io {
                    what: "sending the request",
                    source,
                }
            }
        })
    }

    /// Read more into `buf`; `false` at the end of the stream.
    fn fill(&mut self) -> Result<bool, HttpError> {
        let mut chunk = [0u8; 4096];
        loop {
            let left = remaining(self.deadline).map_err(|_| self.timeout())?;
            self.stream
                .set_read_timeout(Some(left))
                .map_err(|source| HttpError::Io {
                    what: "setting the read timeout",
                    source,
                })?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Ok(false),
                Ok(n) => {
                    self.buf.extend_from_slice(&chunk[..n]);
                    return Ok(true);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock) => {
                    return Err(self.timeout())
                }
                Err(source) => {
                    return Err(HttpError::Io {
                        what: "reading the response",
                        source,
                    })
                }
            }
        }
    }

    /// One line ending in CRLF (returned without it), at most `max` bytes with the CRLF.
    /// `Ok(None)`: the stream ended before any byte of it.
    fn line(
        &mut self,
        max: usize,
        too_long: impl Fn() -> HttpError,
        closed: &'static str,
    ) -> Result<Vec<u8>, HttpError> {
        let mut scanned = 0;
        loop {
            if let Some(i) = self.buf[scanned..].iter().position(|&b| b == b'\n') {
                let end = scanned + i;
                if end + 1 > max {
                    return Err(too_long());
                }
                if end == 0 || self.buf[end - 1] != b'\r' {
                    return Err(HttpError::Malformed(
                        "a line ends in a bare LF (CRLF required)".into(),
                    ));
                }
                let mut line: Vec<u8> = self.buf.drain(..=end).collect();
                line.truncate(end - 1);
                return Ok(line);
            }
            scanned = self.buf.len();
            if scanned >= max {
                return Err(too_long());
            }
            if !self.fill()? {
                return Err(HttpError::Closed(closed));
            }
        }
    }

    fn read_head(&mut self) -> Result<Response, HttpError> {
        let mut budget = MAX_HEAD;
        let mut take = |c: &mut Conn| -> Result<Vec<u8>, HttpError> {
            let l = c.line(
                budget,
                || HttpError::HeadTooLarge,
                "before the end of the response header",
            )?;
            budget = budget.saturating_sub(l.len() + 2);
            Ok(l)
        };
        let status_line = take(self)?;
        let (status, reason, http10) = parse_status_line(&status_line)?;
        let mut header_lines = Vec::new();
        loop {
            let l = take(self)?;
            if l.is_empty() {
                break;
            }
            if header_lines.len() == MAX_HEADERS {
                return Err(HttpError::HeadTooLarge);
            }
            header_lines.push(parse_header_line(&l)?);
        }
        let r = Response {
            status,
            reason,
            header_lines,
            body: Vec::new(),
        };
        if http10 && r.headers("transfer-encoding").next().is_some() {
            return Err(HttpError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 response".into(),
            ));
        }
        Ok(r)
    }

    fn read_body(&mut self, head: &Response, max: usize) -> Result<Vec<u8>, HttpError> {
        let te: Vec<&str> = head.headers("transfer-encoding").collect();
        let cl: Vec<&str> = head.headers("content-length").collect();
        if !te.is_empty() {
            if !cl.is_empty() {
                return Err(HttpError::Malformed(
                    "both Transfer-Encoding and Content-Length".into(),
                ));
            }
            if te.len() != 1 || !te[0].eq_ignore_ascii_case("chunked") {
                return Err(HttpError::TransferEncoding(te.join(", ")));
            }
            return self.read_chunked(max);
        }
        if let Some(first) = cl.first() {
            if cl.iter().any(|v| v != first) {
                return Err(HttpError::Malformed(format!(
                    "different Content-Length values: {}",
                    cl.join(", ")
                )));
            }
            let n = parse_length(first)?;
            if n > max {
                return Err(HttpError::BodyTooLarge {
                    limit: max,
                    length: Some(n),
                });
            }
            while self.buf.len() < n {
                if !self.fill()? {
                    return Err(HttpError::Truncated {
                        got: self.buf.len(),
                        expected: n,
                    });
                }
            }
            self.buf.truncate(n);
            return Ok(std::mem::take(&mut self.buf));
        }
        // Neither: the body ends with the connection.
        loop {
            if self.buf.len() > max {
                return Err(HttpError::BodyTooLarge {
                    limit: max,
                    length: None,
                });
            }
            if !self.fill()? {
                return Ok(std::mem::take(&mut self.buf));
            }
        }
    }

    fn read_chunked(&mut self, max: usize) -> Result<Vec<u8>, HttpError> {
        let mut body = Vec::new();
        loop {
            let line = self.line(
                MAX_CHUNK_LINE,
                || HttpError::Malformed("chunk-size line too long".into()),
                "in the chunked body",
            )?;
            let size = parse_chunk_size(&line)?;
            if size == 0 {
                break;
            }
            if body.len() + size > max {
                return Err(HttpError::BodyTooLarge {
                    limit: max,
                    length: None,
                });
            }
            while self.buf.len() < size + 2 {
                if !self.fill()? {
                    return Err(HttpError::Closed("in a chunk"));
                }
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(HttpError::Malformed(
                    "chunk data not followed by CRLF".into(),
                ));
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
        // Trailers: bounded like the header, then ignored.
        let mut budget = MAX_HEAD;
        for _ in 0..=MAX_HEADERS {
            let l = self.line(
                budget,
                || HttpError::HeadTooLarge,
                "in the chunked trailers",
            )?;
            if l.is_empty() {
                return Ok(body);
            }
            parse_header_line(&l)?;
            budget = budget.saturating_sub(l.len() + 2);
        }
        Err(HttpError::HeadTooLarge)
    }
}

fn text(line: &[u8]) -> Result<&str, HttpError> {
    std::str::from_utf8(line).map_err(|_| HttpError::Malformed("a header line is not UTF-8".into()))
}

/// `HTTP/1.1 200 OK` → (200, "OK", is HTTP/1.0).
fn parse_status_line(line: &[u8]) -> Result<(u16, String, bool), HttpError> {
    let bad = || {
        HttpError::Malformed(format!(
            "status line {:?}",
            String::from_utf8_lossy(&line[..line.len().min(80)])
        ))
    };
    let l = text(line).map_err(|_| bad())?;
    let (version, rest) = l.split_once(' ').ok_or_else(bad)?;
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        _ => return Err(bad()),
    };
    let (code, reason) = rest.split_once(' ').unwrap_or((rest, ""));
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let status: u16 = code.parse().map_err(|_| bad())?;
    if !(200..=599).contains(&status) {
        // No 1xx: nothing here asks for one (no Expect, no Upgrade).
        return Err(bad());
    }
    if reason.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(bad());
    }
    Ok((status, reason.to_owned(), http10))
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn parse_header_line(line: &[u8]) -> Result<(String, String), HttpError> {
    if line.first().is_some_and(|&b| b == b' ' || b == b'\t') {
        return Err(HttpError::Malformed("obsolete header line folding".into()));
    }
    let l = text(line)?;
    let (name, value) = l
        .split_once(':')
        .ok_or_else(|| HttpError::Malformed(format!("header line without ':': {:?}", trim80(l))))?;
    if name.is_empty() || !name.bytes().all(is_tchar) {
        return Err(HttpError::Malformed(format!(
            "header name {:?}",
            trim80(name)
        )));
    }
    let value = value.trim_matches([' ', '\t']);
    if value.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
        return Err(HttpError::Malformed(format!(
            "control character in header {name}"
        )));
    }
    Ok((name.to_owned(), value.to_owned()))
}

fn trim80(s: &str) -> &str {
    match s.char_indices().nth(80) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A Content-Length: decimal digits only.
fn parse_length(v: &str) -> Result<usize, HttpError> {
    if v.is_empty() || v.len() > 12 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HttpError::Malformed(format!("Content-Length {v:?}")));
    }
    v.parse()
        .map_err(|_| HttpError::Malformed(format!("Content-Length {v:?}")))
}

/// `1a;ext=1` → 26: 1-8 hex digits, then optional whitespace and chunk extensions (ignored).
fn parse_chunk_size(line: &[u8]) -> Result<usize, HttpError> {
    let l = text(line)?;
    let size = l
        .split(';')
        .next()
        .unwrap_or("")
        .trim_end_matches([' ', '\t']);
    if size.is_empty() || size.len() > 8 || !size.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(HttpError::Malformed(format!("chunk size {:?}", trim80(l))));
    }
    usize::from_str_radix(size, 16)
        .map_err(|_| HttpError::Malformed(format!("chunk size {size:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_and_header_lines_are_strict() {
        assert_eq!(
            parse_status_line(b"HTTP/1.1 200 OK").unwrap(),
            (200, "OK".into(), false)
        );
        assert_eq!(parse_status_line(b"HTTP/1.0 404").unwrap().0, 404);
        for bad in [
            &b"HTTP/2 200 OK"[..],
            b"HTTP/1.1 20 OK",
            b"HTTP/1.1 2000 OK",
            b"HTTP/1.1 100 Continue",
            b"HTTP/1.1 200 O\x01K",
            b"ICY 200 OK",
        ] {
            assert!(parse_status_line(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            parse_header_line(b"Metadata-Flavor:  Google ").unwrap(),
            ("Metadata-Flavor".into(), "Google".into())
        );
        for bad in [
            &b" folded"[..],
            b"no colon",
            b"Bad Name: x",
            b": empty",
            b"X: a\x00b",
        ] {
            assert!(parse_header_line(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_chunk_size(b"1a;name=v").unwrap(), 26);
        assert_eq!(parse_chunk_size(b"0").unwrap(), 0);
        for bad in [&b""[..], b"x", b"123456789", b"-1", b" 1"] {
            assert!(parse_chunk_size(bad).is_err(), "{bad:?}");
        }
        assert!(parse_length("+5").is_err());
        assert_eq!(parse_length("5").unwrap(), 5);
    }

    #[test]
    fn request_headers_cannot_inject_lines() {
        let a: SocketAddr = "169.254.169.254:80".parse().unwrap();
        let r = Request {
            method: "PUT",
            path: "/latest/api/token",
            headers: &[("X-aws-ec2-metadata-token-ttl-seconds", "60")],
        };
        let t = render(a, &r).unwrap();
        assert!(t.starts_with("PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n"));
        assert!(t.contains("Connection: close\r\n"));
        assert!(
            t.ends_with("X-aws-ec2-metadata-token-ttl-seconds: 60\r\nContent-Length: 0\r\n\r\n")
        );
        let r = Request {
            method: "GET",
            path: "/",
            headers: &[("X", "a\r\nEvil: 1")],
        };
        assert!(matches!(render(a, &r), Err(HttpError::BadRequestHeader(_))));
    }
}
