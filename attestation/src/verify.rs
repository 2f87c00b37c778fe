//! Verifying evidence: one [`Verifier`] per platform behind one trait; the verdict names the
//! check that failed and why.
//!
//! The QEMU vTPM verifier ([`QemuVtpmVerifier`]) runs, in this order:
//! 1. [`Check::Platform`]: the evidence is for the QEMU vTPM platform (SEV-SNP and TDX evidence
//!    is refused: [`SevSnpVerifier`] and [`TdxVerifier`] verify them).
//! 2. [`Check::ManifestSignature`], [`Check::Manifest`]: the golden manifest's signature verifies
//!    against the configured public key (cosign-style, `nacre_measure::sign`), and it parses;
//!    [`Check::Platform`] again: only manifests whose variant is for the evidence's platform
//!    take part (`qemu-vtpm`: QEMU vTPM, `*-snp`: SEV-SNP, `*-tdx`: TDX,
//!    [`nacre_measure::manifest::variant_platform`]); none left is a refusal naming both.
//! 3. [`Check::AkTrust`]: the attestation key is trusted by the configured [`AkTrust`].
//! 4. [`Check::QuoteFormat`], [`Check::QuoteSignature`]: TPMS_ATTEST parses (magic, type quote)
//!    and the AK's ECDSA P-256/SHA-256 signature over it verifies.
//! 5. [`Check::Nonce`]: extraData is SHA-256(nonce || TLS public key) for this verifier's nonce
//!    and this channel's key (an old quote, or one made for another key, fails here).
//! 6. [`Check::PcrSelection`]: the quote covers, in the sha256 bank, every PCR the manifest lists
//!    (and PCR 15 for a first join).
//! 7. [`Check::EventLog`], [`Check::PcrDigest`]: the firmware log and the runtime log replay, and
//!    the replayed values of the quoted PCRs hash to the quote's pcrDigest (a forged or
//!    incomplete log fails here).
//! 8. [`Check::FirstJoinPcr15`]: for a first join, PCR 15 is zero.
//! 9. [`Check::Measurements`]: every enforced PCR of the manifest matches; warn-only mismatches
//!    are returned in [`Accepted::warnings`] for the caller to log. A manifest past its
//!    `not_after` admits nothing: evidence only such a manifest matches is refused by
//!    [`Check::ManifestExpired`] ("manifest expired"). On SEV-SNP and TDX the manifest whose
//!    PCRs match must also hold the launch values the platform part verified (SNP launch
//!    measurement; MRTD and RTMR[1]/[2]) — values of two manifests are never combined
//!    ([`Check::LaunchValues`], [`LaunchValues`]); a manifest without launch values pairs only
//!    with the operator's configured ones.
//!
//! The confidential-VM verifiers check their platform part first and then run steps 2-9 with
//! the AK trusted because the platform part binds it: [`SevSnpVerifier`] ([`Check::SnpReport`])
//! and [`TdxVerifier`] ([`Check::TdxQuote`]: quote format, the quote's signatures, the PCK chain
//! and the offline collateral, TD attributes, TCB status, MRTD, RTMR0..2 and the REPORTDATA
//! binding; golden RTMR[1]/[2] are required — a TDX manifest without them admits nothing —
//! and RTMR[0] without golden values is returned in [`Accepted::platform_warnings`]), and then
//! RTMR[3] ([`Check::TdxRtmr3`]): always the replay of the runtime log's RTMR[3] records —
//! stage 2's phases and the cluster events ([`nacre_eventlog::runtime::rtmr3_after`]) — whose
//! phases must be nacre-init's sequence; no cluster id for a first join; and the phase it
//! proves is [`Accepted::phase`] (the matched manifest's phase, from the vTPM's PCR 11, must
//! agree). Where the caller judges PCR 15 itself ([`JoinKind::Either`]: the key service), it
//! gets RTMR[3]'s cluster part in [`Accepted::tdx_rtmr3`] and judges it with PCR 15 (zero, or
//! its cluster's [`nacre_eventlog::runtime::member_rtmr3`]).

use crate::attest::{parse_quote, ALG_SHA256};
use crate::evidence::{qualifying_data, Evidence, Platform};
use nacre_eventlog::runtime::{
    cluster_rtmr3_after, rtmr3_after, rtmr3_state, Rtmr3State, CLUSTER_ID_PCR, CLUSTER_ID_RTMR,
};
use nacre_eventlog::{CelRecord, EventLog, HashAlg, RuntimeEvent};
use nacre_measure::diff::Observed;
use nacre_measure::manifest::{variant_platform, Finding, ImageRef, Manifest, VariantPlatform};
use nacre_measure::sign::{verify_blob, PublicKey};
use ring::digest::{Context as DigestContext, SHA256};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt;

/// Which check refused the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Check {
    Platform,
    ManifestSignature,
    Manifest,
    AkTrust,
    QuoteFormat,
    QuoteSignature,
    Nonce,
    PcrSelection,
    EventLog,
    PcrDigest,
    FirstJoinPcr15,
    Measurements,
    SnpReport,
    TdxQuote,
    TdxRtmr3,
    ManifestExpired,
    LaunchValues,
    /// In-cluster mode: the key service's phase or cluster identity ([`crate::incluster`]).
    ServiceIdentity,
    /// AWS: the NitroTPM attestation document ([`crate::nitro`]): its signature and chain, its
    /// binding (nonce, TLS key, AK), its sha384 PCRs against the golden values.
    NitroDocument,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Check::Platform => "platform",
            Check::ManifestSignature => "manifest signature",
            Check::Manifest => "manifest",
            Check::AkTrust => "attestation key trust",
            Check::QuoteFormat => "quote format",
            Check::QuoteSignature => "quote signature",
            Check::Nonce => "nonce",
            Check::PcrSelection => "PCR selection",
            Check::EventLog => "event log",
            Check::PcrDigest => "PCR digest",
            Check::FirstJoinPcr15 => "first join (PCR 15)",
            Check::Measurements => "measurements",
            Check::SnpReport => "SEV-SNP report",
            Check::TdxQuote => "TDX quote",
            Check::TdxRtmr3 => "phase and cluster id (RTMR[3])",
            Check::ManifestExpired => "manifest expired",
            Check::LaunchValues => "launch values (one manifest)",
            Check::ServiceIdentity => "key service identity (phase, cluster)",
            Check::NitroDocument => "NitroTPM attestation document",
        };
        f.write_str(s)
    }
}

/// Evidence refused: which check and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("refused by the {check} check: {reason}")]
pub struct Refusal {
    pub check: Check,
    pub reason: String,
}

fn refuse<T>(check: Check, reason: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal {
        check,
        reason: reason.into(),
    })
}

