//! `nacre-keyservice bench`: the service's throughput and latency on loopback.
//!
//! The service is the real one (redb on a temporary directory, every decision committed, the
//! QEMU vTPM verifier with a signed manifest, rustls), in this process. The clients are nodes
//! whose TPM is simulated in software: each has its own P-256 attestation key (enrolled like a
//! real node's), and its quotes are TPMS_ATTEST structures marshalled as a TPM does and signed
//! with that key, over a real OVMF boot's firmware log and nacre-init's runtime log. A real
//! swtpm would serialise every client on one emulator process and measure swtpm, not the
//! service. Each request is a full attested TLS connection (fresh nonce, fresh client key and
//! certificate, quote, verification, log replay, manifest check, decision committed).

use crate::service::Service;
use crate::store::{Cluster, Store, DB_FILE};
use nacre_attestation::atls::Attest;
use nacre_attestation::evidence::{qualifying_data, Evidence, Platform, Quote};
use nacre_attestation::join::{Client, Request, Response, WgAnnounce};
use nacre_attestation::{EnrolledAks, QemuVtpmVerifier, SignedManifest, Verifier};
use nacre_eventlog::{CelRecord, EventLog, HashAlg, Phase, RuntimeEvent};
use nacre_measure::manifest::{Expected, ImageRef, Manifest, SCHEMA};
use nacre_measure::sign::{sign_blob, BlobSigner, PemSigner, PublicKey};
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use zeroize::Zeroizing;

/// The PCRs quoted (as nacre-init quotes them).
const QUOTED: [u32; 15] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15];

/// A node whose TPM is simulated: quotes signed with a software P-256 AK.
pub struct SoftwareTpm {
    key: EcdsaKeyPair,
    rng: ring::rand::SystemRandom,
    ak_spki: Vec<u8>,
    selection: [u8; 3],
    pcr_digest: Vec<u8>,
    firmware_log: Vec<u8>,
    runtime_log: Vec<CelRecord>,
}

fn tpm2b(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
    out.extend_from_slice(b);
}

impl SoftwareTpm {
    pub fn new(
        firmware_log: Vec<u8>,
        runtime_log: Vec<CelRecord>,
        pcrs: &BTreeMap<u32, Vec<u8>>,
    ) -> Result<Self, String> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| "AK generation failed")?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| "AK parsing failed")?;
        let point = key.public_key().as_ref();
        let ak_spki = nacre_attestation::evidence::p256_spki(&point[1..33], &point[33..65])
            .ok_or("AK is not a P-256 point")?;
        let mut selection = [0u8; 3];
        let mut h = ring::digest::Context::new(&ring::digest::SHA256);
        for p in QUOTED {
            selection[(p / 8) as usize] |= 1 << (p % 8);
            h.update(pcrs.get(&p).map(Vec::as_slice).unwrap_or(&[0u8; 32]));
        }
        Ok(SoftwareTpm {
            key,
            rng,
            ak_spki,
            selection,
            pcr_digest: h.finish().as_ref().to_vec(),
            firmware_log,
            runtime_log,
        })
    }

    pub fn ak_spki(&self) -> &[u8] {
        &self.ak_spki
    }

    /// TPMS_ATTEST of a quote over `extra`, and its TPMT_SIGNATURE.
    fn quote(&self, extra: &[u8]) -> Result<Quote, String> {
        let mut a = Vec::new();
        a.extend_from_slice(&0xff54_4347u32.to_be_bytes()); // TPM_GENERATED_VALUE
        a.extend_from_slice(&0x8018u16.to_be_bytes()); // TPM_ST_ATTEST_QUOTE
        let mut name = vec![0x00, 0x0b];
        name.extend_from_slice(ring::digest::digest(&ring::digest::SHA256, &self.ak_spki).as_ref());
        tpm2b(&mut a, &name);
        tpm2b(&mut a, extra);
        a.extend_from_slice(&1u64.to_be_bytes()); // clock
        a.extend_from_slice(&0u32.to_be_bytes()); // resetCount
        a.extend_from_slice(&0u32.to_be_bytes()); // restartCount
        a.push(1); // safe
        a.extend_from_slice(&0u64.to_be_bytes()); // firmwareVersion
        a.extend_from_slice(&1u32.to_be_bytes()); // TPML_PCR_SELECTION.count
        a.extend_from_slice(&0x000bu16.to_be_bytes()); // sha256
        a.push(3);
        a.extend_from_slice(&self.selection);
        tpm2b(&mut a, &self.pcr_digest);
        let sig = self
            .key
            .sign(&self.rng, &a)
            .map_err(|_| "AK signing failed")?;
        let rs = sig.as_ref();
        let mut s = Vec::new();
        s.extend_from_slice(&0x0018u16.to_be_bytes()); // TPM_ALG_ECDSA
        s.extend_from_slice(&0x000bu16.to_be_bytes()); // TPM_ALG_SHA256
        tpm2b(&mut s, &rs[..32]);
        tpm2b(&mut s, &rs[32..]);
        Ok(Quote {
            attest: a,
            signature: s,
        })
    }
}

