//! The cloud sources against local imitations of their metadata servers (a TcpListener on
//! 127.0.0.1 answering with canned bytes): the IMDSv2 token flow, GCE's Metadata-Flavor,
//! Azure's base64, 404, oversized, truncated, chunked and malformed responses, retries and
//! timeouts.

use nacre_cluster::{http::HttpError, parse, ConfigError, Platform, Source, MAX_LEN};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CA: &str = include_str!("data/test-ca.pem");

fn config() -> String {
    nacre_cluster::ClusterConfig::new(
        "cloud-1",
        "10.0.2.2:7443".parse().unwrap(),
        CA,
        vec!["10.244.0.0/16".into()],
    )
    .unwrap()
    .render()
    .unwrap()
}

/// A request as the server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

impl Seen {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the imitation does with a connection.
enum Reply {
    /// These bytes, then close.
    Bytes(Vec<u8>),
    /// Nothing for this long (holding the connection), then close.
    Stall(Duration),
    /// These bytes, then hold the connection open for this long.
    BytesThenStall(Vec<u8>, Duration),
}

type Handler = dyn Fn(usize, &Seen) -> Reply + Send + Sync;

struct Server {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    fn start(handler: impl Fn(usize, &Seen) -> Reply + Send + Sync + 'static) -> Server {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let handler: Arc<Handler> = Arc::new(handler);
        std::thread::spawn(move || {
            for (i, conn) in l.incoming().enumerate() {
                let Ok(mut c) = conn else { continue };
                let seen = s2.clone();
                let h = handler.clone();
                std::thread::spawn(move || {
                    let Some(req) = read_request(&mut c) else {
                        return;
                    };
                    seen.lock().unwrap().push(req.clone());
                    match h(i, &req) {
                        Reply::Bytes(b) => {
                            let _ = c.write_all(&b);
                        }
                        Reply::Stall(d) => std::thread::sleep(d),
                        Reply::BytesThenStall(b, d) => {
                            let _ = c.write_all(&b);
                            std::thread::sleep(d);
                        }
                    }
                });
            }
        });
        Server { addr, seen }
    }

    fn platform(&self, wait_ms: u64) -> Platform {
        Platform {
            metadata: self.addr,
            wait: Duration::from_millis(wait_ms),
            request_timeout: Duration::from_millis(500),
            ..Platform::node()
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn read_request(c: &mut TcpStream) -> Option<Seen> {
    c.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut b = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut b).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&b[..n]);
    }
    let text = String::from_utf8(buf).ok()?;
    let mut lines = text.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(": "))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Some(Seen {
        method,
        path,
        headers,
    })
}

fn response(status: &str, headers: &[&str], body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\n");
    for h in headers {
        r.push_str(h);
        r.push_str("\r\n");
    }
    r.push_str("\r\n");
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

fn ok(headers: &[&str], body: &[u8]) -> Vec<u8> {
    let cl = format!("Content-Length: {}", body.len());
    let mut h = headers.to_vec();
    h.push(&cl);
    response("200 OK", &h, body)
}

fn read(source: Source, p: &Platform) -> Result<Vec<u8>, ConfigError> {
    source.read(p, &|l| eprintln!("retry: {l}"))
}

/// The AWS imitation: PUT token (TTL header required), GET user-data with that token.
fn aws_server(user_data: Option<Vec<u8>>) -> Server {
    Server::start(move |_, r| match (r.method.as_str(), r.path.as_str()) {
        ("PUT", "/latest/api/token") => match r.header("X-aws-ec2-metadata-token-ttl-seconds") {
            Some(t) if t.parse::<u32>().is_ok_and(|t| (1..=21600).contains(&t)) => {
                Reply::Bytes(ok(&["Content-Type: text/plain"], b"AQAEAtok-en=="))
            }
            _ => Reply::Bytes(response("400 Bad Request", &["Content-Length: 0"], b"")),
        },
        ("GET", "/latest/user-data") => {
            if r.header("X-aws-ec2-metadata-token") != Some("AQAEAtok-en==") {
                return Reply::Bytes(response("401 Unauthorized", &["Content-Length: 0"], b""));
            }
            match &user_data {
                Some(d) => Reply::Bytes(ok(&[], d)),
                None => Reply::Bytes(response("404 Not Found", &["Content-Length: 0"], b"")),
            }
        }
        _ => Reply::Bytes(response("404 Not Found", &["Content-Length: 0"], b"")),
    })
}

#[test]
fn aws_imdsv2_token_then_user_data() {
    let text = config();
    let s = aws_server(Some(text.clone().into_bytes()));
    let bytes = read(Source::AwsImds, &s.platform(2000)).unwrap();
    assert_eq!(bytes, text.as_bytes());
    assert_eq!(parse(&bytes).unwrap().config.name, "cloud-1");
    let seen = s.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0].method, "PUT");
    assert_eq!(
        seen[0].header("X-aws-ec2-metadata-token-ttl-seconds"),
        Some("60")
    );
    assert_eq!(seen[0].header("Content-Length"), Some("0"));
    assert_eq!(seen[1].method, "GET");
    assert_eq!(seen[1].path, "/latest/user-data");
    assert_eq!(seen[1].header("Connection"), Some("close"));
    assert_eq!(seen[1].header("Host"), Some(s.addr.to_string().as_str()));
}

