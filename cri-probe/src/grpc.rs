//! Unary gRPC over HTTP/2 on a unix socket, as kubelet's CRI client speaks it to containerd: a
//! POST to `/<package>.<Service>/<Method>` with `content-type: application/grpc` and
//! `te: trailers`, the request as one length-prefixed message (1 byte compressed flag, 4 bytes
//! big-endian length, the protobuf bytes), the answer likewise, and the call's outcome in the
//! `grpc-status`/`grpc-message` trailers (or in the headers of a trailers-only answer).

use std::path::Path;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use http::{HeaderMap, Method, Request};
use prost::Message;
use tokio::net::UnixStream;

/// The largest answer the probe accepts (kubelet's default is 16 MiB).
pub const MAX_MESSAGE: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to {path}: {source}")]
    Connect {
        path: String,
        source: std::io::Error,
    },
    #[error("HTTP/2 with {path}: {source}")]
    Handshake { path: String, source: h2::Error },
    #[error("{method}: HTTP/2: {source}")]
    H2 { method: String, source: h2::Error },
    #[error("{method}: building the request: {source}")]
    Request { method: String, source: http::Error },
    #[error("{method}: HTTP status {status} (not 200)")]
    HttpStatus { method: String, status: u16 },
    #[error("{method}: gRPC status {code} ({}): {message}", code_name(*.code))]
    Status {
        method: String,
        code: u32,
        message: String,
    },
    #[error("{method}: the answer carries no grpc-status")]
    NoStatus { method: String },
    #[error("{method}: malformed gRPC answer: {why}")]
    Frame { method: String, why: String },
    #[error("{method}: decoding {message}: {source}")]
    Decode {
        method: String,
        message: &'static str,
        source: prost::DecodeError,
    },
    #[error("{method}: no answer within {secs} s")]
    Timeout { method: String, secs: u64 },
}

/// gRPC's status code names (grpc/grpc doc/statuscodes.md).
pub fn code_name(code: u32) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    NAMES
        .get(code as usize)
        .copied()
        .unwrap_or("not a gRPC code")
}

/// One message in gRPC's length-prefixed framing, uncompressed.
pub fn frame(message: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + message.len());
    b.put_u8(0);
    b.put_u32(message.len() as u32);
    b.put_slice(message);
    b.freeze()
}

/// The single message of a unary answer's body: exactly one uncompressed frame, nothing after it.
pub fn unframe(mut body: &[u8]) -> Result<&[u8], String> {
    if body.len() < 5 {
        return Err(format!(
            "{} bytes of body, a message needs at least the 5-byte prefix",
            body.len()
        ));
    }
    let flag = body.get_u8();
    let len = body.get_u32() as usize;
    if flag != 0 {
        return Err(format!(
            "compressed-flag {flag}, but the probe asked for no compression"
        ));
    }
    if len > MAX_MESSAGE {
        return Err(format!("a {len}-byte message, more than {MAX_MESSAGE}"));
    }
    if body.len() < len {
        return Err(format!(
            "the prefix says {len} bytes, the body has {}",
            body.len()
        ));
    }
    if body.len() > len {
        return Err(format!(
            "{} bytes after the message (a unary answer has one)",
            body.len() - len
        ));
    }
    Ok(body)
}

/// grpc-message is percent-encoded (gRPC over HTTP/2, "Responses").
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 3 <= b.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The call's status from a header map that carries `grpc-status`, if it does.
fn status_of(method: &str, h: &HeaderMap) -> Option<Result<(), Error>> {
    let code = h.get("grpc-status")?;
    let code = match code.to_str().ok().and_then(|c| c.parse::<u32>().ok()) {
        Some(c) => c,
        None => {
            return Some(Err(Error::Frame {
                method: method.into(),
                why: format!("grpc-status {code:?} is not a number"),
            }))
        }
    };
    if code == 0 {
        return Some(Ok(()));
    }
    let message = h
        .get("grpc-message")
        .and_then(|m| m.to_str().ok())
        .map(percent_decode)
        .unwrap_or_default();
    Some(Err(Error::Status {
        method: method.into(),
        code,
        message,
    }))
}

/// A connection to a gRPC server on a unix socket.
pub struct Client {
    send: h2::client::SendRequest<Bytes>,
    timeout: Duration,
}

impl Client {
    /// Connects and does the HTTP/2 handshake; the connection is driven by a task on the
    /// current runtime. `timeout` bounds every call.
    pub async fn connect(path: &Path, timeout: Duration) -> Result<Client, Error> {
        let shown = path.display().to_string();
        let io = UnixStream::connect(path)
            .await
            .map_err(|source| Error::Connect {
                path: shown.clone(),
                source,
            })?;
        let (send, conn) = h2::client::Builder::new()
            .max_frame_size(1 << 20)
            .handshake(io)
            .await
            .map_err(|source| Error::Handshake {
                path: shown,
                source,
            })?;
        tokio::spawn(async move {
            // Ends when the connection closes; errors surface in the calls.
            let _ = conn.await;
        });
        Ok(Client { send, timeout })
    }

