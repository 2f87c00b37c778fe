//! nacre-measure: predict, publish and check the boot measurements of nacre images.

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use nacre_eventlog::alg::HashAlg;
use nacre_eventlog::runtime::Phase;
use nacre_eventlog::tcg::EventLog;
use nacre_eventlog::CelRecord;
use nacre_measure::diff::{self, Observed};
use nacre_measure::efivars::SecureBootVars;
use nacre_measure::manifest::{self, ImageRef, Manifest};
use nacre_measure::predict::{self, BootConfig, Prediction};
use nacre_measure::sign::{self, BlobSigner, CommandSigner, PemSigner, PublicKey, RsaSigner};
use nacre_measure::source::BootFiles;
use nacre_measure::uki::{StubProfile, Uki};
use nacre_measure::{authenticode, pcrsig};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `golden`'s lifetime when neither --not-after nor --lifetime-days (nor --no-expiry) is given.
const DEFAULT_LIFETIME_DAYS: u64 = 180;

#[derive(Parser)]
#[command(
    name = "nacre-measure",
    version,
    about = "Predict, sign and verify the boot measurements of nacre images"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

// Parsed once per run: the size of the largest variant (golden's options) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Show a UKI's (or a disk image's UKI's) sections, stub, command line and digests.
    Inspect {
        /// A UKI, or a raw GPT disk image with an ESP.
        image: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Predict the events and PCR values of booting an image.
    Predict {
        #[command(flatten)]
        boot: BootArgs,
        #[arg(long)]
        json: bool,
    },
    /// SEV-SNP ID block and ID auth for a launch measurement (QEMU: sev-snp-guest,id-block=…,
    /// id-auth=…), signed with an ID key and an author key (ECDSA P-384, PKCS#8 PEM, e.g.
    /// `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-384`).
    SnpIdBlock {
        /// The launch measurement (96 hex digits, from snp-digest or the golden manifest).
        #[arg(long)]
        measurement: String,
        #[arg(long)]
        id_key: PathBuf,
        #[arg(long)]
        author_key: PathBuf,
        /// Guest policy (hex; default 30000: SMT allowed, no debugging, no migration agent).
        #[arg(long, default_value = "30000")]
        policy: String,
        #[arg(long)]
        json: bool,
    },
    /// Write the golden-measurement manifest of an image (optionally signed).
    Golden {
        #[command(flatten)]
        boot: BootArgs,
        /// Image reference recorded in the manifest.
        #[arg(long = "ref", default_value = "nacre-node")]
        reference: String,
        #[arg(long, default_value = "dev")]
        version: String,
        #[arg(long, default_value = "qemu-vtpm")]
        variant: String,
        /// PCRs reported but not enforced (comma-separated).
        #[arg(long, value_delimiter = ',')]
        warn_only: Vec<u32>,
        /// Where to write the manifest.
        #[arg(long, short)]
        out: PathBuf,
        /// Also sign it with this ECDSA P-256 key (writes <out>.sig).
        #[arg(long)]
        key: Option<PathBuf>,
        /// SEV-SNP variants: the OVMF firmware the guest launches with (UEFI boot of the UKI
        /// from the disk: the launch digest covers the firmware; the UKI is in the vTPM PCRs).
        #[arg(long)]
        snp_ovmf: Option<PathBuf>,
        /// vCPU counts to record a launch measurement for (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
        snp_vcpus: Vec<u32>,
        /// vCPU types (comma-separated, sev-snp-measure's names).
        #[arg(long, value_delimiter = ',', default_value = "EPYC-Milan,EPYC-Genoa")]
        snp_vcpu_types: Vec<String>,
        #[arg(long, default_value = "qemu")]
        snp_vmm: String,
        /// VMSA sev_features (hex).
        #[arg(long, default_value = "1")]
        snp_guest_features: String,
        /// Measured direct boot with a firmware that has a kernel-hashes table (ovmf/'s
        /// AMDSEV.fd): `uki` when QEMU gets the whole UKI as -kernel (no -initrd, no -append),
        /// `sections` when it gets the UKI's .linux/.initrd/.cmdline. The launch digest then
        /// covers the UKI too. Absent: UEFI boot of the UKI from the disk (firmware only).
        #[arg(long)]
        snp_direct_boot: Option<String>,
        /// SEV-SNP variants: pin an observed launch measurement (the attestation report's
        /// MEASUREMENT, 48 bytes as 96 hex digits), e.g. Azure's paravisor's, which no firmware
        /// file predicts (azure-sev-snp). Repeatable; recorded as an `snp` value with vcpus 0,
        /// vcpu_type "observed", no firmware digest and vmm "azure" for azure-* variants
        /// (--snp-vmm otherwise).
        #[arg(long = "snp-measurement", value_name = "HEX")]
        snp_measurements: Vec<String>,
        /// TDX variants: the TDVF/OVMF firmware (with TDX metadata) the TD launches with;
        /// records MRTD and the predicted RTMR[1]/RTMR[2].
        #[arg(long)]
        tdx_ovmf: Option<PathBuf>,
        /// How the VMM interleaves page adds and extends: per-page (upstream KVM, QEMU 9+) or
        /// per-section (QEMU 8.x TDX stacks).
        #[arg(long, default_value = "per-page")]
        tdx_page_add_order: String,
        /// The end of the manifest's lifetime, RFC 3339 UTC (2027-01-31T00:00:00Z): verifiers
        /// refuse it afterwards.
        #[arg(long, conflicts_with_all = ["lifetime_days", "no_expiry"])]
        not_after: Option<String>,
        /// The manifest's lifetime in days from now (sets not_after). Default 180 when neither
        /// this nor --not-after is given: a signed manifest otherwise admits its image forever,
        /// even after a fix makes it unsafe; about two release cycles leaves time to publish
        /// the next one, and a release still in use is re-signed before it ends.
        #[arg(long, conflicts_with = "no_expiry")]
        lifetime_days: Option<u64>,
        /// Write no not_after: the manifest never expires (admits nodes until removed or
        /// revoked), and nacre-keyservice serve loads it only with --allow-no-expiry.
        #[arg(long)]
        no_expiry: bool,
    },
    /// Sign a file cosign-style (ECDSA P-256, base64 DER in <file>.sig).
    Sign {
        file: PathBuf,
        #[command(flatten)]
        signer: SignerArgs,
        /// Signature output (default: <file>.sig).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Generate an ECDSA P-256 signing key (PKCS#8 PEM) and its public key.
    Keygen {
        /// Writes <prefix>.key and <prefix>.pub.
        #[arg(long, default_value = "nacre-measurements")]
        prefix: PathBuf,
    },
    /// Check a manifest's signature, and observed PCRs or an event log against it.
    Verify(VerifyOpts),
    /// Decode and replay a firmware event log.
    Eventlog {
        log: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Compare an image's prediction with a real event log, event by event.
    Diff {
        #[command(flatten)]
        boot: BootArgs,
        /// Firmware event log of the boot.
        #[arg(long)]
        eventlog: PathBuf,
        /// nacre-init's runtime log (CEL-JSON).
        #[arg(long)]
        runtime_log: Option<PathBuf>,
        #[arg(long)]
        json: bool,
    },
    /// Predict the AMD SEV-SNP launch digest (the attestation report's MEASUREMENT) of a guest
    /// QEMU launches with OVMF, as PyPI's sev-snp-measure computes it.
    SnpDigest(SnpDigestArgs),
    /// Predict the Intel TDX MRTD of a TDVF firmware and, given an image, RTMR[1] and RTMR[2]
    /// (RTMR[0] depends on the VMM and is not predicted).
    TdxDigest(TdxDigestArgs),
    /// Export a manifest to another tool's format.
    Export {
        #[command(subcommand)]
        format: ExportCmd,
    },
}

#[derive(Subcommand)]
enum ExportCmd {
    /// Constellation's image measurements (v2) JSON.
    Constellation {
        manifest: PathBuf,
        #[arg(long, default_value = "QEMU")]
        csp: String,
        #[arg(long, default_value = "stable")]
        stream: String,
    },
    /// systemd's signed PCR 11 policy (.pcrsig JSON) and public key (.pcrpkey PEM).
    Pcrsig {
        #[command(flatten)]
        boot: BootArgs,
        /// RSA private key (PEM).
        #[arg(long)]
        rsa_key: PathBuf,
        /// Where to write the .pcrsig JSON.
        #[arg(long)]
        out: PathBuf,
        /// Where to write the .pcrpkey PEM.
        #[arg(long)]
        pubkey_out: Option<PathBuf>,
        /// Sign PCR 11 only as it is at these phases (repeatable; default: every phase, as
        /// systemd-measure does).
        #[arg(long = "sign-phase", value_parser = ["enter-initrd", "leave-initrd", "sysinit", "ready"])]
        sign_phase: Vec<String>,
        /// For nacre's TPM-sealed state disk: PCR 11 at `sysinit` alone (when the disk is
        /// opened; a `ready` signature would let the workload unseal its key), signed with
        /// nacre's policyRef (docs/state-disk.md). systemd-cryptsetup cannot use the result.
        #[arg(long, conflicts_with = "sign_phase")]
        state_disk: bool,
    },
}

#[derive(Args)]
struct SnpDigestArgs {
    /// Unified OVMF image (code and variables in one file) with SEV metadata.
    #[arg(long)]
    ovmf: PathBuf,
    /// Number of vCPUs.
    #[arg(long)]
    vcpus: u32,
    /// vCPU model as QEMU's -cpu names it: EPYC, EPYC-v4, EPYC-Rome, EPYC-Milan, EPYC-Genoa, ...
    #[arg(long)]
    vcpu_type: String,
    /// Hypervisor: qemu, ec2 or gce.
    #[arg(long, default_value = "qemu")]
    vmm: String,
    /// Measured direct boot: the kernel QEMU gets with -kernel.
    #[arg(long, conflicts_with = "uki")]
    kernel: Option<PathBuf>,
    /// The initrd QEMU gets with -initrd (none: hashed as empty).
    #[arg(long, requires = "kernel")]
    initrd: Option<PathBuf>,
    /// The command line QEMU gets with -append (none: hashed as empty).
    #[arg(long, requires = "kernel")]
    cmdline: Option<String>,
    /// Measured direct boot of a UKI's .linux, .initrd and .cmdline sections.
    #[arg(long)]
    uki: Option<PathBuf>,
    /// VMSA SEV features (hex, with or without 0x).
    #[arg(long, default_value = "0x1")]
    guest_features: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct TdxDigestArgs {
    /// TDVF/OVMF firmware image with TDX metadata (e.g. Debian's /usr/share/ovmf/OVMF.fd).
    #[arg(long)]
    ovmf: PathBuf,
    /// A UKI or a raw GPT disk image: also predict RTMR[1] (disk images only: it includes the
    /// GPT event) and RTMR[2].
    image: Option<PathBuf>,
    /// systemd-stub behaviour: 252 or 257 (default: from the UKI's .sdmagic).
    #[arg(long, requires = "image")]
    stub: Option<u32>,
    /// OVMF variable store with the Secure Boot keys of the boot.
    #[arg(long, requires = "image", conflicts_with = "sb_keys")]
    vars: Option<PathBuf>,
    /// Directory with the Secure Boot variables as files (see `predict --sb-keys`).
    #[arg(long, requires = "image")]
    sb_keys: Option<PathBuf>,
    /// per-page (upstream KVM, QEMU 9+) or per-section (QEMU 8.x TDX stacks).
    #[arg(long, default_value = "per-page")]
    page_add_order: String,
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct BootArgs {
    /// A UKI, or a raw GPT disk image (its ESP's drop-ins are then included).
    image: PathBuf,
    /// systemd-stub behaviour: 252 or 257 (default: from the UKI's .sdmagic).
    #[arg(long)]
    stub: Option<u32>,
    /// OVMF variable store with the Secure Boot keys (PK/KEK/db/dbx) of the boot.
    #[arg(long, conflicts_with = "sb_keys")]
    vars: Option<PathBuf>,
    /// Directory with the Secure Boot variables as files: PK, KEK, db, dbx (EFI signature
    /// lists, `NAME`, `NAME.esl` or efivarfs `NAME-<guid>`); Secure Boot on when PK is there.
    #[arg(long)]
    sb_keys: Option<PathBuf>,
    /// PCR bank: sha256, sha384, sha1 or sha512.
    #[arg(long, default_value = "sha256")]
    bank: String,
    /// Last nacre-init phase extended into PCR 11 when the PCRs are read: none, enter-initrd,
    /// leave-initrd, sysinit (when a node attests) or ready.
    #[arg(long, default_value = "sysinit")]
    phase: String,
    /// Cluster ID (64 hex) of a node that has joined (PCR 15); absent for a first join.
    #[arg(long)]
    cluster_id: Option<String>,
}

#[derive(Args)]
struct SignerArgs {
    /// ECDSA P-256 private key, PKCS#8 PEM.
    #[arg(long, conflicts_with = "signer_command")]
    key: Option<PathBuf>,
    /// External signer (KMS/HSM): reads the message on stdin, prints base64 DER signature.
    #[arg(long, requires = "public_key")]
    signer_command: Option<String>,
    /// Public key the external signer's signatures must verify with.
    #[arg(long)]
    public_key: Option<PathBuf>,
}

fn parse_phase(s: &str) -> Result<Option<Phase>> {
    if s == "none" {
        return Ok(None);
    }
    Phase::ALL
        .iter()
        .find(|p| p.word() == s)
        .copied()
        .map(Some)
        .with_context(|| {
            format!("unknown phase {s:?}: use none, enter-initrd, leave-initrd, sysinit or ready")
        })
}

fn parse_bank(s: &str) -> Result<HashAlg> {
    let alg: HashAlg = s.parse().with_context(|| format!("unknown bank {s:?}"))?;
    if !alg.is_supported() {
        bail!("bank {s} cannot be computed");
    }
    Ok(alg)
}

impl BootArgs {
    fn load(&self) -> Result<(BootFiles, BootConfig)> {
        let files = BootFiles::open(&self.image)?;
        let secure_boot = match &self.vars {
            None if self.sb_keys.is_some() => {
                let dir = self.sb_keys.as_deref().unwrap_or(Path::new("."));
                SecureBootVars::from_dir(dir).with_context(|| format!("{}", dir.display()))?
            }
            Some(p) => {
                let fd = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                SecureBootVars::from_ovmf_varstore(&fd)
                    .with_context(|| format!("{}", p.display()))?
            }
            None => SecureBootVars::default(),
        };
        let stub = match self.stub {
            None => None,
            Some(v) => Some(StubProfile::from_version(&v.to_string())?),
        };
        let cluster_id = match &self.cluster_id {
            None => None,
            Some(h) => {
                let v = hex::decode(h).context("--cluster-id is not hex")?;
                Some(
                    <[u8; 32]>::try_from(v.as_slice())
                        .ok()
                        .context("--cluster-id must be 32 bytes (64 hex digits)")?,
                )
            }
        };
        let cfg = BootConfig {
            alg: parse_bank(&self.bank)?,
            stub,
            secure_boot,
            dropins: files.dropins.clone(),
            phase: parse_phase(&self.phase)?,
            cluster_id,
        };
        Ok((files, cfg))
    }

    fn predict(&self) -> Result<(BootFiles, BootConfig, Prediction)> {
        let (files, cfg) = self.load()?;
        let p = predict::predict(&files.uki, &cfg)
            .with_context(|| format!("predicting {}", self.image.display()))?;
        Ok((files, cfg, p))
    }
}

fn print_json(v: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn print_prediction(p: &Prediction) {
    println!(
        "stub {}, bank {}, Secure Boot {}",
        p.stub.name(),
        p.alg.name(),
        if p.secure_boot { "on" } else { "off" }
    );
    println!(
        "\n{:>3}  {:<34} {:<16} description",
        "PCR", "type", "digest"
    );
    for e in &p.events {
        let t = e.event_type.name().unwrap_or("?");
        println!(
            "{:>3}  {:<34} {:<16} {}",
            e.pcr,
            t,
            &hex::encode(&e.digest)[..16],
            e.description
        );
    }
    println!();
    for (pcr, v) in &p.pcrs {
        println!("PCR {pcr:>2}: {}", hex::encode(v));
    }
}

fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("out")
    ));
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}

fn sig_path(file: &Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".sig");
    PathBuf::from(s)
}

fn signer(args: &SignerArgs) -> Result<Box<dyn BlobSigner>> {
    match (&args.key, &args.signer_command) {
        (Some(k), None) => Ok(Box::new(PemSigner::from_pem_file(k)?)),
        (None, Some(cmd)) => {
            let pk = args
                .public_key
                .as_ref()
                .context("--signer-command needs --public-key")?;
            Ok(Box::new(CommandSigner {
                command: cmd.clone(),
                public_key: PublicKey::from_pem_file(pk)?,
            }))
        }
        _ => bail!("give --key or --signer-command"),
    }
}

fn read_pcrs_json(path: &Path) -> Result<BTreeMap<u32, Vec<u8>>> {
    let raw: BTreeMap<String, String> = serde_json::from_slice(
        &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| {
        format!(
            "{}: expected a JSON object {{\"<pcr>\": \"<hex>\"}}",
            path.display()
        )
    })?;
    raw.into_iter()
        .map(|(k, v)| {
            let pcr = k
                .parse()
                .with_context(|| format!("{}: PCR index {k:?}", path.display()))?;
            let val = hex::decode(v.trim())
                .with_context(|| format!("{}: PCR {k} is not hex", path.display()))?;
            Ok((pcr, val))
        })
        .collect()
}

fn read_eventlog(path: &Path) -> Result<EventLog> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    EventLog::parse(&bytes).with_context(|| format!("{}: malformed event log", path.display()))
}

