//! The fuzz targets' seed corpus (fuzz/seeds.list: real fixtures of the repository and seeds a
//! real swtpm made) through the same entry functions the fuzz targets call (fuzz/src/lib.rs),
//! in the normal `cargo test`: every seed must give what the list says (accepted or refused)
//! and none may panic. Fuzzing itself is `scripts/fuzz.sh` (nightly, not in CI). PID 1's
//! targets (`PID1_TARGETS`) are checked by init/tests/fuzz_corpus.rs instead.
//!
//! `write_seeds` (ignored) remakes the swtpm seeds: `NACRE_WRITE_FUZZ_SEEDS=1 cargo test -p
//! nacre-keyservice --test fuzz_corpus -- --ignored write_seeds`; then set
//! `nacre_fuzz::ATLS_NOW` to a time inside the new certificate's validity.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod nacre_fuzz;
#[path = "../../attestation/tests/support/mod.rs"]
mod support;

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

type Entry = fn(&[u8]) -> Result<(), String>;

/// PID 1's targets (fuzz/src/pid1.rs: the state disk, verity, DHCP): their seeds are checked by
/// init/tests/fuzz_corpus.rs, which can build those parsers.
const PID1_TARGETS: [&str; 4] = [
    "luks2_header",
    "verity_superblock",
    "ext4_superblock",
    "dhcp",
];

fn entry(target: &str) -> Option<Entry> {
    Some(match target {
        "atls_cert" => nacre_fuzz::atls_cert,
        "evidence_json" => nacre_fuzz::evidence_json,
        "tpm_attest" => nacre_fuzz::tpm_attest,
        "tdx_quote" => nacre_fuzz::tdx_quote,
        "snp_report" => nacre_fuzz::snp_report,
        "snp_cert_table" => nacre_fuzz::snp_cert_table,
        "snp_vek" => nacre_fuzz::snp_vek,
        "azure_hcl" => nacre_fuzz::azure_hcl,
        "nitro_document" => nacre_fuzz::nitro_document,
        "eventlog_tcg" => nacre_fuzz::eventlog_tcg,
        "eventlog_cel" => nacre_fuzz::eventlog_cel,
        "join_lines" => nacre_fuzz::join_lines,
        "cluster_config" => nacre_fuzz::cluster_config,
        "metadata_http" => nacre_fuzz::metadata_http,
        _ => return None,
    })
}

/// (target, expect ok, path) of every line of fuzz/seeds.list.
fn seeds() -> Vec<(String, bool, PathBuf)> {
    let list = std::fs::read_to_string(root().join("fuzz/seeds.list")).unwrap();
    list.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter(|l| {
            !PID1_TARGETS
                .iter()
                .any(|t| l.split_whitespace().next() == Some(t))
        })
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 3, "seeds.list: {l:?} is not `target ok|err path`");
            let ok = match f[1] {
                "ok" => true,
                "err" => false,
                other => panic!("seeds.list: {other:?} is neither ok nor err"),
            };
            (f[0].to_owned(), ok, root().join(f[2]))
        })
        .collect()
}

