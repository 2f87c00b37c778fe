//! The entry functions of nacre's fuzz targets: one per parser that reads bytes before the peer
//! (or the platform that produced them) is authenticated. Each takes any bytes, must never
//! panic, and checks what must hold of an accepted input (round trips, sizes). It returns
//! `Ok(())` when the input was accepted by the parser it targets, `Err(reason)` when it was
//! refused, so the seed-corpus regression test (keyservice/tests/fuzz_corpus.rs, in the normal
//! `cargo test`) can require that real fixtures are accepted and malformed ones refused.
//!
//! The fuzz targets (`fuzz_targets/*.rs`) call these and ignore the result; `seeds.list` names
//! each target's seed files (real fixtures of the repository) and what each must give.

use nacre_attestation::binding::AkBinding;
use nacre_attestation::evidence::{Evidence, Platform};
use nacre_attestation::{atls, attest, azure, nitro, snp, tdx};
use nacre_eventlog::{cel, replay, EventLog, RuntimeEvent};

/// The time an attested certificate is judged at: 2026-12-04T15:33:20Z, just after the seed
/// certificate (seeds/atls/swtpm-node.der, 10 minutes valid) was made. Fixed so a run is
/// reproducible and the seed stays valid.
pub const ATLS_NOW: u64 = 1_796_398_400;

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Every part of an evidence a verifier parses before a signature over it was checked: the
/// quote (TPMS_ATTEST, TPMT_SIGNATURE), the AK point, the firmware log (with its event decoders
/// and replay against the runtime log), the runtime records, the platform report and the EK
/// binding. Errors are what a verifier would refuse; none may panic.
pub fn evidence_parts(ev: &Evidence) {
    let _ = attest::parse_quote(&ev.quote.attest);
    let _ = attest::parse_ecdsa_signature(&ev.quote.signature);
    let _ = nacre_attestation::evidence::p256_point(&ev.ak_public);
    if let Ok(log) = EventLog::parse(&ev.firmware_log) {
        for e in &log.events {
            let _ = e.decode().to_string();
        }
        let _ = replay(&log, &ev.runtime_log);
    }
    for r in &ev.runtime_log {
        let _ = r.validate();
        let _ = RuntimeEvent::from_cel(r);
    }
    match &ev.platform {
        Platform::QemuVtpm => {}
        Platform::SevSnp { report, vcek } => {
            let _ = snp_report(report);
            let _ = snp_vek(vcek);
        }
        Platform::Tdx { quote } => {
            let _ = tdx_quote(quote);
        }
        #[allow(unreachable_patterns)]
        _ => {}
    }
    match &ev.binding {
        Some(AkBinding::AzureHcl { hcl_report }) => {
            let _ = azure_hcl(hcl_report);
        }
        Some(AkBinding::NitroDocument { document }) => {
            let _ = nitro_document(document);
        }
        _ => {}
    }
    if let Some(ek) = &ev.ek {
        let _ = attest::parse_certify(&ek.certify_attest);
        let _ = attest::parse_ecc_public(&ek.ak_public_area);
        let _ = attest::parse_ecdsa(&ek.certify_signature, attest::ALG_SHA384, 48);
    }
}

/// An attested-TLS peer certificate (DER) → its evidence extension → Evidence JSON → every
/// part of it ([`evidence_parts`]), judged at [`ATLS_NOW`]. What a verifier does with a peer's
/// certificate before anything in it is trusted.
pub fn atls_cert(data: &[u8]) -> Result<(), String> {
    let now =
        rustls::pki_types::UnixTime::since_unix_epoch(std::time::Duration::from_secs(ATLS_NOW));
    let (ev, spki) = atls::evidence_from_cert(data, now)?;
    if spki.is_empty() {
        return Err("empty SPKI accepted".into());
    }
    evidence_parts(&ev);
    Ok(())
}

/// Evidence JSON (the certificate extension's content) → Evidence → every part of it; an
/// accepted evidence serializes and parses back to itself.
pub fn evidence_json(data: &[u8]) -> Result<(), String> {
    let ev = Evidence::from_json(data).map_err(err)?;
    evidence_parts(&ev);
    let again = Evidence::from_json(&ev.to_json()).expect("serialized evidence must parse");
    assert_eq!(again, ev, "evidence JSON round trip");
    Ok(())
}