impl Attest for SoftwareTpm {
    fn evidence(&self, nonce: &[u8], tls_spki: &[u8]) -> Result<Evidence, String> {
        Ok(Evidence {
            platform: Platform::QemuVtpm,
            quote: self.quote(&qualifying_data(nonce, tls_spki))?,
            ak_public: self.ak_spki.clone(),
            firmware_log: self.firmware_log.clone(),
            runtime_log: self.runtime_log.clone(),
            ek: None,
            binding: None,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub clients: usize,
    pub seconds: f64,
    pub requests: usize,
    pub failures: usize,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub firmware_log_bytes: usize,
    pub firmware_log_events: usize,
    /// With `--hostile`: what the attackers did, and what it cost the service's disk.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostile: Option<HostileReport>,
    /// Decisions in the log at the end, and the database file's size (bytes).
    pub decisions: usize,
    pub database_bytes: u64,
}

/// Unauthenticated attackers beside the good clients (`bench --hostile`), each kind from its
/// own loopback sources (127.77.K.N): `slowloris` connections that trickle a ClientHello one
/// byte every 500 ms and reconnect when cut; `flood` threads that connect and close at once in
/// a loop; `garbage` threads that send a TLS record header and random bytes, then close.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Hostile {
    pub slowloris: usize,
    pub flood: usize,
    pub garbage: usize,
    /// Distinct source addresses per kind.
    pub sources: usize,
}

#[derive(Debug, Serialize)]
pub struct HostileReport {
    pub attack: Hostile,
    /// Attacker connections opened (accepted by the kernel; the service closes most at once).
    pub connections: u64,
}

/// One attacker thread until `stop`: returns the connections it opened.
fn attacker(
    kind: u8,
    index: usize,
    sources: usize,
    addr: std::net::SocketAddr,
    stop: Arc<AtomicBool>,
) -> u64 {
    use std::io::{Read, Write};
    let source = std::net::Ipv4Addr::new(127, 77, kind, (index % sources.max(1) + 1) as u8);
    let mut opened = 0u64;
    let mut noise = [0u8; 512];
    while !stop.load(Ordering::Relaxed) {
        let Ok(sock) = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
        else {
            return opened;
        };
        if sock
            .bind(&std::net::SocketAddr::from((source, 0)).into())
            .and_then(|()| sock.connect(&addr.into()))
            .is_err()
        {
            std::thread::sleep(Duration::from_millis(50));
            continue;
        }
        opened += 1;
        let mut s: std::net::TcpStream = sock.into();
        match kind {
            // slowloris
            0 => {
                let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
                let _ = s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00]);
                let mut b = [0u8; 64];
                while !stop.load(Ordering::Relaxed) {
                    match s.read(&mut b) {
                        Ok(0) => break,
                        Ok(_) => {}
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            ) => {}
                        Err(_) => break,
                    }
                    if s.write_all(&[0x01]).is_err() {
                        break;
                    }
                }
            }
            // flood: connect and close
            1 => {}
            // garbage
            _ => {
                let _ =
                    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut noise);
                let _ = s.write_all(&[0x16, 0x03, 0x01, 0x01, 0xf0]);
                let _ = s.write_all(&noise);
                let mut b = [0u8; 64];
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = s.read(&mut b);
            }
        }
    }
    opened
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1000.0
}