#[test]
fn every_seed_gives_what_the_list_says() {
    let seeds = seeds();
    let fuzz_targets: Vec<String> = std::fs::read_dir(root().join("fuzz/fuzz_targets"))
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            p.file_stem().unwrap().to_string_lossy().into_owned()
        })
        .filter(|t| !PID1_TARGETS.contains(&t.as_str()))
        .collect();
    // Every fuzz target has an entry here and an accepted seed (a target whose seeds are all
    // refused fuzzes only the first bytes of its format).
    for t in &fuzz_targets {
        assert!(
            entry(t).is_some(),
            "fuzz target {t} has no entry in this test"
        );
        assert!(
            seeds.iter().any(|(s, ok, _)| s == t && *ok),
            "fuzz target {t} has no accepted seed in fuzz/seeds.list"
        );
    }
    let mut failures = Vec::new();
    for (target, ok, path) in &seeds {
        let f = entry(target).unwrap_or_else(|| panic!("seeds.list: unknown target {target}"));
        assert!(
            fuzz_targets.contains(target),
            "{target} is not in fuzz/fuzz_targets"
        );
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        match (f(&data), ok) {
            (Ok(()), true) | (Err(_), false) => {}
            (r, _) => failures.push(format!("{target} {}: {r:?}", path.display())),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The entry functions refuse what is not their format (the seeds above show acceptance).
#[test]
fn entry_functions_refuse_garbage_and_truncations() {
    let fixture = |p: &str| std::fs::read(root().join(p)).unwrap();
    let tdx = fixture("attestation/tests/fixtures/tdx/tdx_quote");
    let snp = fixture("attestation/tests/fixtures/snp/milan-report.bin");
    let tcg = fixture("eventlog/tests/fixtures/plain.eventlog.bin");
    for cut in [0, 1, 47, 48, 631, 632, tdx.len() / 2, tdx.len() - 71] {
        assert!(
            nacre_fuzz::tdx_quote(&tdx[..cut]).is_err(),
            "TDX quote cut at {cut}"
        );
    }
    for cut in [0, 4, 0x2A0, snp.len() - 1] {
        assert!(
            nacre_fuzz::snp_report(&snp[..cut]).is_err(),
            "SNP report cut at {cut}"
        );
    }
    assert!(nacre_fuzz::eventlog_tcg(&tcg[..tcg.len() - 1]).is_err());
    for f in [
        nacre_fuzz::atls_cert as Entry,
        nacre_fuzz::evidence_json,
        nacre_fuzz::tpm_attest,
        nacre_fuzz::snp_cert_table,
        nacre_fuzz::cluster_config,
    ] {
        assert!(f(b"\xff\x00garbage").is_err());
    }
    assert!(nacre_fuzz::join_lines(b"{\"op\":\"steal\"}\n").is_err());
    assert!(nacre_fuzz::eventlog_cel(b"{}\n").is_err());
}

/// GUIDs of the GHCB certificate table (AMD SEV-SNP GHCB spec, "SNP Extended Guest Request"),
/// as their bytes appear in the table (first three fields little-endian).
fn guid_le(s: &str) -> [u8; 16] {
    let h: Vec<u8> = hex::decode(s.replace('-', "")).unwrap();
    let mut g = [0u8; 16];
    g.copy_from_slice(&h);
    g[..4].reverse();
    g[4..6].reverse();
    g[6..8].reverse();
    g
}

/// Remakes the swtpm, certificate-table, join and cluster seeds (see the module docs).
#[test]
#[ignore]
fn write_seeds() {
    use nacre_attestation::atls::{attested_cert, TpmAttest};
    use nacre_attestation::evidence::Evidence;
    use nacre_attestation::join::*;
    use nacre_attestation::tpm::Attester;
    use nacre_eventlog::{Phase, RuntimeEvent};
    if std::env::var_os("NACRE_WRITE_FUZZ_SEEDS").is_none() {
        return;
    }
    let seeds = root().join("fuzz/seeds");
    let write = |p: &str, b: &[u8]| {
        let p = seeds.join(p);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b).unwrap();
    };

    // A node: a swtpm with an EK certificate and a signing EK, PCRs of a real OVMF boot.
    let ca = tempfile::tempdir().unwrap();
    let tpm = support::swtpm_with_ek(&ca.path().join("ca"), true);
    let node = support::boot_on(
        tpm,
        "plain",
        &[
            RuntimeEvent::Phase(Phase::EnterInitrd),
            RuntimeEvent::Phase(Phase::LeaveInitrd),
        ],
    );
    let attest = TpmAttest {
        attester: Attester::with_tcti(&node.tpm.tcti),
        pcrs: support::QUOTED.to_vec(),
        firmware_log: node.firmware_log.clone(),
        runtime_log: node.runtime_log.clone(),
    };
    let (cert, _) = attested_cert(&attest, b"fuzz seed nonce").unwrap();
    write("atls/swtpm-node.der", cert.as_ref());
    let made = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    eprintln!("certificate made at {made} (valid for 10 minutes from a minute before)");
    let ev: Evidence = {
        let now = rustls::pki_types::UnixTime::now();
        nacre_attestation::atls::evidence_from_cert(cert.as_ref(), now)
            .unwrap()
            .0
    };
    write("evidence/swtpm-node.json", &ev.to_json());
    write("tpm/quote-attest.bin", &ev.quote.attest);
    write("tpm/quote-signature.bin", &ev.quote.signature);
    if let Some(ek) = &ev.ek {
        // (The refused signing-EK certify of earlier versions: none from today's TPMs.)
        if !ek.certify_attest.is_empty() {
            write("tpm/certify-attest.bin", &ek.certify_attest);
            write("tpm/certify-signature.bin", &ek.certify_signature);
        }
        write("tpm/ak-public-area.bin", &ek.ak_public_area);
    }
    write(
        "cel/swtpm-node.jsonl",
        &ev.runtime_log
            .iter()
            .flat_map(|r| r.to_line())
            .collect::<Vec<u8>>(),
    );

    // A GHCB certificate table as a host hands it out (VCEK, ASK, ARK; terminator), over the
    // real Milan certificates of attestation/tests/fixtures/snp. The table is made here.
    let fx =
        |n: &str| std::fs::read(root().join("attestation/tests/fixtures/snp").join(n)).unwrap();
    let pem_der = |b: Vec<u8>| -> Vec<u8> {
        use base64::Engine;
        let t = String::from_utf8(b).unwrap();
        let body: String = t.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap()
    };
    let certs = [
        ("63da758d-e664-4564-adc5-f4b93be8accd", fx("milan-vcek.der")),
        (
            "4ab7b379-bbac-4fe4-a02f-05aef327c782",
            pem_der(fx("milan-ask.pem")),
        ),
        (
            "c0b406a4-a803-4952-9743-3fb6014cd0ae",
            pem_der(fx("milan-ark.pem")),
        ),
    ];
    let mut table = Vec::new();
    let mut off = 24 * (certs.len() + 1);
    for (g, c) in &certs {
        table.extend_from_slice(&guid_le(g));
        table.extend_from_slice(&(off as u32).to_le_bytes());
        table.extend_from_slice(&(c.len() as u32).to_le_bytes());
        off += c.len();
    }
    table.extend_from_slice(&[0u8; 24]);
    for (_, c) in &certs {
        table.extend_from_slice(c);
    }
    write("snp/milan-cert-table.bin", &table);

    // Join protocol lines, serialized from the protocol's own types.
    let wg = WgAnnounce {
        public_key: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into(),
        underlay: "192.0.2.7".parse().unwrap(),
        listen_port: 51820,
    };
    let reqs = [
        Request::Join { wireguard: wg },
        Request::DiskKey {
            disk_uuid: "00000000-0000-4000-8000-000000000001".into(),
        },
        Request::Peers {},
    ];
    let peer = PeerInfo {
        name: "node-1".into(),
        public_key: "BwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwcHBwc=".into(),
        endpoint: "192.0.2.7:51820".parse().unwrap(),
        allowed_ips: vec!["10.244.0.2/32".into()],
    };
    let resps = [
        Response::Joined(Joined {
            node: "node-2".into(),
            cluster_id: "5a".repeat(32),
            overlay: "10.244.0.3/32".into(),
            peers: vec![peer.clone()],
            pods: Some(nacre_attestation::join::PodNetwork {
                pod_range: "10.32.3.0/24".into(),
                pod_cidr: "10.32.0.0/16".into(),
                service_cidr: Some("10.96.0.0/12".into()),
            }),
            kubelet: KubeletJoin {
                api_server: Some("https://10.244.0.1:6443".into()),
                api_server_ca: Some("-----BEGIN CERTIFICATE-----\n...".into()),
                bootstrap_token: "abcdef.0123456789abcdef".into(),
                cluster_dns: Some("10.96.0.10".into()),
                cluster_domain: "cluster.local".into(),
            },
            rejoin: false,
        }),
        Response::DiskKey {
            key: nacre_attestation::join::SecretB64::new("AA".repeat(43) + "=="),
        },
        Response::Peers { peers: vec![peer] },
        Response::Refused {
            reason: "attestation refused".into(),
        },
    ];
    let lines = |v: Vec<Vec<u8>>| -> Vec<u8> {
        v.into_iter()
            .flat_map(|mut l| {
                l.push(b'\n');
                l
            })
            .collect()
    };
    write(
        "join/requests.jsonl",
        &lines(
            reqs.iter()
                .map(|r| serde_json::to_vec(r).unwrap())
                .collect(),
        ),
    );
    write(
        "join/responses.jsonl",
        &lines(
            resps
                .iter()
                .map(|r| serde_json::to_vec(r).unwrap())
                .collect(),
        ),
    );

    // The cluster configuration nacre-keyservice init writes, as fw_cfg and as user data.
    let ca_pem = std::fs::read_to_string(root().join("cluster/tests/data/test-ca.pem")).unwrap();
    let c = nacre_cluster::ClusterConfig::new(
        "fuzz-1",
        "10.0.2.2:7443".parse().unwrap(),
        &ca_pem,
        vec!["10.244.0.0/16".into(), "10.96.0.0/12".into()],
    )
    .unwrap();
    let text = c.render().unwrap();
    write("cluster/cluster.toml", text.as_bytes());
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(text.as_bytes()) + "\n";
    write("cluster/user-data.b64", b64.as_bytes());
}
