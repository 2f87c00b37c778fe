//! Golden measurements: nacre's manifest (what a verifier enforces and a release engineer
//! signs), its exports to formats other tools read (Constellation's v2 measurements JSON,
//! systemd's signed PCR policy), and the comparison of observed PCRs against it.
//!
//! ## Lifetime and release policy
//!
//! A manifest can carry `not_after` (RFC 3339, UTC only: `YYYY-MM-DDTHH:MM:SSZ`, fractional
//! seconds allowed and ignored; `nacre-measure golden` writes one 180 days ahead by default,
//! `--not-after T` or `--lifetime-days N` otherwise, none with `--no-expiry`). The field is
//! optional: manifests without it (`--no-expiry`, or signed before it existed) parse and never
//! expire, and `nacre-keyservice serve` loads them only with `--allow-no-expiry`. A
//! verifier refuses evidence whose only matching manifest is past `not_after`
//! ([`Manifest::expired_at`]; nacre-attestation's check "manifest expired").
//!
//! A service's own policy on top of the signature (`nacre-keyservice serve --min-version V
//! --revoked FILE`) uses:
//! * [`compare_versions`]: `image.version` compared as numeric dotted versions: an optional
//!   leading `v`, numeric components compared as numbers with missing ones taken as 0
//!   (`1.2` = `1.2.0` < `1.10`), a `-suffix` is a pre-release below its release
//!   (`1.2.0-rc1` < `1.2.0`, pre-releases compared by their dot-separated identifiers), a
//!   `+build` suffix is ignored. A version that is not numeric (`dev`, the default of
//!   `nacre-measure golden`, or `test`) has no order: under a minimum version it is refused,
//!   since nothing proves it new enough ([`PolicyError::NotAVersion`]).
//! * [`RevocationList`]: SHA-256 digests (64 hex digits) one a line, `#` starts a comment; an
//!   entry revokes the manifest file with that digest ([`manifest_digest`]) or every manifest
//!   whose `image.uki_sha256` is that digest (the whole release, all phases).
//! * [`variant_platform`]: a manifest's variant names the platform whose evidence it may admit
//!   (`qemu-vtpm`: QEMU vTPM; `*-snp`, e.g. `qemu-snp`, `aws-sev-snp`: SEV-SNP; `*-tdx`: TDX);
//!   a variant naming no platform admits nothing.
//!
//! Launch values (`snp`, `tdx`) belong to their manifest: a verifier accepts a CVM only if one
//! manifest holds both the PCRs and the launch values it observed, never values of two.

use crate::predict::{Event, Prediction};
use crate::uki::StubProfile;
use nacre_eventlog::alg::HashAlg;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

/// The manifest format's identifier; bumped on incompatible changes.
pub const SCHEMA: &str = "nacre.golden-measurements.v1";

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("manifest schema {found:?} is not {SCHEMA:?}")]
    Schema { found: String },
    #[error("manifest has mixed digest lengths: PCR {pcr} has {len} bytes, the {alg} bank needs {expected}")]
    DigestLength {
        pcr: u32,
        len: usize,
        alg: HashAlg,
        expected: usize,
    },
    #[error("manifest PCR index {0} is out of range (0-23)")]
    PcrIndex(u32),
    #[error("manifest lists no measurements")]
    Empty,
    #[error(
        "manifest not_after {value:?} is not an RFC 3339 UTC time (YYYY-MM-DDTHH:MM:SSZ): {reason}"
    )]
    NotAfter { value: String, reason: String },
}

/// A manifest refused by a service's policy (expiry, minimum version, revocation), or a
/// revocation list that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("manifest expired: {version} (phase {phase}) is valid until {not_after}")]
    Expired {
        version: String,
        phase: String,
        not_after: String,
    },
    #[error("manifest version {version:?} is below the minimum version {min:?}")]
    BelowMinVersion { version: String, min: String },
    #[error("manifest version {version:?} is not a numeric dotted version, so it cannot be compared with the minimum version {min:?}")]
    NotAVersion { version: String, min: String },
    #[error("minimum version {0:?} is not a numeric dotted version (e.g. 1.4 or v1.4.2)")]
    BadMinVersion(String),
    #[error("manifest revoked: {what} {digest} is in the revocation list")]
    Revoked { what: &'static str, digest: String },
    #[error("revocation list line {line}: {reason}")]
    RevocationList { line: usize, reason: String },
}

