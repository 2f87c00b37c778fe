//! `nacre-keyservice`: run and inspect a cluster's key service.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use nacre_attestation::verify::SwappableVerifier;
use nacre_attestation::{
    snp, tdx, ByPlatform, EnrolledAks, QemuVtpmVerifier, SevSnpVerifier, SignedManifest,
    TdxVerifier, Verifier,
};
use nacre_keyservice::overlay::OverlayRange;
use nacre_keyservice::podnet;
use nacre_keyservice::server::{load_identity, Server};
use nacre_keyservice::store::{Cluster, Decision, Store, DB_FILE};
use nacre_keyservice::{tls, Service};
use nacre_measure::manifest::{compare_versions, Manifest, RevocationList};
use ring::rand::SecureRandom;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use zeroize::Zeroizing;

#[derive(Parser)]
#[command(
    name = "nacre-keyservice",
    version,
    about = "nacre's attested key service"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

// Parsed once per process: the size of `Serve` does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// Create a cluster: master secret, cluster id, bootstrap token, the service's CA and
    /// server certificate, in a new state directory. Put STATE/ca.pem into the node image
    /// (/etc/nacre/keyservice-ca.pem) so nodes trust this service.
    Init {
        #[arg(long)]
        state: PathBuf,
        /// The overlay (WireGuard) range nodes get their addresses from.
        #[arg(long, default_value = "10.244.0.0/16")]
        overlay: String,
        /// The Kubernetes API server kubelet joins (`https://host:6443`), if there is one yet.
        #[arg(long)]
        api_server: Option<String>,
        /// Where nodes reach this service (IP:PORT on their underlay). With it, `init` writes
        /// STATE/cluster.toml, the cluster configuration nodes of a release image are booted
        /// with (QEMU: -fw_cfg name=opt/nacre/cluster.toml,file=STATE/cluster.toml); `serve`
        /// then admits nodes that measured exactly that file.
        #[arg(long)]
        endpoint: Option<std::net::SocketAddr>,
        /// The cluster's name in cluster.toml (a-z, 0-9, '-').
        #[arg(long, default_value = "nacre")]
        name: String,
        /// Further ranges routed only through wg0, in cluster.toml (repeat); the overlay, pod
        /// and service CIDRs always are.
        #[arg(long = "cluster-range")]
        cluster_ranges: Vec<String>,
        /// The cluster's pod CIDR (IPv4, e.g. 10.32.0.0/16): each node gets one
        /// /--pod-prefix range of it, the one of its overlay host index. Without it, no pod
        /// network (nodes get no pod range).
        #[arg(long)]
        pod_cidr: Option<String>,
        /// The size of each node's pod range (default 24).
        #[arg(long, requires = "pod_cidr")]
        pod_prefix: Option<u8>,
        /// The cluster's service CIDR (IPv4, e.g. 10.96.0.0/12).
        #[arg(long, requires = "pod_cidr")]
        service_cidr: Option<String>,
        /// kubelet's cluster DNS address (inside --service-cidr, e.g. 10.96.0.10).
        #[arg(long, requires = "service_cidr")]
        cluster_dns: Option<String>,
        /// The API server's CA certificate(s), PEM, handed to kubelet with the join.
        #[arg(long, requires = "api_server")]
        api_server_ca: Option<PathBuf>,
        /// At most this many nodes (joined, not removed); further new nodes are refused.
        #[arg(long)]
        max_nodes: Option<u32>,
    },
    /// Serve nodes: verify their evidence against the signed golden manifest, then answer.
    Serve {
        #[arg(long)]
        state: PathBuf,
        #[arg(long, default_value = "127.0.0.1:7443")]
        listen: String,
        #[command(flatten)]
        verify: VerifierArgs,
        /// In-cluster mode: prove this service to nodes with this machine's own attestation
        /// (TPM at this TCTI, e.g. device:/dev/tpmrm0) instead of the CA certificate; nodes
        /// check it against the control plane's golden values (mutual attested TLS).
        #[arg(long)]
        attest_with: Option<String>,
        #[arg(
            long,
            default_value = "/sys/kernel/security/tpm0/binary_bios_measurements"
        )]
        attest_firmware_log: PathBuf,
        #[arg(long, default_value = "/run/nacre/runtime.cel")]
        attest_runtime_log: PathBuf,
        /// In-cluster mode on a confidential VM: add the platform's report (TDX quote,
        /// SEV-SNP report through configfs-tsm) binding the nonce, the AK and the TLS key, as
        /// nodes do; nodes in a CVM refuse a service without it.
        #[arg(long, value_enum, default_value = "qemu-vtpm")]
        attest_platform: nacre_keyservice::incluster::AttestPlatform,
        /// Each connection ends this many seconds after it was accepted, whatever the client
        /// sends (a client that trickles bytes holds a slot at most this long).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=600))]
        connection_deadline: u64,
        /// Connections in flight per source address (IPv6: per /64); the excess is closed at
        /// accept, before any TLS.
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=256))]
        max_per_source: u64,
        /// Remove nodes not heard from (join or peers refresh) for this many days: checked at
        /// start and hourly; their AKs are refused from then on.
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=3650))]
        expire_after_days: Option<u64>,
    },
    /// Remove a node (by name, e.g. node-3, or AK fingerprint) from a stopped service's state:
    /// its record and disk bindings go, its AK is refused for good, its overlay address and pod
    /// range go to a later node. Running nodes drop it at their next peers refresh.
    Remove {
        #[arg(long)]
        state: PathBuf,
        /// The node's name or AK fingerprint (as `nodes` lists them).
        node: String,
        #[arg(long)]
        json: bool,
    },
    /// Read a TPM's attestation key (what `serve --ak` enrolls), e.g. from a node's swtpm.
    Ak {
        /// TCTI, e.g. `swtpm:host=127.0.0.1,port=2321` or `device:/dev/tpmrm0`.
        #[arg(long)]
        tcti: String,
        /// Where to write the AK (PEM SubjectPublicKeyInfo).
        #[arg(long)]
        out: PathBuf,
    },
    /// The nodes that joined.
    Nodes {
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Benchmark the service on loopback: attested requests per second and latency, with
    /// software-simulated node TPMs (see the bench module for what is real and what is not).
    Bench {
        /// Concurrent clients (nodes).
        #[arg(long, default_value_t = 8)]
        clients: usize,
        #[arg(long, default_value_t = 10.0)]
        seconds: f64,
        /// A real firmware event log the simulated nodes present.
        #[arg(long, default_value = "eventlog/tests/fixtures/plain.eventlog.bin")]
        firmware_log: PathBuf,
        #[arg(long)]
        json: bool,
        /// Instead: the cost of verifying one piece of evidence per platform (QEMU vTPM,
        /// SEV-SNP, TDX) on the real fixtures in --fixtures, one core (bench::verification_cost).
        #[arg(long)]
        verification: bool,
        /// Verifications timed per platform (with --verification).
        #[arg(long, default_value_t = 200)]
        iterations: u32,
        /// The SNP and TDX fixtures (snp/milan-*, tdx/tdx_quote*), with --verification.
        #[arg(long, default_value = "attestation/tests/fixtures")]
        fixtures: PathBuf,
        /// Unauthenticated attackers beside the clients: slowloris, flood and garbage threads,
        /// this many of each kind (see bench::Hostile); compare with a run without it.
        #[arg(long)]
        hostile: Option<usize>,
        /// Source addresses per attacker kind (with --hostile).
        #[arg(long, default_value_t = 4)]
        hostile_sources: usize,
    },
    /// The decision log.
    Log {
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// SEV-SNP certificates for nodes whose host gives no VCEK/VLEK: what to fetch from AMD's
    /// KDS, and importing it into the store `serve` looks keys up in.
    Certs {
        #[command(subcommand)]
        cmd: CertsCmd,
    },
}

#[derive(Subcommand)]
enum CertsCmd {
    /// The KDS URLs of the VCEKs (and the product's cert chains and CRLs) for reports
    /// (--report) or chip ids at a TCB (--product, --chip-id, --tcb).
    Urls {
        /// An ATTESTATION_REPORT (raw); repeat.
        #[arg(long = "report")]
        reports: Vec<PathBuf>,
        /// milan, genoa or turin (needed with --chip-id, and for version 2 reports).
        #[arg(long)]
        product: Option<nacre_attestation::snp::Generation>,
        /// A chip id (hex: 128 digits, Turin 16); repeat.
        #[arg(long = "chip-id")]
        chip_ids: Vec<String>,
        /// The TCB: bootloader,tee,snp,microcode (Turin: fmc,bootloader,tee,snp,microcode).
        #[arg(long)]
        tcb: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Check VCEKs, VLEKs and AMD CRLs (DER or PEM) against AMD's roots and store them in
    /// STATE/snp-certs (or --store).
    Import {
        #[arg(long, required_unless_present = "store")]
        state: Option<PathBuf>,
        #[arg(long)]
        store: Option<PathBuf>,
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long)]
        json: bool,
    },
}