/// The TPM structures a verifier parses from a node: TPMS_ATTEST of a quote and of a certify,
/// TPMT_SIGNATURE (ECDSA P-256/SHA-256 and P-384/SHA-384) and an ECC TPMT_PUBLIC. Every parser
/// sees the whole input; accepted when any of them accepts it.
pub fn tpm_attest(data: &[u8]) -> Result<(), String> {
    let mut ok = false;
    if let Ok(q) = attest::parse_quote(data) {
        for s in &q.selections {
            assert!(s.pcrs.windows(2).all(|w| w[0] < w[1]), "PCRs ascending");
        }
        ok = true;
    }
    ok |= attest::parse_certify(data).is_ok();
    if let Ok(p) = attest::parse_ecc_public(data) {
        assert!(p.x.len() < data.len() && p.y.len() < data.len());
        ok = true;
    }
    ok |= attest::parse_ecdsa_signature(data).is_ok();
    if let Ok(rs) = attest::parse_ecdsa(data, attest::ALG_SHA384, 48) {
        assert_eq!(rs.len(), 96);
        ok = true;
    }
    if ok {
        return Ok(());
    }
    attest::parse_quote(data).map(|_| ()).map_err(err)
}

/// A TDX quote (v4/v5): the parse, the PCK chain's PEM in the certification data, and the
/// quote's own signatures (QE report by the PCK key, quote by the attestation key), all before
/// the PCK chain was checked against Intel's root.
pub fn tdx_quote(data: &[u8]) -> Result<(), String> {
    let q = tdx::Quote::parse(data).map_err(err)?;
    assert!(q.signed_bytes().len() <= q.raw().len());
    assert_eq!(q.raw(), data);
    let _ = q.pck_chain();
    let _ = q.verify_signatures();
    Ok(())
}

/// An SEV-SNP ATTESTATION_REPORT (v2-v5): the parse in the layout its CPUID names, in each
/// generation's layout (Milan, Genoa, Turin), and its SIGNING_KEY, all before the VCEK/VLEK
/// signature is checked. Accepted when [`snp::Report::parse`] accepts it.
pub fn snp_report(data: &[u8]) -> Result<(), String> {
    for g in snp::Generation::ALL {
        if let Ok(r) = snp::Report::parse_as(data, g) {
            assert!(r.signed_bytes().len() < data.len());
        }
    }
    let r = snp::Report::parse(data).map_err(err)?;
    assert!(r.signed_bytes().len() < data.len());
    let _ = r.signing_key();
    Ok(())
}

/// AMD's roots as compiled into nacre-attestation (checked once).
fn amd_roots() -> &'static snp::AmdRoots {
    static ROOTS: std::sync::OnceLock<snp::AmdRoots> = std::sync::OnceLock::new();
    ROOTS.get_or_init(|| snp::AmdRoots::bundled().expect("bundled AMD roots"))
}

/// A VCEK or VLEK certificate (DER) as the evidence or the host's table carries it: its
/// product, then its chain to AMD's bundled roots as a VCEK and as a VLEK. Accepted when it
/// chains as either.
pub fn snp_vek(data: &[u8]) -> Result<(), String> {
    let roots = amd_roots();
    let g = roots.generation_of(data).map_err(err)?;
    let vcek = roots.verify_vek(g, snp::SigningKey::Vcek, data);
    let vlek = roots.verify_vek(g, snp::SigningKey::Vlek, data);
    match (vcek, vlek) {
        (Err(e), Err(_)) => Err(e.to_string()),
        _ => Ok(()),
    }
}

/// The host's GHCB certificate table (configfs-tsm `auxblob` of an SEV-SNP guest): the VCEK or
/// VLEK entry it points to (a table without one is accepted: the key service's store is asked),
/// through `vek_of_auxblob`, what nacre-init's `fetch_report` calls on the table, which must
/// agree with the table parser.
pub fn snp_cert_table(data: &[u8]) -> Result<(), String> {
    let of_auxblob = snp::vek_of_auxblob(Some(data));
    match snp::vek_from_cert_table(data).map_err(err) {
        Ok(found) => {
            let vek = found.map(|(_, v)| v).unwrap_or_default();
            assert!(vek.len() <= data.len());
            assert_eq!(of_auxblob.as_ref(), Ok(&vek), "vek_of_auxblob");
            Ok(())
        }
        Err(e) => {
            assert!(
                of_auxblob.is_err(),
                "vek_of_auxblob accepted a refused table"
            );
            Err(e)
        }
    }
}

