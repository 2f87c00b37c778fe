//! `nacre-keyservice`: run and inspect a cluster's key service.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use nacre_attestation::verify::SwappableVerifier;
use nacre_attestation::{
    snp, tdx, ByPlatform, EnrolledAks, QemuVtpmVerifier, SevSnpVerifier, SignedManifest,
    TdxVerifier, Verifier,
};
use nacre_keyservice::overlay::OverlayRange;
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
        /// Ranges routed only through wg0, in cluster.toml (repeat; default: the overlay).
        #[arg(long = "cluster-range")]
        cluster_ranges: Vec<String>,
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
    },
    /// The decision log.
    Log {
        #[arg(long)]
        state: PathBuf,
        #[arg(long)]
        json: bool,
    },
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
    /// EK certificate chains to it and whose EK certified their AK are trusted.
    #[arg(long)]
    ek_ca: Option<PathBuf>,
    /// AMD's root key (ARK, PEM/DER, from AMD's KDS) for SEV-SNP nodes (with --snp-ask).
    #[arg(long)]
    snp_ark: Option<PathBuf>,
    /// AMD's signing key (ASK) of the same product line.
    #[arg(long)]
    snp_ask: Option<PathBuf>,
    /// A golden SEV-SNP launch measurement (96 hex digits); repeat.
    #[arg(long = "snp-measurement")]
    snp_measurements: Vec<String>,
    /// Minimum TCB: bootloader,tee,snp,microcode.
    #[arg(long, default_value = "0,0,0,0")]
    snp_min_tcb: String,
    /// The VMPL reports must come from (absent: any).
    #[arg(long)]
    snp_vmpl: Option<u32>,
    /// Require guests launched with an ID block signed by this ID key (96 hex digits:
    /// its digest, as `nacre-measure snp-id-block` prints it).
    #[arg(long)]
    snp_id_key_digest: Option<String>,
    /// Refuse SEV-SNP nodes whose host runs with SMT enabled (the report's PLATFORM_INFO).
    #[arg(long)]
    snp_require_smt_off: bool,
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
/// may (every node is then refused: revoking the last release takes effect).
fn load(a: &VerifierArgs, now: u64, reload: bool) -> Result<Loaded> {
    let VerifierArgs {
        manifests,
        manifest_key,
        min_version,
        revoked,
        aks,
        ek_ca,
        snp_ark,
        snp_ask,
        snp_measurements,
        snp_min_tcb,
        snp_vmpl,
        snp_id_key_digest,
        snp_require_smt_off,
        tdx_collateral,
        tdx_mrtds,
        tdx_allow_tcb,
    } = a;
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
    if let (Some(ark), Some(ask)) = (&snp_ark, &snp_ask) {
        let read =
            |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
        let chain =
            snp::AmdChain::new(&read(ark)?, &read(ask)?).context("AMD certificate chain")?;
        let measurements = hex48_list(snp_measurements, "--snp-measurement")?;
        if measurements.is_empty() && !reload && !any_manifest(&signed, |m| !m.snp.is_empty()) {
            bail!("SEV-SNP nodes need golden launch measurements: in the manifests (nacre-measure golden --snp-ovmf) or --snp-measurement");
        }
        let t: Vec<u8> = snp_min_tcb
            .split(',')
            .map(|x| x.trim().parse::<u8>())
            .collect::<Result<_, _>>()
            .context("--snp-min-tcb: bootloader,tee,snp,microcode")?;
        let [bootloader, tee, snp_v, microcode] = t[..] else {
            bail!("--snp-min-tcb: four numbers, bootloader,tee,snp,microcode");
        };
        verifier.sev_snp = Some(Box::new(SevSnpVerifier::new(
            chain,
            snp::SnpPolicy {
                measurements,
                min_tcb: snp::Tcb {
                    bootloader,
                    tee,
                    snp: snp_v,
                    microcode,
                },
                allow_debug: false,
                allow_migration_agent: false,
                vmpl: *snp_vmpl,
                id_key_digest: snp_id_key_digest
                    .as_deref()
                    .map(|h| {
                        let mut d = [0u8; 48];
                        hex::decode_to_slice(h, &mut d)
                            .with_context(|| format!("--snp-id-key-digest {h}"))
                            .map(|()| d)
                    })
                    .transpose()?,
                require_smt_off: *snp_require_smt_off,
            },
            signed.clone(),
            key.clone(),
        )));
    } else if snp_ark.is_some() || snp_ask.is_some() {
        bail!("--snp-ark and --snp-ask go together");
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
        bail!("no node can attest: give --ek-ca or --ak (QEMU vTPM), --snp-ark/--snp-ask (SEV-SNP) and/or --tdx-collateral (TDX)");
    }
    Ok(Loaded {
        verifier,
        admitted,
        skipped,
    })
}