fn certs(cmd: CertsCmd) -> Result<()> {
    use nacre_keyservice::certstore::{self, CertStore, Imported};
    match cmd {
        CertsCmd::Urls {
            reports,
            product,
            chip_ids,
            tcb,
            json,
        } => {
            let mut urls = Vec::new();
            for r in &reports {
                let b = std::fs::read(r).with_context(|| format!("reading {}", r.display()))?;
                urls.push(
                    certstore::kds_urls_for_report(&b, product)
                        .with_context(|| format!("{}", r.display()))?,
                );
            }
            if !chip_ids.is_empty() {
                let (Some(g), Some(t)) = (product, tcb.as_deref()) else {
                    bail!("--chip-id needs --product and --tcb");
                };
                let t = snp::Tcb::parse(t, g).map_err(|e| anyhow::anyhow!("--tcb: {e}"))?;
                for c in &chip_ids {
                    let id = hex::decode(c).with_context(|| format!("--chip-id {c}"))?;
                    urls.push(
                        certstore::kds_urls(g, &id, &t)
                            .map_err(|e| anyhow::anyhow!("--chip-id {c}: {e}"))?,
                    );
                }
            }
            if urls.is_empty() {
                bail!("give --report FILE, or --product, --chip-id and --tcb");
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&urls)?);
            } else {
                for u in &urls {
                    println!("# {} chip {} TCB {}", u.product, u.chip_id, u.tcb);
                    println!("{}", u.vcek);
                    println!("{}", u.vcek_crl);
                    println!("{}", u.vlek_crl);
                }
            }
        }
        CertsCmd::Import {
            state,
            store,
            files,
            json,
        } => {
            let dir = match (store, state) {
                (Some(d), _) => d,
                (None, Some(s)) => s.join("snp-certs"),
                (None, None) => bail!("give --state or --store"),
            };
            let mut st = CertStore::open(&dir)
                .with_context(|| format!("the certificate store {}", dir.display()))?;
            let mut done = Vec::new();
            for f in &files {
                let b = std::fs::read(f).with_context(|| format!("reading {}", f.display()))?;
                let i = st
                    .import(&b)
                    .with_context(|| format!("{}: not imported", f.display()))?;
                if !json {
                    match &i {
                        Imported::Vcek { product, hwid, tcb, file } => println!(
                            "{}: {product} VCEK for chip {hwid} at TCB {tcb} -> {}",
                            f.display(),
                            file.display()
                        ),
                        Imported::Vlek { product, csp_id, tcb, file } => println!(
                            "{}: {product} VLEK ({}) at TCB {tcb} -> {}",
                            f.display(),
                            csp_id.as_deref().unwrap_or("no cspID"),
                            file.display()
                        ),
                        Imported::Crl { product, revoked, file } => println!(
                            "{}: {product} CRL signed by the ARK, {revoked} revoked -> {} (honoured by serve from its next start or reload)",
                            f.display(),
                            file.display()
                        ),
                    }
                }
                done.push(i);
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&done)?);
            }
        }
    }
    Ok(())
}

/// What `serve` verifies nodes with: the golden manifests and the platforms' trust anchors.
#[derive(clap::Args, Clone)]
struct VerifierArgs {
    /// A golden manifest (nacre-measure golden), signature in MANIFEST.sig; repeat. Give the
    /// image at phase sysinit (joins and disk keys) and at phase ready (peer refresh).
    #[arg(long = "manifest", required = true)]
    manifests: Vec<PathBuf>,
    /// The public key the manifest must be signed with (PEM).
    #[arg(long)]
    manifest_key: PathBuf,
    /// Skip manifests whose image.version is below this version (numeric dotted comparison:
    /// 1.2 = 1.2.0 < 1.10, an optional leading v, 1.2.0-rc1 < 1.2.0); a version that is not
    /// numeric ("dev", "test") is skipped too under a minimum.
    #[arg(long)]
    min_version: Option<String>,
    /// Revoked manifests: SHA-256 digests, one a line ('#' comments), of manifest files
    /// (sha256sum measurements.json) or of UKIs (a manifest's image.uki_sha256: all its
    /// phases). Re-read with the manifests on SIGHUP and when it changes.
    #[arg(long)]
    revoked: Option<PathBuf>,
    /// An enrolled attestation key (PEM or DER SubjectPublicKeyInfo, from
    /// `nacre-keyservice ak`); repeat for each node. Enables QEMU vTPM nodes.
    #[arg(long = "ak")]
    aks: Vec<PathBuf>,
    /// The operator's EK CA (PEM bundle: root and intermediates): QEMU vTPM nodes whose
    /// EK certificate (EKU and TPM SAN checked) chains to it are trusted once they prove their
    /// AK is in that TPM by credential activation (TCG default, decrypt-only ECC EK).
    #[arg(long)]
    ek_ca: Option<PathBuf>,
    /// SEV-SNP nodes: the minimum TCB accepted for a product, `PRODUCT=bootloader,tee,snp,microcode`
    /// (Milan, Genoa) or `turin=fmc,bootloader,tee,snp,microcode`; repeat per product. Enables
    /// SEV-SNP nodes (AMD's ARK/ASK/ASVK of Milan, Genoa and Turin are built in); a node of a
    /// product without a minimum is refused. No default: take it from AMD's current security
    /// bulletins for the product.
    #[arg(long = "snp-min-tcb")]
    snp_min_tcb: Vec<String>,
    /// A golden SEV-SNP launch measurement (96 hex digits); repeat. It lets a manifest without
    /// `snp` values pair with it, except for azure-sev-snp nodes (HCL-bound): those need a
    /// manifest holding their measurement.
    #[arg(long = "snp-measurement")]
    snp_measurements: Vec<String>,
    /// The VMPL SEV-SNP reports must come from (nacre's guests run at VMPL0).
    #[arg(long, default_value_t = 0)]
    snp_vmpl: u32,
    /// An AMD revocation list (KDS `.../vcek/v1/PRODUCT/crl` or `.../vlek/v1/PRODUCT/crl`, DER
    /// or PEM), checked against the product's ARK; repeat. CRLs imported into the certificate
    /// store (`nacre-keyservice certs import`) are honoured too.
    #[arg(long = "snp-crl")]
    snp_crls: Vec<PathBuf>,
    /// The VCEK/VLEK certificate store (`nacre-keyservice certs import`), looked up when a
    /// node's evidence carries no VCEK/VLEK (`serve` uses STATE/snp-certs when not given).
    #[arg(long)]
    snp_cert_store: Option<PathBuf>,
    /// Require guests launched with an ID block signed by this ID key (96 hex digits:
    /// its digest, as `nacre-measure snp-id-block` prints it).
    #[arg(long)]
    snp_id_key_digest: Option<String>,
    /// Refuse SEV-SNP nodes whose host runs with SMT enabled (the report's PLATFORM_INFO).
    #[arg(long)]
    snp_require_smt_off: bool,
    /// Accept nodes of this variant although only the guest's own REPORT_DATA binds their AK
    /// (`qemu-snp`: the host's swtpm, no SVSM vTPM; a guest can bind a software AK). Each
    /// acceptance is logged as a warning. Cloud variants cannot be opted in: their platform
    /// binding (Azure HCL report, GCE AK certificate, NitroTPM document) is always required.
    #[arg(long = "accept-guest-bound-ak", value_name = "VARIANT")]
    accept_guest_bound_ak: Vec<String>,
    /// TDX nodes: Intel's collateral for the nodes' platform (dcap-qvl QuoteCollateralV3 JSON:
    /// PCK CRL, root CA CRL, TCB info, QE identity with their issuer chains, from Intel PCS or a
    /// PCCS for the platform's FMSPC). The PCK chain is checked to Intel's SGX Root CA, pinned
    /// in nacre-attestation. Enables TDX nodes.
    #[arg(long)]
    tdx_collateral: Option<PathBuf>,
    /// A golden MRTD (96 hex digits), besides the signed manifests' `tdx` entries; repeat.
    #[arg(long = "tdx-mrtd")]
    tdx_mrtds: Vec<String>,
    /// A TCB status accepted besides UpToDate (SWHardeningNeeded, ConfigurationNeeded,
    /// ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded,
    /// TDRelaunchAdvised, TDRelaunchAdvisedConfigurationNeeded); repeat. Revoked never is.
    #[arg(long = "tdx-allow-tcb")]
    tdx_allow_tcb: Vec<String>,
    /// Load manifests without `not_after` (they never expire: they admit nodes until removed
    /// or revoked), each warned about by name. Without it such a manifest stops the service at
    /// start (a reload keeps the previous manifests). Sign manifests with a lifetime instead
    /// (`nacre-measure golden` gives one by default).
    #[arg(long)]
    allow_no_expiry: bool,
}

