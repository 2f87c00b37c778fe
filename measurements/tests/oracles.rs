//! nacre-measure against the real tools users already trust: systemd-measure (PCR 11 and its
//! signed policies), pesign (Authenticode), sbsign (signed UKIs) and openssl (cosign-style
//! signatures). Each tool is installed by scripts/install-deps.sh; a missing tool fails the test.

use nacre_eventlog::alg::HashAlg;
use nacre_eventlog::runtime::Phase;
use nacre_measure::pe::PeImage;
use nacre_measure::predict::{predict, BootConfig};
use nacre_measure::sign::{self, PemSigner, PublicKey, RsaSigner};
use nacre_measure::{authenticode, pcrsig};
use std::path::{Path, PathBuf};
use std::process::Command;

const STUB: &str = "/usr/lib/systemd/boot/efi/linuxx64.efi.stub";
const SYSTEMD_MEASURE: &str = "/usr/lib/systemd/systemd-measure";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (run scripts/install-deps.sh)"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn kernel() -> PathBuf {
    let mut k: Vec<_> = std::fs::read_dir("/boot")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("vmlinuz-")
        })
        .collect();
    k.sort();
    k.pop()
        .expect("a Debian kernel in /boot (linux-image-amd64)")
}

/// Inputs and a UKI made from them with scripts/lib/make-uki.sh.
struct Uki {
    dir: tempfile::TempDir,
    uki: PathBuf,
}

impl Uki {
    fn build(cmdline: &str) -> Uki {
        Self::build_on(STUB, cmdline)
    }

    fn build_on(stub: &str, cmdline: &str) -> Uki {
        let dir = tempfile::tempdir().unwrap();
        let p = |n: &str| dir.path().join(n);
        std::fs::write(p("osrel"), "ID=nacre\nVERSION_ID=test\n").unwrap();
        std::fs::write(p("cmdline"), cmdline).unwrap();
        let initrd: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(p("initrd"), initrd).unwrap();
        let uki = p("uki.efi");
        run(Command::new(repo().join("scripts/lib/make-uki.sh"))
            .args(["--kernel", kernel().to_str().unwrap()])
            .args(["--initrd", p("initrd").to_str().unwrap()])
            .args(["--cmdline-file", p("cmdline").to_str().unwrap()])
            .args(["--osrel", p("osrel").to_str().unwrap()])
            .args(["--out", uki.to_str().unwrap()])
            .args(["--stub", stub]));
        Uki { dir, uki }
    }

    fn file(&self, n: &str) -> String {
        self.dir.path().join(n).to_str().unwrap().to_string()
    }

    fn measure_args(&self) -> Vec<String> {
        vec![
            format!("--linux={}", kernel().display()),
            format!("--osrel={}", self.file("osrel")),
            format!("--cmdline={}", self.file("cmdline")),
            format!("--initrd={}", self.file("initrd")),
        ]
    }
}

#[test]
fn pcr11_matches_systemd_measure_for_every_phase() {
    let uki = Uki::build("console=ttyS0 roothash=00112233 nacre.test=oracle");
    let bytes = std::fs::read(&uki.uki).unwrap();
    for bank in ["sha256", "sha384", "sha1"] {
        let out = run(Command::new(SYSTEMD_MEASURE)
            .arg("calculate")
            .args(uki.measure_args())
            .arg(format!("--bank={bank}"))
            .arg("--phase=enter-initrd:leave-initrd:sysinit:ready")
            .arg("--phase=enter-initrd:leave-initrd:sysinit")
            .arg("--phase=enter-initrd:leave-initrd")
            .arg("--phase=enter-initrd")
            .arg("--json=short"));
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let alg: HashAlg = bank.parse().unwrap();
        let entries = json[bank].as_array().unwrap();
        assert_eq!(entries.len(), 4);
        for e in entries {
            let phase_path = e["phase"].as_str().unwrap();
            let last = phase_path.rsplit(':').next().unwrap();
            let phase = Phase::ALL.into_iter().find(|p| p.word() == last).unwrap();
            let cfg = BootConfig {
                alg,
                phase: Some(phase),
                ..BootConfig::default()
            };
            let p = predict(&bytes, &cfg).unwrap();
            assert_eq!(
                hex::encode(&p.pcrs[&11]),
                e["hash"].as_str().unwrap(),
                "bank {bank}, phase {phase_path}"
            );
        }
    }
}