/// `clients` software nodes that booted with `firmware_log` and nacre-init's phases up to
/// sysinit, and the QEMU vTPM verifier that admits them: a manifest of the replayed PCRs (4, 7,
/// 9, 11 enforced, 15 zero) signed with a fresh key, the nodes' AKs enrolled.
fn software_nodes(
    firmware_log: &[u8],
    clients: usize,
) -> Result<(Vec<Arc<SoftwareTpm>>, QemuVtpmVerifier), String> {
    let log = EventLog::parse(firmware_log).map_err(|e| format!("firmware log: {e}"))?;
    let runtime: Vec<CelRecord> = [Phase::EnterInitrd, Phase::LeaveInitrd, Phase::Sysinit]
        .iter()
        .enumerate()
        .map(|(i, p)| RuntimeEvent::Phase(*p).to_cel(i as u64, &[HashAlg::Sha256]))
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let bank = nacre_eventlog::replay_banks(&log, &runtime, &[HashAlg::Sha256])
        .map_err(|e| format!("replay: {e}"))?
        .remove(0);
    let pcrs: BTreeMap<u32, Vec<u8>> = QUOTED
        .iter()
        .map(|&p| (p, bank.get(p).unwrap_or(&[0u8; 32]).to_vec()))
        .collect();

    // The golden manifest of this "image": PCRs 4, 7, 9, 11 enforced, 15 zero, signed.
    let (signer, _) = PemSigner::generate().map_err(|e| e.to_string())?;
    let mut measurements = BTreeMap::new();
    for p in [4u32, 7, 9, 11, 15] {
        measurements.insert(
            p,
            Expected {
                expected: pcrs[&p].clone(),
                warn_only: false,
            },
        );
    }
    let manifest = Manifest {
        schema: SCHEMA.into(),
        image: ImageRef {
            reference: "nacre-bench".into(),
            version: "0".into(),
            variant: "qemu-vtpm".into(),
            uki_sha256: "00".repeat(32),
            roothash: None,
        },
        alg: HashAlg::Sha256,
        stub: nacre_measure::uki::StubProfile::V252,
        secure_boot: false,
        phase: Some("sysinit".into()),
        not_after: None,
        measurements,
        events: vec![],
        snp: vec![],
        tdx: None,
    };
    let json = manifest.to_json();
    let sig = sign_blob(&signer, &json).map_err(|e| e.to_string())?;
    let key = PublicKey::from_spki(&signer.public_key_spki()).map_err(|e| e.to_string())?;

    let nodes: Vec<Arc<SoftwareTpm>> = (0..clients)
        .map(|_| SoftwareTpm::new(firmware_log.to_vec(), runtime.clone(), &pcrs).map(Arc::new))
        .collect::<Result<_, _>>()?;
    let verifier = QemuVtpmVerifier::new(
        SignedManifest {
            json,
            signature_b64: sig.into_bytes(),
        },
        key,
        Box::new(EnrolledAks::new(nodes.iter().map(|n| n.ak_spki().to_vec()))),
    );
    Ok((nodes, verifier))
}