#[test]
fn aws_without_user_data_is_missing_at_once() {
    let s = aws_server(None);
    let t = Instant::now();
    let e = read(Source::AwsImds, &s.platform(5000)).unwrap_err();
    assert!(matches!(e, ConfigError::Missing(_)), "{e}");
    assert!(
        e.to_string().contains("/latest/user-data (HTTP 404)"),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(2));
}

#[test]
fn aws_expired_token_and_server_errors_are_retried() {
    let text = config();
    let body = text.clone().into_bytes();
    // 1st connection: 503 on the token; 2nd+3rd: token, then 401; then the real flow.
    let s = Server::start(move |i, r| match (i, r.method.as_str()) {
        (0, _) => Reply::Bytes(response(
            "503 Service Unavailable",
            &["Content-Length: 0"],
            b"",
        )),
        (_, "PUT") => Reply::Bytes(ok(&[], format!("tok{i}").as_bytes())),
        (2, "GET") => Reply::Bytes(response("401 Unauthorized", &["Content-Length: 0"], b"")),
        (_, "GET") if r.header("X-aws-ec2-metadata-token") == Some("tok3") => {
            Reply::Bytes(ok(&[], &body))
        }
        _ => Reply::Bytes(response("400 Bad Request", &["Content-Length: 0"], b"")),
    });
    assert_eq!(
        read(Source::AwsImds, &s.platform(5000)).unwrap(),
        text.as_bytes()
    );
    assert_eq!(s.seen().len(), 5);
}

#[test]
fn aws_token_with_spaces_is_refused() {
    let s = Server::start(|_, _| Reply::Bytes(ok(&[], b"a token")));
    let e = read(Source::AwsImds, &s.platform(2000)).unwrap_err();
    assert!(matches!(e, ConfigError::Token { .. }), "{e}");
}

fn gcp_server(flavor: Option<&'static str>, status: &'static str, body: Vec<u8>) -> Server {
    Server::start(move |_, r| {
        if r.header("Metadata-Flavor") != Some("Google") {
            return Reply::Bytes(response(
                "403 Forbidden",
                &["Metadata-Flavor: Google", "Content-Length: 0"],
                b"",
            ));
        }
        let mut h = vec![format!("Content-Length: {}", body.len())];
        if let Some(f) = flavor {
            h.push(format!("Metadata-Flavor: {f}"));
        }
        let h: Vec<&str> = h.iter().map(String::as_str).collect();
        Reply::Bytes(response(status, &h, &body))
    })
}

#[test]
fn gcp_attribute_with_metadata_flavor() {
    let text = config();
    let s = gcp_server(Some("Google"), "200 OK", text.clone().into_bytes());
    assert_eq!(
        read(Source::GcpMetadata, &s.platform(2000)).unwrap(),
        text.as_bytes()
    );
    let seen = s.seen();
    assert_eq!(
        seen[0].path,
        "/computeMetadata/v1/instance/attributes/nacre-cluster"
    );
    assert_eq!(seen[0].header("Metadata-Flavor"), Some("Google"));
}

#[test]
fn gcp_without_or_with_another_metadata_flavor_is_refused() {
    for flavor in [None, Some("google"), Some("Googlebot")] {
        let s = gcp_server(flavor, "200 OK", config().into_bytes());
        let e = read(Source::GcpMetadata, &s.platform(2000)).unwrap_err();
        assert!(matches!(e, ConfigError::Flavor { .. }), "{flavor:?}: {e}");
        assert!(e.to_string().contains("Metadata-Flavor: Google"), "{e}");
    }
    // Two headers, even if one is right.
    let s = Server::start(|_, _| {
        Reply::Bytes(ok(
            &["Metadata-Flavor: Google", "Metadata-Flavor: Other"],
            b"x",
        ))
    });
    let e = read(Source::GcpMetadata, &s.platform(2000)).unwrap_err();
    assert!(matches!(e, ConfigError::Flavor { .. }), "{e}");
}