fn observed_events(log: &EventLog, runtime: &[CelRecord], alg: HashAlg) -> Vec<Observed> {
    log.events
        .iter()
        .filter_map(|e| Observed::from_log(e, alg))
        .chain(runtime.iter().filter_map(|r| Observed::from_cel(r, alg)))
        .collect()
}

/// Read nacre-init's runtime log. Every record must be one of the events nacre-init defines,
/// with digests that are those of its content: a record whose text was edited (or an event
/// nacre does not know) is refused, not just replayed.
fn read_runtime_log(path: Option<&Path>) -> Result<Vec<CelRecord>> {
    let Some(p) = path else {
        return Ok(Vec::new());
    };
    let records = nacre_eventlog::cel::read(p)
        .with_context(|| format!("{}: malformed runtime log", p.display()))?;
    for r in &records {
        nacre_eventlog::RuntimeEvent::from_cel(r).with_context(|| {
            format!(
                "{}: record {} is not a valid nacre runtime event",
                p.display(),
                r.recnum
            )
        })?;
    }
    Ok(records)
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("nacre-measure: error: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Inspect { image, json } => inspect(&image, json),
        Cmd::Predict { boot, json } => {
            let (_, _, p) = boot.predict()?;
            if json {
                print_json(&p)
            } else {
                print_prediction(&p);
                Ok(())
            }
        }
        Cmd::Golden {
            boot,
            reference,
            version,
            variant,
            warn_only,
            out,
            key,
            snp_ovmf,
            snp_vcpus,
            snp_vcpu_types,
            snp_vmm,
            snp_guest_features,
            snp_direct_boot,
            snp_measurements,
            tdx_ovmf,
            tdx_page_add_order,
            not_after,
            lifetime_days,
            no_expiry,
        } => {
            let lifetime_days = match (&not_after, no_expiry) {
                (None, false) => Some(lifetime_days.unwrap_or(DEFAULT_LIFETIME_DAYS)),
                _ => lifetime_days,
            };
            let not_after = match (not_after, lifetime_days) {
                (Some(t), _) => {
                    nacre_measure::manifest::parse_rfc3339_utc(&t)
                        .with_context(|| format!("--not-after {t:?}"))?;
                    Some(t)
                }
                (None, Some(days)) => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .context("the system clock is before 1970")?
                        .as_secs();
                    let end = days
                        .checked_mul(86400)
                        .and_then(|d| now.checked_add(d))
                        .context("--lifetime-days is too large")?;
                    Some(nacre_measure::manifest::format_rfc3339_utc(end))
                }
                (None, None) => None,
            };
            let pinned = snp_pinned(&snp_measurements, &variant, &snp_vmm)?;
            let (files, cfg, p) = boot.predict()?;
            let tdx_value = match &tdx_ovmf {
                Some(f) => Some(tdx_values(f, &tdx_page_add_order, Some(&boot))?.manifest_value()),
                None => None,
            };
            let mut snp_values = match &snp_ovmf {
                Some(f) => snp_golden(
                    f,
                    &snp_vcpus,
                    &snp_vcpu_types,
                    &snp_vmm,
                    &snp_guest_features,
                    snp_direct_boot
                        .as_deref()
                        .map(|mode| snp_direct_hashes(mode, &files.uki))
                        .transpose()?,
                )?,
                None => {
                    if snp_direct_boot.is_some() {
                        bail!("--snp-direct-boot needs --snp-ovmf");
                    }
                    Vec::new()
                }
            };
            for v in pinned {
                if !snp_values.contains(&v) {
                    snp_values.push(v);
                }
            }
            let uki = Uki::parse(&files.uki)?;
            let image = ImageRef {
                reference,
                version,
                variant,
                uki_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, &files.uki)),
                roothash: uki.roothash()?,
            };
            let phase = cfg.phase.map(|p| p.word().to_string());
            let mut m = Manifest::from_prediction(image, &p, phase, &warn_only);
            m.snp = snp_values;
            m.tdx = tdx_value;
            m.not_after = not_after;
            let json = m.to_json();
            // Sign first, so a failing signer leaves nothing behind.
            let sig = match &key {
                Some(k) => Some(sign::sign_blob(&PemSigner::from_pem_file(k)?, &json)?),
                None => None,
            };
            write_atomic(&out, &json)?;
            if let Some(sig) = sig {
                write_atomic(&sig_path(&out), sig.as_bytes())?;
            }
            eprintln!(
                "wrote {}{}",
                out.display(),
                if key.is_some() { " and its .sig" } else { "" }
            );
            Ok(())
        }
        Cmd::SnpIdBlock {
            measurement,
            id_key,
            author_key,
            policy,
            json,
        } => {
            use base64::Engine;
            use nacre_measure::snp_id::{id_auth, id_block, SnpKey};
            let mut ld = [0u8; 48];
            hex::decode_to_slice(measurement.trim(), &mut ld)
                .with_context(|| format!("--measurement {measurement:?}: 96 hex digits"))?;
            let p = policy.trim().trim_start_matches("0x");
            let policy = u64::from_str_radix(p, 16)
                .with_context(|| format!("--policy {policy:?} is not hex"))?;
            let load = |p: &Path| -> Result<SnpKey> {
                let pem = std::fs::read(p).with_context(|| format!("reading {}", p.display()))?;
                Ok(SnpKey::from_pem(&pem, &p.display().to_string())?)
            };
            let (id, author) = (load(&id_key)?, load(&author_key)?);
            let block = id_block(&ld, policy);
            let auth = id_auth(&block, &id, &author)?;
            let b64 = base64::engine::general_purpose::STANDARD;
            if json {
                print_json(&serde_json::json!({
                    "id_block": b64.encode(block),
                    "id_auth": b64.encode(&auth),
                    "id_key_digest": hex::encode(id.digest()),
                    "author_key_digest": hex::encode(author.digest()),
                    "policy": format!("{policy:#x}"),
                }))?;
            } else {
                println!(
                    "id-block={},id-auth={}",
                    b64.encode(block),
                    b64.encode(&auth)
                );
                println!("id_key_digest: {}", hex::encode(id.digest()));
                println!("author_key_digest: {}", hex::encode(author.digest()));
            }
            Ok(())
        }
        Cmd::Sign {
            file,
            signer: s,
            out,
        } => {
            let data =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            let sig = sign::sign_blob(signer(&s)?.as_ref(), &data)?;
            let out = out.unwrap_or_else(|| sig_path(&file));
            write_atomic(&out, sig.as_bytes())?;
            eprintln!("wrote {}", out.display());
            Ok(())
        }
        Cmd::Keygen { prefix } => {
            let (s, pem) = PemSigner::generate()?;
            let key = prefix.with_extension("key");
            let public = prefix.with_extension("pub");
            if key.exists() {
                bail!("{} exists: not overwriting a key", key.display());
            }
            let pk = PublicKey::from_spki(&s.public_key_spki())?;
            write_atomic(&public, pk.to_pem().as_bytes())?;
            write_atomic(&key, pem.as_bytes())?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
            }
            eprintln!("wrote {} and {}", key.display(), public.display());
            Ok(())
        }
        Cmd::Verify(opts) => verify(opts),
        Cmd::Eventlog { log, json } => {
            let log = read_eventlog(&log)?;
            let banks = log.banks().to_vec();
            let replayed =
                nacre_eventlog::replay::replay(&log, &[]).context("replaying the log")?;
            if json {
                let events: Vec<_> = banks
                    .iter()
                    .flat_map(|b| observed_events(&log, &[], *b))
                    .collect();
                let pcrs: BTreeMap<String, BTreeMap<String, String>> = replayed
                    .iter()
                    .map(|bank| {
                        (
                            bank.alg.name().to_string(),
                            (0..24)
                                .map(|i| (i.to_string(), hex::encode(&bank.values[i])))
                                .collect(),
                        )
                    })
                    .collect();
                return print_json(&serde_json::json!({"events": events, "pcrs": pcrs}));
            }
            let main_bank = banks
                .iter()
                .copied()
                .find(|b| *b == HashAlg::Sha256)
                .or(banks.first().copied())
                .context("log has no banks")?;
            for e in &log.events {
                let d = e.digest(main_bank).map(hex::encode).unwrap_or_default();
                println!(
                    "{:#07x} PCR {:>2} {:<34} {:.16} {}",
                    e.offset,
                    e.pcr,
                    e.event_type.name().unwrap_or("?"),
                    d,
                    e.decode()
                );
            }
            for bank in &replayed {
                println!("\n{} bank:", bank.alg.name());
                for (i, v) in bank.values.iter().enumerate() {
                    println!("  PCR {i:>2}: {}", hex::encode(v));
                }
            }
            Ok(())
        }
        Cmd::Diff {
            boot,
            eventlog,
            runtime_log,
            json,
        } => {
            let (_, cfg, p) = boot.predict()?;
            let log = read_eventlog(&eventlog)?;
            let runtime = read_runtime_log(runtime_log.as_deref())?;
            let diffs = diff::compare(
                &p.events,
                &observed_events(&log, &runtime, cfg.alg),
                &predict::PREDICTED_PCRS,
            );
            if json {
                print_json(&diffs)?;
            } else if diffs.is_empty() {
                println!(
                    "the event log matches the prediction for PCRs {:?}",
                    predict::PREDICTED_PCRS
                );
            } else {
                for d in &diffs {
                    println!("{d}\n");
                }
            }
            if !diffs.is_empty() {
                std::process::exit(2);
            }
            Ok(())
        }
        Cmd::SnpDigest(args) => snp_digest(&args),
        Cmd::TdxDigest(args) => tdx_digest(&args),
        Cmd::Export { format } => match format {
            ExportCmd::Constellation {
                manifest,
                csp,
                stream,
            } => {
                let m = Manifest::from_json(
                    &std::fs::read(&manifest)
                        .with_context(|| format!("reading {}", manifest.display()))?,
                )
                .with_context(|| format!("{}", manifest.display()))?;
                print_json(&manifest::to_constellation(&m, &csp, &stream))
            }
            ExportCmd::Pcrsig {
                boot,
                rsa_key,
                out,
                pubkey_out,
                mut sign_phase,
                state_disk,
            } => {
                let (files, mut cfg) = boot.load()?;
                cfg.phase = None;
                cfg.cluster_id = None;
                let p = predict::predict(&files.uki, &cfg)?;
                let pcr11 = p.pcrs.get(&11).context("no PCR 11 predicted")?;
                let signer = RsaSigner::from_pem_file(&rsa_key)?;
                let mut phases = pcrsig::phase_values(cfg.alg, pcr11)?;
                if state_disk {
                    sign_phase = vec!["sysinit".into()];
                }
                if !sign_phase.is_empty() {
                    phases.retain(|(path, _)| {
                        sign_phase
                            .iter()
                            .any(|p| path.rsplit(':').next() == Some(p.as_str()))
                    });
                }
                let policy_ref: &[u8] = if state_disk {
                    pcrsig::STATE_DISK_POLICY_REF
                } else {
                    b""
                };
                let j = pcrsig::sign_pcr11_with_ref(&signer, cfg.alg, &phases, policy_ref)?;
                write_atomic(&out, serde_json::to_string(&j)?.as_bytes())?;
                if let Some(pk) = pubkey_out {
                    write_atomic(
                        &pk,
                        sign::to_pem("PUBLIC KEY", &signer.public_spki()).as_bytes(),
                    )?;
                }
                eprintln!("wrote {}", out.display());
                Ok(())
            }
        },
    }
}