/// Run `clients` nodes against a fresh service for `seconds`; each node alternates join and
/// disk-key requests.
pub fn run(
    state: &Path,
    firmware_log: Vec<u8>,
    clients: usize,
    seconds: f64,
    hostile: Option<Hostile>,
    progress: &dyn Fn(&str),
) -> Result<Report, String> {
    let events = EventLog::parse(&firmware_log)
        .map_err(|e| format!("firmware log: {e}"))?
        .events
        .len();
    let (nodes, verifier) = software_nodes(&firmware_log, clients)?;
    let verifier: Arc<dyn Verifier> = Arc::new(verifier);

    let mut seed = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed)
        .map_err(|_| "RNG failed")?;
    let cluster = Cluster {
        master_secret: Zeroizing::new(seed),
        cluster_id: [0x5a; 32],
        overlay: "10.244.0.0/16".parse()?,
        bootstrap_token: "abcdef.0123456789abcdef".into(),
        api_server: None,
        pods: None,
        api_server_ca: None,
    };
    let store = Store::create(&state.join(DB_FILE), &cluster).map_err(|e| e.to_string())?;
    crate::tls::create_identity(state)?;
    let service = Arc::new(Service::new(store, Box::new(|_| {})).map_err(|e| e.to_string())?);
    let (chain, tls_key) = crate::server::load_identity(state)?;
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let addr = listener
        .local_addr()
        .map_err(|e| e.to_string())?
        .to_string();
    // The good clients all connect from 127.0.0.1 (real nodes have one address each): the
    // per-source limit is raised well above their number so it does not cut them (a client's
    // next connection can arrive before the server thread of its last one let go of its slot).
    let limits = crate::limits::ConnectionLimits {
        per_source: (clients * 4).max(8),
        ..Default::default()
    };
    let server =
        Arc::new(crate::server::Server::new(service, verifier, chain, tls_key).with_limits(limits));
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = stop.clone();
        std::thread::spawn(move || server.run(listener, stop));
    }
    let ca = std::fs::read(state.join(crate::tls::CA_CERT)).map_err(|e| e.to_string())?;
    progress(&format!(
        "{clients} clients for {seconds} s against {addr} (firmware log {} bytes, {events} events)",
        firmware_log.len()
    ));

    let attack_stop = Arc::new(AtomicBool::new(false));
    let mut attackers = Vec::new();
    if let Some(h) = hostile {
        let sa: std::net::SocketAddr = addr.parse().map_err(|e| format!("{addr}: {e}"))?;
        for (kind, n) in [(0u8, h.slowloris), (1, h.flood), (2, h.garbage)] {
            for i in 0..n {
                let stop = attack_stop.clone();
                attackers.push(std::thread::spawn(move || {
                    attacker(kind, i, h.sources, sa, stop)
                }));
            }
        }
        progress(&format!(
            "attackers: {} slowloris, {} flood, {} garbage threads from {} sources each",
            h.slowloris, h.flood, h.garbage, h.sources
        ));
        // Let them take their slots first.
        std::thread::sleep(Duration::from_millis(500));
    }
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut handles = Vec::new();
    for (i, node) in nodes.into_iter().enumerate() {
        let client = Client::new(&addr, &ca, node, Duration::from_secs(30))?;
        handles.push(std::thread::spawn(move || {
            let mut lat = Vec::new();
            let mut failures = 0usize;
            let join = Request::Join {
                wireguard: WgAnnounce {
                    public_key: base64_key(i),
                    underlay: std::net::IpAddr::V4(std::net::Ipv4Addr::new(
                        192,
                        0,
                        2,
                        (i % 250 + 1) as u8,
                    )),
                    listen_port: 51820,
                },
            };
            let disk = Request::DiskKey {
                disk_uuid: format!("00000000-0000-4000-8000-{:012x}", i),
            };
            let mut n = 0usize;
            while Instant::now() < deadline {
                let req = if n % 2 == 0 { &join } else { &disk };
                let t = Instant::now();
                match client.call(req) {
                    Ok(Response::Joined(_)) | Ok(Response::DiskKey { .. }) => lat.push(t.elapsed()),
                    _ => failures += 1,
                }
                n += 1;
            }
            (lat, failures)
        }));
    }
    let mut all = Vec::new();
    let mut failures = 0;
    for h in handles {
        let (l, f) = h.join().map_err(|_| "a client thread panicked")?;
        all.extend(l);
        failures += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    attack_stop.store(true, Ordering::SeqCst);
    let connections: u64 = attackers.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    stop.store(true, Ordering::SeqCst);
    let _ = std::net::TcpStream::connect(&addr);
    // The server thread writes the counted events' summaries as it stops, then drops the
    // database: wait until it can be opened again.
    let mut decisions = 0;
    for _ in 0..600 {
        if let Ok(store) = Store::open(&state.join(DB_FILE)) {
            decisions = store.decisions().map(|d| d.len()).unwrap_or(0);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let database_bytes = std::fs::metadata(state.join(DB_FILE))
        .map(|m| m.len())
        .unwrap_or(0);
    all.sort_unstable();
    Ok(Report {
        clients,
        seconds: elapsed,
        requests: all.len(),
        failures,
        per_second: all.len() as f64 / elapsed,
        p50_ms: percentile(&all, 0.50),
        p90_ms: percentile(&all, 0.90),
        p99_ms: percentile(&all, 0.99),
        max_ms: percentile(&all, 1.0),
        firmware_log_bytes: firmware_log.len(),
        firmware_log_events: events,
        hostile: hostile.map(|attack| HostileReport {
            attack,
            connections,
        }),
        decisions,
        database_bytes,
    })
}

/// What one part of a verification costs (mean over the iterations).
#[derive(Debug, Serialize)]
pub struct PartCost {
    pub part: String,
    pub micros: f64,
}

/// Verifying one piece of evidence of one platform, on real fixtures where the repository has
/// them.
#[derive(Debug, Serialize)]
pub struct PlatformCost {
    pub platform: String,
    /// What was verified.
    pub evidence: String,
    /// The parts, in the order a verifier runs them; `total_micros` is their sum.
    pub parts: Vec<PartCost>,
    pub total_micros: f64,
    /// Verifications per second on one core.
    pub per_second: f64,
    /// `total_micros` over the QEMU vTPM verification's in this run (1.0 for it).
    pub ratio_to_qemu_vtpm: f64,
}

#[derive(Debug, Serialize)]
pub struct VerificationCost {
    pub iterations: u32,
    /// `release` or `debug` (debug: the workspace's crates unoptimized; ring, x509-parser,
    /// dcap-qvl and serde at opt-level 2 as the dev profile builds dependencies).
    pub profile: &'static str,
    /// No other verifier of the same evidence runs in this process (no second TPM quote,
    /// SEV-SNP or TDX verifier is a dependency; dcap-qvl is part of nacre's TDX path), so
    /// the figures are absolute, with each platform's ratio to the QEMU vTPM verification.
    pub peer: Option<String>,
    pub platforms: Vec<PlatformCost>,
}

impl std::fmt::Display for VerificationCost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "verifying one piece of evidence, mean of {} ({} build, one core; no peer verifier in this run, ratios to qemu-vtpm):",
            self.iterations, self.profile
        )?;
        for p in &self.platforms {
            writeln!(
                f,
                "{:<10} {:>9.0} us  {:>7.0}/s  x{:.2}  ({})",
                p.platform, p.total_micros, p.per_second, p.ratio_to_qemu_vtpm, p.evidence
            )?;
            for part in &p.parts {
                writeln!(f, "           {:>9.0} us  {}", part.micros, part.part)?;
            }
        }
        Ok(())
    }
}