#[test]
fn gcp_404_is_missing() {
    let s = gcp_server(Some("Google"), "404 Not Found", b"not found".to_vec());
    let e = read(Source::GcpMetadata, &s.platform(2000)).unwrap_err();
    assert!(matches!(e, ConfigError::Missing(_)), "{e}");
    let s = gcp_server(Some("Google"), "403 Forbidden", vec![]);
    let e = read(Source::GcpMetadata, &s.platform(2000)).unwrap_err();
    assert!(matches!(e, ConfigError::Status { status: 403, .. }), "{e}");
}

#[test]
fn oversized_bodies_are_refused_whatever_the_framing() {
    let big = vec![b'#'; MAX_LEN + 1];
    let s = gcp_server(Some("Google"), "200 OK", big.clone());
    let e = read(Source::GcpMetadata, &s.platform(2000)).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Http {
                err: HttpError::BodyTooLarge {
                    length: Some(65537),
                    ..
                },
                ..
            }
        ),
        "{e}"
    );
    // No Content-Length: the body ends with the connection; still capped.
    let s = Server::start(move |_, _| {
        Reply::Bytes(response("200 OK", &["Metadata-Flavor: Google"], &big))
    });
    let e = read(Source::GcpMetadata, &s.platform(2000)).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Http {
                err: HttpError::BodyTooLarge { length: None, .. },
                ..
            }
        ),
        "{e}"
    );
    // An endless header.
    let s = Server::start(|_, _| {
        let mut h = b"HTTP/1.1 200 OK\r\nX-Long: ".to_vec();
        h.extend(std::iter::repeat_n(b'a', 20_000));
        Reply::Bytes(h)
    });
    let e = read(Source::GcpMetadata, &s.platform(2000)).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Http {
                err: HttpError::HeadTooLarge,
                ..
            }
        ),
        "{e}"
    );
    // Too many header lines.
    let s = Server::start(|_, _| {
        let h: Vec<String> = (0..100).map(|i| format!("X-{i}: y")).collect();
        let h: Vec<&str> = h.iter().map(String::as_str).collect();
        Reply::Bytes(ok(&h, b""))
    });
    let e = read(Source::AzureImds, &s.platform(2000)).unwrap_err();
    assert!(
        matches!(
            e,
            ConfigError::Http {
                err: HttpError::HeadTooLarge,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn a_truncated_body_is_retried_then_reported() {
    let s = Server::start(|_, _| {
        Reply::Bytes(response(
            "200 OK",
            &["Metadata-Flavor: Google", "Content-Length: 100"],
            b"only fifty bytes, then the server hangs up.......",
        ))
    });
    let t = Instant::now();
    let e = read(Source::GcpMetadata, &s.platform(1000)).unwrap_err();
    let ConfigError::GaveUp { attempts, last, .. } = &e else {
        panic!("{e}")
    };
    assert!(*attempts >= 2, "{e}");
    assert!(
        matches!(
            **last,
            ConfigError::Http {
                err: HttpError::Truncated {
                    got: 49,
                    expected: 100
                },
                ..
            }
        ),
        "{e}"
    );
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
}

#[test]
fn chunked_bodies_are_decoded() {
    let text = config();
    let body = text.clone();
    let s = Server::start(move |_, _| {
        let (a, b) = body.as_bytes().split_at(100);
        let mut r =
            b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        r.extend(format!("{:x};ext=1\r\n", a.len()).as_bytes());
        r.extend(a);
        r.extend(format!("\r\n{:X}\r\n", b.len()).as_bytes());
        r.extend(b);
        r.extend(b"\r\n0\r\nX-Trailer: t\r\n\r\n");
        Reply::Bytes(r)
    });
    assert_eq!(
        read(Source::GcpMetadata, &s.platform(2000)).unwrap(),
        text.as_bytes()
    );
}

#[test]
fn bad_framing_is_refused_with_a_clear_error() {
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "chunk without CRLF",
            b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcX\r\n0\r\n\r\n".to_vec(),
            "CRLF",
        ),
        (
            "bad chunk size",
            b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
            "chunk size",
        ),
        (
            "gzip",
            b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nTransfer-Encoding: gzip, chunked\r\n\r\n".to_vec(),
            "not supported",
        ),
        (
            "both framings",
            b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n".to_vec(),
            "both",
        ),
        (
            "two lengths",
            b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
            "different Content-Length",
        ),
        (
            "bare LF",
            b"HTTP/1.1 200 OK\nMetadata-Flavor: Google\n\nabc".to_vec(),
            "bare LF",
        ),
        (
            "not HTTP",
            b"SSH-2.0-OpenSSH\r\n\r\n".to_vec(),
            "status line",
        ),
    ];
    for (what, bytes, expect) in cases {
        let s = Server::start(move |_, _| Reply::Bytes(bytes.clone()));
        let t = Instant::now();
        let e = read(Source::GcpMetadata, &s.platform(3000)).unwrap_err();
        assert!(e.to_string().contains(expect), "{what}: {e}");
        assert!(
            !matches!(e, ConfigError::GaveUp { .. }),
            "{what}: retried: {e}"
        );
        assert!(t.elapsed() < Duration::from_secs(1), "{what}");
    }
}

fn azure_server(body: Vec<u8>) -> Server {
    Server::start(move |_, r| {
        if r.header("Metadata") != Some("true") {
            return Reply::Bytes(response("400 Bad Request", &["Content-Length: 0"], b""));
        }
        Reply::Bytes(ok(&["Content-Type: text/plain; charset=utf-8"], &body))
    })
}

#[test]
fn azure_user_data_is_strict_base64() {
    use base64::Engine;
    let text = config();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&text);
    for body in [b64.clone(), format!("{b64}\n"), format!("{b64}\r\n")] {
        let s = azure_server(body.into_bytes());
        assert_eq!(
            read(Source::AzureImds, &s.platform(2000)).unwrap(),
            text.as_bytes()
        );
        let seen = s.seen();
        assert_eq!(
            seen[0].path,
            "/metadata/instance/compute/userData?api-version=2021-01-01&format=text"
        );
        assert_eq!(seen[0].header("Metadata"), Some("true"));
    }
    let mut wrapped = b64.clone();
    wrapped.insert(76, '\n');
    for bad in [
        wrapped,
        b64.trim_end_matches('=').to_owned(),
        format!("{b64} "),
        b64.replacen('A', "-", 1),
        format!("{b64}\n\n"),
        "QQ=".into(),
    ] {
        let s = azure_server(bad.clone().into_bytes());
        let e = read(Source::AzureImds, &s.platform(2000)).unwrap_err();
        assert!(matches!(e, ConfigError::Base64 { .. }), "{bad:?}: {e}");
    }
    // No user data: IMDS answers 200 with an empty body.
    let s = azure_server(vec![]);
    let e = read(Source::AzureImds, &s.platform(2000)).unwrap_err();
    assert!(matches!(e, ConfigError::Missing(_)), "{e}");
    // Base64 of more than MAX_LEN bytes.
    let big = base64::engine::general_purpose::STANDARD.encode(vec![b'#'; MAX_LEN + 1]);
    let s = azure_server(big.into_bytes());
    let e = read(Source::AzureImds, &s.platform(2000)).unwrap_err();
    assert!(matches!(e, ConfigError::TooLarge(65537)), "{e}");
}