/// What the image is: enough for a person to find it and for a verifier to log it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// Image reference (name or URL where it is published).
    #[serde(rename = "ref")]
    pub reference: String,
    pub version: String,
    /// Platform variant, e.g. "qemu-vtpm", "aws-sev-snp".
    pub variant: String,
    /// SHA-256 of the UKI file.
    pub uki_sha256: String,
    /// The dm-verity root hash from the UKI's command line, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roothash: Option<String>,
}

/// One expected PCR value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expected {
    #[serde(with = "hex::serde")]
    pub expected: Vec<u8>,
    /// Reported, not enforced.
    #[serde(default)]
    pub warn_only: bool,
}

/// nacre's golden-measurement manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub image: ImageRef,
    pub alg: HashAlg,
    pub stub: StubProfile,
    pub secure_boot: bool,
    /// The boot phase at which the values hold (nacre-init extends PCR 11 per phase).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    /// The end of the manifest's lifetime (RFC 3339 UTC, `2027-01-31T00:00:00Z`): verifiers
    /// refuse it afterwards. Absent: no expiry (`golden --no-expiry`, or manifests signed
    /// before this field existed; `serve` needs `--allow-no-expiry` for them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<String>,
    pub measurements: BTreeMap<u32, Expected>,
    /// The predicted events, so a verifier can say which event differs, not only which PCR.
    pub events: Vec<Event>,
    /// SEV-SNP launch measurements of this image's variant, one per launch configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snp: Vec<SnpLaunchValue>,
    /// Intel TDX launch values of this image's variant (MRTD and the predicted RTMRs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxLaunchValue>,
}

/// The Intel TDX measurements of a TDVF launch of this image (see `nacre_measure::tdx`).
/// RTMR[0] is never recorded: it depends on the VMM's configuration (TD HOB, ACPI tables).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TdxLaunchValue {
    /// MRTD, 48 bytes, hex.
    pub mrtd: String,
    /// How the VMM interleaves TDH.MEM.PAGE.ADD and TDH.MR.EXTEND: "per-page" or
    /// "per-section".
    pub page_add_order: String,
    /// RTMR[1] (absent when not predicted: a bare UKI gives no GPT event).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr1: Option<String>,
    /// RTMR[2].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr2: Option<String>,
    /// SHA-256 of the firmware the MRTD was computed for.
    pub ovmf_sha256: String,
}

/// The SEV-SNP launch measurement (the report's MEASUREMENT) of one launch configuration.
/// A value pinned from an observed report rather than computed (`nacre-measure golden
/// --snp-measurement`, e.g. Azure's paravisor's) has `vcpus` 0, `vcpu_type` "observed",
/// `guest_features` 0 and an empty `ovmf_sha256`: only `measurement` is checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnpLaunchValue {
    pub vcpus: u32,
    pub vcpu_type: String,
    pub vmm: String,
    /// VMSA sev_features.
    pub guest_features: u64,
    /// SHA-256 of the firmware it was computed for.
    pub ovmf_sha256: String,
    /// Measured direct boot (`uki`: the UKI as QEMU's -kernel; `sections`: its .linux, .initrd
    /// and .cmdline): the value covers the UKI too. Absent: UEFI boot from the disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direct_boot: Option<String>,
    /// 48 bytes, hex.
    pub measurement: String,
}

impl Manifest {
    /// A manifest from a prediction: every predicted PCR enforced, except those in `warn_only`.
    pub fn from_prediction(
        image: ImageRef,
        p: &Prediction,
        phase: Option<String>,
        warn_only: &[u32],
    ) -> Self {
        let measurements = p
            .pcrs
            .iter()
            .map(|(pcr, v)| {
                (
                    *pcr,
                    Expected {
                        expected: v.clone(),
                        warn_only: warn_only.contains(pcr),
                    },
                )
            })
            .collect();
        Manifest {
            schema: SCHEMA.to_string(),
            image,
            alg: p.alg,
            stub: p.stub,
            secure_boot: p.secure_boot,
            phase,
            not_after: None,
            measurements,
            events: p.events.clone(),
            snp: Vec::new(),
            tdx: None,
        }
    }