/// Evidence accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Accepted {
    /// The image the manifest describes.
    pub image: ImageRef,
    /// The nacre-init phase of the manifest that matched (`sysinit`: before any service ran;
    /// `ready`: services started).
    pub phase: Option<String>,
    /// The quoted sha256 PCR values (proven by the quote, explained by the logs).
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    /// Manifest PCRs that matched.
    pub matched: Vec<u32>,
    /// Warn-only PCRs that did not match: the caller logs them.
    pub warnings: Vec<Finding>,
    /// The attestation key (P-256 SPKI DER) that signed the quote: the node's identity.
    #[serde(with = "hex::serde")]
    pub ak_public: Vec<u8>,
    /// Warn-only findings of the platform part (TDX: RTMRs without golden values): the caller
    /// logs them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub platform_warnings: Vec<String>,
    /// TDX: the cluster part of the quote's RTMR[3] — the replay of the cluster events
    /// (configuration, id) of the runtime log that replays to RTMR[3]
    /// ([`nacre_eventlog::runtime::cluster_rtmr3_after`]; RTMR[3] itself holds the phases too)
    /// — for a caller that judges membership itself ([`JoinKind::Either`]) as it judges PCR 15;
    /// `None` on other platforms.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "hex_option")]
    pub tdx_rtmr3: Option<[u8; 48]>,
    /// Set when the AK is trusted only through an EK certificate: the acceptance is pending
    /// until the peer activates this credential. Nothing may be served on it before:
    /// [`crate::credential::settle`] splits it off, and the key service refuses an `Accepted`
    /// that still carries one.
    #[serde(skip)]
    pub ek_activation: Option<crate::credential::Pending>,
}

fn hex_option<S: serde::Serializer>(v: &Option<[u8; 48]>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(b) => s.serialize_some(&hex::encode(b)),
        None => s.serialize_none(),
    }
}

impl Accepted {
    /// SHA-256 of the AK's SPKI, hex: how a node is named in the key service's records.
    pub fn ak_fingerprint(&self) -> String {
        hex::encode(ring::digest::digest(&SHA256, &self.ak_public))
    }
}

/// Whether the node joins for the first time (PCR 15 must be zero) or rejoins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    First,
    Rejoin,
    /// First join or member: PCR 15 must be quoted but is left to the caller, and the
    /// manifest's PCR 15 entry is not compared (the key service checks PCR 15 against zero or
    /// its own cluster's id).
    Either,
}

/// What the verifier expects of this evidence: its own fresh nonce, the key of the channel the
/// evidence came over, and the kind of join.
#[derive(Debug, Clone, Copy)]
pub struct Expectation<'a> {
    pub nonce: &'a [u8],
    /// The peer's TLS public key (SPKI DER).
    pub tls_public_key: &'a [u8],
    pub join: JoinKind,
}

/// A platform's verifier.
pub trait Verifier: Send + Sync {
    fn name(&self) -> &'static str;
    fn verify(&self, evidence: &Evidence, expect: &Expectation<'_>) -> Result<Accepted, Refusal>;
}

impl fmt::Debug for dyn Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the attestation key is trusted. Explicit and per platform.
pub trait AkTrust: Send + Sync {
    fn name(&self) -> &'static str;
    /// `Err(reason)` when the AK (P-256 SPKI DER) is not trusted.
    fn check(&self, ak_spki: &[u8], evidence: &Evidence) -> Result<(), String>;
    /// Like [`AkTrust::check`], for a verifier that can run credential activation:
    /// `Ok(Some(pending))` when the AK is trusted only once the peer activates that credential
    /// (an EK certificate, [`crate::ek::EkCertified`]).
    fn check_pending(
        &self,
        ak_spki: &[u8],
        evidence: &Evidence,
    ) -> Result<Option<crate::credential::Pending>, String> {
        self.check(ak_spki, evidence).map(|()| None)
    }
}

/// AKs an operator enrolled (read with `Attester::ak_public` on the node, or `tpm2_readpublic`):
/// the AK is trusted iff its SPKI is one of them. The operator vouches that the key is the
/// node TPM's restricted AK (only a restricted key makes the TPM_GENERATED magic meaningful).
/// The other way to trust an AK is its TPM's EK certificate with credential activation
/// ([`crate::ek`], [`crate::credential`]).
#[derive(Debug, Clone, Default)]
pub struct EnrolledAks {
    keys: Vec<Vec<u8>>,
}

impl EnrolledAks {
    pub fn new(keys: impl IntoIterator<Item = Vec<u8>>) -> Self {
        EnrolledAks {
            keys: keys.into_iter().collect(),
        }
    }
}

impl AkTrust for EnrolledAks {
    fn name(&self) -> &'static str {
        "operator-enrolled AK"
    }

    fn check(&self, ak_spki: &[u8], _evidence: &Evidence) -> Result<(), String> {
        if self.keys.iter().any(|k| k == ak_spki) {
            Ok(())
        } else {
            Err(format!(
                "AK {} is not enrolled",
                hex::encode(ring::digest::digest(&SHA256, ak_spki))
            ))
        }
    }
}

/// Trusted if any of these trusts it (e.g. EK-certified TPMs and a few enrolled AKs).
pub struct AnyOf(pub Vec<Box<dyn AkTrust>>);

impl AkTrust for AnyOf {
    fn name(&self) -> &'static str {
        "any configured AK trust"
    }

    fn check(&self, ak_spki: &[u8], evidence: &Evidence) -> Result<(), String> {
        let mut why = Vec::new();
        for t in &self.0 {
            match t.check(ak_spki, evidence) {
                Ok(()) => return Ok(()),
                Err(e) => why.push(format!("{}: {e}", t.name())),
            }
        }
        Err(why.join("; "))
    }
    /// A trust that needs no activation wins over one that does.
    fn check_pending(
        &self,
        ak_spki: &[u8],
        evidence: &Evidence,
    ) -> Result<Option<crate::credential::Pending>, String> {
        let mut why = Vec::new();
        let mut pending = None;
        for t in &self.0 {
            match t.check_pending(ak_spki, evidence) {
                Ok(None) => return Ok(None),
                Ok(Some(p)) => pending = pending.or(Some(p)),
                Err(e) => why.push(format!("{}: {e}", t.name())),
            }
        }
        pending.map(Some).ok_or_else(|| why.join("; "))
    }
}

/// A golden manifest as published: its JSON bytes and the base64 DER signature (`.sig`).
#[derive(Debug, Clone)]
pub struct SignedManifest {
    pub json: Vec<u8>,
    pub signature_b64: Vec<u8>,
}

