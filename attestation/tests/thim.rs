//! Azure's VCEK from THIM (`nacre_attestation::thim`): a real THIM response (ACI's copy,
//! `fixtures/azure/thim-aci.json`) parsed and its VCEK chained to AMD's bundled Milan roots; the
//! fetch against a loopback imitation of IMDS (request line and `Metadata: true`, 200, 404,
//! silence until the deadline, nothing listening); the VCEK checked against the report it is
//! for (Constellation's real Azure report and VCEK, served in a THIM-shaped JSON made here);
//! malformed JSON and wrong PEM refused with errors saying so.

use nacre_attestation::azure::HclReport;
use nacre_attestation::snp::{AmdRoots, Generation, SigningKey};
use nacre_attestation::thim::{self, ThimError, THIM_PATH};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn fixture(path: &str) -> Vec<u8> {
    let p = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b = base64::engine::general_purpose::STANDARD.encode(der);
    let lines: Vec<&str> = b
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
        lines.join("\n")
    )
}

/// A THIM-shaped response around Constellation's real Azure VCEK (AMD's Milan ASK/ARK as the
/// chain; tcbm and cacheControl as THIM writes them, not read by nacre).
fn constellation_thim() -> Vec<u8> {
    let ask = String::from_utf8(fixture("snp/milan-ask.pem")).unwrap();
    let ark = String::from_utf8(fixture("snp/milan-ark.pem")).unwrap();
    serde_json::to_vec(&serde_json::json!({
        "vcekCert": pem(&fixture("azure/constellation-vcek.der")),
        "tcbm": "DB18000000000004",
        "certificateChain": format!("{ask}{ark}"),
        "cacheControl": "86400",
    }))
    .unwrap()
}

fn constellation_report() -> Vec<u8> {
    let hcl = fixture("azure/constellation-hcl-report.bin");
    HclReport::parse(&hcl).unwrap().hw_report.to_vec()
}

/// One connection answered with `response` (None: read the request, then stay silent for
/// `silent`); the request's head goes to the returned channel.
fn serve(response: Option<Vec<u8>>, silent: Duration) -> (SocketAddr, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).unwrap();
            if n == 0 {
                break;
            }
            head.extend_from_slice(&b[..n]);
        }
        let _ = tx.send(String::from_utf8_lossy(&head).into_owned());
        match response {
            Some(r) => {
                let _ = s.write_all(&r);
            }
            None => std::thread::sleep(silent),
        }
    });
    (addr, rx)
}

fn ok(body: &[u8]) -> Vec<u8> {
    let mut r = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body);
    r
}

#[test]
fn real_thim_response_yields_a_vcek_chaining_to_amd() {
    let body = fixture("azure/thim-aci.json");
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    for k in ["vcekCert", "tcbm", "certificateChain", "cacheControl"] {
        assert!(v.get(k).is_some_and(|x| x.is_string()), "{k}");
    }
    let der = thim::parse(&body).unwrap();
    let roots = AmdRoots::bundled().unwrap();
    roots
        .verify_vek(Generation::Milan, SigningKey::Vcek, &der)
        .unwrap();
}

#[test]
fn fetch_from_loopback_imds_and_check_against_the_report() {
    let body = constellation_thim();
    let (addr, seen) = serve(Some(ok(&body)), Duration::ZERO);
    let vcek = thim::vcek_for(addr, &constellation_report()).unwrap();
    assert_eq!(vcek, fixture("azure/constellation-vcek.der"));
    let head = seen.recv().unwrap();
    assert!(
        head.starts_with(&format!("GET {THIM_PATH} HTTP/1.1\r\n")),
        "{head}"
    );
    assert!(head.contains("\r\nMetadata: true\r\n"), "{head}");

    // A genuine VCEK of another chip (the real ACI response) for this report: refused.
    let (addr, _) = serve(Some(ok(&fixture("azure/thim-aci.json"))), Duration::ZERO);
    let e = thim::vcek_for(addr, &constellation_report()).unwrap_err();
    assert!(matches!(e, ThimError::Mismatch(_)), "{e}");
    assert!(e.to_string().contains("AMD's bundled roots"), "{e}");
}

#[test]
fn fetch_failures_are_errors_naming_the_cause() {
    let deadline = || Instant::now() + Duration::from_secs(5);
    let (addr, _) = serve(
        Some(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n".to_vec()),
        Duration::ZERO,
    );
    let e = thim::fetch(addr, deadline()).unwrap_err();
    assert!(matches!(e, ThimError::Status { status: 404, .. }), "{e}");
    assert!(e.to_string().contains(THIM_PATH), "{e}");

    // Silence: the deadline ends it.
    let (addr, _) = serve(None, Duration::from_secs(3));
    let t = Instant::now();
    let e = thim::fetch(addr, Instant::now() + Duration::from_millis(300)).unwrap_err();
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(e.to_string().contains("no complete response"), "{e}");

    // Nothing listening.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    let e = thim::fetch(addr, deadline()).unwrap_err();
    assert!(matches!(e, ThimError::Http { .. }), "{e}");

    // A malformed body over HTTP: the parse error.
    let (addr, _) = serve(Some(ok(b"<html>")), Duration::ZERO);
    let e = thim::fetch(addr, deadline()).unwrap_err();
    assert!(matches!(e, ThimError::Json(_)), "{e}");
}

#[test]
fn malformed_json_and_wrong_pem_are_refused() {
    let json = |v: serde_json::Value| serde_json::to_vec(&v).unwrap();
    let vcek = pem(&fixture("azure/constellation-vcek.der"));
    let ask = String::from_utf8(fixture("snp/milan-ask.pem")).unwrap();
    let err = |body: &[u8]| thim::parse(body).unwrap_err().to_string();

    assert!(err(b"{\"vcekCert\":").contains("not the expected JSON"));
    assert!(err(&json(serde_json::json!({"certificateChain": ask})))
        .contains("missing field `vcekCert`"));
    assert!(err(&json(serde_json::json!({"vcekCert": 5}))).contains("not the expected JSON"));
    assert!(err(&json(serde_json::json!({"vcekCert": ""}))).contains("no PEM CERTIFICATE"));
    assert!(err(&json(
        serde_json::json!({"vcekCert": "MIIFQzCCAvegAwIBAgIBADBBBgkq"})
    ))
    .contains("no PEM CERTIFICATE"));
    // The ASK where the VCEK belongs.
    let e = err(&json(serde_json::json!({"vcekCert": ask})));
    assert!(e.contains("\"SEV-Milan\", not a VCEK"), "{e}");
    // The VCEK and its chain in one field.
    let e = err(&json(
        serde_json::json!({"vcekCert": format!("{vcek}{ask}")}),
    ));
    assert!(e.contains("2 certificates"), "{e}");
    // A PEM block whose contents are not a certificate.
    let e = err(&json(serde_json::json!({
        "vcekCert": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    })));
    assert!(e.contains("not an X.509 certificate"), "{e}");
    // Broken base64 inside the PEM block.
    let e = err(&json(serde_json::json!({
        "vcekCert": "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n"
    })));
    assert!(e.contains("vcekCert: PEM"), "{e}");
    // The genuine one passes.
    assert_eq!(
        thim::parse(&json(serde_json::json!({"vcekCert": vcek}))).unwrap(),
        fixture("azure/constellation-vcek.der")
    );
}