/// The kernel-hashes table of a measured direct boot of `uki`: the whole UKI as QEMU's -kernel
/// (`uki`), or its sections as -kernel/-initrd/-append (`sections`).
fn snp_direct_hashes(
    mode: &str,
    uki_bytes: &[u8],
) -> Result<(String, nacre_measure::snp::KernelHashes)> {
    use nacre_measure::snp::KernelHashes;
    let hashes = match mode {
        "uki" => KernelHashes::new(uki_bytes, &[], ""),
        "sections" => {
            let uki = Uki::parse(uki_bytes).context("UKI")?;
            let kernel = uki.section_data(".linux").context("UKI has no .linux")?;
            let initrd = uki.section_data(".initrd").unwrap_or_default();
            let cmdline = uki.cmdline()?.unwrap_or_default();
            KernelHashes::new(&kernel, &initrd, &cmdline)
        }
        other => bail!("--snp-direct-boot {other:?}: uki or sections"),
    };
    Ok((mode.to_string(), hashes))
}

/// SEV-SNP launch measurements of a firmware for every vCPU count and type: UEFI boot (no kernel
/// hashes) or a measured direct boot (`direct`: its mode and kernel-hashes table).
/// `golden --snp-measurement`: observed launch measurements pinned as `snp` values (nothing
/// is computed: vcpus 0, vcpu_type "observed", no firmware digest). Refused unless the variant
/// is a SEV-SNP one and each value is 48 bytes of hex.
fn snp_pinned(
    values: &[String],
    variant: &str,
    snp_vmm: &str,
) -> Result<Vec<manifest::SnpLaunchValue>> {
    if values.is_empty() {
        return Ok(Vec::new());
    }
    if manifest::variant_platform(variant) != Some(manifest::VariantPlatform::SevSnp) {
        bail!("--snp-measurement: variant {variant:?} is not a SEV-SNP one (*-snp)");
    }
    let vmm = if variant.starts_with("azure-") {
        "azure"
    } else {
        snp_vmm
    };
    values
        .iter()
        .map(|v| {
            let h = v.trim();
            let mut m = [0u8; 48];
            hex::decode_to_slice(h, &mut m).map_err(|e| {
                anyhow::anyhow!(
                    "--snp-measurement {v:?}: not a SEV-SNP launch measurement (48 bytes: 96 hex digits, got {} characters): {e}",
                    h.len()
                )
            })?;
            Ok(manifest::SnpLaunchValue {
                vcpus: 0,
                vcpu_type: "observed".into(),
                vmm: vmm.into(),
                guest_features: 0,
                ovmf_sha256: String::new(),
                direct_boot: None,
                measurement: hex::encode(m),
            })
        })
        .collect()
}