#[test]
fn a_slow_server_times_out_within_the_budget() {
    // Accepts, reads the request, never answers.
    let s = Server::start(|_, _| Reply::Stall(Duration::from_secs(10)));
    let t = Instant::now();
    let e = read(Source::GcpMetadata, &s.platform(1200)).unwrap_err();
    let el = t.elapsed();
    assert!(
        matches!(&e, ConfigError::GaveUp { last, .. } if matches!(**last, ConfigError::Http { err: HttpError::Timeout(_), .. })),
        "{e}"
    );
    assert!(
        el >= Duration::from_millis(500) && el < Duration::from_secs(3),
        "{el:?}"
    );
    // A server that sends the header, then trickles nothing: the deadline covers the body too.
    let s = Server::start(|_, _| {
        Reply::BytesThenStall(
            b"HTTP/1.1 200 OK\r\nMetadata-Flavor: Google\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
            Duration::from_secs(10),
        )
    });
    let t = Instant::now();
    let e = read(Source::GcpMetadata, &s.platform(800)).unwrap_err();
    assert!(e.to_string().contains("no complete response"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn no_server_is_retried_then_reported() {
    // A port nobody listens on.
    let addr = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let p = Platform {
        metadata: addr,
        wait: Duration::from_millis(1000),
        request_timeout: Duration::from_millis(300),
        ..Platform::node()
    };
    let t = Instant::now();
    let e = read(Source::AwsImds, &p).unwrap_err();
    assert!(e.to_string().contains("gave up after"), "{e}");
    assert!(e.to_string().contains("connecting to"), "{e}");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn sources_parse_from_init_toml_names() {
    #[derive(serde::Deserialize)]
    struct S {
        source: Source,
    }
    for (name, s, net) in [
        ("qemu-fw-cfg", Source::QemuFwCfg, false),
        ("aws-imds", Source::AwsImds, true),
        ("gcp-metadata", Source::GcpMetadata, true),
        ("azure-imds", Source::AzureImds, true),
    ] {
        let v: S = toml::from_str(&format!("source = \"{name}\"")).unwrap();
        assert_eq!(v.source, s);
        assert_eq!(s.name(), name);
        assert_eq!(s.needs_network(), net);
    }
}