/// A confidential VM's launch values, as its platform part verified them (the SEV-SNP
/// report's MEASUREMENT; the TDX quote's MRTD and RTMR[1]/[2]). The manifest whose PCRs match
/// must hold them too ([`Check::LaunchValues`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LaunchValues {
    SevSnp {
        measurement: [u8; 48],
        /// The measurement is one of the operator's configured golden values
        /// (`--snp-measurement`): a manifest without `snp` entries may pair with it. Never set
        /// for evidence bound by an Azure HCL report (that must pair with a manifest's own).
        configured: bool,
    },
    Tdx {
        mrtd: [u8; 48],
        rtmr1: [u8; 48],
        rtmr2: [u8; 48],
        /// MRTD and RTMR[1]/[2] are all the operator's configured golden values: a manifest
        /// without a `tdx` entry may pair with them.
        configured: bool,
    },
}

impl LaunchValues {
    /// `Err(why)` unless `m` holds these launch values (or has none and they are configured).
    pub fn admitted_by(&self, m: &Manifest) -> Result<(), String> {
        match self {
            LaunchValues::SevSnp {
                measurement,
                configured,
            } => {
                let hex_m = hex::encode(measurement);
                if m.snp.is_empty() {
                    if *configured {
                        return Ok(());
                    }
                    return Err(format!(
                        "it records no SEV-SNP launch measurement and {hex_m} is not a configured one"
                    ));
                }
                if m.snp
                    .iter()
                    .any(|v| v.measurement.eq_ignore_ascii_case(&hex_m))
                {
                    Ok(())
                } else {
                    Err(format!(
                        "the launch measurement {hex_m} is not one of its own"
                    ))
                }
            }
            LaunchValues::Tdx {
                mrtd,
                rtmr1,
                rtmr2,
                configured,
            } => {
                let Some(v) = &m.tdx else {
                    if *configured {
                        return Ok(());
                    }
                    return Err(format!(
                        "it records no TDX launch values and MRTD {} is not a configured one",
                        hex::encode(mrtd)
                    ));
                };
                let mut why = Vec::new();
                if !v.mrtd.eq_ignore_ascii_case(&hex::encode(mrtd)) {
                    why.push(format!("MRTD {} is not its {}", hex::encode(mrtd), v.mrtd));
                }
                // RTMR[1]/[2] are required: a TDX manifest without them admits no TD.
                for (i, golden, got) in [(1, &v.rtmr1, rtmr1), (2, &v.rtmr2, rtmr2)] {
                    match golden {
                        Some(g) if g.eq_ignore_ascii_case(&hex::encode(got)) => {}
                        Some(g) => why.push(format!("RTMR{i} {} is not its {g}", hex::encode(got))),
                        None => why.push(format!(
                            "it records no RTMR{i} (required on TDX; the quote's is {})",
                            hex::encode(got)
                        )),
                    }
                }
                if why.is_empty() {
                    Ok(())
                } else {
                    Err(why.join(", "))
                }
            }
        }
    }
}

fn platform_of(ev: &Evidence) -> VariantPlatform {
    match ev.platform {
        Platform::QemuVtpm => VariantPlatform::QemuVtpm,
        Platform::SevSnp { .. } => VariantPlatform::SevSnp,
        Platform::Tdx { .. } => VariantPlatform::Tdx,
    }
}

/// The manifests whose variant is for the evidence's platform; none is a refusal naming the
/// manifests' variants and the evidence's platform.
fn for_platform(manifests: Vec<Manifest>, ev: &Evidence) -> Result<Vec<Manifest>, Refusal> {
    let kind = platform_of(ev);
    let (ok, other): (Vec<Manifest>, Vec<Manifest>) = manifests
        .into_iter()
        .partition(|m| variant_platform(&m.image.variant) == Some(kind));
    if ok.is_empty() {
        let list: Vec<String> = other
            .iter()
            .map(|m| {
                format!(
                    "manifest {} (phase {}) is of variant {} ({})",
                    m.image.version,
                    m.phase.as_deref().unwrap_or("-"),
                    m.image.variant,
                    match variant_platform(&m.image.variant) {
                        Some(p) => format!("{p} evidence only"),
                        None => "a variant of no known platform".into(),
                    }
                )
            })
            .collect();
        return refuse(
            Check::Platform,
            format!(
                "this is {kind} evidence, and no manifest is for {kind}: {}",
                list.join("; ")
            ),
        );
    }
    Ok(ok)
}

fn system_now() -> Result<u64, Refusal> {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .or_else(|_| refuse(Check::ManifestExpired, "the system clock is before 1970"))
}

/// The verifier for QEMU guests with a vTPM (swtpm).
pub struct QemuVtpmVerifier {
    manifests: Vec<SignedManifest>,
    manifest_key: PublicKey,
    ak_trust: Box<dyn AkTrust>,
    /// UNIX seconds manifests' lifetimes are judged at; `None`: the system clock.
    now: Option<u64>,
}

impl QemuVtpmVerifier {
    pub fn new(
        manifest: SignedManifest,
        manifest_key: PublicKey,
        ak_trust: Box<dyn AkTrust>,
    ) -> Self {
        Self::with_manifests(vec![manifest], manifest_key, ak_trust)
    }

    /// Several golden manifests (e.g. the same image at phase `sysinit` and at `ready`, or two
    /// releases during an upgrade): evidence is accepted if it matches one of them, and
    /// [`Accepted::phase`] says which phase matched. All must be signed with `manifest_key`.
    pub fn with_manifests(
        manifests: Vec<SignedManifest>,
        manifest_key: PublicKey,
        ak_trust: Box<dyn AkTrust>,
    ) -> Self {
        QemuVtpmVerifier {
            manifests,
            manifest_key,
            ak_trust,
            now: None,
        }
    }

    /// Judge manifests' lifetimes (`not_after`) at this time (UNIX seconds) instead of the
    /// system clock.
    pub fn at_time(mut self, now: u64) -> Self {
        self.now = Some(now);
        self
    }

    fn now(&self) -> Result<u64, Refusal> {
        match self.now {
            Some(t) => Ok(t),
            None => system_now(),
        }
    }

    /// The TPM part for evidence whose platform part the caller verified, with the launch
    /// values it verified: AK trust, quote, nonce, logs, and one manifest (of the evidence's
    /// platform) that holds both the PCRs and `launch`. [`SevSnpVerifier`] and
    /// [`TdxVerifier`] end with it; it proves nothing about `launch` itself.
    pub fn verify_with_launch(
        &self,
        ev: &Evidence,
        expect: &Expectation<'_>,
        launch: &LaunchValues,
    ) -> Result<Accepted, Refusal> {
        let manifests = for_platform(self.manifests()?, ev)?;
        self.check_tpm_with(ev, expect, manifests, Some(launch))
    }

    fn manifests(&self) -> Result<Vec<Manifest>, Refusal> {
        if self.manifests.is_empty() {
            return refuse(Check::Manifest, "no golden manifest configured");
        }
        self.manifests.iter().map(|m| self.manifest(m)).collect()
    }