/// The cluster configuration for nodes of release images, in the state directory.
const CLUSTER_CONFIG: &str = "cluster.toml";

fn random<const N: usize>() -> Result<[u8; N]> {
    let mut b = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| anyhow::anyhow!("the system RNG failed"))?;
    Ok(b)
}

/// kubeadm's bootstrap token format: `[a-z0-9]{6}.[a-z0-9]{16}`.
fn bootstrap_token() -> Result<String> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut out = String::new();
    // Rejection sampling keeps the characters uniform.
    while out.len() < 23 {
        for b in random::<32>()? {
            if out.len() == 23 {
                break;
            }
            if out.len() == 6 {
                out.push('.');
            }
            if usize::from(b) < 252 {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

fn read_ak(path: &Path) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if bytes.starts_with(b"-----BEGIN") {
        use rustls::pki_types::{pem::PemObject, SubjectPublicKeyInfoDer};
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(spki.as_ref().to_vec())
    } else {
        Ok(bytes)
    }
}

fn print_decision(d: &Decision) {
    println!(
        "#{} {} {} {} {}{}: {}",
        d.seq,
        d.peer,
        d.op,
        d.outcome,
        d.ak.as_deref()
            .map(|a| &a[..a.len().min(16)])
            .unwrap_or("-"),
        d.check
            .as_deref()
            .map(|c| format!(" [{c}]"))
            .unwrap_or_default(),
        d.detail
    );
}

/// What [`load`] built: the verifier, and which manifests it admits with and which the
/// service's policy skipped (each with the reason).
struct Loaded {
    verifier: ByPlatform,
    admitted: Vec<String>,
    skipped: Vec<String>,
    /// Logged at load (stale AMD CRLs, ...); nothing refused.
    warnings: Vec<String>,
}

fn unix_now() -> Result<u64> {
    Ok(std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .context("the system clock is before 1970")?
        .as_secs())
}

/// The verifier `serve` checks nodes with (see [`load`]), at the system clock's time.
#[cfg(test)]
fn build_verifier(a: &VerifierArgs) -> Result<ByPlatform> {
    Ok(load(a, unix_now()?, false)?.verifier)
}

/// The verifier `serve` checks nodes with: one per platform the flags enable (ByPlatform).
/// Every file is read and checked now, so a bad one stops the service at start (and a reload
/// fails, leaving the previous verifier in force). Manifests refused by the service's policy
/// at `now` (expired, below `--min-version`, in `--revoked`) are skipped with a reason in
/// [`Loaded::skipped`]; at start (`reload` false) at least one must remain, on a reload none
/// may (every node is then refused: revoking the last release takes effect). A manifest
/// without `not_after` (and no `--allow-no-expiry`) stops the service at start; on a reload
/// it is skipped with that reason instead, so the rest of the reload still takes effect.
fn load(a: &VerifierArgs, now: u64, reload: bool) -> Result<Loaded> {
    let VerifierArgs {
        manifests,
        manifest_key,
        min_version,
        revoked,
        aks,
        ek_ca,
        snp_min_tcb,
        snp_measurements,
        snp_vmpl,
        snp_crls,
        snp_cert_store,
        snp_id_key_digest,
        snp_require_smt_off,
        accept_guest_bound_ak,
        tdx_collateral,
        tdx_mrtds,
        tdx_allow_tcb,
        allow_no_expiry,
    } = a;
    let binding = binding_policy(accept_guest_bound_ak)?;
    let key = nacre_measure::sign::PublicKey::from_pem_file(manifest_key)
        .with_context(|| format!("reading {}", manifest_key.display()))?;
    if let Some(v) = min_version {
        if compare_versions(v, v).is_none() {
            bail!("--min-version {v:?}: not a numeric dotted version (e.g. 1.4 or v1.4.2)");
        }
    }
    let revoked = match revoked {
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("--revoked: reading {}", p.display()))?;
            RevocationList::parse(&text).with_context(|| format!("--revoked {}", p.display()))?
        }
        None => RevocationList::default(),
    };
    let mut signed = Vec::new();
    let (mut admitted, mut skipped) = (Vec::new(), Vec::new());
    let mut warnings = Vec::new();
    for manifest in manifests {
        let mut sig = manifest.clone().into_os_string();
        sig.push(".sig");
        let sig = PathBuf::from(sig);
        let m = SignedManifest {
            json: std::fs::read(manifest)
                .with_context(|| format!("reading {}", manifest.display()))?,
            signature_b64: std::fs::read(&sig)
                .with_context(|| format!("reading {}", sig.display()))?,
        };
        // Checked now too, so a bad manifest stops the service at start.
        nacre_measure::sign::verify_blob(&key, &m.json, &m.signature_b64)
            .with_context(|| format!("{}: signature", manifest.display()))?;
        let parsed =
            Manifest::from_json(&m.json).with_context(|| format!("{}", manifest.display()))?;
        // A manifest without a lifetime never expires: refused unless opted in. At start the
        // service does not start; on a reload it is skipped (named, with the reason), so the
        // rest of the load, `--revoked` and `--min-version` included, still takes effect.
        if parsed.not_after.is_none() && !allow_no_expiry {
            let why = format!(
                "manifest {} has no not_after: it would never expire (admit nodes until removed or revoked); sign it with a lifetime (nacre-measure golden gives one by default, or --lifetime-days N / --not-after T) or pass --allow-no-expiry",
                manifest.display()
            );
            if reload {
                skipped.push(why);
                continue;
            }
            bail!("{why}");
        }
        let policy = parsed
            .check_lifetime(now)
            .and_then(|()| match min_version {
                Some(v) => parsed.check_min_version(v),
                None => Ok(()),
            })
            .and_then(|()| revoked.check(&m.json, &parsed));
        let name = format!(
            "{} (version {}, variant {}, phase {}{})",
            manifest.display(),
            parsed.image.version,
            parsed.image.variant,
            parsed.phase.as_deref().unwrap_or("-"),
            parsed
                .not_after
                .as_deref()
                .map(|t| format!(", valid until {t}"))
                .unwrap_or_default()
        );
        match policy {
            Ok(()) => {
                // Such a manifest never expires: loaded only with --allow-no-expiry, and
                // warned about by name.
                if parsed.not_after.is_none() {
                    warnings.push(format!(
                        "manifest {name} has no not_after: it NEVER EXPIRES and admits nodes until removed or revoked (loaded by --allow-no-expiry; sign one with a lifetime: nacre-measure golden gives one by default)"
                    ));
                }
                admitted.push(name);
                signed.push(m);
            }
            Err(e) => skipped.push(format!("{name}: {e}")),
        }
    }
    if signed.is_empty() && !reload {
        bail!(
            "no manifest is left to admit nodes, the service's policy skipped every one: {}",
            skipped.join("; ")
        );
    }
    // sha384 manifests (`nacre-measure golden --bank sha384`) hold the golden values of AWS's
    // NitroTPM attestation documents (nacre_attestation::nitro, aws-sev-snp), not of quotes.
    let (nitro_signed, signed): (Vec<SignedManifest>, Vec<SignedManifest>) =
        signed.into_iter().partition(|m| {
            Manifest::from_json(&m.json).is_ok_and(|p| p.alg == nacre_eventlog::HashAlg::Sha384)
        });
    let mut verifier = ByPlatform::default();
    let mut trusts: Vec<Box<dyn nacre_attestation::AkTrust>> = Vec::new();
    if let Some(ca) = &ek_ca {
        let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
        trusts.push(Box::new(
            nacre_attestation::ek::EkCertified::from_pem(&pem).map_err(anyhow::Error::msg)?,
        ));
    }
    if !aks.is_empty() {
        let aks = aks.iter().map(|p| read_ak(p)).collect::<Result<Vec<_>>>()?;
        trusts.push(Box::new(EnrolledAks::new(aks)));
    }
    if !trusts.is_empty() {
        verifier.qemu_vtpm = Some(Box::new(QemuVtpmVerifier::with_manifests(
            signed.clone(),
            key.clone(),
            Box::new(nacre_attestation::verify::AnyOf(trusts)),
        )));
    }
    if !snp_min_tcb.is_empty() {
        let mut min_tcb = std::collections::BTreeMap::new();
        for t in snp_min_tcb {
            let (product, tcb) = t.split_once('=').with_context(|| {
                format!(
                    "--snp-min-tcb {t:?}: PRODUCT=TCB, e.g. milan=4,0,24,219 or turin=0,1,0,2,71"
                )
            })?;
            let g: snp::Generation = product
                .parse()
                .map_err(|e| anyhow::anyhow!("--snp-min-tcb {t:?}: {e}"))?;
            let tcb = snp::Tcb::parse(tcb, g).map_err(|e| anyhow::anyhow!("--snp-min-tcb: {e}"))?;
            if min_tcb.insert(g, tcb).is_some() {
                bail!("--snp-min-tcb: {g} is given twice");
            }
        }
        let mut roots = snp::AmdRoots::bundled().context("AMD's built-in SEV-SNP roots")?;
        // A CRL past its nextUpdate still revokes (an old list revokes no less): warned.
        let mut stale = |der: &[u8], what: &str| -> Result<()> {
            let der = snp::certs::crl_der(der).with_context(|| what.to_string())?;
            if let Some(why) = snp::certs::stale_crl(&der, now).with_context(|| what.to_string())? {
                warnings.push(format!("{what}: {why}"));
            }
            Ok(())
        };
        for crl in snp_crls {
            let b = std::fs::read(crl).with_context(|| format!("reading {}", crl.display()))?;
            roots
                .add_crl(&b)
                .with_context(|| format!("--snp-crl {}", crl.display()))?;
            stale(&b, &format!("--snp-crl {}", crl.display()))?;
        }
        let store = match snp_cert_store {
            Some(dir) => Some(std::sync::Arc::new(
                nacre_keyservice::certstore::CertStore::open(dir)
                    .with_context(|| format!("the SEV-SNP certificate store {}", dir.display()))?,
            )),
            None => None,
        };
        if let Some(s) = &store {
            for crl in s.crls().context("the certificate store's CRLs")? {
                roots
                    .add_crl(&crl)
                    .context("a CRL in the certificate store")?;
                stale(&crl, "a CRL in the certificate store")?;
            }
        }
        let measurements = hex48_list(snp_measurements, "--snp-measurement")?;
        if measurements.is_empty() && !reload && !any_manifest(&signed, |m| !m.snp.is_empty()) {
            bail!("SEV-SNP nodes need golden launch measurements: in the manifests (nacre-measure golden --snp-ovmf) or --snp-measurement");
        }
        let mut policy = snp::SnpPolicy::new(*snp_vmpl, min_tcb);
        policy.measurements = measurements;
        policy.id_key_digest = snp_id_key_digest
            .as_deref()
            .map(|h| {
                let mut d = [0u8; 48];
                hex::decode_to_slice(h, &mut d)
                    .with_context(|| format!("--snp-id-key-digest {h}"))
                    .map(|()| d)
            })
            .transpose()?;
        policy.require_smt_off = *snp_require_smt_off;
        let mut v = SevSnpVerifier::new(roots, policy, signed.clone(), key.clone())
            .with_binding_policy(binding)
            .with_nitro(nacre_attestation::nitro::NitroTrust::aws(
                nitro_signed.clone(),
            ));
        if let Some(s) = store {
            v = v.with_store(s);
        }
        verifier.sev_snp = Some(Box::new(v));
    } else if !snp_measurements.is_empty() || !snp_crls.is_empty() {
        bail!("--snp-measurement and --snp-crl need --snp-min-tcb (which enables SEV-SNP nodes)");
    }
    if let Some(path) = tdx_collateral {
        verifier.tdx = Some(Box::new(tdx_verifier(
            path,
            tdx_mrtds,
            tdx_allow_tcb,
            signed.clone(),
            key.clone(),
            reload,
        )?));
    } else if !tdx_mrtds.is_empty() || !tdx_allow_tcb.is_empty() {
        bail!("--tdx-mrtd and --tdx-allow-tcb need --tdx-collateral");
    }
    if verifier.qemu_vtpm.is_none() && verifier.sev_snp.is_none() && verifier.tdx.is_none() {
        bail!("no node can attest: give --ek-ca or --ak (QEMU vTPM), --snp-min-tcb (SEV-SNP) and/or --tdx-collateral (TDX)");
    }
    Ok(Loaded {
        verifier,
        admitted,
        skipped,
        warnings,
    })
}