fn print_loaded(l: &Loaded, what: &str) {
    for m in &l.admitted {
        println!("nacre-keyservice: {what}: manifest {m}");
    }
    for m in &l.skipped {
        println!("nacre-keyservice: {what}: WARNING: skipped {m}");
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

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Init {
            state,
            overlay,
            api_server,
            endpoint,
            name,
            cluster_ranges,
        } => {
            let overlay: OverlayRange = overlay.parse().map_err(anyhow::Error::msg)?;
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
            };
            // The cluster configuration is checked before anything is written.
            let ranges = if cluster_ranges.is_empty() {
                vec![cluster.overlay.to_string()]
            } else {
                cluster_ranges
            };
            if endpoint.is_some() {
                nacre_cluster::check_parts(&name, &ranges)?;
            }
            Store::create(&state.join(DB_FILE), &cluster)?;
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
                "cluster {} (overlay {}); nodes must trust {}",
                hex::encode(cluster.cluster_id),
                cluster.overlay,
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
        } => {
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
                    Arc::new(nacre_attestation::atls::LiveTpmAttest {
                        attester: nacre_attestation::tpm::Attester::with_tcti(&tcti),
                        pcrs: vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 12, 13, 14, 15],
                        firmware_log: attest_firmware_log,
                        runtime_log: attest_runtime_log,
                    }),
                ),
                None => {
                    let (chain, key) = load_identity(&state).map_err(anyhow::Error::msg)?;
                    Server::new(service, verifier, chain, key)
                }
            };
            let server = Arc::new(server);
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
                        "{} {} {} endpoint {} joins {} image {} (ak {})",
                        r.name,
                        r.overlay,
                        r.wg_public_key,
                        r.endpoint,
                        r.joins,
                        r.image,
                        &ak[..16]
                    );
                }
            }
        }
        Cmd::Bench {
            clients,
            seconds,
            firmware_log,
            json,
        } => {
            let fw = std::fs::read(&firmware_log)
                .with_context(|| format!("reading {}", firmware_log.display()))?;
            let dir =
                std::env::temp_dir().join(format!("nacre-keyservice-bench-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let r = nacre_keyservice::bench::run(&dir, fw, clients, seconds, &|l| {
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
            }
        }
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
        let old = s.manifest("old.json", |m| m["image"]["version"] = "1.2.9".into());
        let expired = s.manifest("expired.json", |m| {
            m["image"]["version"] = "1.5.0".into();
            m["not_after"] = "2025-12-31T23:59:59Z".into();
        });
        let dev = s.manifest("dev.json", |m| m["image"]["version"] = "dev".into());
        // Without a policy only the expired one is skipped.
        let l = load(&s.args(&[&new, &old, &expired, &dev], &[]), NOW, false).unwrap();
        assert_eq!(l.admitted.len(), 3, "{:?}", l.admitted);
        assert_eq!(l.skipped.len(), 1);
        assert!(
            l.skipped[0].contains("expired.json") && l.skipped[0].contains("manifest expired"),
            "{:?}",
            l.skipped
        );
        // --min-version 1.3: the older release and "dev" are skipped too.
        let l = load(
            &s.args(&[&new, &old, &expired, &dev], &["--min-version", "1.3"]),
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
        let e = load_err(&s.args(&[&old, &expired], &["--min-version", "1.3"]));
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
        let l = load(&s.args(&[&new, &old], &["--revoked", &revoked]), NOW, false).unwrap();
        assert!(l.admitted[0].contains("old.json"), "{:?}", l.admitted);
        assert!(
            l.skipped[0].contains("new.json") && l.skipped[0].contains("manifest digest"),
            "{:?}",
            l.skipped
        );
        std::fs::write(&revoked, "ab".repeat(32)).unwrap();
        let l = load(&s.args(&[&new, &old], &["--revoked", &revoked]), NOW, false).unwrap();
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
}