/// systemd 257 (Debian 13's stub and systemd-measure, fetched by
/// scripts/lib/fetch-trixie-systemd.sh with pinned hashes): the stub also measures its `.sbat`.
#[test]
fn pcr11_matches_systemd_measure_257() {
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("trixie-systemd");
    let out = run(
        Command::new(repo().join("scripts/lib/fetch-trixie-systemd.sh"))
            .arg(&cache)
            .arg("--quiet"),
    );
    let mut lines = out.lines();
    let (stub, measure) = (lines.next().unwrap(), lines.next().unwrap());
    let uki = Uki::build_on(stub, "console=ttyS0 roothash=8899 nacre.test=257");
    let bytes = std::fs::read(&uki.uki).unwrap();
    let sbat = uki.file("sbat");
    run(Command::new("objcopy")
        .args(["-O", "binary", "--only-section=.sbat"])
        .arg(&uki.uki)
        .arg(&sbat));
    for (phase, arg) in [
        (None, "--phase=:"),
        (Some(Phase::EnterInitrd), "--phase=enter-initrd"),
        (
            Some(Phase::Ready),
            "--phase=enter-initrd:leave-initrd:sysinit:ready",
        ),
    ] {
        let out = run(Command::new(measure)
            .arg("calculate")
            .args(uki.measure_args())
            .arg(format!("--sbat={sbat}"))
            .args(["--bank=sha256", arg, "--json=short"]));
        let json: serde_json::Value = serde_json::from_str(&out).unwrap();
        let cfg = BootConfig {
            phase,
            ..BootConfig::default()
        };
        let p = predict(&bytes, &cfg).unwrap();
        assert_eq!(p.stub, nacre_measure::uki::StubProfile::V257);
        assert_eq!(
            hex::encode(&p.pcrs[&11]),
            json["sha256"][0]["hash"].as_str().unwrap(),
            "{arg}"
        );
    }
}

#[test]
fn authenticode_matches_pesign_for_stub_kernel_and_signed_uki() {
    let uki = Uki::build("console=ttyS0");
    // Sign a copy with a throw-away key: the digest must not change (certificate table and
    // checksum are excluded), and must match what pesign computes for the signed file.
    let key = uki.file("db.key");
    let crt = uki.file("db.crt");
    run(Command::new("openssl").args([
        "req",
        "-new",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=nacre oracle test",
        "-keyout",
        &key,
        "-out",
        &crt,
    ]));
    let signed = uki.file("signed.efi");
    run(Command::new("sbsign").args([
        "--key",
        &key,
        "--cert",
        &crt,
        "--output",
        &signed,
        uki.uki.to_str().unwrap(),
    ]));
    let stub = PathBuf::from(STUB);
    let signed = PathBuf::from(signed);
    for file in [stub, kernel(), uki.uki.clone(), signed.clone()] {
        let bytes = std::fs::read(&file).unwrap();
        let pe = PeImage::parse(&bytes).unwrap();
        let ours = hex::encode(authenticode::digest(&pe, &ring::digest::SHA256));
        let out = run(Command::new("pesign").args(["--hash", "-i"]).arg(&file));
        let theirs = out.split_whitespace().nth(1).unwrap();
        assert_eq!(ours, theirs, "{}", file.display());
    }
    // sbsign pads the image to 8 bytes before appending the certificate table, and signs the
    // padded image: the signed file's digest is the padded unsigned file's, not the unsigned one's.
    let mut a = std::fs::read(&uki.uki).unwrap();
    a.resize(a.len().next_multiple_of(8), 0);
    let b = std::fs::read(&signed).unwrap();
    assert_eq!(
        authenticode::digest(&PeImage::parse(&a).unwrap(), &ring::digest::SHA384).as_ref(),
        authenticode::digest(&PeImage::parse(&b).unwrap(), &ring::digest::SHA384).as_ref()
    );
    assert_eq!(PeImage::parse(&b).unwrap().signatures().unwrap().len(), 1);
}

#[test]
fn blob_signatures_interoperate_with_openssl() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n).to_str().unwrap().to_string();
    run(Command::new("openssl").args([
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        &p("key.pem"),
    ]));
    run(Command::new("openssl").args([
        "pkey",
        "-in",
        &p("key.pem"),
        "-pubout",
        "-out",
        &p("pub.pem"),
    ]));
    std::fs::write(p("manifest.json"), b"{\"golden\": true}\n").unwrap();

    // nacre signs, openssl verifies (what `cosign verify-blob --key` checks).
    let signer = PemSigner::from_pem_file(Path::new(&p("key.pem"))).unwrap();
    let sig = sign::sign_blob(&signer, b"{\"golden\": true}\n").unwrap();
    std::fs::write(p("sig.der"), base64_decode(&sig)).unwrap();
    let out = run(Command::new("openssl").args([
        "dgst",
        "-sha256",
        "-verify",
        &p("pub.pem"),
        "-signature",
        &p("sig.der"),
        &p("manifest.json"),
    ]));
    assert!(out.contains("Verified OK"));

    // openssl signs, nacre verifies; a changed file is refused.
    run(Command::new("openssl").args([
        "dgst",
        "-sha256",
        "-sign",
        &p("key.pem"),
        "-out",
        &p("ossl.der"),
        &p("manifest.json"),
    ]));
    let key = PublicKey::from_pem_file(Path::new(&p("pub.pem"))).unwrap();
    let ossl = base64_encode(&std::fs::read(p("ossl.der")).unwrap());
    sign::verify_blob(&key, b"{\"golden\": true}\n", ossl.as_bytes()).unwrap();
    assert!(sign::verify_blob(&key, b"{\"golden\": false}\n", ossl.as_bytes()).is_err());
}