fn snp_golden(
    ovmf_path: &Path,
    vcpus: &[u32],
    types: &[String],
    vmm: &str,
    guest_features: &str,
    direct: Option<(String, nacre_measure::snp::KernelHashes)>,
) -> Result<Vec<nacre_measure::manifest::SnpLaunchValue>> {
    use nacre_measure::snp::{self, Ovmf, SnpLaunch, VmmType};
    let fw =
        std::fs::read(ovmf_path).with_context(|| format!("reading {}", ovmf_path.display()))?;
    let ovmf = Ovmf::parse(&fw).with_context(|| format!("{}", ovmf_path.display()))?;
    let vmm_type: VmmType = vmm.parse()?;
    let gf = guest_features.trim();
    let gf = gf.strip_prefix("0x").unwrap_or(gf);
    let guest_features = u64::from_str_radix(gf, 16)
        .with_context(|| format!("--snp-guest-features {guest_features:?} is not hex"))?;
    let ovmf_sha256 = hex::encode(ring::digest::digest(&ring::digest::SHA256, &fw));
    let mut out = Vec::new();
    for t in types {
        let vcpu_sig = snp::vcpu_signature(t)?;
        for &n in vcpus {
            let ld = SnpLaunch {
                ovmf: &ovmf,
                vcpus: n,
                vcpu_sig,
                vmm: vmm_type,
                guest_features,
                kernel_hashes: direct.as_ref().map(|(_, h)| *h),
            }
            .digest()?;
            out.push(nacre_measure::manifest::SnpLaunchValue {
                vcpus: n,
                vcpu_type: t.clone(),
                vmm: vmm.to_string(),
                guest_features,
                ovmf_sha256: ovmf_sha256.clone(),
                direct_boot: direct.as_ref().map(|(m, _)| m.clone()),
                measurement: hex::encode(ld),
            });
        }
    }
    Ok(out)
}