/// Mean time of `f` in microseconds over `n` runs (after one unmeasured run), failing if any
/// run fails: a cost of a refusal would measure nothing.
fn mean_micros<T>(
    n: u32,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> Result<f64, String> {
    f().map_err(|e| format!("{what}: {e}"))?;
    let t = Instant::now();
    for _ in 0..n {
        std::hint::black_box(f().map_err(|e| format!("{what}: {e}"))?);
    }
    Ok(t.elapsed().as_secs_f64() * 1e6 / f64::from(n.max(1)))
}

/// The cost of verifying one piece of evidence per platform, `iterations` times each, on one
/// core:
///
/// * qemu-vtpm: the evidence JSON (as the attested certificate's extension carries it) parsed,
///   then [`QemuVtpmVerifier::verify`] in full: AK enrollment, the quote's signature and
///   qualifying data, replay of the real OVMF firmware log `firmware_log` and nacre-init's
///   runtime log, the signed manifest. The quote is marshalled as a TPM does and signed by a
///   software P-256 AK ([`SoftwareTpm`]; the verifier's work is the same as for swtpm's).
/// * sev-snp: the real Milan report of `fixtures/snp` (virtee/sev) parsed and verified
///   ([`nacre_attestation::snp::verify_signature`]): the VCEK certificate against AMD's
///   bundled ARK/ASK chain (RSA-PSS), the report's ECDSA P-384 signature, the VCEK's TCB and
///   chip id against the report's; then the TPM part as above (an SNP guest's evidence is
///   both).
/// * tdx: the real TDX v4 quote of `fixtures/tdx` (dcap-qvl) parsed and verified at a time its
///   collateral is valid: the quote's own signatures (nacre, ring), then PCK chain, CRLs, TCB
///   info and QE identity (dcap-qvl); then the TPM part.
///
/// The SNP and TDX REPORT_DATA binding and policy checks are not timed: a real report cannot
/// bind this run's nonce and keys (they are comparisons, negligible next to the signatures).
pub fn verification_cost(
    fixtures: &Path,
    firmware_log: &[u8],
    iterations: u32,
) -> Result<VerificationCost, String> {
    use nacre_attestation::verify::{Expectation, JoinKind};
    use nacre_attestation::{snp, tdx};
    let read = |p: &str| {
        let p = fixtures.join(p);
        std::fs::read(&p).map_err(|e| format!("{}: {e}", p.display()))
    };
    let n = iterations;

    // The TPM part, common to every platform.
    let (nodes, verifier) = software_nodes(firmware_log, 1)?;
    let (tls, _) = PemSigner::generate().map_err(|e| e.to_string())?;
    let tls_spki = tls.public_key_spki();
    let nonce = [0x6eu8; 32];
    let evidence = nodes[0].evidence(&nonce, &tls_spki)?;
    let json = evidence.to_json();
    let expect = Expectation {
        nonce: &nonce,
        tls_public_key: &tls_spki,
        join: JoinKind::First,
    };
    let json_us = mean_micros(n, "evidence JSON", || {
        Evidence::from_json(&json).map_err(|e| e.to_string())
    })?;
    let tpm_us = mean_micros(n, "QEMU vTPM verification", || {
        verifier
            .verify(&evidence, &expect)
            .map_err(|r| r.to_string())
    })?;

    // SEV-SNP: real Milan report and VCEK; AMD's roots as the verifier bundles them.
    let roots = snp::AmdRoots::bundled().map_err(|e| format!("AMD roots: {e}"))?;
    let report = read("snp/milan-report.bin")?;
    let vcek = read("snp/milan-vcek.der")?;
    let snp_us = mean_micros(n, "SEV-SNP report", || {
        snp::verify_signature(&report, &vcek, &roots).map_err(|e| e.to_string())
    })?;

    // TDX: real v4 quote and its collateral, at a time inside the collateral's validity
    // (2025-07-01, as attestation/tests/tdx.rs verifies it).
    const TDX_TIME: u64 = 1_751_328_000;
    let quote = read("tdx/tdx_quote")?;
    let collateral = tdx::collateral_from_json(&read("tdx/tdx_quote_collateral.json")?)
        .map_err(|e| e.to_string())?;
    let tdx_sig_us = mean_micros(n, "TDX quote signatures", || {
        let q = tdx::Quote::parse(&quote).map_err(|e| e.to_string())?;
        q.verify_signatures().map_err(|e| e.to_string())
    })?;
    let tdx_all_us = mean_micros(n, "TDX quote and collateral", || {
        let q = tdx::Quote::parse(&quote).map_err(|e| e.to_string())?;
        tdx::verify_quote(&q, &collateral, tdx::INTEL_SGX_ROOT_CA, TDX_TIME)
            .map_err(|e| e.to_string())
    })?;

    // In the order a verifier runs them: the evidence JSON, the platform part, the TPM part.
    let platform = |name: &str, what: &str, platform_parts: Vec<PartCost>| {
        let mut all = vec![PartCost {
            part: "evidence JSON from the certificate extension".into(),
            micros: json_us,
        }];
        all.extend(platform_parts);
        all.push(PartCost {
            part: format!(
                "TPM: AK, quote signature, {}-byte firmware log and 3 runtime events replayed, signed manifest",
                firmware_log.len()
            ),
            micros: tpm_us,
        });
        let total: f64 = all.iter().map(|p| p.micros).sum();
        PlatformCost {
            platform: name.into(),
            evidence: what.into(),
            parts: all,
            total_micros: total,
            per_second: 1e6 / total,
            ratio_to_qemu_vtpm: 0.0,
        }
    };
    let mut platforms = vec![
        platform(
            "qemu-vtpm",
            "quote by a software P-256 AK over the --firmware-log given and nacre-init's runtime log",
            vec![],
        ),
        platform(
            "sev-snp",
            "snp/milan-report.bin + milan-vcek.der (virtee/sev 6.3.1), AMD's bundled roots; TPM part as qemu-vtpm",
            vec![PartCost {
                part: "SNP report parsed, VCEK chain (RSA-PSS), report signature (ECDSA P-384), VCEK TCB/chip binding".into(),
                micros: snp_us,
            }],
        ),
        platform(
            "tdx",
            "tdx/tdx_quote + tdx_quote_collateral.json (dcap-qvl 0.7.1 sample, v4); TPM part as qemu-vtpm",
            vec![
                PartCost {
                    part: "TDX quote parsed, QE report and quote signatures (nacre, ring)".into(),
                    micros: tdx_sig_us,
                },
                PartCost {
                    part: "PCK chain, CRLs, TCB info, QE identity (dcap-qvl, ring)".into(),
                    micros: (tdx_all_us - tdx_sig_us).max(0.0),
                },
            ],
        ),
    ];
    let base = platforms[0].total_micros;
    for p in &mut platforms {
        p.ratio_to_qemu_vtpm = p.total_micros / base;
    }
    Ok(VerificationCost {
        iterations,
        profile: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        peer: None,
        platforms,
    })
}

fn base64_key(i: usize) -> String {
    use base64::Engine;
    let mut k = [7u8; 32];
    k[..8].copy_from_slice(&(i as u64 + 1).to_le_bytes());
    base64::engine::general_purpose::STANDARD.encode(k)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The benchmark's software nodes are accepted by the real verifier and service (a bench
    /// that measured refusals would measure nothing).
    #[test]
    fn software_nodes_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let fw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../eventlog/tests/fixtures/plain.eventlog.bin"
        ))
        .unwrap();
        let r = run(dir.path(), fw, 8, 0.5, None, &|_| {}).unwrap();
        assert!(r.requests >= 2, "{r:?}");
        assert_eq!(r.failures, 0, "{r:?}");
        assert!(r.decisions >= r.requests && r.database_bytes > 0, "{r:?}");
    }

    /// With attackers beside them the good clients are still served, the attackers' connections
    /// are counted, and the log holds far fewer records than they opened connections.
    #[test]
    fn hostile_clients_beside_good_ones() {
        let dir = tempfile::tempdir().unwrap();
        let fw = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../eventlog/tests/fixtures/plain.eventlog.bin"
        ))
        .unwrap();
        let h = Hostile {
            slowloris: 2,
            flood: 2,
            garbage: 2,
            sources: 2,
        };
        let r = run(dir.path(), fw, 2, 1.0, Some(h), &|_| {}).unwrap();
        assert!(r.requests >= 2, "{r:?}");
        assert_eq!(r.failures, 0, "{r:?}");
        let c = r.hostile.as_ref().unwrap().connections;
        assert!(c > 20, "{r:?}");
        // Good requests are logged one by one; the attackers' at most 64 in full per window
        // plus summaries.
        assert!(r.decisions <= r.requests + 64 + 17, "{r:?}");
    }

    /// Every platform's verification succeeds on the real fixtures (the figures are of
    /// acceptances) and the parts add up.
    #[test]
    fn verification_cost_on_real_fixtures() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let fw = std::fs::read(root.join("eventlog/tests/fixtures/plain.eventlog.bin")).unwrap();
        let c = verification_cost(&root.join("attestation/tests/fixtures"), &fw, 2).unwrap();
        let names: Vec<&str> = c.platforms.iter().map(|p| p.platform.as_str()).collect();
        assert_eq!(names, ["qemu-vtpm", "sev-snp", "tdx"]);
        for p in &c.platforms {
            let sum: f64 = p.parts.iter().map(|x| x.micros).sum();
            assert!((sum - p.total_micros).abs() < 1e-6 && sum > 0.0, "{p:?}");
        }
        // A CVM verifies the TPM part and its platform report: it costs more.
        assert!(c.platforms[1].ratio_to_qemu_vtpm > 1.0 && c.platforms[2].ratio_to_qemu_vtpm > 1.0);
        // A fixture that does not verify is an error, not a figure.
        let dir = tempfile::tempdir().unwrap();
        let copy = |p: &str| {
            std::fs::create_dir_all(dir.path().join(p).parent().unwrap()).unwrap();
            std::fs::copy(
                root.join("attestation/tests/fixtures").join(p),
                dir.path().join(p),
            )
            .unwrap();
        };
        for p in [
            "snp/milan-vcek.der",
            "tdx/tdx_quote",
            "tdx/tdx_quote_collateral.json",
        ] {
            copy(p);
        }
        let mut report =
            std::fs::read(root.join("attestation/tests/fixtures/snp/milan-report.bin")).unwrap();
        report[0x90] ^= 1; // the launch measurement: the signature no longer covers it
        std::fs::write(dir.path().join("snp/milan-report.bin"), report).unwrap();
        let e = verification_cost(dir.path(), &fw, 1).unwrap_err();
        assert!(e.contains("SEV-SNP report"), "{e}");
    }
}
