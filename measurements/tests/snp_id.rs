//! SEV-SNP ID block and ID auth against PyPI's sev-snp-measure `snp-create-id-block` (installed
//! by scripts/install-deps.sh into /opt/nacre-venv): the same ID block byte for byte, the same
//! ID auth apart from the (randomized) ECDSA signatures, each side's signatures verifying with
//! the other's reading, the same key digests; tampered structures refused.

use base64::Engine;
use nacre_measure::snp_id::{id_auth, id_block, verify_id_auth, SnpKey, DEFAULT_POLICY};
use std::path::Path;
use std::process::Command;

fn venv() -> String {
    std::env::var("NACRE_VENV").unwrap_or_else(|_| "/opt/nacre-venv".into())
}

fn p384_key(dir: &Path, name: &str) -> std::path::PathBuf {
    let raw = dir.join(format!("{name}.raw.pem"));
    let pk8 = dir.join(format!("{name}.pem"));
    let ok = Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-384",
            "-out",
        ])
        .arg(&raw)
        .status()
        .unwrap()
        .success()
        && Command::new("openssl")
            .args(["pkcs8", "-topk8", "-nocrypt", "-in"])
            .arg(&raw)
            .arg("-out")
            .arg(&pk8)
            .status()
            .unwrap()
            .success();
    assert!(ok, "openssl could not make a P-384 key");
    pk8
}

#[test]
fn id_block_and_auth_match_sev_snp_measure() {
    let tool = format!("{}/bin/snp-create-id-block", venv());
    assert!(
        Path::new(&tool).exists(),
        "{tool} is missing: run scripts/install-deps.sh (sev-snp-measure from PyPI)"
    );
    let dir = tempfile::tempdir().unwrap();
    let id_pem = p384_key(dir.path(), "id");
    let author_pem = p384_key(dir.path(), "author");
    let mut ld = [0u8; 48];
    for (i, b) in ld.iter_mut().enumerate() {
        *b = (i * 7 + 3) as u8;
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let out = Command::new(&tool)
        .arg("--measurement")
        .arg(b64.encode(ld))
        .arg("--idkey")
        .arg(&id_pem)
        .arg("--authorkey")
        .arg(&author_pem)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let field = |prefix: &str| -> Vec<u8> {
        let v = text
            .split([',', '\n'])
            .find_map(|p| p.trim().strip_prefix(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in {text}"));
        b64.decode(v.trim()).unwrap()
    };
    let py_block = field("id-block=");
    let py_auth = field("id-auth=");
    let py_id_digest = field("id_key_hash: ");
    let py_author_digest = field("author_key: ");

    let id = SnpKey::from_pem(&std::fs::read(&id_pem).unwrap(), "id").unwrap();
    let author = SnpKey::from_pem(&std::fs::read(&author_pem).unwrap(), "author").unwrap();
    let block = id_block(&ld, DEFAULT_POLICY);
    assert_eq!(block.to_vec(), py_block, "ID block");
    let auth = id_auth(&block, &id, &author).unwrap();
    assert_eq!(auth.len(), py_auth.len());
    // Equal apart from the two signatures (ECDSA is randomized).
    let blank = |a: &[u8]| {
        let mut a = a.to_vec();
        a[0x40..0x240].fill(0);
        a[0x680..0x880].fill(0);
        a
    };
    assert_eq!(blank(&auth), blank(&py_auth), "ID auth (signatures aside)");
    assert_eq!(id.digest().to_vec(), py_id_digest);
    assert_eq!(author.digest().to_vec(), py_author_digest);
    // Each side's signatures verify with nacre's reading of the format.
    let block_arr: [u8; 0x60] = py_block.clone().try_into().unwrap();
    for a in [&auth, &py_auth] {
        let (idd, authd) = verify_id_auth(&block_arr, a).unwrap();
        assert_eq!(idd, id.digest());
        assert_eq!(authd, author.digest());
    }
    // Tampered: a signature byte, the ID key, the block.
    let mut bad = auth.clone();
    bad[0x41] ^= 1;
    assert!(verify_id_auth(&block, &bad)
        .unwrap_err()
        .contains("ID block signature"));
    let mut bad = auth.clone();
    bad[0x245] ^= 1;
    assert!(verify_id_auth(&block, &bad).is_err());
    let mut other = block;
    other[0] ^= 1;
    assert!(verify_id_auth(&other, &auth).is_err());
}

#[test]
fn only_p384_pkcs8_keys_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("p256.pem");
    assert!(Command::new("openssl")
        .args([
            "genpkey",
            "-algorithm",
            "EC",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-out"
        ])
        .arg(&raw)
        .status()
        .unwrap()
        .success());
    let e = SnpKey::from_pem(&std::fs::read(&raw).unwrap(), "p256.pem")
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("P-384"), "{e}");
    assert!(SnpKey::from_pem(b"garbage", "x").is_err());
}