/// The AK binding policy: `--accept-guest-bound-ak` only for variants whose platform provides
/// no binding (nacre_attestation::binding::Mechanism::GuestBoundReportData).
fn binding_policy(variants: &[String]) -> Result<nacre_attestation::binding::BindingPolicy> {
    use nacre_attestation::binding::{mechanism, BindingPolicy, Mechanism};
    let mut p = BindingPolicy::default();
    for v in variants {
        match mechanism(v) {
            Some(Mechanism::GuestBoundReportData) => {
                eprintln!("warning: --accept-guest-bound-ak {v}: {v} nodes are admitted with an AK only their own REPORT_DATA binds (a guest can bind a software AK)");
                p.accept_guest_bound.insert(v.clone());
            }
            Some(m) => bail!(
                "--accept-guest-bound-ak {v}: {v} binds its AK with {m}, which is always required"
            ),
            None => bail!("--accept-guest-bound-ak {v}: not a known variant"),
        }
    }
    Ok(p)
}

fn print_loaded(l: &Loaded, what: &str) {
    for m in &l.admitted {
        println!("nacre-keyservice: {what}: manifest {m}");
    }
    for m in &l.skipped {
        println!("nacre-keyservice: {what}: WARNING: skipped {m}");
    }
    for w in &l.warnings {
        println!("nacre-keyservice: {what}: WARNING: {w}");
    }
    if l.admitted.is_empty() {
        println!(
            "nacre-keyservice: {what}: WARNING: no manifest admits nodes, every node is refused"
        );
    }
}

/// Set by SIGHUP: re-read the manifests and the revocation list.
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sighup(_: libc::c_int) {
    RELOAD.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The files whose change triggers a reload: the manifests, their signatures, the revocation
/// list.
fn watched(a: &VerifierArgs) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for m in &a.manifests {
        let mut sig = m.clone().into_os_string();
        sig.push(".sig");
        files.push(m.clone());
        files.push(PathBuf::from(sig));
    }
    files.extend(a.revoked.clone());
    files
}

fn mtimes(files: &[PathBuf]) -> Vec<Option<std::time::SystemTime>> {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// Re-read the manifests and the revocation list and swap the verifier in (connections in
/// flight finish with the one they started with); on an error the previous one stays.
fn reload(args: &VerifierArgs, target: &SwappableVerifier, why: &str) -> Result<()> {
    let loaded = load(args, unix_now()?, true)
        .with_context(|| format!("reload ({why}) failed, the previous manifests stay in force"))?;
    print_loaded(&loaded, &format!("reload ({why})"));
    target.swap(Arc::new(loaded.verifier));
    Ok(())
}

/// Reload on SIGHUP and when a watched file's modification time changes (checked every 2 s).
fn watch(args: VerifierArgs, target: Arc<SwappableVerifier>) -> Result<()> {
    // SAFETY: the handler only stores to an atomic (async-signal-safe); SA_RESTART keeps the
    // accept loop's system calls from failing with EINTR.
    let installed = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sighup as extern "C" fn(libc::c_int) as libc::sighandler_t;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGHUP, &sa, std::ptr::null_mut())
    };
    if installed != 0 {
        bail!(
            "installing the SIGHUP handler: {}",
            std::io::Error::last_os_error()
        );
    }
    let files = watched(&args);
    std::thread::Builder::new()
        .name("reload".into())
        .spawn(move || {
            let mut seen = mtimes(&files);
            loop {
                std::thread::sleep(std::time::Duration::from_secs(2));
                let now = mtimes(&files);
                let why = if RELOAD.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    "SIGHUP"
                } else if now != seen {
                    "a manifest or the revocation list changed"
                } else {
                    continue;
                };
                seen = now;
                if let Err(e) = reload(&args, &target, why) {
                    eprintln!("nacre-keyservice: {e:#}");
                }
            }
        })
        .context("starting the reload thread")?;
    Ok(())
}