    fn manifest(&self, signed: &SignedManifest) -> Result<Manifest, Refusal> {
        if let Err(e) = verify_blob(&self.manifest_key, &signed.json, &signed.signature_b64) {
            return refuse(Check::ManifestSignature, e.to_string());
        }
        let m = Manifest::from_json(&signed.json)
            .or_else(|e| refuse(Check::Manifest, e.to_string()))?;
        if m.alg != HashAlg::Sha256 {
            return refuse(
                Check::Manifest,
                format!("manifest bank is {}, only sha256 is quoted", m.alg),
            );
        }
        Ok(m)
    }
}

impl Verifier for QemuVtpmVerifier {
    fn name(&self) -> &'static str {
        "qemu-vtpm"
    }

    fn verify(&self, ev: &Evidence, expect: &Expectation<'_>) -> Result<Accepted, Refusal> {
        match &ev.platform {
            Platform::QemuVtpm => {}
            Platform::SevSnp { .. } => {
                return refuse(
                    Check::Platform,
                    "SEV-SNP evidence goes to the SEV-SNP verifier, not the QEMU vTPM verifier",
                )
            }
            Platform::Tdx { .. } => {
                return refuse(
                    Check::Platform,
                    "TDX evidence goes to the TDX verifier, not the QEMU vTPM verifier",
                )
            }
        }
        let manifests = for_platform(self.manifests()?, ev)?;
        self.check_tpm_with(ev, expect, manifests, None)
    }
}

impl QemuVtpmVerifier {
    /// Everything but the platform part: AK trust, quote, nonce, logs, manifests (already
    /// checked, parsed and of the evidence's platform), and on CVMs the verified launch values.
    fn check_tpm_with(
        &self,
        ev: &Evidence,
        expect: &Expectation<'_>,
        manifests: Vec<Manifest>,
        launch: Option<&LaunchValues>,
    ) -> Result<Accepted, Refusal> {
        let now = self.now()?;
        // An AK trusted through an EK certificate is accepted pending credential activation
        // (`Accepted::ek_activation`, settled by `crate::credential::settle`).
        let ek_activation = match self.ak_trust.check_pending(&ev.ak_public, ev) {
            Ok(p) => p,
            Err(reason) => {
                return refuse(
                    Check::AkTrust,
                    format!("{}: {reason}", self.ak_trust.name()),
                )
            }
        };

        let quote = parse_quote(&ev.quote.attest)
            .or_else(|e| refuse(Check::QuoteFormat, format!("TPMS_ATTEST: {e}")))?;
        // ECDSA P-256 AKs, and RSA AKs (Azure's HCLAkPub, GCE's RSA AK): crate::binding.
        crate::binding::verify_ak_signature(&ev.ak_public, &ev.quote.attest, &ev.quote.signature)
            .map_err(|e| match e {
            crate::binding::SignatureError::Format(r) => Refusal {
                check: Check::QuoteFormat,
                reason: r,
            },
            crate::binding::SignatureError::Invalid(r) => Refusal {
                check: Check::QuoteSignature,
                reason: r,
            },
        })?;

        let want = qualifying_data(expect.nonce, expect.tls_public_key);
        if quote.extra_data != want {
            return refuse(
                Check::Nonce,
                format!(
                    "extraData {} is not SHA-256(nonce || TLS key) = {}: a replayed quote, or one made for another channel",
                    hex::encode(&quote.extra_data),
                    hex::encode(want)
                ),
            );
        }

        let mut quoted: Vec<u32> = Vec::new();
        for sel in &quote.selections {
            if sel.hash != ALG_SHA256 {
                return refuse(
                    Check::PcrSelection,
                    format!(
                        "quote selects bank {:#06x}, only sha256 is accepted",
                        sel.hash
                    ),
                );
            }
            quoted.extend(&sel.pcrs);
        }
        let mut required: Vec<u32> = manifests
            .iter()
            .flat_map(|m| m.measurements.keys().copied())
            .collect();
        required.sort_unstable();
        required.dedup();
        if expect.join != JoinKind::Rejoin {
            required.push(CLUSTER_ID_PCR);
        }
        let missing: Vec<u32> = required
            .into_iter()
            .filter(|p| !quoted.contains(p))
            .collect();
        if !missing.is_empty() {
            return refuse(
                Check::PcrSelection,
                format!("the quote (PCRs {quoted:?}) does not cover PCRs {missing:?}"),
            );
        }

        let log = EventLog::parse(&ev.firmware_log)
            .or_else(|e| refuse(Check::EventLog, format!("firmware log: {e}")))?;
        for rec in &ev.runtime_log {
            if let Err(e) = RuntimeEvent::from_cel(rec) {
                return refuse(
                    Check::EventLog,
                    format!("runtime record {}: {e}", rec.recnum),
                );
            }
        }
        let banks = nacre_eventlog::replay_banks(&log, &ev.runtime_log, &[HashAlg::Sha256])
            .or_else(|e| refuse(Check::EventLog, format!("replay: {e}")))?;
        let bank = &banks[0];
        let mut h = DigestContext::new(&SHA256);
        let mut pcrs = BTreeMap::new();
        for &p in &quoted {
            let v = bank.get(p).unwrap_or_default();
            h.update(v);
            pcrs.insert(p, v.to_vec());
        }
        let replayed = h.finish();
        if replayed.as_ref() != quote.pcr_digest.as_slice() {
            return refuse(
                Check::PcrDigest,
                format!(
                    "the event logs replay to PCR digest {}, the quote says {}: the logs are forged or incomplete",
                    hex::encode(replayed.as_ref()),
                    hex::encode(&quote.pcr_digest)
                ),
            );
        }

        if expect.join == JoinKind::First {
            let v = pcrs.get(&CLUSTER_ID_PCR).cloned().unwrap_or_default();
            if v.iter().any(|b| *b != 0) {
                return refuse(
                    Check::FirstJoinPcr15,
                    format!(
                        "PCR 15 is {}, not zero: the node is already initialized for a cluster",
                        hex::encode(v)
                    ),
                );
            }
        }

        let observed: Vec<Observed> = log
            .events
            .iter()
            .filter_map(|e| Observed::from_log(e, HashAlg::Sha256))
            .chain(
                ev.runtime_log
                    .iter()
                    .filter_map(|r| Observed::from_cel(r, HashAlg::Sha256)),
            )
            .collect();
        let mut refusals = Vec::new();
        let mut expired = Vec::new();
        let mut mixed = Vec::new();
        let name = |m: &Manifest| {
            format!(
                "manifest {} (phase {}, uki {})",
                m.image.version,
                m.phase.as_deref().unwrap_or("-"),
                m.image.uki_sha256
            )
        };
        for manifest in &manifests {
            let verdict = if expect.join == JoinKind::Either {
                let mut m = manifest.clone();
                m.measurements.remove(&CLUSTER_ID_PCR);
                m.check_pcrs(&pcrs)
            } else {
                manifest.check_pcrs(&pcrs)
            };
            if verdict.ok() {
                if let Some(Err(why)) = launch.map(|l| l.admitted_by(manifest)) {
                    mixed.push(format!("{} matches the PCRs, but {why}", name(manifest)));
                    continue;
                }
                if manifest.expired_at(now) {
                    expired.push(format!(
                        "{} matches, but is valid until {}",
                        name(manifest),
                        manifest.not_after.as_deref().unwrap_or("-")
                    ));
                    continue;
                }
                return Ok(Accepted {
                    image: manifest.image.clone(),
                    phase: manifest.phase.clone(),
                    pcrs,
                    matched: verdict.matched,
                    warnings: verdict.warnings,
                    ak_public: ev.ak_public.clone(),
                    platform_warnings: Vec::new(),
                    tdx_rtmr3: None,
                    ek_activation,
                });
            }
            let mut list = pcr_mismatches(&verdict.errors);
            // Which event differs, where the manifest carries its predicted events.
            if !manifest.events.is_empty() {
                let failing: Vec<u32> = verdict.errors.iter().map(|f| f.pcr).collect();
                for d in nacre_measure::diff::compare(&manifest.events, &observed, &failing) {
                    list.push(format!(
                        "PCR {} first differs at its event #{}: predicted {}, observed {}",
                        d.pcr,
                        d.index,
                        d.predicted
                            .as_ref()
                            .map(|p| format!("{:?}", p.description))
                            .unwrap_or_else(|| "no more events".into()),
                        d.observed
                            .as_ref()
                            .map(|o| format!("{:?}", o.description))
                            .unwrap_or_else(|| "no more events".into()),
                    ));
                }
            }
            refusals.push(if manifests.len() == 1 {
                list.join("; ")
            } else {
                format!(
                    "manifest {} (phase {}): {}",
                    manifest.image.version,
                    manifest.phase.as_deref().unwrap_or("-"),
                    list.join("; ")
                )
            });
        }
        if !expired.is_empty() {
            return refuse(Check::ManifestExpired, expired.join(" | "));
        }
        if !mixed.is_empty() {
            return refuse(
                Check::LaunchValues,
                format!(
                    "{} (the PCRs and the launch values must come from one manifest)",
                    mixed.join(" | ")
                ),
            );
        }
        refuse(Check::Measurements, refusals.join(" | "))
    }
}