    /// Parse and validate: schema, PCR indices, one digest length for all values.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ManifestError> {
        let m: Manifest = serde_json::from_slice(bytes)?;
        m.validate()?;
        Ok(m)
    }

    pub fn validate(&self) -> Result<(), ManifestError> {
        if self.schema != SCHEMA {
            return Err(ManifestError::Schema {
                found: self.schema.clone(),
            });
        }
        if self.measurements.is_empty() {
            return Err(ManifestError::Empty);
        }
        if let Some(t) = &self.not_after {
            parse_rfc3339_utc(t)?;
        }
        let expected = self.alg.digest_size();
        for (pcr, e) in &self.measurements {
            if *pcr > 23 {
                return Err(ManifestError::PcrIndex(*pcr));
            }
            if e.expected.len() != expected {
                return Err(ManifestError::DigestLength {
                    pcr: *pcr,
                    len: e.expected.len(),
                    alg: self.alg,
                    expected,
                });
            }
        }
        Ok(())
    }

    /// `not_after` in UNIX seconds (`None`: no expiry, or not parseable, which
    /// [`Manifest::validate`] refuses).
    pub fn not_after_unix(&self) -> Option<u64> {
        self.not_after
            .as_deref()
            .and_then(|t| parse_rfc3339_utc(t).ok())
    }

    /// Whether the manifest is past its `not_after` at `now` (UNIX seconds).
    pub fn expired_at(&self, now: u64) -> bool {
        match (&self.not_after, self.not_after_unix()) {
            (None, _) => false,
            (Some(_), Some(t)) => now > t,
            // An unparseable lifetime is no lifetime: expired (fail closed).
            (Some(_), None) => true,
        }
    }

    /// [`PolicyError::Expired`] when the manifest is past its `not_after` at `now`.
    pub fn check_lifetime(&self, now: u64) -> Result<(), PolicyError> {
        if self.expired_at(now) {
            return Err(PolicyError::Expired {
                version: self.image.version.clone(),
                phase: self.phase.clone().unwrap_or_else(|| "-".into()),
                not_after: self.not_after.clone().unwrap_or_default(),
            });
        }
        Ok(())
    }

    /// The manifest's `image.version` is at least `min` ([`compare_versions`]).
    pub fn check_min_version(&self, min: &str) -> Result<(), PolicyError> {
        if parse_version(min).is_none() {
            return Err(PolicyError::BadMinVersion(min.into()));
        }
        match compare_versions(&self.image.version, min) {
            Some(Ordering::Less) => Err(PolicyError::BelowMinVersion {
                version: self.image.version.clone(),
                min: min.into(),
            }),
            Some(_) => Ok(()),
            None => Err(PolicyError::NotAVersion {
                version: self.image.version.clone(),
                min: min.into(),
            }),
        }
    }

    /// Canonical JSON: pretty, keys in a fixed order, trailing newline. Signing covers these
    /// exact bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Compare observed PCR values (index -> value) with the manifest.
    pub fn check_pcrs(&self, observed: &BTreeMap<u32, Vec<u8>>) -> Verdict {
        let mut v = Verdict::default();
        for (pcr, e) in &self.measurements {
            let finding = match observed.get(pcr) {
                Some(got) if *got == e.expected => {
                    v.matched.push(*pcr);
                    continue;
                }
                Some(got) => Finding {
                    pcr: *pcr,
                    expected: hex::encode(&e.expected),
                    observed: Some(hex::encode(got)),
                },
                None => Finding {
                    pcr: *pcr,
                    expected: hex::encode(&e.expected),
                    observed: None,
                },
            };
            if e.warn_only {
                v.warnings.push(finding);
            } else {
                v.errors.push(finding);
            }
        }
        v
    }
}

/// The platform whose evidence a manifest's variant may admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum VariantPlatform {
    QemuVtpm,
    SevSnp,
    Tdx,
}

impl std::fmt::Display for VariantPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VariantPlatform::QemuVtpm => "QEMU vTPM",
            VariantPlatform::SevSnp => "SEV-SNP",
            VariantPlatform::Tdx => "TDX",
        })
    }
}