/// MRTD of a firmware and, given boot inputs, the predicted RTMR[1]/RTMR[2].
struct TdxValues {
    ovmf_sha256: String,
    order: nacre_measure::tdx::PageAddOrder,
    mrtd: nacre_measure::tdx::Mr,
    sections: Vec<nacre_measure::tdx::TdvfSection>,
    rtmrs: Option<nacre_measure::tdx::RtmrPrediction>,
}

impl TdxValues {
    fn manifest_value(&self) -> nacre_measure::manifest::TdxLaunchValue {
        nacre_measure::manifest::TdxLaunchValue {
            mrtd: hex::encode(self.mrtd),
            page_add_order: self.order.name().to_string(),
            rtmr1: self.rtmrs.as_ref().and_then(|r| r.rtmr1).map(hex::encode),
            rtmr2: self.rtmrs.as_ref().map(|r| hex::encode(r.rtmr2)),
            ovmf_sha256: self.ovmf_sha256.clone(),
        }
    }
}

fn tdx_values(ovmf_path: &Path, order: &str, boot: Option<&BootArgs>) -> Result<TdxValues> {
    use nacre_measure::tdx::{self, PageAddOrder, Tdvf};
    let order: PageAddOrder = order.parse()?;
    let fw =
        std::fs::read(ovmf_path).with_context(|| format!("reading {}", ovmf_path.display()))?;
    let tdvf = Tdvf::parse(&fw).with_context(|| format!("{}", ovmf_path.display()))?;
    let rtmrs = match boot {
        None => None,
        Some(b) => {
            // RTMRs are SHA-384; RTMR[1]/[2] hold the firmware's and the stub's events only:
            // nacre-init's runtime events (stage 2's phases, the cluster events) go to RTMR[3].
            let (files, mut cfg) = b.load()?;
            cfg.alg = HashAlg::Sha384;
            cfg.phase = None;
            cfg.cluster_id = None;
            let p = predict::predict(&files.uki, &cfg)
                .with_context(|| format!("predicting {}", b.image.display()))?;
            let gpt = if files.from_disk {
                Some(
                    tdx::gpt_event_from_file(&b.image)
                        .with_context(|| format!("{}", b.image.display()))?,
                )
            } else {
                None
            };
            Some(tdx::predict_rtmrs(&p, gpt.as_deref())?)
        }
    };
    Ok(TdxValues {
        ovmf_sha256: hex::encode(ring::digest::digest(&ring::digest::SHA256, &fw)),
        order,
        mrtd: tdvf.mrtd(order),
        sections: tdvf.sections().to_vec(),
        rtmrs,
    })
}