/// One line per PCR that does not match: "PCR n is <observed or absent>, expected <value>".
pub(crate) fn pcr_mismatches(errors: &[Finding]) -> Vec<String> {
    errors
        .iter()
        .map(|f| {
            format!(
                "PCR {} is {}, expected {}",
                f.pcr,
                f.observed.as_deref().unwrap_or("absent"),
                f.expected
            )
        })
        .collect()
}

/// The AK is trusted because a verified SEV-SNP report binds it ([`SevSnpVerifier`] checks the
/// report first, then the TPM evidence with this trust).
struct BoundBySnpReport;

impl AkTrust for BoundBySnpReport {
    fn name(&self) -> &'static str {
        "bound by the SEV-SNP report"
    }
    fn check(&self, _ak: &[u8], _evidence: &Evidence) -> Result<(), String> {
        Ok(())
    }
}

/// The verifier for SEV-SNP guests with a vTPM (a paravisor/SVSM vTPM, or a TPM whose AK the
/// report binds): the report's chain (AMD ARK → ASK → VCEK), signature, guest policy, TCB
/// minimums, launch measurement and REPORT_DATA binding (nonce, AK, TLS key), then the TPM
/// quote, logs and golden manifests as for QEMU; the manifest whose PCRs match must hold the
/// report's launch measurement (or, without `snp` entries, it must be the policy's):
/// [`LaunchValues`].
pub struct SevSnpVerifier {
    roots: crate::snp::AmdRoots,
    policy: crate::snp::SnpPolicy,
    /// Where a VCEK/VLEK the evidence does not carry is looked up (the key service's store).
    store: Option<std::sync::Arc<dyn crate::snp::VekSource>>,
    /// How each variant's AK must be bound ([`crate::binding`]).
    binding: crate::binding::BindingPolicy,
    /// AWS: roots and sha384 manifests for NitroTPM documents ([`SevSnpVerifier::with_nitro`]).
    nitro: Option<crate::nitro::NitroTrust>,
    tpm: QemuVtpmVerifier,
}

impl SevSnpVerifier {
    /// Check NitroTPM attestation documents (`aws-sev-snp`) with these roots and sha384
    /// manifests ([`crate::nitro::NitroTrust`]): the document is the AK's binding, and its
    /// PCRs must match a sha384 manifest of the release whose sha256 manifest the quote
    /// matched. Without it, evidence carrying a document is refused.
    pub fn with_nitro(mut self, nitro: crate::nitro::NitroTrust) -> Self {
        self.nitro = Some(nitro);
        self
    }

    /// Look up the VCEK/VLEK of evidence that carries none in `store`.
    pub fn with_store(mut self, store: std::sync::Arc<dyn crate::snp::VekSource>) -> Self {
        self.store = Some(store);
        self
    }

    /// The AK binding policy ([`crate::binding::BindingPolicy`]: the operator's opt-ins for
    /// guest-bound AKs, GCE's roots); the default refuses a guest-bound AK on every variant.
    pub fn with_binding_policy(mut self, binding: crate::binding::BindingPolicy) -> Self {
        self.binding = binding;
        self
    }

    /// `roots`: AMD's ARK/ASK/ASVK per product ([`crate::snp::AmdRoots::bundled`], with the
    /// operator's CRLs); `policy`: VMPL and minimum TCB per product, no permissive default.
    pub fn new(
        roots: crate::snp::AmdRoots,
        policy: crate::snp::SnpPolicy,
        manifests: Vec<SignedManifest>,
        manifest_key: PublicKey,
    ) -> Self {
        SevSnpVerifier {
            roots,
            policy,
            store: None,
            binding: crate::binding::BindingPolicy::default(),
            nitro: None,
            tpm: QemuVtpmVerifier::with_manifests(
                manifests,
                manifest_key,
                Box::new(BoundBySnpReport),
            ),
        }
    }

    /// Judge manifests' lifetimes at this time (UNIX seconds) instead of the system clock.
    pub fn at_time(mut self, now: u64) -> Self {
        self.tpm.now = Some(now);
        self
    }
}