/// The platform a variant is built for: `qemu-vtpm` → QEMU vTPM, `*-snp` (`qemu-snp`,
/// `aws-sev-snp`, `azure-sev-snp`, `gcp-sev-snp`) → SEV-SNP, `*-tdx` (`qemu-tdx`, `gcp-tdx`) →
/// TDX; any other name → `None` (admits no evidence).
pub fn variant_platform(variant: &str) -> Option<VariantPlatform> {
    if variant == "qemu-vtpm" {
        Some(VariantPlatform::QemuVtpm)
    } else if variant.ends_with("-snp") {
        Some(VariantPlatform::SevSnp)
    } else if variant.ends_with("-tdx") {
        Some(VariantPlatform::Tdx)
    } else {
        None
    }
}

/// SHA-256 of a manifest file's bytes, hex: how a [`RevocationList`] names one manifest.
pub fn manifest_digest(json: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, json))
}

/// Revoked manifests: digests of manifest files ([`manifest_digest`]) or of UKIs
/// (`image.uki_sha256`, revoking every manifest of that image).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RevocationList {
    digests: BTreeSet<String>,
}

impl RevocationList {
    /// One SHA-256 digest (64 hex digits) a line; `#` starts a comment, blank lines are
    /// ignored. Anything else is an error naming the line.
    pub fn parse(text: &str) -> Result<Self, PolicyError> {
        let mut digests = BTreeSet::new();
        for (i, line) in text.lines().enumerate() {
            let entry = line.split('#').next().unwrap_or("").trim();
            if entry.is_empty() {
                continue;
            }
            if entry.len() != 64 || !entry.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(PolicyError::RevocationList {
                    line: i + 1,
                    reason: format!("{entry:?} is not a SHA-256 digest (64 hex digits)"),
                });
            }
            digests.insert(entry.to_ascii_lowercase());
        }
        Ok(RevocationList { digests })
    }

    pub fn len(&self) -> usize {
        self.digests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// [`PolicyError::Revoked`] if the manifest file `json` (parsed: `m`) is revoked by its
    /// own digest or by its UKI's.
    pub fn check(&self, json: &[u8], m: &Manifest) -> Result<(), PolicyError> {
        let digest = manifest_digest(json);
        if self.digests.contains(&digest) {
            return Err(PolicyError::Revoked {
                what: "manifest digest",
                digest,
            });
        }
        let uki = m.image.uki_sha256.to_ascii_lowercase();
        if self.digests.contains(&uki) {
            return Err(PolicyError::Revoked {
                what: "image uki_sha256",
                digest: uki,
            });
        }
        Ok(())
    }
}

/// A numeric dotted version: its components and its pre-release suffix.
fn parse_version(v: &str) -> Option<(Vec<u64>, Option<&str>)> {
    let v = v.strip_prefix(['v', 'V']).unwrap_or(v);
    let v = v.split('+').next().unwrap_or(v);
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) if !p.is_empty() => (c, Some(p)),
        Some(_) => return None,
        None => (v, None),
    };
    let parts = core
        .split('.')
        .map(|c| {
            if c.is_empty() || !c.bytes().all(|b| b.is_ascii_digit()) {
                None
            } else {
                c.parse::<u64>().ok()
            }
        })
        .collect::<Option<Vec<u64>>>()?;
    Some((parts, pre))
}