/// The TDX verifier: Intel's collateral from `collateral` (checked now: it must parse), golden
/// MRTDs from the flags and the signed manifests, the accepted TCB statuses.
fn tdx_verifier(
    collateral: &Path,
    mrtds: &[String],
    allow_tcb: &[String],
    signed: Vec<SignedManifest>,
    key: nacre_measure::sign::PublicKey,
    reload: bool,
) -> Result<TdxVerifier> {
    let json = std::fs::read(collateral)
        .with_context(|| format!("--tdx-collateral: reading {}", collateral.display()))?;
    let collateral = tdx::collateral_from_json(&json).map_err(|e| {
        anyhow::anyhow!(
            "--tdx-collateral {}: not dcap-qvl QuoteCollateralV3 JSON: {e}",
            collateral.display()
        )
    })?;
    let mrtd = hex48_list(mrtds, "--tdx-mrtd")?;
    // On a reload, revoking the last TDX release leaves no MRTD: every TDX node is refused.
    if mrtd.is_empty() && !reload && !any_manifest(&signed, |m| m.tdx.is_some()) {
        bail!("TDX nodes need golden MRTDs: in the manifests (nacre-measure golden --tdx-ovmf) or --tdx-mrtd");
    }
    let allowed_tcb = allow_tcb
        .iter()
        .map(|s| match s.parse::<tdx::TcbStatus>() {
            Ok(tdx::TcbStatus::Revoked) => bail!("--tdx-allow-tcb Revoked: a revoked platform is never accepted"),
            Ok(t) => Ok(t),
            Err(()) => bail!("--tdx-allow-tcb {s}: not a TCB status (SWHardeningNeeded, ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded, TDRelaunchAdvised, TDRelaunchAdvisedConfigurationNeeded)"),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(TdxVerifier::new(
        collateral,
        tdx::TdxPolicy {
            mrtd,
            allowed_tcb,
            ..tdx::TdxPolicy::default()
        },
        signed,
        key,
    ))
}

/// `serve --expire-after-days`: remove nodes not heard from for that long while the service
/// was up (a node counts as seen when the service starts, so downtime expires nobody), hourly
/// in a thread.
fn expire_nodes(service: Arc<Service>, days: u64) -> Result<()> {
    let max_age = days * 86_400;
    let up_since = nacre_keyservice::store::now_unix();
    let sweep = move |service: &Service| -> Result<(), nacre_keyservice::store::StoreError> {
        for (ak, t) in service.expire(max_age, up_since)? {
            println!(
                "nacre-keyservice: expired {} ({}, ak {}): not seen for {days} day(s)",
                t.name,
                t.overlay,
                &ak[..ak.len().min(16)]
            );
        }
        Ok(())
    };
    std::thread::Builder::new()
        .name("expiry".into())
        .spawn(move || loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
            if let Err(e) = sweep(&service) {
                eprintln!("nacre-keyservice: expiring nodes: {e}");
            }
        })
        .context("starting the expiry thread")?;
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Init {
            state,
            overlay,
            api_server,
            endpoint,
            name,
            cluster_ranges,
            pod_cidr,
            pod_prefix,
            service_cidr,
            cluster_dns,
            api_server_ca,
            max_nodes,
        } => {
            let overlay: OverlayRange = overlay.parse().map_err(anyhow::Error::msg)?;
            let pods = pod_cidr
                .map(|c| {
                    podnet::PodSettings::new(
                        overlay,
                        &c,
                        pod_prefix.unwrap_or(podnet::DEFAULT_POD_PREFIX),
                        service_cidr.as_deref(),
                        cluster_dns.as_deref(),
                    )
                })
                .transpose()?;
            let api_server_ca = api_server_ca
                .map(|p| -> Result<String> {
                    let pem = std::fs::read_to_string(&p)
                        .with_context(|| format!("reading --api-server-ca {}", p.display()))?;
                    podnet::check_api_server_ca(&pem)
                        .with_context(|| format!("--api-server-ca {}", p.display()))?;
                    Ok(format!("{}\n", pem.trim()))
                })
                .transpose()?;
            std::fs::create_dir_all(&state)
                .with_context(|| format!("creating {}", state.display()))?;
            if state.join(tls::CA_CERT).exists() || state.join(DB_FILE).exists() {
                bail!("{} holds a cluster already", state.display());
            }
            let cluster = Cluster {
                master_secret: Zeroizing::new(random()?),
                cluster_id: random()?,
                overlay,
                bootstrap_token: bootstrap_token()?,
                api_server,
                pods,
                api_server_ca,
            };
            // The cluster configuration is checked before anything is written.
            let ranges =
                podnet::cluster_ranges(cluster.overlay, cluster.pods.as_ref(), cluster_ranges);
            if endpoint.is_some() {
                nacre_cluster::check_parts(&name, &ranges)?;
            }
            let store = Store::create(&state.join(DB_FILE), &cluster)?;
            if let Some(max) = max_nodes {
                store.set_max_nodes(max)?;
            }
            drop(store);
            tls::create_identity(&state).map_err(anyhow::Error::msg)?;
            if let Some(e) = endpoint {
                let ca = std::fs::read_to_string(state.join(tls::CA_CERT))
                    .with_context(|| format!("reading {}", tls::CA_CERT))?;
                let cfg = nacre_cluster::ClusterConfig::new(&name, e, &ca, ranges)?;
                let path = state.join(CLUSTER_CONFIG);
                std::fs::write(&path, cfg.render()?)
                    .with_context(|| format!("writing {}", path.display()))?;
                let digest = nacre_cluster::digest(&std::fs::read(&path)?);
                println!(
                    "cluster configuration {} (sha256 {}): boot nodes of a release image with it",
                    path.display(),
                    hex::encode(digest)
                );
            }
            println!(
                "cluster {} (overlay {}{}); nodes must trust {}",
                hex::encode(cluster.cluster_id),
                cluster.overlay,
                match &cluster.pods {
                    Some(p) => format!(
                        ", pods {} in /{} ranges{}",
                        p.pod_cidr,
                        p.pod_prefix,
                        match p.service_cidr {
                            Some(s) => format!(", services {s}"),
                            None => String::new(),
                        }
                    ),
                    None => String::new(),
                },
                state.join(tls::CA_CERT).display()
            );
        }
        Cmd::Serve {
            state,
            listen,
            verify,
            attest_with,
            attest_firmware_log,
            attest_runtime_log,
            attest_platform,
            connection_deadline,
            max_per_source,
            expire_after_days,
        } => {
            let mut verify = verify;
            if verify.snp_cert_store.is_none() {
                verify.snp_cert_store = Some(state.join("snp-certs"));
            }
            let loaded = load(&verify, unix_now()?, false)?;
            print_loaded(&loaded, "start");
            // Swapped on SIGHUP or when a manifest or the revocation list changes.
            let swappable = Arc::new(SwappableVerifier::new(Arc::new(loaded.verifier)));
            watch(verify.clone(), swappable.clone())?;
            let verifier: Arc<dyn Verifier> = swappable;
            let store = Store::open(&state.join(DB_FILE))?;
            let mut service = Service::new(store, Box::new(print_decision))?;
            // The cluster configuration nodes of release images measure (written by `init
            // --endpoint`): parsed as strictly as a node parses it, its digest admitted.
            let config_path = state.join(CLUSTER_CONFIG);
            if config_path.exists() {
                let bytes = std::fs::read(&config_path)
                    .with_context(|| format!("reading {}", config_path.display()))?;
                let m = nacre_cluster::parse(&bytes)
                    .with_context(|| format!("{}", config_path.display()))?;
                println!(
                    "nacre-keyservice: cluster configuration {:?} (sha256 {}): nodes measuring it are admitted",
                    m.config.name,
                    hex::encode(m.digest)
                );
                service = service.with_cluster_config(m.digest);
            }
            let service = Arc::new(service);
            if let Some(days) = expire_after_days {
                expire_nodes(service.clone(), days)?;
            }
            let listener =
                TcpListener::bind(&listen).with_context(|| format!("listening on {listen}"))?;
            println!(
                "nacre-keyservice: cluster {} listening on {listen} (verifier {}, {})",
                hex::encode(service.cluster_id()),
                verifier.name(),
                if attest_with.is_some() {
                    "attesting itself"
                } else {
                    "CA certificate"
                }
            );
            let server = match attest_with {
                Some(tcti) => Server::attested(
                    service,
                    verifier,
                    Arc::new(nacre_keyservice::incluster::PlatformAttest {
                        tpm: nacre_attestation::atls::LiveTpmAttest {
                            attester: nacre_attestation::tpm::Attester::with_tcti(&tcti),
                            pcrs: vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15],
                            firmware_log: attest_firmware_log,
                            runtime_log: attest_runtime_log,
                        },
                        platform: attest_platform,
                        fetch: nacre_keyservice::incluster::kernel_report,
                    }),
                ),
                None => {
                    let (chain, key) = load_identity(&state).map_err(anyhow::Error::msg)?;
                    Server::new(service, verifier, chain, key)
                }
            };
            let server = Arc::new(
                server.with_limits(nacre_keyservice::limits::ConnectionLimits {
                    deadline: std::time::Duration::from_secs(connection_deadline),
                    per_source: max_per_source as usize,
                    ..Default::default()
                }),
            );
            server.run(listener, Arc::new(AtomicBool::new(false)));
        }
        Cmd::Ak { tcti, out } => {
            let spki = nacre_attestation::tpm::Attester::with_tcti(&tcti)
                .ak_public()
                .with_context(|| format!("reading the AK from {tcti}"))?;
            let pem = nacre_measure::sign::to_pem("PUBLIC KEY", &spki);
            std::fs::write(&out, pem).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "AK {} -> {}",
                hex::encode(ring::digest::digest(&ring::digest::SHA256, &spki)),
                out.display()
            );
        }
        Cmd::Remove { state, node, json } => {
            let store = Store::open(&state.join(DB_FILE)).with_context(|| {
                format!(
                    "opening {} (stop the service first: the database is one process's)",
                    state.join(DB_FILE).display()
                )
            })?;
            let service = Service::new(store, Box::new(|_: &Decision| {}))?;
            let (ak, t) = service.remove_node(&node, "operator")?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({"ak": ak, "removed": t}))?
                );
            } else {
                println!(
                    "removed {} ({}, ak {}); disk bindings removed: {}; its AK is refused from now on",
                    t.name,
                    t.overlay,
                    &ak[..ak.len().min(16)],
                    if t.disks.is_empty() {
                        "none".to_string()
                    } else {
                        t.disks.join(", ")
                    }
                );
            }
        }
        Cmd::Nodes { state, json } => {
            let store = Store::open(&state.join(DB_FILE))?;
            let nodes = store.nodes()?;
            if json {
                let v: Vec<_> = nodes
                    .iter()
                    .map(|(ak, r)| serde_json::json!({"ak": ak, "node": r}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for (ak, r) in nodes {
                    println!(
                        "{} {} pods {} {} endpoint {} joins {} image {} (ak {})",
                        r.name,
                        r.overlay,
                        r.pod_range.as_deref().unwrap_or("-"),
                        r.wg_public_key,
                        r.endpoint,
                        r.joins,
                        r.image,
                        ak.get(..16).unwrap_or(&ak)
                    );
                }
            }
        }
        Cmd::Bench {
            clients,
            seconds,
            firmware_log,
            json,
            verification,
            iterations,
            fixtures,
            hostile,
            hostile_sources,
        } => {
            let fw = std::fs::read(&firmware_log)
                .with_context(|| format!("reading {}", firmware_log.display()))?;
            if verification {
                let c = nacre_keyservice::bench::verification_cost(&fixtures, &fw, iterations)
                    .map_err(anyhow::Error::msg)?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&c)?);
                } else {
                    print!("{c}");
                }
                return Ok(());
            }
            let dir =
                std::env::temp_dir().join(format!("nacre-keyservice-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let hostile = hostile.map(|n| nacre_keyservice::bench::Hostile {
                slowloris: n,
                flood: n,
                garbage: n,
                sources: hostile_sources,
            });
            let r = nacre_keyservice::bench::run(&dir, fw, clients, seconds, hostile, &|l| {
                eprintln!("bench: {l}")
            });
            let _ = std::fs::remove_dir_all(&dir);
            let r = r.map_err(anyhow::Error::msg)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "{} attested requests in {:.1} s with {} clients: {:.0}/s, latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms, {} failures",
                    r.requests, r.seconds, r.clients, r.per_second, r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms, r.failures
                );
                if let Some(h) = &r.hostile {
                    println!(
                        "attackers: {} slowloris + {} flood + {} garbage threads ({} sources each) opened {} connections",
                        h.attack.slowloris, h.attack.flood, h.attack.garbage, h.attack.sources, h.connections
                    );
                }
                println!(
                    "decision log: {} records, database {} bytes",
                    r.decisions, r.database_bytes
                );
            }
        }
        Cmd::Certs { cmd } => certs(cmd)?,
        Cmd::Log { state, json } => {
            let store = Store::open(&state.join(DB_FILE))?;
            let log = store.decisions()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&log)?);
            } else {
                log.iter().for_each(print_decision);
            }
        }
    }
    Ok(())
}