#[test]
fn pcrsig_matches_systemd_measure_sign_byte_for_byte() {
    let uki = Uki::build("console=ttyS0 roothash=4455");
    let key = uki.file("pcr.key");
    let public = uki.file("pcr.pub");
    run(Command::new("openssl").args(["genrsa", "-out", &key, "2048"]));
    run(Command::new("openssl").args(["rsa", "-in", &key, "-pubout", "-out", &public]));

    // systemd-measure 252 computes the policy with a TPM: give it a throw-away swtpm.
    let port = free_port();
    let state = tempfile::tempdir().unwrap();
    let mut swtpm = Command::new("swtpm")
        .args(["socket", "--tpm2", "--tpmstate"])
        .arg(format!("dir={}", state.path().display()))
        .arg("--server")
        .arg(format!("type=tcp,port={port},bindaddr=127.0.0.1"))
        .arg("--ctrl")
        .arg(format!("type=tcp,port={},bindaddr=127.0.0.1", port + 1))
        .args(["--flags", "not-need-init,startup-clear"])
        .spawn()
        .expect("swtpm (scripts/install-deps.sh)");
    std::thread::sleep(std::time::Duration::from_millis(500));
    let out = Command::new(SYSTEMD_MEASURE)
        .arg("sign")
        .args(uki.measure_args())
        .args([
            "--bank=sha256",
            &format!("--private-key={key}"),
            &format!("--public-key={public}"),
        ])
        .args([
            "--phase=enter-initrd",
            "--phase=enter-initrd:leave-initrd",
            "--phase=enter-initrd:leave-initrd:sysinit",
            "--phase=enter-initrd:leave-initrd:sysinit:ready",
        ])
        .env(
            "SYSTEMD_TPM2_DEVICE",
            format!("swtpm:host=127.0.0.1,port={port}"),
        )
        .output()
        .unwrap();
    let _ = swtpm.kill();
    let _ = swtpm.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let theirs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let bytes = std::fs::read(&uki.uki).unwrap();
    let p = predict(&bytes, &BootConfig::default()).unwrap();
    let signer = RsaSigner::from_pem_file(Path::new(&key)).unwrap();
    let phases = pcrsig::phase_values(HashAlg::Sha256, &p.pcrs[&11]).unwrap();
    let ours = pcrsig::sign_pcr11(&signer, HashAlg::Sha256, &phases).unwrap();
    let mut a: Vec<_> = ours["sha256"].as_array().unwrap().clone();
    let mut b: Vec<_> = theirs["sha256"].as_array().unwrap().clone();
    let key_of = |v: &serde_json::Value| v["pol"].as_str().unwrap().to_string();
    a.sort_by_key(key_of);
    b.sort_by_key(key_of);
    assert_eq!(a, b);
}