impl Verifier for SevSnpVerifier {
    fn name(&self) -> &'static str {
        "sev-snp"
    }

    fn verify(&self, ev: &Evidence, expect: &Expectation<'_>) -> Result<Accepted, Refusal> {
        let Platform::SevSnp {
            report: raw_report,
            vcek,
        } = &ev.platform
        else {
            return refuse(
                Check::Platform,
                "not SEV-SNP evidence (this verifier accepts SEV-SNP guests only)",
            );
        };
        let snp = |e: crate::snp::SnpError| Refusal {
            check: Check::SnpReport,
            reason: e.to_string(),
        };
        // The report in its chip's layout, its VCEK/VLEK (from the evidence or the store) and
        // chain, and the platform policy (VMPL, minimum TCB of its product, ...).
        let mut report = crate::snp::verify_report_with_store(
            raw_report,
            vcek,
            self.store.as_deref(),
            &self.roots,
            &self.policy,
        )
        .map_err(snp)?
        .report;
        // Golden launch measurements: the configured ones and those of the signed manifests
        // (of SEV-SNP variants); the one whose PCRs match must hold it (check_tpm_with).
        let mut policy = self.policy.clone();
        let manifests = for_platform(self.tpm.manifests()?, ev)?;
        for m in &manifests {
            for v in &m.snp {
                let mut d = [0u8; 48];
                if hex::decode_to_slice(&v.measurement, &mut d).is_ok() {
                    policy.measurements.push(d);
                }
            }
        }
        // The AK's platform binding (crate::binding). On Azure the HCL report binds the AK
        // and its REPORT_DATA is the runtime data's digest, not SHA-512(nonce, AK, TLS key):
        // verified here, it stands in for that rule (freshness and the TLS key come from the
        // quote the HCL AK signs).
        // AWS: a NitroTPM document (crate::nitro) binds the AK and carries the PCRs that
        // count (sha384); checked here because it needs the expectation and the manifests.
        let nitro = match (&ev.binding, &self.nitro) {
            (Some(crate::binding::AkBinding::NitroDocument { .. }), None) => {
                return refuse(
                    Check::NitroDocument,
                    "the evidence carries a NitroTPM document and this verifier has no Nitro roots or sha384 manifests to check it with",
                )
            }
            (_, Some(n)) => n
                .check_evidence(ev, expect, &self.tpm.manifest_key, self.tpm.now()?)
                .map_err(|e| Refusal {
                    check: Check::NitroDocument,
                    reason: e.to_string(),
                })?,
            (_, None) => None,
        };
        let verified = match nitro {
            Some(_) => Ok(Some(crate::binding::Verified::NitroDocument)),
            None => self
                .binding
                .verify_binding(ev, Some(raw_report), self.tpm.now()?),
        };
        if matches!(ev.binding, Some(crate::binding::AkBinding::AzureHcl { .. })) {
            match &verified {
                Ok(_) => {
                    report.report_data =
                        crate::snp::report_data(expect.nonce, &ev.ak_public, expect.tls_public_key)
                }
                Err(why) => return refuse(Check::AkTrust, why.clone()),
            }
        }
        crate::snp::check_report(
            &report,
            &policy,
            expect.nonce,
            &ev.ak_public,
            expect.tls_public_key,
        )
        .map_err(snp)?;
        let (manifests, binding_warnings) = self
            .binding
            .admit(manifests, ev, &verified)
            .or_else(|why| refuse(Check::AkTrust, why))?;
        // Evidence bound by an Azure HCL report pairs only with a manifest whose own `snp`
        // values hold its measurement: elsewhere (GCE, EC2) the guest kernel runs at VMPL 0 and
        // can wrap a genuine report naming a software HCLAkPub in an "HCLA" blob, so an
        // operator-configured measurement (not tied to the azure variant) must not pair it.
        let azure = matches!(verified, Ok(Some(crate::binding::Verified::AzureHcl)));
        let launch = LaunchValues::SevSnp {
            measurement: report.measurement,
            configured: !azure && self.policy.measurements.contains(&report.measurement),
        };
        let mut accepted = self
            .tpm
            .check_tpm_with(ev, expect, manifests, Some(&launch))?;
        accepted.platform_warnings.extend(binding_warnings);
        if let Some(n) = nitro {
            crate::nitro::same_release((&accepted.image, accepted.phase.as_deref()), &n.pcrs)
                .or_else(|why| refuse(Check::NitroDocument, why))?;
            accepted
                .platform_warnings
                .extend(n.pcrs.warnings.iter().map(|f| {
                    format!(
                        "NitroTPM document: warn-only PCR {} is {}, expected {} (sha384)",
                        f.pcr,
                        f.observed.as_deref().unwrap_or("absent"),
                        f.expected
                    )
                }));
        }
        Ok(accepted)
    }
}

/// The AK is trusted because a verified TDX quote binds it ([`TdxVerifier`] checks the quote
/// first, then the TPM evidence with this trust).
struct BoundByTdxQuote;

impl AkTrust for BoundByTdxQuote {
    fn name(&self) -> &'static str {
        "bound by the TDX quote"
    }
    fn check(&self, _ak: &[u8], _evidence: &Evidence) -> Result<(), String> {
        Ok(())
    }
}

/// The verifier for TDX guests with a vTPM: the quote's signatures (attestation key, QE report,
/// PCK), the PCK chain to Intel's SGX Root CA and the offline collateral (CRLs, TCB info, QE
/// identity, TCB level; [`crate::tdx::verify_quote`]), TD attributes, TCB status, MRTD,
/// RTMR0..2 and the REPORTDATA binding (nonce, AK, TLS key; [`crate::tdx::check_td`]), then the
/// TPM quote, logs and golden manifests as for QEMU. Golden MRTDs and RTMR1/RTMR2 values are the
/// policy's and those of the signed manifests' `tdx` entries; the manifest whose PCRs match must
/// hold the quote's (or, without a `tdx` entry, they must be the policy's): [`LaunchValues`].
pub struct TdxVerifier {
    collateral: crate::tdx::QuoteCollateralV3,
    root_ca: Vec<u8>,
    policy: crate::tdx::TdxPolicy,
    /// UNIX seconds to verify at; `None`: the system clock.
    now: Option<u64>,
    tpm: QemuVtpmVerifier,
}

impl TdxVerifier {
    /// `collateral`: the operator's offline collateral for the nodes' platform
    /// ([`crate::tdx::collateral_from_json`]); the root of trust is Intel's SGX Root CA pinned
    /// in this crate ([`crate::tdx::INTEL_SGX_ROOT_CA`]).
    pub fn new(
        collateral: crate::tdx::QuoteCollateralV3,
        policy: crate::tdx::TdxPolicy,
        manifests: Vec<SignedManifest>,
        manifest_key: PublicKey,
    ) -> Self {
        TdxVerifier {
            collateral,
            root_ca: crate::tdx::INTEL_SGX_ROOT_CA.to_vec(),
            policy,
            now: None,
            tpm: QemuVtpmVerifier::with_manifests(
                manifests,
                manifest_key,
                Box::new(BoundByTdxQuote),
            ),
        }
    }