/// 48-byte values (SEV-SNP launch measurements, TDX MRTDs) given as 96 hex digits on the command
/// line.
fn hex48_list(values: &[String], flag: &str) -> Result<Vec<[u8; 48]>> {
    values
        .iter()
        .map(|h| {
            let mut m = [0u8; 48];
            hex::decode_to_slice(h, &mut m)
                .with_context(|| format!("{flag} {h}: 96 hex digits"))?;
            Ok(m)
        })
        .collect()
}

/// Whether any of the signed manifests parses and has what `has` asks for.
fn any_manifest(
    signed: &[SignedManifest],
    has: impl Fn(&nacre_measure::manifest::Manifest) -> bool,
) -> bool {
    signed.iter().any(|m| {
        nacre_measure::manifest::Manifest::from_json(&m.json)
            .map(|m| has(&m))
            .unwrap_or(false)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_measure::sign::BlobSigner;

    /// The test manifests' lifetime, unless a test takes it away.
    const FAR: &str = "2099-12-31T23:59:59Z";

    /// A state-free `serve` setup: a signed manifest (with or without a `tdx` entry) and its key.
    struct Setup {
        dir: tempfile::TempDir,
        signer: nacre_measure::sign::PemSigner,
    }

    impl Setup {
        fn new(tdx_entry: bool) -> Setup {
            let dir = tempfile::tempdir().unwrap();
            let (signer, _) = nacre_measure::sign::PemSigner::generate().unwrap();
            let mut text = serde_json::json!({
                "schema": nacre_measure::manifest::SCHEMA,
                "image": {"ref": "r", "version": "v", "variant": "qemu-tdx", "uki_sha256": "00".repeat(32)},
                "alg": "sha256",
                "stub": "systemd-stub-252",
                "secure_boot": false,
                "phase": "sysinit",
                "not_after": FAR,
                "measurements": {"4": {"expected": "04".repeat(32), "warn_only": false}},
                "events": [],
            });
            if tdx_entry {
                text["tdx"] = serde_json::json!({
                    "mrtd": "11".repeat(48),
                    "page_add_order": "per-page",
                    "ovmf_sha256": "00".repeat(32),
                });
            }
            let m =
                nacre_measure::manifest::Manifest::from_json(&serde_json::to_vec(&text).unwrap())
                    .unwrap();
            let json = m.to_json();
            let sig = nacre_measure::sign::sign_blob(&signer, &json).unwrap();
            std::fs::write(dir.path().join("m.json"), &json).unwrap();
            std::fs::write(dir.path().join("m.json.sig"), sig).unwrap();
            std::fs::write(
                dir.path().join("release.pub"),
                nacre_measure::sign::to_pem("PUBLIC KEY", &signer.public_key_spki()),
            )
            .unwrap();
            Setup { dir, signer }
        }

        /// Another manifest signed with the same key: a `qemu-vtpm` one at phase sysinit,
        /// changed by `tweak` (its JSON form). Returns its path.
        fn manifest(&self, name: &str, tweak: impl Fn(&mut serde_json::Value)) -> String {
            let mut text = serde_json::json!({
                "schema": nacre_measure::manifest::SCHEMA,
                "image": {"ref": "r", "version": "1.0.0", "variant": "qemu-vtpm", "uki_sha256": "00".repeat(32)},
                "alg": "sha256",
                "stub": "systemd-stub-252",
                "secure_boot": false,
                "phase": "sysinit",
                "not_after": FAR,
                "measurements": {"4": {"expected": "04".repeat(32), "warn_only": false}},
                "events": [],
            });
            tweak(&mut text);
            let json = Manifest::from_json(&serde_json::to_vec(&text).unwrap())
                .unwrap()
                .to_json();
            let sig = nacre_measure::sign::sign_blob(&self.signer, &json).unwrap();
            std::fs::write(self.dir.path().join(name), &json).unwrap();
            std::fs::write(self.dir.path().join(format!("{name}.sig")), sig).unwrap();
            self.path(name)
        }

        /// `serve`'s verifier arguments: these manifests, an enrolled AK (QEMU vTPM), `extra`.
        fn args(&self, manifests: &[&str], extra: &[&str]) -> VerifierArgs {
            let k = self.path("release.pub");
            let ak = self.path("ak.der");
            std::fs::write(&ak, [0x30, 0x00]).unwrap();
            let mut argv = vec!["nacre-keyservice", "serve", "--state", "unused"];
            for m in manifests {
                argv.extend(["--manifest", m]);
            }
            argv.extend(["--manifest-key", &k, "--ak", &ak]);
            argv.extend_from_slice(extra);
            let Cmd::Serve { verify, .. } = Cli::try_parse_from(argv).unwrap().cmd else {
                unreachable!()
            };
            verify
        }

        fn path(&self, name: &str) -> String {
            self.dir.path().join(name).display().to_string()
        }

        fn build(&self, extra: &[&str]) -> Result<ByPlatform> {
            let (m, k) = (self.path("m.json"), self.path("release.pub"));
            let mut argv = vec![
                "nacre-keyservice",
                "serve",
                "--state",
                "unused",
                "--manifest",
                &m,
                "--manifest-key",
                &k,
            ];
            argv.extend_from_slice(extra);
            let Cmd::Serve { verify, .. } = Cli::try_parse_from(argv)?.cmd else {
                unreachable!()
            };
            build_verifier(&verify)
        }
    }

    fn collateral() -> String {
        format!(
            "{}/../attestation/tests/fixtures/tdx/tdx_quote_collateral.json",
            env!("CARGO_MANIFEST_DIR")
        )
    }

    fn err(r: Result<ByPlatform>) -> String {
        match r {
            Ok(v) => panic!("built {}", v.name()),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn tdx_flags_build_a_tdx_verifier() {
        let s = Setup::new(false);
        let c = collateral();
        let mrtd = "ab".repeat(48);
        let v = s
            .build(&["--tdx-collateral", &c, "--tdx-mrtd", &mrtd])
            .unwrap();
        assert_eq!(v.name(), "tdx");
        assert!(v.tdx.is_some() && v.qemu_vtpm.is_none() && v.sev_snp.is_none());
        let v = s
            .build(&[
                "--tdx-collateral",
                &c,
                "--tdx-mrtd",
                &mrtd,
                "--tdx-mrtd",
                &"cd".repeat(48),
                "--tdx-allow-tcb",
                "OutOfDate",
                "--tdx-allow-tcb",
                "SWHardeningNeeded",
            ])
            .unwrap();
        assert!(v.tdx.is_some());
        // Golden MRTDs from a signed manifest's `tdx` entry are enough.
        let with_entry = Setup::new(true);
        assert_eq!(
            with_entry.build(&["--tdx-collateral", &c]).unwrap().name(),
            "tdx"
        );
    }

    #[test]
    fn bad_tdx_configuration_stops_the_service_at_start() {
        let s = Setup::new(false);
        let mrtd = "ab".repeat(48);
        // A collateral file that is not QuoteCollateralV3 JSON.
        let bad = s.path("bad.json");
        std::fs::write(&bad, br#"{"tcb_info": 3}"#).unwrap();
        let e = err(s.build(&["--tdx-collateral", &bad, "--tdx-mrtd", &mrtd]));
        assert!(
            e.contains("--tdx-collateral") && e.contains("not dcap-qvl QuoteCollateralV3 JSON"),
            "{e}"
        );
        assert!(e.contains("bad.json"), "{e}");
        // A missing one.
        let missing = s.path("missing.json");
        let e = err(s.build(&["--tdx-collateral", &missing, "--tdx-mrtd", &mrtd]));
        assert!(e.contains("reading") && e.contains("missing.json"), "{e}");
        let c = collateral();
        // No golden MRTD anywhere.
        let e = err(s.build(&["--tdx-collateral", &c]));
        assert!(e.contains("golden MRTDs"), "{e}");
        // A malformed MRTD.
        let e = err(s.build(&["--tdx-collateral", &c, "--tdx-mrtd", "abcd"]));
        assert!(e.contains("--tdx-mrtd abcd"), "{e}");
        // Revoked is never accepted; an unknown status is not a status.
        let e = err(s.build(&[
            "--tdx-collateral",
            &c,
            "--tdx-mrtd",
            &mrtd,
            "--tdx-allow-tcb",
            "Revoked",
        ]));
        assert!(e.contains("never accepted"), "{e}");
        let e = err(s.build(&[
            "--tdx-collateral",
            &c,
            "--tdx-mrtd",
            &mrtd,
            "--tdx-allow-tcb",
            "Fine",
        ]));
        assert!(e.contains("not a TCB status"), "{e}");
        // TDX flags without the collateral; no platform at all.
        let e = err(s.build(&["--tdx-mrtd", &mrtd]));
        assert!(e.contains("need --tdx-collateral"), "{e}");
        let e = err(s.build(&[]));
        assert!(e.contains("--tdx-collateral (TDX)"), "{e}");
    }

    /// 2026-01-01T00:00:00Z.
    const NOW: u64 = 1_767_225_600;

    fn load_err(a: &VerifierArgs) -> String {
        match load(a, NOW, false) {
            Ok(l) => panic!("loaded {:?}", l.admitted),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn policy_skips_expired_old_and_revoked_manifests() {
        let s = Setup::new(false);
        let new = s.manifest("new.json", |m| {
            m["image"]["version"] = "v1.4.0".into();
            m["image"]["uki_sha256"] = "ab".repeat(32).into();
            m["not_after"] = "2026-06-30T00:00:00Z".into();
        });
        let no_expiry = |v: &'static str| {
            move |m: &mut serde_json::Value| {
                m["image"]["version"] = v.into();
                m.as_object_mut().unwrap().remove("not_after");
            }
        };
        let old = s.manifest("old.json", no_expiry("1.2.9"));
        let expired = s.manifest("expired.json", |m| {
            m["image"]["version"] = "1.5.0".into();
            m["not_after"] = "2025-12-31T23:59:59Z".into();
        });
        let dev = s.manifest("dev.json", no_expiry("dev"));
        // Manifests without not_after never expire: refused, the first one named, unless
        // --allow-no-expiry.
        let e = load_err(&s.args(&[&new, &old, &expired, &dev], &[]));
        assert!(
            e.contains("old.json") && e.contains("no not_after") && e.contains("--allow-no-expiry"),
            "{e}"
        );
        let e = load_err(&s.args(&[&new, &dev], &[]));
        assert!(e.contains("dev.json") && e.contains("no not_after"), "{e}");
        let optin = ["--allow-no-expiry"];
        // Without a policy only the expired one is skipped.
        let l = load(&s.args(&[&new, &old, &expired, &dev], &optin), NOW, false).unwrap();
        assert_eq!(l.admitted.len(), 3, "{:?}", l.admitted);
        assert_eq!(l.skipped.len(), 1);
        // The two admitted without not_after are warned about, each by name.
        let never: Vec<_> = l
            .warnings
            .iter()
            .filter(|w| w.contains("NEVER EXPIRES"))
            .collect();
        assert_eq!(never.len(), 2, "{:?}", l.warnings);
        assert!(never.iter().any(|w| w.contains("old.json")), "{never:?}");
        assert!(never.iter().any(|w| w.contains("dev.json")), "{never:?}");
        assert!(
            l.skipped[0].contains("expired.json") && l.skipped[0].contains("manifest expired"),
            "{:?}",
            l.skipped
        );
        // --min-version 1.3: the older release and "dev" are skipped too.
        let l = load(
            &s.args(
                &[&new, &old, &expired, &dev],
                &["--allow-no-expiry", "--min-version", "1.3"],
            ),
            NOW,
            false,
        )
        .unwrap();
        assert_eq!(l.admitted.len(), 1);
        assert!(l.admitted[0].contains("new.json"), "{:?}", l.admitted);
        let skipped = l.skipped.join("\n");
        assert!(
            skipped.contains("old.json") && skipped.contains("below the minimum version"),
            "{skipped}"
        );
        assert!(
            skipped.contains("dev.json") && skipped.contains("not a numeric dotted version"),
            "{skipped}"
        );
        // Nothing left at start: the service does not start, saying why.
        let e = load_err(&s.args(
            &[&old, &expired],
            &["--allow-no-expiry", "--min-version", "1.3"],
        ));
        assert!(
            e.contains("no manifest is left")
                && e.contains("below the minimum version")
                && e.contains("manifest expired"),
            "{e}"
        );
        let e = load_err(&s.args(&[&new], &["--min-version", "latest"]));
        assert!(e.contains("--min-version \"latest\""), "{e}");

        // Revoked by the manifest file's digest, and by the UKI's.
        let revoked = s.path("revoked.txt");
        let digest = nacre_measure::manifest::manifest_digest(&std::fs::read(&new).unwrap());
        std::fs::write(
            &revoked,
            format!("# CVE-2026-0001\n{digest}  # v1.4.0 sysinit\n"),
        )
        .unwrap();
        let l = load(
            &s.args(&[&new, &old], &["--allow-no-expiry", "--revoked", &revoked]),
            NOW,
            false,
        )
        .unwrap();
        assert!(l.admitted[0].contains("old.json"), "{:?}", l.admitted);
        assert!(
            l.skipped[0].contains("new.json") && l.skipped[0].contains("manifest digest"),
            "{:?}",
            l.skipped
        );
        std::fs::write(&revoked, "ab".repeat(32)).unwrap();
        let l = load(
            &s.args(&[&new, &old], &["--allow-no-expiry", "--revoked", &revoked]),
            NOW,
            false,
        )
        .unwrap();
        assert!(
            l.skipped[0].contains("new.json") && l.skipped[0].contains("uki_sha256"),
            "{:?}",
            l.skipped
        );
        let e = load_err(&s.args(&[&new], &["--revoked", &revoked]));
        assert!(e.contains("manifest revoked"), "{e}");
        std::fs::write(&revoked, "# fine\nnot-a-digest\n").unwrap();
        let e = load_err(&s.args(&[&new], &["--revoked", &revoked]));
        assert!(e.contains("--revoked") && e.contains("line 2"), "{e}");
        let e = load_err(&s.args(&[&new], &["--revoked", &s.path("missing.txt")]));
        assert!(e.contains("missing.txt"), "{e}");
    }

    /// On a reload a manifest without not_after is skipped, named with the reason, instead of
    /// failing the reload: a later `--revoked`/`--min-version` change still takes effect. At
    /// start it still stops the service.
    #[test]
    fn reload_skips_a_manifest_without_not_after() {
        let s = Setup::new(false);
        let good = s.manifest("good.json", |m| m["image"]["version"] = "1.4.0".into());
        let forever = s.manifest("forever.json", |m| {
            m["image"]["version"] = "1.5.0".into();
            m.as_object_mut().unwrap().remove("not_after");
        });
        let revoked = s.path("revoked.txt");
        std::fs::write(&revoked, "# nothing yet\n").unwrap();
        let args = s.args(&[&good, &forever], &["--revoked", &revoked]);
        let e = load_err(&args);
        assert!(
            e.contains("forever.json") && e.contains("no not_after"),
            "{e}"
        );
        let l = load(&args, NOW, true).unwrap();
        assert_eq!(l.admitted.len(), 1, "{:?}", l.admitted);
        assert!(l.admitted[0].contains("good.json"), "{:?}", l.admitted);
        assert_eq!(l.skipped.len(), 1, "{:?}", l.skipped);
        assert!(
            l.skipped[0].contains("forever.json")
                && l.skipped[0].contains("no not_after")
                && l.skipped[0].contains("--allow-no-expiry"),
            "{:?}",
            l.skipped
        );
        // The revocation list changes: it takes effect despite the manifest without not_after.
        let digest = nacre_measure::manifest::manifest_digest(&std::fs::read(&good).unwrap());
        std::fs::write(&revoked, format!("{digest}\n")).unwrap();
        let l = load(&args, NOW, true).unwrap();
        assert!(l.admitted.is_empty(), "{:?}", l.admitted);
        let skipped = l.skipped.join("\n");
        assert!(
            skipped.contains("good.json") && skipped.contains("manifest digest"),
            "{skipped}"
        );
        assert!(skipped.contains("forever.json") && skipped.contains("no not_after"));
        // So does --min-version.
        std::fs::write(&revoked, "").unwrap();
        let l = load(
            &s.args(
                &[&good, &forever],
                &["--revoked", &revoked, "--min-version", "1.5"],
            ),
            NOW,
            true,
        )
        .unwrap();
        assert!(l.admitted.is_empty(), "{:?}", l.admitted);
        assert!(
            l.skipped.join("\n").contains("below the minimum version"),
            "{:?}",
            l.skipped
        );
    }

    /// A reload swaps the verifier in place: revoking the only manifest takes effect (every node
    /// refused), and a revocation list that does not parse leaves the previous verifier.
    #[test]
    fn reload_swaps_the_verifier_or_keeps_the_previous_one() {
        use nacre_attestation::evidence::{Evidence, Platform, Quote};
        use nacre_attestation::verify::{Check, Expectation, JoinKind};
        let s = Setup::new(false);
        let m = s.manifest("m1.json", |_| {});
        let revoked = s.path("revoked.txt");
        std::fs::write(&revoked, "# nothing yet\n").unwrap();
        let args = s.args(&[&m], &["--revoked", &revoked]);
        let swappable = Arc::new(SwappableVerifier::new(Arc::new(
            load(&args, NOW, false).unwrap().verifier,
        )));
        // What the server holds.
        let shared: Arc<dyn Verifier> = swappable.clone();
        let ev = Evidence {
            platform: Platform::QemuVtpm,
            quote: Quote {
                attest: vec![],
                signature: vec![],
            },
            ak_public: vec![1],
            firmware_log: vec![],
            runtime_log: vec![],
            ek: None,
            binding: None,
        };
        let x = Expectation {
            nonce: b"n",
            tls_public_key: b"k",
            join: JoinKind::First,
        };
        // With a manifest, this evidence gets as far as the AK.
        assert_eq!(shared.verify(&ev, &x).unwrap_err().check, Check::AkTrust);
        std::fs::write(&revoked, "00".repeat(32)).unwrap();
        reload(&args, &swappable, "test").unwrap();
        let r = shared.verify(&ev, &x).unwrap_err();
        assert_eq!(r.check, Check::Manifest);
        assert!(r.reason.contains("no golden manifest"), "{r}");
        // A broken list: the reload fails and the previous verifier stays.
        std::fs::write(&revoked, "zz\n").unwrap();
        let e = format!("{:#}", reload(&args, &swappable, "test").unwrap_err());
        assert!(e.contains("previous manifests stay in force"), "{e}");
        assert!(shared
            .verify(&ev, &x)
            .unwrap_err()
            .reason
            .contains("no golden manifest"));
        // The revocation withdrawn: admitted again.
        std::fs::write(&revoked, "").unwrap();
        reload(&args, &swappable, "test").unwrap();
        assert_eq!(shared.verify(&ev, &x).unwrap_err().check, Check::AkTrust);
        // The files a change of which triggers a reload.
        let w = watched(&args);
        assert!(
            w.iter().any(|p| p.ends_with("m1.json.sig"))
                && w.iter().any(|p| p.ends_with("revoked.txt"))
        );
    }

    #[test]
    fn accept_guest_bound_ak_only_for_variants_without_a_platform_binding() {
        let p = binding_policy(&["qemu-snp".to_string()]).unwrap();
        assert!(p.accept_guest_bound.contains("qemu-snp"));
        for v in [
            "azure-sev-snp",
            "gcp-sev-snp",
            "aws-sev-snp",
            "gcp-tdx",
            "my-snp",
        ] {
            let e = binding_policy(&[v.to_string()]).unwrap_err().to_string();
            assert!(e.contains(v), "{e}");
        }
        assert!(binding_policy(&[]).unwrap().accept_guest_bound.is_empty());
    }

    #[test]
    fn snp_flags_need_a_minimum_tcb_per_product() {
        let s = Setup::new(false);
        let m = "ab".repeat(48);
        let v = s
            .build(&[
                "--snp-min-tcb",
                "milan=4,0,24,219",
                "--snp-min-tcb",
                "turin=0,1,0,2,71",
                "--snp-measurement",
                &m,
            ])
            .unwrap();
        assert!(v.sev_snp.is_some());
        // No minimum TCB: SEV-SNP is not enabled, and its other flags are refused.
        let e = err(s.build(&["--snp-measurement", &m]));
        assert!(e.contains("need --snp-min-tcb"), "{e}");
        // Malformed minimums name the product's form.
        for (bad, why) in [
            ("4,0,24,219", "PRODUCT=TCB"),
            ("rome=1,2,3,4", "not milan, genoa or turin"),
            ("turin=1,0,2,71", "five numbers"),
            ("genoa=0,1,0,2,71", "four numbers"),
        ] {
            let e = err(s.build(&["--snp-min-tcb", bad, "--snp-measurement", &m]));
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = err(s.build(&[
            "--snp-min-tcb",
            "milan=1,0,1,1",
            "--snp-min-tcb",
            "milan=2,0,1,1",
            "--snp-measurement",
            &m,
        ]));
        assert!(e.contains("given twice"), "{e}");
        // A CRL AMD's ARK did not sign stops the service.
        let crl = format!(
            "{}/../attestation/tests/fixtures/snp/test-made/test-made-crl-other.der",
            env!("CARGO_MANIFEST_DIR")
        );
        let e = err(s.build(&[
            "--snp-min-tcb",
            "milan=1,0,1,1",
            "--snp-crl",
            &crl,
            "--snp-measurement",
            &m,
        ]));
        assert!(e.contains("not by a configured AMD ARK"), "{e}");
    }
}