fn tdx_digest(args: &TdxDigestArgs) -> Result<()> {
    let boot = args.image.as_ref().map(|image| BootArgs {
        image: image.clone(),
        stub: args.stub,
        vars: args.vars.clone(),
        sb_keys: args.sb_keys.clone(),
        bank: "sha384".into(),
        phase: "none".into(),
        cluster_id: None,
    });
    let v = tdx_values(&args.ovmf, &args.page_add_order, boot.as_ref())?;
    let rtmr1 = v.rtmrs.as_ref().and_then(|r| r.rtmr1).map(hex::encode);
    let rtmr2 = v.rtmrs.as_ref().map(|r| hex::encode(r.rtmr2));
    if args.json {
        return print_json(&serde_json::json!({
            "mrtd": hex::encode(v.mrtd),
            "page_add_order": v.order.name(),
            "ovmf": args.ovmf,
            "ovmf_sha256": v.ovmf_sha256,
            "sections": v.sections,
            "rtmr0": null,
            "rtmr0_note": nacre_measure::tdx::RTMR0_NOT_PREDICTED,
            "rtmr1": rtmr1,
            "rtmr1_unpredicted": v.rtmrs.as_ref().and_then(|r| r.rtmr1_unpredicted.clone()),
            "rtmr2": rtmr2,
            "rtmr1_events": v.rtmrs.as_ref().map(|r| &r.rtmr1_events),
            "rtmr2_events": v.rtmrs.as_ref().map(|r| &r.rtmr2_events),
        }));
    }
    println!("MRTD:    {}  ({})", hex::encode(v.mrtd), v.order.name());
    println!("firmware sha256: {}", v.ovmf_sha256);
    println!("RTMR[0]: not predicted (depends on the VMM: TD HOB, ACPI tables, CFV)");
    if let Some(r) = &v.rtmrs {
        match (&rtmr1, &r.rtmr1_unpredicted) {
            (Some(h), _) => println!("RTMR[1]: {h}"),
            (None, why) => println!("RTMR[1]: not predicted: {}", why.as_deref().unwrap_or("")),
        }
        println!("RTMR[2]: {}", hex::encode(r.rtmr2));
    }
    Ok(())
}