    /// Verify at this time (UNIX seconds) instead of the system clock: certificates, CRLs and
    /// collateral must be valid then.
    pub fn at_time(mut self, now: u64) -> Self {
        self.now = Some(now);
        self.tpm.now = Some(now);
        self
    }

    fn now(&self) -> Result<u64, Refusal> {
        match self.now {
            Some(t) => Ok(t),
            None => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .or_else(|_| refuse(Check::TdxQuote, "the system clock is before 1970")),
        }
    }
}

impl Verifier for TdxVerifier {
    fn name(&self) -> &'static str {
        "tdx"
    }

    fn verify(&self, ev: &Evidence, expect: &Expectation<'_>) -> Result<Accepted, Refusal> {
        let Platform::Tdx { quote } = &ev.platform else {
            return refuse(
                Check::Platform,
                "not TDX evidence (this verifier accepts TDX guests only)",
            );
        };
        let tdx = |e: crate::tdx::TdxError| Refusal {
            check: Check::TdxQuote,
            reason: e.to_string(),
        };
        let quote = crate::tdx::Quote::parse(quote).map_err(tdx)?;
        let tcb = crate::tdx::verify_quote(&quote, &self.collateral, &self.root_ca, self.now()?)
            .map_err(tdx)?;
        self.verify_verified_body(&quote.body, &tcb, ev, expect)
    }
}

impl TdxVerifier {
    /// Everything after the quote's signatures, PCK chain and collateral: `body` and `tcb`
    /// MUST come from a quote [`crate::tdx::verify_quote`] verified ([`Verifier::verify`] does
    /// both). The TD rules ([`crate::tdx::check_td`]) with golden MRTD and RTMR[1]/[2] — both
    /// RTMRs required: a TDX manifest without them admits nothing, and without any golden value
    /// the evidence is refused — then RTMR[3] ([`check_rtmr3_replay`]: the runtime log replays
    /// to it; its phases are nacre-init's sequence; [`check_first_join_rtmr3`]), the TPM part,
    /// and the phase: the one RTMR[3] proves, which the matched manifest's phase must agree
    /// with ([`check_rtmr3_phase`]); [`Accepted::phase`] is RTMR[3]'s. Public so the rules can
    /// be tested on changed bodies of real quotes (nothing is re-signed).
    pub fn verify_verified_body(
        &self,
        body: &crate::tdx::TdReport,
        tcb: &crate::tdx::TcbVerdict,
        ev: &Evidence,
        expect: &Expectation<'_>,
    ) -> Result<Accepted, Refusal> {
        let tdx = |e: crate::tdx::TdxError| Refusal {
            check: Check::TdxQuote,
            reason: e.to_string(),
        };
        // Golden MRTD and RTMR1/2: the configured ones and those of the signed manifests (of
        // TDX variants); the one whose PCRs match must hold them (check_tpm_with).
        let mut policy = self.policy.clone();
        let manifests = for_platform(self.tpm.manifests()?, ev)?;
        // The AK's platform binding (crate::binding): gcp-tdx needs GCE's AK certificate;
        // qemu-tdx keeps REPORTDATA, every decision resting on MRTD and the RTMRs.
        let verified =
            crate::binding::BindingPolicy::default().verify_binding(ev, None, self.now()?);
        let (manifests, binding_warnings) = crate::binding::BindingPolicy::default()
            .admit(manifests, ev, &verified)
            .or_else(|why| refuse(Check::AkTrust, why))?;
        let decode = |h: &str| {
            let mut d = [0u8; 48];
            hex::decode_to_slice(h, &mut d).ok().map(|_| d)
        };
        for v in manifests.iter().filter_map(|m| m.tdx.as_ref()) {
            policy.mrtd.extend(decode(&v.mrtd));
            for (i, r) in [(1, &v.rtmr1), (2, &v.rtmr2)] {
                if let Some(d) = r.as_deref().and_then(decode) {
                    policy.rtmr[i].get_or_insert_with(Vec::new).push(d);
                }
            }
        }
        // RTMR[1] (boot path, UKI) and RTMR[2] (command line, initrd) are what ties the TD to
        // this image: without golden values any kernel would do. Required, never warn-only.
        for i in 1..=2 {
            if policy.rtmr[i].as_ref().is_none_or(|g| g.is_empty()) {
                return refuse(
                    Check::TdxQuote,
                    format!(
                        "no golden RTMR{i} value (required on TDX: neither the policy nor a TDX manifest gives one; `nacre-measure golden --tdx-ovmf` predicts it), the quote's is {}",
                        hex::encode(body.rtmr[i])
                    ),
                );
            }
        }
        let warnings = crate::tdx::check_td(
            body,
            tcb,
            &policy,
            expect.nonce,
            &ev.ak_public,
            expect.tls_public_key,
        )
        .map_err(tdx)?;
        // RTMR[3] is the TDX module's: the runtime log must replay to it, and then its phase
        // and cluster events are the TD's, whatever the (host-side) vTPM says.
        let state = check_rtmr3_replay(&body.rtmr[CLUSTER_ID_RTMR], &ev.runtime_log)?;
        check_first_join_rtmr3(&state, expect.join)?;
        let configured = self.policy.mrtd.contains(&body.mr_td)
            && (1..=2).all(|i| {
                self.policy.rtmr[i]
                    .as_ref()
                    .is_some_and(|g| g.contains(&body.rtmr[i]))
            });
        let launch = LaunchValues::Tdx {
            mrtd: body.mr_td,
            rtmr1: body.rtmr[1],
            rtmr2: body.rtmr[2],
            configured,
        };
        let mut accepted = self
            .tpm
            .check_tpm_with(ev, expect, manifests, Some(&launch))?;
        check_rtmr3_phase(&state, &mut accepted)?;
        accepted.platform_warnings = warnings;
        accepted.platform_warnings.extend(binding_warnings);
        accepted.tdx_rtmr3 = Some(cluster_rtmr3_after(&state.cluster));
        Ok(accepted)
    }
}

/// The TDX counterpart of the first-join PCR 15 rule: a node joining for the first time has
/// extended no cluster id into RTMR[3] in this boot (its phases and cluster configuration may
/// be there).
pub fn check_first_join_rtmr3(state: &Rtmr3State, join: JoinKind) -> Result<(), Refusal> {
    if join == JoinKind::First && state.joined() {
        let ids: Vec<String> = state.cluster.iter().map(|e| e.content()).collect();
        return refuse(
            Check::TdxRtmr3,
            format!(
                "RTMR[3] holds a cluster id (already joined in this boot): {}",
                ids.join(", ")
            ),
        );
    }
    Ok(())
}