/// Compare two versions as documented in the module (numeric dotted, optional `v`,
/// pre-releases below their release). `None` when either is not such a version (`dev`).
pub fn compare_versions(a: &str, b: &str) -> Option<Ordering> {
    let (ac, ap) = parse_version(a)?;
    let (bc, bp) = parse_version(b)?;
    let n = ac.len().max(bc.len());
    for i in 0..n {
        let (x, y) = (
            ac.get(i).copied().unwrap_or(0),
            bc.get(i).copied().unwrap_or(0),
        );
        match x.cmp(&y) {
            Ordering::Equal => {}
            o => return Some(o),
        }
    }
    Some(match (ap, bp) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Greater,
        (Some(_), None) => Ordering::Less,
        (Some(x), Some(y)) => {
            let (xs, ys): (Vec<&str>, Vec<&str>) = (x.split('.').collect(), y.split('.').collect());
            for (p, q) in xs.iter().zip(&ys) {
                let o = match (p.parse::<u64>(), q.parse::<u64>()) {
                    (Ok(m), Ok(n)) => m.cmp(&n),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                    _ => p.cmp(q),
                };
                if o != Ordering::Equal {
                    return Some(o);
                }
            }
            xs.len().cmp(&ys.len())
        }
    })
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// An RFC 3339 UTC time (`YYYY-MM-DDTHH:MM:SS[.frac]Z`) in UNIX seconds (from 1970).
pub fn parse_rfc3339_utc(t: &str) -> Result<u64, ManifestError> {
    let bad = |reason: &str| ManifestError::NotAfter {
        value: t.into(),
        reason: reason.into(),
    };
    let b = t.as_bytes();
    if b.len() < 20 || !(b.ends_with(b"Z") || b.ends_with(b"z")) {
        return Err(bad(
            "not of the form YYYY-MM-DDTHH:MM:SSZ (UTC, ending in Z)",
        ));
    }
    let sep = |i: usize, c: &[u8]| c.contains(&b[i]);
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt") && sep(13, b":") && sep(16, b":")) {
        return Err(bad("not of the form YYYY-MM-DDTHH:MM:SSZ"));
    }
    let frac = &b[19..b.len() - 1];
    if !(frac.is_empty()
        || (frac.len() > 1 && frac[0] == b'.' && frac[1..].iter().all(u8::is_ascii_digit)))
    {
        return Err(bad(
            "only fractional seconds may follow the seconds, then Z",
        ));
    }
    let num = |r: std::ops::Range<usize>| -> Result<i64, ManifestError> {
        let s = &t[r];
        if !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(bad("a date or time field is not a number"));
        }
        s.parse::<i64>().map_err(|_| bad("a field is not a number"))
    };
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, s) = (num(11..13)?, num(14..16)?, num(17..19)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let mdays = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if !(1..=12).contains(&mo) || d < 1 || d > mdays[(mo - 1) as usize] {
        return Err(bad("no such date"));
    }
    if h > 23 || mi > 59 || s > 60 {
        return Err(bad("no such time"));
    }
    let secs = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + s.min(59);
    u64::try_from(secs).map_err(|_| bad("before 1970"))
}

/// UNIX seconds as RFC 3339 UTC (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn format_rfc3339_utc(secs: u64) -> String {
    let days = (secs / 86400) as i64;
    let rem = secs % 86400;
    // civil_from_days (Howard Hinnant's algorithm).
    let z = days + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// A PCR whose observed value is not the expected one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub pcr: u32,
    pub expected: String,
    /// `None`: the PCR was not in the observed set.
    pub observed: Option<String>,
}

/// The outcome of a comparison: enforced mismatches are errors, warn-only ones warnings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub matched: Vec<u32>,
    pub errors: Vec<Finding>,
    pub warnings: Vec<Finding>,
}

impl Verdict {
    pub fn ok(&self) -> bool {
        self.errors.is_empty()
    }
}