/// Azure's HCL report (the vTPM NV index 0x01400001, read from the guest's TPM): the header,
/// the runtime data's digest and its `HCLAkPub` JWK, and the binding check against the SEV-SNP
/// report it carries. Accepted when [`azure::HclReport::parse`] accepts it.
pub fn azure_hcl(data: &[u8]) -> Result<(), String> {
    let h = azure::HclReport::parse(data).map_err(err)?;
    assert!(h.hw_report.len() < data.len() && h.runtime_data.len() < data.len());
    let _ = h.runtime_digest();
    if let Ok(ak) = h.ak_spki() {
        let _ = azure::check_binding(data, h.hw_report, &ak);
    }
    let _ = snp_report(h.hw_report);
    Ok(())
}

/// When the Nitro documents are judged: the NitroTPM fixture's timestamp (2026-02-03T10:12:02Z)
/// and the enclave fixture's (2023-09-18T15:03:30Z); their signing certificates live ~3 hours.
const NITRO_TIMES: [u64; 2] = [1_770_113_522, 1_695_049_410];

/// An AWS Nitro attestation document (COSE_Sign1, CBOR) as the evidence carries it: the strict
/// CBOR decoder (a decoded item re-encodes to bytes that decode to the same item), the NSM
/// response wrapper, and the document's verification (envelope, payload, chain to the pinned
/// AWS Nitro root G1, ES384 signature) at the fixtures' times. Accepted when it verifies at one
/// of them.
pub fn nitro_document(data: &[u8]) -> Result<(), String> {
    if let Ok(v) = nitro::cbor::decode(data) {
        let again = nitro::cbor::to_vec(&v);
        assert_eq!(
            nitro::cbor::decode(&again).as_ref(),
            Ok(&v),
            "CBOR re-encoding"
        );
    }
    let _ = nitro::nsm_response(data);
    let mut refused = String::new();
    for t in NITRO_TIMES {
        match nitro::verify_document(data, &[nitro::AWS_NITRO_ROOT_G1], t) {
            Ok(_) => return Ok(()),
            Err(e) => refused = e.to_string(),
        }
    }
    Err(refused)
}

/// A TCG PC Client crypto-agile firmware event log: the parse, the event decoders, replay; an
/// accepted log serializes and parses back to itself.
pub fn eventlog_tcg(data: &[u8]) -> Result<(), String> {
    let log = EventLog::parse(data).map_err(err)?;
    for e in &log.events {
        let _ = e.decode().to_string();
    }
    let _ = log.header_event().decode().to_string();
    let _ = replay(&log, &[]);
    let bytes = log.to_bytes().expect("a parsed log must serialize");
    assert_eq!(EventLog::parse(&bytes).as_ref(), Ok(&log), "round trip");
    Ok(())
}

/// nacre-init's runtime log (CEL-JSON lines): accepted records re-serialize to lines that parse
/// to the same records, and go through the runtime event checks.
pub fn eventlog_cel(data: &[u8]) -> Result<(), String> {
    let records = cel::parse(data).map_err(err)?;
    let lines: Vec<u8> = records.iter().flat_map(|r| r.to_line()).collect();
    assert_eq!(
        cel::parse(&lines).expect("written records must parse"),
        records
    );
    for r in &records {
        let _ = RuntimeEvent::from_cel(r);
    }
    Ok(())
}