/// RTMR[3] holds exactly the runtime log's RTMR[3] events — stage 2's phases and the cluster
/// events (nacre-init extends both or stops) — in nacre-init's order: an RTMR[3] the log does
/// not explain is another cluster's id, an extension the log hides, or a vTPM the host reset;
/// phases out of order are extensions nacre-init did not make (root in the TD extending
/// `sysinit` after `ready`). Returns what RTMR[3] proves: the phase and the cluster events.
pub fn check_rtmr3_replay(
    rtmr3: &[u8; 48],
    runtime_log: &[CelRecord],
) -> Result<Rtmr3State, Refusal> {
    let mut events = Vec::with_capacity(runtime_log.len());
    for r in runtime_log {
        match RuntimeEvent::from_cel(r) {
            Ok(e) => events.push(e),
            Err(e) => return refuse(Check::EventLog, format!("runtime record {}: {e}", r.recnum)),
        }
    }
    let expected = rtmr3_after(&events);
    if *rtmr3 != expected {
        let what = if expected == [0; 48] {
            "RTMR[3] is not zero but the runtime log has nothing for it".to_string()
        } else {
            format!(
                "RTMR[3] is {}, the runtime log's phases and cluster events replay to {}",
                hex::encode(rtmr3),
                hex::encode(expected)
            )
        };
        return refuse(
            Check::TdxRtmr3,
            format!(
                "{what} (quoted RTMR[3] {}): another cluster's id, an extension the log hides, or a log of another boot",
                hex::encode(rtmr3)
            ),
        );
    }
    rtmr3_state(&events).or_else(|e| refuse(Check::TdxRtmr3, e.to_string()))
}

/// The phase is RTMR[3]'s: the matched manifest's phase (PCR 11 of a vTPM the host may run)
/// must agree with it — before `sysinit`, a stage-1 phase or none — and [`Accepted::phase`]
/// becomes RTMR[3]'s word, so a TD at `ready` is never taken for one at `sysinit`.
pub fn check_rtmr3_phase(state: &Rtmr3State, accepted: &mut Accepted) -> Result<(), Refusal> {
    let rtmr = state.phase.map(|p| p.word());
    let manifest = accepted.phase.as_deref();
    let agree = match (rtmr, manifest) {
        (Some(r), Some(m)) => r == m,
        (None, m) => m.is_none_or(|m| m == "enter-initrd" || m == "leave-initrd"),
        (Some(_), None) => true,
    };
    if !agree {
        return refuse(
            Check::TdxRtmr3,
            format!(
                "RTMR[3] shows phase {}, the matched manifest is of phase {}: the vTPM's PCR 11 is not the TD's phase",
                rtmr.unwrap_or("none (before sysinit)"),
                manifest.unwrap_or("-")
            ),
        );
    }
    if let Some(r) = rtmr {
        accepted.phase = Some(r.to_owned());
    }
    Ok(())
}

/// A verifier that can be replaced while it is in use: the key service re-reads its manifests
/// and revocation list (SIGHUP) and swaps in the verifier built from them. A verification in
/// progress finishes with the verifier it started with; connections are not dropped.
pub struct SwappableVerifier {
    current: std::sync::RwLock<std::sync::Arc<dyn Verifier>>,
}

impl SwappableVerifier {
    pub fn new(v: std::sync::Arc<dyn Verifier>) -> Self {
        SwappableVerifier {
            current: std::sync::RwLock::new(v),
        }
    }

    /// The verifier in use now.
    pub fn current(&self) -> std::sync::Arc<dyn Verifier> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replace it (atomically: every later verification uses `v`).
    pub fn swap(&self, v: std::sync::Arc<dyn Verifier>) {
        match self.current.write() {
            Ok(mut g) => *g = v,
            Err(p) => *p.into_inner() = v,
        }
    }
}

impl Verifier for SwappableVerifier {
    fn name(&self) -> &'static str {
        self.current().name()
    }

    fn verify(&self, ev: &Evidence, expect: &Expectation<'_>) -> Result<Accepted, Refusal> {
        // The lock is held only to clone the Arc, not during the verification.
        self.current().verify(ev, expect)
    }
}

/// Routes evidence to the verifier of its platform: one service for QEMU vTPM, SEV-SNP and TDX
/// nodes. A platform without a configured verifier is refused.
#[derive(Default)]
pub struct ByPlatform {
    pub qemu_vtpm: Option<Box<dyn Verifier>>,
    pub sev_snp: Option<Box<dyn Verifier>>,
    pub tdx: Option<Box<dyn Verifier>>,
}

impl Verifier for ByPlatform {
    fn name(&self) -> &'static str {
        match (
            self.qemu_vtpm.is_some(),
            self.sev_snp.is_some(),
            self.tdx.is_some(),
        ) {
            (true, true, true) => "qemu-vtpm+sev-snp+tdx",
            (true, true, false) => "qemu-vtpm+sev-snp",
            (true, false, true) => "qemu-vtpm+tdx",
            (true, false, false) => "qemu-vtpm",
            (false, true, true) => "sev-snp+tdx",
            (false, true, false) => "sev-snp",
            (false, false, true) => "tdx",
            (false, false, false) => "none",
        }
    }

    fn verify(&self, ev: &Evidence, expect: &Expectation<'_>) -> Result<Accepted, Refusal> {
        let (v, kind) = match ev.platform {
            Platform::QemuVtpm => (&self.qemu_vtpm, "QEMU vTPM"),
            Platform::SevSnp { .. } => (&self.sev_snp, "SEV-SNP"),
            Platform::Tdx { .. } => (&self.tdx, "TDX"),
        };
        match v {
            Some(v) => v.verify(ev, expect),
            None => refuse(
                Check::Platform,
                format!("no verifier is configured for {kind} evidence"),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// Refuses everything, naming itself.
    struct Named(&'static str);

    impl Verifier for Named {
        fn name(&self) -> &'static str {
            self.0
        }
        fn verify(&self, _: &Evidence, _: &Expectation<'_>) -> Result<Accepted, Refusal> {
            refuse(Check::Manifest, self.0)
        }
    }

    #[test]
    fn swappable_verifier_uses_the_latest() {
        let v = Arc::new(SwappableVerifier::new(Arc::new(Named("old"))));
        let shared: Arc<dyn Verifier> = v.clone();
        let ev = Evidence {
            platform: Platform::QemuVtpm,
            quote: crate::evidence::Quote {
                attest: vec![],
                signature: vec![],
            },
            ak_public: vec![],
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
        assert_eq!(shared.verify(&ev, &x).unwrap_err().reason, "old");
        let held = v.current();
        v.swap(Arc::new(Named("new")));
        assert_eq!(shared.name(), "new");
        assert_eq!(shared.verify(&ev, &x).unwrap_err().reason, "new");
        // One taken before the swap is still whole.
        assert_eq!(held.name(), "old");
    }
}