/// Constellation's image measurements (v2) for the manifest's variant.
pub fn to_constellation(m: &Manifest, csp: &str, stream: &str) -> serde_json::Value {
    let measurements: serde_json::Map<String, serde_json::Value> = m
        .measurements
        .iter()
        .map(|(pcr, e)| {
            (
                pcr.to_string(),
                serde_json::json!({"expected": hex::encode(&e.expected), "warnOnly": e.warn_only}),
            )
        })
        .collect();
    serde_json::json!({
        "version": m.image.version,
        "ref": m.image.reference,
        "stream": stream,
        "list": [{
            "csp": csp,
            "attestationVariant": m.image.variant,
            "measurements": measurements,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        let mut measurements = BTreeMap::new();
        measurements.insert(
            4,
            Expected {
                expected: vec![4; 32],
                warn_only: false,
            },
        );
        measurements.insert(
            7,
            Expected {
                expected: vec![7; 32],
                warn_only: true,
            },
        );
        Manifest {
            schema: SCHEMA.into(),
            image: ImageRef {
                reference: "nacre-node".into(),
                version: "v0.1.0".into(),
                variant: "qemu-vtpm".into(),
                uki_sha256: "00".into(),
                roothash: None,
            },
            alg: HashAlg::Sha256,
            stub: StubProfile::V252,
            secure_boot: true,
            phase: None,
            not_after: None,
            measurements,
            events: vec![],
            snp: vec![],
            tdx: None,
        }
    }

    #[test]
    fn tdx_values_round_trip_and_are_optional() {
        let mut m = manifest();
        let plain = m.to_json();
        assert!(!String::from_utf8_lossy(&plain).contains("\"tdx\""));
        assert!(Manifest::from_json(&plain).unwrap().tdx.is_none());
        m.tdx = Some(TdxLaunchValue {
            mrtd: "ab".repeat(48),
            page_add_order: "per-page".into(),
            rtmr1: None,
            rtmr2: Some("cd".repeat(48)),
            ovmf_sha256: "ef".repeat(32),
        });
        let json = m.to_json();
        let text = String::from_utf8_lossy(&json);
        assert!(text.contains("\"tdx\""), "{text}");
        assert!(
            !text.contains("rtmr1"),
            "an unpredicted RTMR[1] is absent: {text}"
        );
        let back = Manifest::from_json(&json).unwrap();
        assert_eq!(back.tdx, m.tdx);
        assert_eq!(back, m);
        // Unknown fields in the TDX entry are refused, like the SNP entries.
        let bad = text.replace(
            "\"page_add_order\"",
            "\"rtmr0\": \"00\", \"page_add_order\"",
        );
        assert!(Manifest::from_json(bad.as_bytes()).is_err());
    }

    #[test]
    fn snp_launch_values_round_trip_and_are_optional() {
        let mut m = manifest();
        let plain = m.to_json();
        assert!(!String::from_utf8_lossy(&plain).contains("\"snp\""));
        m.snp.push(SnpLaunchValue {
            vcpus: 2,
            vcpu_type: "EPYC-Milan".into(),
            vmm: "qemu".into(),
            guest_features: 1,
            ovmf_sha256: "ab".repeat(32),
            direct_boot: Some("uki".into()),
            measurement: "cd".repeat(48),
        });
        let back = Manifest::from_json(&m.to_json()).unwrap();
        assert_eq!(back.snp, m.snp);
        assert!(Manifest::from_json(&plain).unwrap().snp.is_empty());
    }

    #[test]
    fn not_after_round_trips_is_optional_and_expires() {
        let mut m = manifest();
        let plain = m.to_json();
        assert!(!String::from_utf8_lossy(&plain).contains("not_after"));
        assert!(!Manifest::from_json(&plain).unwrap().expired_at(u64::MAX));
        m.not_after = Some("2027-01-31T12:00:00Z".into());
        let back = Manifest::from_json(&m.to_json()).unwrap();
        assert_eq!(back, m);
        let t = back.not_after_unix().unwrap();
        assert_eq!(t, 1_801_396_800);
        assert_eq!(format_rfc3339_utc(t), "2027-01-31T12:00:00Z");
        assert!(!back.expired_at(t) && back.expired_at(t + 1));
        let e = back.check_lifetime(t + 1).unwrap_err().to_string();
        assert!(
            e.contains("manifest expired") && e.contains("2027-01-31"),
            "{e}"
        );
        for bad in [
            "2027-01-31",
            "2027-01-31T12:00:00+01:00",
            "2027-02-30T00:00:00Z",
            "2027-01-31 12:00:00Z",
            "1969-12-31T23:59:59Z",
        ] {
            m.not_after = Some(bad.into());
            let e = Manifest::from_json(&m.to_json()).unwrap_err().to_string();
            assert!(e.contains("not_after"), "{bad}: {e}");
        }
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00.5Z").unwrap(), 0);
        assert_eq!(
            parse_rfc3339_utc("2024-02-29T00:00:00Z").unwrap(),
            1_709_164_800
        );
        assert_eq!(format_rfc3339_utc(1_709_164_800), "2024-02-29T00:00:00Z");
    }

    #[test]
    fn versions_compare_numerically() {
        use std::cmp::Ordering::*;
        for (a, b, o) in [
            ("1.2", "1.2.0", Equal),
            ("v1.10.0", "1.9.3", Greater),
            ("0.9", "v1", Less),
            ("1.2.0-rc1", "1.2.0", Less),
            ("1.2.0-rc.2", "1.2.0-rc.10", Less),
            ("1.2.0+build5", "1.2.0", Equal),
        ] {
            assert_eq!(compare_versions(a, b), Some(o), "{a} vs {b}");
        }
        for v in ["dev", "test", "1..2", "", "1.x", "v"] {
            assert_eq!(compare_versions(v, "1.0"), None, "{v}");
        }
        let mut m = manifest();
        m.image.version = "v0.1.0".into();
        m.check_min_version("0.1").unwrap();
        let e = m.check_min_version("0.2.0").unwrap_err();
        assert!(matches!(e, PolicyError::BelowMinVersion { .. }), "{e}");
        m.image.version = "dev".into();
        assert!(matches!(
            m.check_min_version("0.1"),
            Err(PolicyError::NotAVersion { .. })
        ));
        assert!(matches!(
            m.check_min_version("latest"),
            Err(PolicyError::BadMinVersion(_))
        ));
    }

    #[test]
    fn revocation_list_by_manifest_and_uki_digest() {
        let mut m = manifest();
        m.image.uki_sha256 = "ab".repeat(32);
        let json = m.to_json();
        let digest = manifest_digest(&json);
        let none = RevocationList::parse("# nothing revoked\n\n").unwrap();
        assert!(none.is_empty());
        none.check(&json, &m).unwrap();
        let by_file =
            RevocationList::parse(&format!("# v0.1.0\n{}  # CVE\n", digest.to_uppercase()))
                .unwrap();
        let e = by_file.check(&json, &m).unwrap_err().to_string();
        assert!(e.contains("manifest digest") && e.contains(&digest), "{e}");
        let by_uki = RevocationList::parse(&"ab".repeat(32)).unwrap();
        let e = by_uki.check(&json, &m).unwrap_err().to_string();
        assert!(e.contains("uki_sha256"), "{e}");
        let e = RevocationList::parse("# ok\nnot-a-digest\n").unwrap_err();
        assert!(e.to_string().contains("line 2"), "{e}");
    }

    #[test]
    fn variants_name_their_platform() {
        assert_eq!(
            variant_platform("qemu-vtpm"),
            Some(VariantPlatform::QemuVtpm)
        );
        for v in ["qemu-snp", "aws-sev-snp", "azure-sev-snp", "gcp-sev-snp"] {
            assert_eq!(variant_platform(v), Some(VariantPlatform::SevSnp), "{v}");
        }
        for v in ["qemu-tdx", "gcp-tdx"] {
            assert_eq!(variant_platform(v), Some(VariantPlatform::Tdx), "{v}");
        }
        assert_eq!(variant_platform("qemu"), None);
    }

    #[test]
    fn json_round_trip() {
        let m = manifest();
        assert_eq!(Manifest::from_json(&m.to_json()).unwrap(), m);
    }

    #[test]
    fn mixed_digest_lengths_are_rejected() {
        let mut m = manifest();
        m.measurements.get_mut(&7).unwrap().expected = vec![7; 48];
        let err = Manifest::from_json(&m.to_json()).unwrap_err();
        assert!(err.to_string().contains("PCR 7 has 48 bytes"), "{err}");
    }

    #[test]
    fn enforced_mismatch_is_an_error_warn_only_a_warning() {
        let m = manifest();
        let mut obs = BTreeMap::new();
        obs.insert(4, vec![4; 32]);
        obs.insert(7, vec![0; 32]);
        let v = m.check_pcrs(&obs);
        assert!(v.ok());
        assert_eq!(v.warnings.len(), 1);
        obs.insert(4, vec![0; 32]);
        let v = m.check_pcrs(&obs);
        assert!(!v.ok());
        assert_eq!(v.errors[0].pcr, 4);
        obs.remove(&4);
        assert_eq!(m.check_pcrs(&obs).errors[0].observed, None);
    }

    #[test]
    fn constellation_export_shape() {
        let j = to_constellation(&manifest(), "QEMU", "stable");
        assert_eq!(j["list"][0]["attestationVariant"], "qemu-vtpm");
        assert_eq!(j["list"][0]["measurements"]["7"]["warnOnly"], true);
        assert_eq!(
            j["list"][0]["measurements"]["4"]["expected"],
            hex::encode([4u8; 32])
        );
    }
}