/// The join protocol's lines as the key service and a node read them: the bounded line reader
/// over a small buffer, then each line as a request and as a response; an accepted message
/// serializes to JSON that parses to itself. Accepted when every line is a request or a
/// response.
pub fn join_lines(data: &[u8]) -> Result<(), String> {
    use nacre_attestation::join::{read_line, Request, Response};
    use std::io::BufRead;
    let mut r = std::io::BufReader::with_capacity(64, data);
    let mut refused = None;
    loop {
        let mut line = Vec::new();
        if let Err(e) = read_line(&mut r, &mut line) {
            return Err(e.to_string());
        }
        assert!(line.len() <= nacre_attestation::join::MAX_LINE + 64);
        if line.is_empty() && r.fill_buf().map(|b| b.is_empty()).unwrap_or(true) {
            break;
        }
        let req = serde_json::from_slice::<Request>(&line);
        let resp = serde_json::from_slice::<Response>(&line);
        if let Ok(q) = &req {
            let again: Request = serde_json::from_slice(&serde_json::to_vec(q).unwrap())
                .expect("serialized request must parse");
            assert_eq!(&again, q);
            let _ = q.op();
        }
        if let Ok(p) = &resp {
            let again: Response = serde_json::from_slice(&serde_json::to_vec(p).unwrap())
                .expect("serialized response must parse");
            assert_eq!(&again, p);
        }
        if let (Err(e), Err(_)) = (req, resp) {
            refused.get_or_insert(e.to_string());
        }
    }
    refused.map_or(Ok(()), Err)
}

/// A loopback server that answers each connection with the next response it is given (after
/// reading the request's head), then closes.
fn metadata_server() -> &'static (
    std::net::SocketAddr,
    std::sync::Mutex<std::sync::mpsc::Sender<Vec<u8>>>,
) {
    use std::io::{Read, Write};
    static SERVER: std::sync::OnceLock<(
        std::net::SocketAddr,
        std::sync::Mutex<std::sync::mpsc::Sender<Vec<u8>>>,
    )> = std::sync::OnceLock::new();
    SERVER.get_or_init(|| {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("loopback listener");
        let addr = l.local_addr().expect("listener address");
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let (Ok(mut c), Ok(body)) = (c, rx.recv()) else {
                    continue;
                };
                let mut head = Vec::new();
                let mut b = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut b) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&b[..n]),
                    }
                }
                let _ = c.write_all(&body);
            }
        });
        (addr, std::sync::Mutex::new(tx))
    })
}

/// A cloud metadata server's HTTP/1.1 response (AWS IMDS, GCE metadata, Azure IMDS: the host
/// controls it) through nacre-cluster's strict client over loopback: status line, headers,
/// Content-Length or chunked body, bounded sizes; then the body as user data and as a cluster
/// configuration. Accepted when the client returns a response.
pub fn metadata_http(data: &[u8]) -> Result<(), String> {
    use nacre_cluster::http;
    let (addr, tx) = metadata_server();
    tx.lock()
        .map_err(|_| "server lock".to_string())?
        .send(data.to_vec())
        .map_err(|_| "server gone".to_string())?;
    let req = http::Request {
        method: "GET",
        path: "/latest/user-data",
        headers: &[("Metadata", "true")],
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let r = http::send(*addr, &req, deadline, 64 << 10).map_err(err)?;
    assert!(r.body.len() <= 64 << 10, "body bound");
    assert!(r.status == 200 || r.body.is_empty());
    let _ = r.headers("content-length").count();
    let _ = cluster_config(&r.body);
    Ok(())
}

/// The cluster configuration as a node reads it from its platform before measuring it: the
/// bytes themselves (QEMU fw_cfg, a GCE attribute) or a metadata server's base64 user data
/// (AWS, Azure). Accepted when either reading gives a configuration; an accepted one renders to
/// a document that parses to the same configuration.
pub fn cluster_config(data: &[u8]) -> Result<(), String> {
    let decoded = nacre_cluster::metadata::decode_user_data("http://169.254.169.254/fuzz", data);
    let from_user_data = decoded.map_err(err).and_then(|b| config_bytes(&b));
    config_bytes(data).or(from_user_data)
}

fn config_bytes(data: &[u8]) -> Result<(), String> {
    let m = nacre_cluster::parse(data).map_err(err)?;
    assert_eq!(m.digest, nacre_cluster::digest(data));
    let _ = m.config.endpoint();
    let text = m
        .config
        .render()
        .expect("a parsed configuration must render");
    let again = nacre_cluster::parse(text.as_bytes()).expect("a rendered configuration must parse");
    assert_eq!(again.config, m.config, "render round trip");
    Ok(())
}
