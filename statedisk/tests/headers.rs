//! The header validator against real headers made by `cryptsetup luksFormat` on plain files
//! (needs cryptsetup-bin; runs as root here, as the project's tests do) and edited copies of them.

use nacre_statedisk::luks2::{self, classify, DiskState, Header, HeaderError, Profile, HDR_SIZE};
use nacre_statedisk::token::{TpmToken, TPM_TOKEN_TYPE};
use std::path::{Path, PathBuf};
use std::process::Command;

const DEVICE: u64 = 64 << 20;

fn dir() -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR")).join("statedisk-headers");
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cryptsetup(args: &[&str]) {
    let out = Command::new("cryptsetup")
        .args(args)
        .output()
        .expect("cryptsetup (cryptsetup-bin)");
    assert!(
        out.status.success(),
        "cryptsetup {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A 64 MiB file formatted with nacre's profile (plus `extra` options), returns its header area.
fn format(name: &str, extra: &[&str], token: bool) -> Vec<u8> {
    let d = dir();
    let img = d.join(format!("{name}.img"));
    let key = d.join("key");
    std::fs::write(&key, [7u8; 64]).unwrap();
    let _ = std::fs::remove_file(&img);
    std::fs::File::create(&img)
        .unwrap()
        .set_len(DEVICE)
        .unwrap();
    let mut args = vec![
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--key-file",
        key.to_str().unwrap(),
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--sector-size",
        "4096",
        "--cipher",
        "aes-xts-plain64",
        "--key-size",
        "512",
        "--label",
        "nacre-state",
    ];
    // Later options override earlier ones.
    args.extend_from_slice(extra);
    args.push(img.to_str().unwrap());
    cryptsetup(&args);
    if token {
        add_token(&img, &nacre_token());
    }
    area(&img)
}

fn nacre_token() -> serde_json::Value {
    let mut t = TpmToken::new(&[1, 2, 3], &[4, 5, 6]);
    t.keyslots = vec!["0".into()];
    serde_json::Value::Object(t.to_json())
}

fn add_token(img: &Path, token: &serde_json::Value) {
    let f = img.with_extension(format!("tok{}", rand_suffix()));
    std::fs::write(&f, token.to_string()).unwrap();
    cryptsetup(&[
        "token",
        "import",
        "--json-file",
        f.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    std::fs::remove_file(&f).unwrap();
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// The header area: everything before a 16 MiB data offset.
fn area(img: &Path) -> Vec<u8> {
    let mut v = std::fs::read(img).unwrap();
    v.truncate(16 << 20);
    v
}

fn tpm_profile() -> Profile {
    Profile {
        integrity: false,
        token_type: Some(TPM_TOKEN_TYPE.into()),
    }
}

fn check(area: &[u8], profile: &Profile) -> Result<luks2::Validated, HeaderError> {
    Header::parse(area)?.validate(profile, DEVICE)
}

fn refused(area: &[u8], profile: &Profile, want: &[&str]) -> String {
    let e = check(area, profile)
        .expect_err("must be refused")
        .to_string();
    for w in want {
        assert!(e.contains(w), "error {e:?} does not mention {w:?}");
    }
    e
}

/// Replace one copy's JSON (0 = primary, 1 = secondary) and re-checksum it, so only the
/// metadata rules can refuse it.
fn set_json(area: &mut [u8], copy: usize, json: &str) {
    let off = copy * HDR_SIZE as usize;
    let j = &mut area[off + 4096..off + HDR_SIZE as usize];
    j.fill(0);
    j[..json.len()].copy_from_slice(json.as_bytes());
    rechecksum(area, copy);
}

fn rechecksum(area: &mut [u8], copy: usize) {
    let off = copy * HDR_SIZE as usize;
    area[off + 448..off + 512].fill(0);
    let c = luks2::copy_checksum(&area[off..off + HDR_SIZE as usize]);
    area[off + 448..off + 480].copy_from_slice(&c);
}

/// Edit the JSON of both copies.
fn edit(area: &[u8], f: impl Fn(&mut serde_json::Value)) -> Vec<u8> {
    let h = Header::parse(area).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&h.json).unwrap();
    f(&mut v);
    let mut out = area.to_vec();
    let text = v.to_string();
    set_json(&mut out, 0, &text);
    set_json(&mut out, 1, &text);
    out
}

fn good() -> Vec<u8> {
    use std::sync::OnceLock;
    static GOOD: OnceLock<Vec<u8>> = OnceLock::new();
    GOOD.get_or_init(|| format("good", &[], true)).clone()
}

#[test]
fn cryptsetup_header_with_nacre_token_is_accepted() {
    let a = good();
    let v = check(&a, &tpm_profile()).unwrap();
    assert_eq!(v.data_offset, 16 << 20);
    assert_eq!(v.keyslots, vec![0]);
    let (id, tok) = v.token.unwrap();
    assert_eq!(id, 0);
    TpmToken::from_json(&tok).unwrap();
    assert_eq!(classify(&a), DiskState::Initialized);
    // Without a token, with a profile that expects none.
    let plain = format("plain", &[], false);
    check(
        &plain,
        &Profile {
            integrity: false,
            token_type: None,
        },
    )
    .unwrap();
    refused(
        &plain,
        &tpm_profile(),
        &["tokens", "no \"nacre-tpm2-authorized\" token"],
    );
    refused(
        &a,
        &Profile {
            integrity: false,
            token_type: None,
        },
        &["tokens.0.type", "nacre-tpm2-authorized"],
    );
}

#[test]
fn other_ciphers_kdfs_and_sizes_are_refused() {
    let cbc = format(
        "cbc",
        &["--cipher", "aes-cbc-essiv:sha256", "--key-size", "256"],
        true,
    );
    refused(
        &cbc,
        &tpm_profile(),
        &[
            "segments.0.encryption",
            "aes-cbc-essiv:sha256",
            "aes-xts-plain64",
        ],
    );
    let argon = format(
        "argon",
        &[
            "--pbkdf",
            "argon2id",
            "--pbkdf-memory",
            "32",
            "--pbkdf-force-iterations",
            "4",
            "--pbkdf-parallel",
            "1",
        ],
        true,
    );
    refused(
        &argon,
        &tpm_profile(),
        &["keyslots.0.kdf.type", "argon2id", "pbkdf2"],
    );
    let small = format("small-sector", &["--sector-size", "512"], true);
    refused(
        &small,
        &tpm_profile(),
        &["segments.0.sector_size", "512", "4096"],
    );
    let k256 = format("k256", &["--key-size", "256"], true);
    refused(&k256, &tpm_profile(), &["keyslots.0.key_size", "32", "64"]);
}

#[test]
fn extra_tokens_are_refused() {
    let d = dir();
    let img = d.join("extra-token.img");
    let _ = format("extra-token", &[], true);
    add_token(
        &img,
        &serde_json::json!({"type": "luks2-keyring", "keyslots": ["0"], "key_description": "nacre:x"}),
    );
    refused(
        &area(&img),
        &tpm_profile(),
        &["tokens.1.type", "luks2-keyring"],
    );
    let img2 = d.join("two-nacre.img");
    let _ = format("two-nacre", &[], true);
    add_token(&img2, &nacre_token());
    refused(&area(&img2), &tpm_profile(), &["tokens.1", "second"]);
    // A nacre token pointing at a keyslot that does not exist.
    let a = edit(&good(), |v| {
        v["tokens"]["0"]["keyslots"] = serde_json::json!(["3"])
    });
    refused(&a, &tpm_profile(), &["tokens.0.keyslots"]);
}

#[test]
fn edited_metadata_is_refused() {
    let g = good();
    let second = edit(&g, |v| {
        let s = v["segments"]["0"].clone();
        v["segments"]["1"] = s;
    });
    refused(
        &second,
        &tpm_profile(),
        &["segments", "exactly one segment"],
    );
    let linear = edit(&g, |v| v["segments"]["0"]["type"] = "linear".into());
    refused(&linear, &tpm_profile(), &["segments.0.type", "linear"]);
    let null = edit(&g, |v| {
        v["segments"]["0"]["encryption"] = "cipher_null-ecb".into()
    });
    refused(
        &null,
        &tpm_profile(),
        &["segments.0.encryption", "cipher_null-ecb"],
    );
    let integ = edit(
        &g,
        |v| v["segments"]["0"]["integrity"] = serde_json::json!({"type": "hmac(sha256)", "journal_encryption": "none", "journal_integrity": "none"}),
    );
    refused(
        &integ,
        &tpm_profile(),
        &["segments.0.integrity", "does not ask"],
    );
    let flags = edit(&g, |v| {
        v["config"]["flags"] = serde_json::json!(["allow-discards"])
    });
    refused(&flags, &tpm_profile(), &["config.flags", "allow-discards"]);
    let req = edit(&g, |v| {
        v["config"]["requirements"] = serde_json::json!({"mandatory": ["online-reencrypt"]})
    });
    refused(&req, &tpm_profile(), &["config.requirements"]);
    let unknown = edit(&g, |v| v["keyslots"]["0"]["priority"] = 2.into());
    refused(
        &unknown,
        &tpm_profile(),
        &["keyslots.0.priority", "unexpected key"],
    );
    let low = edit(&g, |v| v["keyslots"]["0"]["kdf"]["iterations"] = 10.into());
    refused(&low, &tpm_profile(), &["keyslots.0.kdf.iterations", "10"]);
    let digest = edit(&g, |v| {
        v["digests"]["0"]["keyslots"] = serde_json::json!([])
    });
    refused(&digest, &tpm_profile(), &["digests.0.keyslots"]);
    // Offsets: data inside the keyslot area, keyslot area overlapping the headers.
    let off = edit(&g, |v| v["segments"]["0"]["offset"] = "4096".into());
    refused(&off, &tpm_profile(), &["segments.0.offset", "4096"]);
    let area_off = edit(&g, |v| v["keyslots"]["0"]["area"]["offset"] = "4096".into());
    refused(
        &area_off,
        &tpm_profile(),
        &["keyslots.0.area.offset", "4096"],
    );
    let hex = edit(&g, |v| v["segments"]["0"]["offset"] = "0x1000000".into());
    refused(&hex, &tpm_profile(), &["segments.0.offset", "0x1000000"]);
    // Offsets inside the device.
    let e = Header::parse(&g)
        .unwrap()
        .validate(&tpm_profile(), 16 << 20)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("segments.0.offset") && e.contains("16777216-byte device"),
        "{e}"
    );
    // A strict token: unknown fields in nacre's token are refused too (by the key source).
    let a = edit(&g, |v| v["tokens"]["0"]["policy"] = "none".into());
    let (_, tok) = check(&a, &tpm_profile()).unwrap().token.unwrap();
    assert!(TpmToken::from_json(&tok).unwrap_err().contains("policy"));
}

#[test]
fn duplicate_json_keys_are_refused() {
    let g = good();
    let h = Header::parse(&g).unwrap();
    // Prepend a second "segments" object: json-c and serde would each keep one of the two.
    let dup = h.json.replacen(
        "{\"keyslots\"",
        "{\"segments\":{\"0\":{\"type\":\"crypt\",\"offset\":\"16777216\",\"size\":\"dynamic\",\"iv_tweak\":\"0\",\"encryption\":\"cipher_null-ecb\",\"sector_size\":4096}},\"keyslots\"",
        1,
    );
    let mut a = g.clone();
    set_json(&mut a, 0, &dup);
    set_json(&mut a, 1, &dup);
    let e = refused(&a, &tpm_profile(), &["duplicate key \"segments\""]);
    assert!(e.contains("JSON"), "{e}");
}

#[test]
fn broken_checksums_and_disagreeing_copies_are_refused() {
    let g = good();
    // One flipped byte in the primary JSON: checksum mismatch.
    let mut a = g.clone();
    a[4096 + 10] ^= 0x01;
    refused(&a, &tpm_profile(), &["primary header: checksum"]);
    // Same in the secondary.
    let mut b = g.clone();
    b[HDR_SIZE as usize + 4096 + 10] ^= 0x01;
    refused(&b, &tpm_profile(), &["secondary header: checksum"]);
    // The secondary with different (valid) metadata.
    let h = Header::parse(&g).unwrap();
    let mut c = g.clone();
    set_json(
        &mut c,
        1,
        &h.json.replace("\"iterations\":1000", "\"iterations\":1001"),
    );
    refused(&c, &tpm_profile(), &["copies disagree", "JSON metadata"]);
    // Different seqids.
    let mut d = g.clone();
    d[HDR_SIZE as usize + 23] ^= 0x01;
    rechecksum(&mut d, 1);
    refused(&d, &tpm_profile(), &["copies disagree", "seqid"]);
    // A secondary missing altogether.
    let mut e = g.clone();
    e[HDR_SIZE as usize..2 * HDR_SIZE as usize].fill(0);
    refused(&e, &tpm_profile(), &["secondary header: magic"]);
    // Damage in a padding area is refused even with a valid checksum.
    let mut f = g.clone();
    f[300] = 1;
    rechecksum(&mut f, 0);
    refused(&f, &tpm_profile(), &["primary header: padding"]);
    // A damaged initialized disk stays initialized (refused, never reformatted).
    assert_eq!(classify(&a), DiskState::Initialized);
    assert_eq!(classify(&e), DiskState::Initialized);
}

#[test]
fn swapped_header_from_another_disk_validates_but_names_another_uuid() {
    // The validator cannot tell a header from another nacre disk: the key source and the
    // superblock UUID check refuse it at activation (covered by the boot tests).
    let other = format("other", &[], true);
    let a = check(&good(), &tpm_profile()).unwrap();
    let b = check(&other, &tpm_profile()).unwrap();
    assert_ne!(a.uuid, b.uuid);
}

#[test]
fn unfinished_formats_are_formatted_again() {
    // luksFormat without the label: the first format never reached its last step.
    let unlabeled = format("unlabeled", &["--label", ""], true);
    assert!(matches!(classify(&unlabeled), DiskState::Uninitialized(_)));
    refused(&unlabeled, &tpm_profile(), &["label", "nacre-state"]);
    // The label written to the primary copy only (power cut between the two copies).
    let mut cut = unlabeled.clone();
    let mut seq = u64::from_be_bytes(cut[16..24].try_into().unwrap());
    seq += 1;
    cut[16..24].copy_from_slice(&seq.to_be_bytes());
    cut[24..24 + 11].copy_from_slice(b"nacre-state");
    rechecksum(&mut cut, 0);
    match classify(&cut) {
        DiskState::Uninitialized(why) => assert!(why.contains("primary"), "{why}"),
        s => panic!("{s:?}"),
    }
    // The same with any other difference is not that case: refused as initialized.
    let mut other = cut.clone();
    let h = Header::parse(&good()).unwrap();
    set_json(&mut other, 1, &h.json);
    assert_eq!(classify(&other), DiskState::Initialized);
    // Blank and foreign disks.
    assert!(matches!(
        classify(&vec![0u8; 1 << 16]),
        DiskState::Uninitialized(_)
    ));
}