fn snp_digest(args: &SnpDigestArgs) -> Result<()> {
    use nacre_measure::snp::{self, KernelHashes, Ovmf, SnpLaunch, VmmType};
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let fw = read(&args.ovmf)?;
    let ovmf = Ovmf::parse(&fw).with_context(|| format!("{}", args.ovmf.display()))?;
    let vmm: VmmType = args.vmm.parse()?;
    let vcpu_sig = snp::vcpu_signature(&args.vcpu_type)?;
    let gf = args.guest_features.trim();
    let gf = gf
        .strip_prefix("0x")
        .or_else(|| gf.strip_prefix("0X"))
        .unwrap_or(gf);
    let guest_features = u64::from_str_radix(gf, 16)
        .with_context(|| format!("--guest-features {:?} is not hex", args.guest_features))?;
    // (kernel, initrd, cmdline) of a measured direct boot.
    let direct: Option<(Vec<u8>, Vec<u8>, String)> = match (&args.kernel, &args.uki) {
        (Some(k), _) => Some((
            read(k)?,
            match &args.initrd {
                Some(i) => read(i)?,
                None => Vec::new(),
            },
            args.cmdline.clone().unwrap_or_default(),
        )),
        (None, Some(u)) => {
            let data = read(u)?;
            let uki = Uki::parse(&data).with_context(|| format!("{}: UKI", u.display()))?;
            let kernel = uki.section_data(".linux").context("UKI has no .linux")?;
            let initrd = uki.section_data(".initrd").unwrap_or_default();
            let cmdline = uki.cmdline()?.unwrap_or_default();
            Some((kernel.into_owned(), initrd.into_owned(), cmdline))
        }
        (None, None) => None,
    };
    let kernel_hashes = direct.as_ref().map(|(k, i, c)| KernelHashes::new(k, i, c));
    let ld = SnpLaunch {
        ovmf: &ovmf,
        vcpus: args.vcpus,
        vcpu_sig,
        vmm,
        guest_features,
        kernel_hashes,
    }
    .digest()?;
    if !args.json {
        println!("{}", hex::encode(ld));
        return Ok(());
    }
    let sha256 = |b: &[u8]| hex::encode(ring::digest::digest(&ring::digest::SHA256, b));
    print_json(&serde_json::json!({
        "measurement": hex::encode(ld),
        "ovmf": args.ovmf,
        "ovmf_sha256": sha256(&fw),
        "ovmf_hash": hex::encode(snp::ovmf_hash(&ovmf)),
        "vcpus": args.vcpus,
        "vcpu_type": args.vcpu_type,
        "vcpu_sig": format!("{vcpu_sig:#x}"),
        "vmm": vmm.name(),
        "guest_features": format!("{guest_features:#x}"),
        "kernel": args.kernel,
        "initrd": args.initrd,
        "uki": args.uki,
        "cmdline": direct.as_ref().map(|(_, _, c)| c),
        "kernel_hashes": kernel_hashes.map(|h| serde_json::json!({
            "kernel_sha256": hex::encode(h.kernel),
            "initrd_sha256": hex::encode(h.initrd),
            "cmdline_sha256": hex::encode(h.cmdline),
        })),
    }))
}

fn inspect(image: &Path, json: bool) -> Result<()> {
    let files = BootFiles::open(image)?;
    let uki = Uki::parse(&files.uki).with_context(|| format!("{}: UKI", image.display()))?;
    let sha = |alg| hex::encode(authenticode::digest(&uki.pe, alg));
    let kernel = uki.section_data(".linux").context("no .linux")?;
    let kpe = nacre_measure::pe::PeImage::parse(&kernel)
        .context(".linux is not a PE image (EFI stub kernel)")?;
    let ksha = |alg| hex::encode(authenticode::digest(&kpe, alg));
    let sections: Vec<_> = uki
        .pe
        .sections
        .iter()
        .map(|s| serde_json::json!({"name": s.name, "virtual_size": s.virtual_size, "file_offset": s.pointer_to_raw_data, "raw_size": s.size_of_raw_data}))
        .collect();
    let v = serde_json::json!({
        "stub_version": uki.stub_version,
        "cmdline": uki.cmdline()?,
        "roothash": uki.roothash()?,
        "os_release": uki.os_release().into_iter().collect::<BTreeMap<_, _>>(),
        "signed": uki.pe.cert_table.is_some(),
        "sections": sections,
        "authenticode": {"uki": {"sha256": sha(&ring::digest::SHA256), "sha384": sha(&ring::digest::SHA384)},
                          "kernel": {"sha256": ksha(&ring::digest::SHA256), "sha384": ksha(&ring::digest::SHA384)}},
        "esp_dropins": files.dropins.extra_d.iter().map(|(n, d)| format!("EFI/BOOT/BOOTX64.EFI.extra.d/{n} ({} bytes)", d.len()))
            .chain(files.dropins.loader_credentials.iter().map(|(n, d)| format!("loader/credentials/{n} ({} bytes)", d.len()))).collect::<Vec<_>>(),
    });
    if json {
        return print_json(&v);
    }
    println!(
        "stub:      systemd-stub {}",
        uki.stub_version
            .as_deref()
            .unwrap_or("(unknown: no .sdmagic)")
    );
    println!("cmdline:   {}", uki.cmdline()?.unwrap_or_default());
    println!(
        "roothash:  {}",
        uki.roothash()?.unwrap_or_else(|| "(none)".into())
    );
    println!(
        "signed:    {}",
        if uki.pe.cert_table.is_some() {
            "yes (Authenticode)"
        } else {
            "no"
        }
    );
    println!("sections:");
    for s in &uki.pe.sections {
        println!(
            "  {:<9} {:>10} bytes at {:#x}",
            s.name, s.virtual_size, s.pointer_to_raw_data
        );
    }
    println!(
        "Authenticode sha256: UKI {}  kernel {}",
        sha(&ring::digest::SHA256),
        ksha(&ring::digest::SHA256)
    );
    println!(
        "Authenticode sha384: UKI {}  kernel {}",
        sha(&ring::digest::SHA384),
        ksha(&ring::digest::SHA384)
    );
    for d in v["esp_dropins"].as_array().into_iter().flatten() {
        println!("drop-in:   {}", d.as_str().unwrap_or_default());
    }
    Ok(())
}