    /// One unary call: `path` is `/runtime.v1.RuntimeService/Version` and the like.
    pub async fn call<Req: Message, Resp: Message + Default>(
        &mut self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, Error> {
        let secs = self.timeout.as_secs();
        match tokio::time::timeout(self.timeout, self.call_inner(path, req)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Timeout {
                method: path.into(),
                secs,
            }),
        }
    }

    async fn call_inner<Req: Message, Resp: Message + Default>(
        &mut self,
        path: &str,
        req: &Req,
    ) -> Result<Resp, Error> {
        let h2e = |source| Error::H2 {
            method: path.into(),
            source,
        };
        let request = Request::builder()
            .method(Method::POST)
            .uri(format!("http://localhost{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "nacre-cri-probe")
            .body(())
            .map_err(|source| Error::Request {
                method: path.into(),
                source,
            })?;
        let mut send = self.send.clone().ready().await.map_err(h2e)?;
        let (answer, mut body_out) = send.send_request(request, false).map_err(h2e)?;
        body_out
            .send_data(frame(&req.encode_to_vec()), true)
            .map_err(h2e)?;
        let answer = answer.await.map_err(h2e)?;
        let status = answer.status().as_u16();
        if status != 200 {
            return Err(Error::HttpStatus {
                method: path.into(),
                status,
            });
        }
        let (head, mut body) = answer.into_parts();
        // Trailers-only: the status is in the headers and there is no message.
        if let Some(Err(e)) = status_of(path, &head.headers) {
            return Err(e);
        }
        let mut data = BytesMut::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(h2e)?;
            let n = chunk.len();
            data.extend_from_slice(&chunk);
            let _ = body.flow_control().release_capacity(n);
            if data.len() > MAX_MESSAGE + 5 {
                return Err(Error::Frame {
                    method: path.into(),
                    why: format!("more than {MAX_MESSAGE} bytes"),
                });
            }
        }
        let trailers = body.trailers().await.map_err(h2e)?.unwrap_or_default();
        match status_of(path, &trailers).or_else(|| status_of(path, &head.headers)) {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => {
                return Err(Error::NoStatus {
                    method: path.into(),
                })
            }
        }
        let message = unframe(&data).map_err(|why| Error::Frame {
            method: path.into(),
            why,
        })?;
        Resp::decode(message).map_err(|source| Error::Decode {
            method: path.into(),
            message: std::any::type_name::<Resp>(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_is_flag_length_message() {
        assert_eq!(&frame(b"\x0a\x02v1")[..], b"\x00\x00\x00\x00\x04\x0a\x02v1");
        assert_eq!(
            unframe(b"\x00\x00\x00\x00\x04\x0a\x02v1").unwrap(),
            b"\x0a\x02v1"
        );
        assert_eq!(unframe(b"\x00\x00\x00\x00\x00").unwrap(), b"");
    }

    #[test]
    fn a_bad_frame_is_refused_with_the_reason() {
        assert!(unframe(b"\x00\x00\x00")
            .unwrap_err()
            .contains("5-byte prefix"));
        assert!(unframe(b"\x01\x00\x00\x00\x01x")
            .unwrap_err()
            .contains("compressed"));
        assert!(unframe(b"\x00\x00\x00\x00\x09abc")
            .unwrap_err()
            .contains("says 9"));
        assert!(unframe(b"\x00\x00\x00\x00\x01ab")
            .unwrap_err()
            .contains("1 bytes after"));
        assert!(unframe(b"\x00\x7f\x00\x00\x00")
            .unwrap_err()
            .contains("more than"));
    }

    #[test]
    fn grpc_message_is_percent_decoded() {
        assert_eq!(
            percent_decode("image %22x%22 not found%3A 100%"),
            "image \"x\" not found: 100%"
        );
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }

    #[test]
    fn status_from_headers() {
        let mut h = HeaderMap::new();
        assert!(status_of("m", &h).is_none());
        h.insert("grpc-status", "0".parse().unwrap());
        assert!(matches!(status_of("m", &h), Some(Ok(()))));
        h.insert("grpc-status", "5".parse().unwrap());
        h.insert("grpc-message", "no%20such%20pod".parse().unwrap());
        let e = status_of("/runtime.v1.RuntimeService/PodSandboxStatus", &h)
            .unwrap()
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "/runtime.v1.RuntimeService/PodSandboxStatus: gRPC status 5 (NOT_FOUND): no such pod"
        );
        h.insert("grpc-status", "x".parse().unwrap());
        assert!(matches!(status_of("m", &h), Some(Err(Error::Frame { .. }))));
    }
}
