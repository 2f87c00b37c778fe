//! Golden measurements: nacre's manifest (what a verifier enforces and a release engineer
//! signs), its exports to formats other tools read (Constellation's v2 measurements JSON,
//! systemd's signed PCR policy), and the comparison of observed PCRs against it.

use crate::predict::{Event, Prediction};
use crate::uki::StubProfile;
use nacre_eventlog::alg::HashAlg;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