fn free_port() -> u16 {
    // Two consecutive free ports (server and control).
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        if port < 65000 && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn base64_encode(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// The Secure Boot db authority (what firmware logs into PCR 7) read from the signature's
/// structure, with sbsign-signed UKIs and openssl-made chains: a db of several certificates, a
/// UKI signed by a leaf that chains to a db root through an intermediate the signature carries
/// (the root is the authority, not the leaf), db order deciding between two that verify, and
/// refusals: a missing intermediate, a db certificate with the root's name but another key, a
/// signature with one byte changed, an image changed after signing.
#[test]
fn db_authority_is_read_from_the_signature_structure() {
    use nacre_measure::efivars::{
        find_db_authority, AuthorityError, Guid, SignatureData, EFI_CERT_X509,
    };
    let uki = Uki::build("console=ttyS0");
    let f = |n: &str| uki.file(n);
    let openssl = |args: &[&str]| run(Command::new("openssl").args(args));
    let ca = |name: &str, subj: &str| {
        openssl(&[
            "req",
            "-new",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            subj,
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-keyout",
            &f(&format!("{name}.key")),
            "-out",
            &f(&format!("{name}.crt")),
        ]);
    };
    // issued(NAME, SUBJECT, ISSUER, is a CA)
    let issued = |name: &str, subj: &str, issuer: &str, is_ca: bool| {
        openssl(&[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subj,
            "-keyout",
            &f(&format!("{name}.key")),
            "-out",
            &f(&format!("{name}.csr")),
        ]);
        std::fs::write(
            f(&format!("{name}.ext")),
            if is_ca {
                "basicConstraints=critical,CA:TRUE\n"
            } else {
                "basicConstraints=CA:FALSE\n"
            },
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            &f(&format!("{name}.csr")),
            "-CA",
            &f(&format!("{issuer}.crt")),
            "-CAkey",
            &f(&format!("{issuer}.key")),
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &f(&format!("{name}.ext")),
            "-out",
            &f(&format!("{name}.crt")),
        ]);
    };
    ca("root", "/CN=nacre test root");
    issued("inter", "/CN=nacre test intermediate", "root", true);
    issued("leaf", "/CN=nacre test signer", "inter", false);
    ca("other", "/CN=someone else");
    ca("impostor", "/CN=nacre test root"); // the root's name, another key
    let sign = |out: &str, addcert: bool| {
        let mut c = Command::new("sbsign");
        c.args(["--key", &f("leaf.key"), "--cert", &f("leaf.crt")]);
        if addcert {
            c.args(["--addcert", &f("inter.crt")]);
        }
        run(c.args(["--output", &f(out), uki.uki.to_str().unwrap()]));
        std::fs::read(f(out)).unwrap()
    };
    let with_inter = sign("chained.efi", true);
    let leaf_only = sign("leaf-only.efi", false);
    let entry = |name: &str, owner: u8| {
        let der = openssl(&[
            "x509",
            "-in",
            &f(&format!("{name}.crt")),
            "-outform",
            "DER",
            "-out",
            &f(&format!("{name}.der")),
        ]);
        assert!(der.is_empty());
        SignatureData {
            list_type: EFI_CERT_X509,
            owner: Guid([owner; 16]),
            data: std::fs::read(f(&format!("{name}.der"))).unwrap(),
        }
    };
    let (root, leaf, other, impostor, inter) = (
        entry("root", 1),
        entry("leaf", 2),
        entry("other", 3),
        entry("impostor", 4),
        entry("inter", 5),
    );
    let authority = |image: &[u8], db: &[SignatureData]| {
        let pe = PeImage::parse(image).unwrap();
        let digest = authenticode::digest(&pe, &ring::digest::SHA256);
        find_db_authority(db, &pe.signatures().unwrap(), digest.as_ref())
    };

    // A db of several certificates: the root that issued the intermediate that issued the signer.
    assert_eq!(
        authority(&with_inter, &[other.clone(), root.clone()]),
        Ok(root.clone())
    );
    assert_eq!(
        authority(&with_inter, &[other.clone(), inter.clone()]),
        Ok(inter.clone())
    );
    // Two that verify: the first in db order.
    assert_eq!(
        authority(&with_inter, &[other.clone(), leaf.clone(), root.clone()]),
        Ok(leaf.clone())
    );
    assert_eq!(
        authority(&with_inter, &[root.clone(), leaf.clone()]),
        Ok(root.clone())
    );
    // The leaf alone in db verifies without any intermediate.
    assert_eq!(
        authority(&leaf_only, std::slice::from_ref(&leaf)),
        Ok(leaf.clone())
    );
    // Refused: no db entry at all; the root without the intermediate in the signature; a
    // certificate with the root's name and another key (matching names are not enough).
    assert_eq!(
        authority(&with_inter, std::slice::from_ref(&other)),
        Err(AuthorityError::NotAuthorized)
    );
    assert_eq!(
        authority(&leaf_only, std::slice::from_ref(&root)),
        Err(AuthorityError::NotAuthorized)
    );
    assert_eq!(
        authority(&with_inter, &[impostor.clone(), other.clone()]),
        Err(AuthorityError::NotAuthorized)
    );
    // One byte of the signer's signature changed (the last of the SignedData): refused.
    let pe = PeImage::parse(&with_inter).unwrap();
    let blob = pe.signatures().unwrap()[0];
    let der_len = 4 + usize::from(u16::from_be_bytes([blob[2], blob[3]]));
    assert_eq!(&blob[..2], &[0x30, 0x82]);
    let at = blob.as_ptr() as usize - with_inter.as_ptr() as usize + der_len - 1;
    let mut bad = with_inter.clone();
    bad[at] ^= 1;
    assert_eq!(
        authority(&bad, std::slice::from_ref(&root)),
        Err(AuthorityError::NotAuthorized)
    );
    // The image changed after signing (one byte of the .cmdline section's text): the signature
    // is genuine but for other contents.
    let mut changed = with_inter.clone();
    let pos = changed
        .windows(13)
        .position(|w| w == b"console=ttyS0")
        .unwrap();
    changed[pos] = b'C';
    assert_eq!(
        authority(&changed, std::slice::from_ref(&root)),
        Err(AuthorityError::DigestNotSigned)
    );
}