#[derive(Args)]
struct VerifyOpts {
    manifest: PathBuf,
    /// Public key (PEM) the manifest must be signed with.
    #[arg(long)]
    key: PathBuf,
    /// Signature file (default: <manifest>.sig).
    #[arg(long)]
    signature: Option<PathBuf>,
    /// Observed PCRs as JSON {"0": "<hex>", ...}.
    #[arg(long)]
    pcrs: Option<PathBuf>,
    /// Firmware event log (binary_bios_measurements).
    #[arg(long)]
    eventlog: Option<PathBuf>,
    /// nacre-init's runtime log (CEL-JSON, one record per line), replayed after the
    /// firmware log.
    #[arg(long, requires = "eventlog")]
    runtime_log: Option<PathBuf>,
    #[arg(long)]
    json: bool,
}

fn verify(o: VerifyOpts) -> Result<()> {
    let (manifest_path, key, json) = (o.manifest.as_path(), o.key.as_path(), o.json);
    let (signature, pcrs, eventlog) = (o.signature, o.pcrs, o.eventlog);
    let bytes = std::fs::read(manifest_path)
        .with_context(|| format!("reading {}", manifest_path.display()))?;
    let sig_file = signature.unwrap_or_else(|| sig_path(manifest_path));
    let sig = std::fs::read(&sig_file)
        .with_context(|| format!("reading signature {}", sig_file.display()))?;
    let pk = PublicKey::from_pem_file(key)?;
    sign::verify_blob(&pk, &bytes, &sig).with_context(|| {
        format!(
            "{}: signature {}",
            manifest_path.display(),
            sig_file.display()
        )
    })?;
    let m = Manifest::from_json(&bytes).with_context(|| format!("{}", manifest_path.display()))?;
    if !json {
        println!(
            "signature: OK ({} signed by {})",
            manifest_path.display(),
            key.display()
        );
    }
    let mut report = serde_json::json!({"signature": "ok"});
    let mut failed = false;
    if let Some(t) = &m.not_after {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .context("the system clock is before 1970")?
            .as_secs();
        let expired = m.expired_at(now);
        failed |= expired;
        report["not_after"] = serde_json::json!(t);
        report["expired"] = serde_json::json!(expired);
        if !json {
            if expired {
                println!("lifetime: EXPIRED (manifest expired: not_after {t})");
            } else {
                println!("lifetime: OK (not_after {t})");
            }
        }
    }
    let mut observed_pcrs = match &pcrs {
        Some(p) => Some(read_pcrs_json(p)?),
        None => None,
    };
    if let Some(log_path) = &eventlog {
        let log = read_eventlog(log_path)?;
        let runtime = read_runtime_log(o.runtime_log.as_deref())?;
        let replayed =
            nacre_eventlog::replay::replay(&log, &runtime).context("replaying the event log")?;
        let bank = replayed
            .iter()
            .find(|b| b.alg == m.alg)
            .with_context(|| format!("the event log has no {} bank", m.alg.name()))?;
        // The log must explain the quoted values: a log that replays to other PCRs is forged or
        // incomplete.
        if let Some(obs) = &observed_pcrs {
            for pcr in m.measurements.keys() {
                if let (Some(o), Some(r)) = (obs.get(pcr), bank.values.get(*pcr as usize)) {
                    if o != r {
                        bail!("{}: replaying the event log gives PCR {pcr} = {}, but the observed value is {}: the log does not belong to these PCRs", log_path.display(), hex::encode(r), hex::encode(o));
                    }
                }
            }
        }
        let diffs = diff::compare(
            &m.events,
            &observed_events(&log, &runtime, m.alg),
            &m.measurements
                .keys()
                .copied()
                .filter(|p| m.events.iter().any(|e| e.pcr == *p))
                .collect::<Vec<_>>(),
        );
        if !json {
            for d in &diffs {
                let warn = m.measurements.get(&d.pcr).is_some_and(|e| e.warn_only);
                println!("{}: {d}", if warn { "warning" } else { "error" });
            }
        }
        report["event_differences"] = serde_json::to_value(&diffs)?;
        if observed_pcrs.is_none() {
            observed_pcrs = Some(
                (0..24u32)
                    .filter_map(|i| Some((i, bank.values.get(i as usize)?.clone())))
                    .collect(),
            );
        }
    }
    if let Some(obs) = &observed_pcrs {
        let v = m.check_pcrs(obs);
        if !json {
            for w in &v.warnings {
                println!(
                    "warning: PCR {} (warn-only) is {} , expected {}",
                    w.pcr,
                    w.observed.as_deref().unwrap_or("absent"),
                    w.expected
                );
            }
            for e in &v.errors {
                println!(
                    "error: PCR {} is {}, expected {}",
                    e.pcr,
                    e.observed.as_deref().unwrap_or("absent"),
                    e.expected
                );
            }
            println!(
                "PCRs: {} matched, {} warnings, {} errors",
                v.matched.len(),
                v.warnings.len(),
                v.errors.len()
            );
        }
        failed |= !v.ok();
        report["pcrs"] = serde_json::to_value(&v)?;
    }
    report["ok"] = serde_json::Value::Bool(!failed);
    if json {
        print_json(&report)?;
    }
    if failed {
        std::process::exit(2);
    }
    Ok(())
}
