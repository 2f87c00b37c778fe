//! nacre's encrypted state disk.
//!
//! - [`luks2`]: the LUKS2 header parsed and strictly validated against nacre's profile (pure,
//!   host-tested against `cryptsetup luksFormat` output and edited copies).
//! - [`keysource`]: the key source interface; [`tpm`]: the TPM-sealed key source (tss-esapi).
//! - [`select`]: which disk is the state disk — `serial`, `device_name` or
//!   `rule = "only-data-disk"`, one stated rule per bus (virtio-blk, NVMe, SCSI) and cloud, and
//!   which one each image variant should use (pure over sysfs, host-tested).
//! - [`disk`]: first format, activation from a validated detached header copy, mount on /var
//!   (guest only).
//!
//! Configured by the `[state_disk]` table of `/etc/nacre/init.toml` ([`Config`]).

// Runs in PID 1: no unwrap/expect/panic outside tests.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

pub mod disk;
pub mod ext4;
pub mod keysource;
pub mod luks2;
pub mod select;
pub mod token;
pub mod tpm;

pub use disk::{open, Opened};
pub use keysource::{KeyError, KeySource};
use nacre_eventlog::runtime::{Phase, RuntimeEvent};
pub use select::Selector;

/// `[state_disk]` in `/etc/nacre/init.toml`: exactly one of `serial = "…"`,
/// `device_name = "…"`, `rule = "only-data-disk"` (see [`select`]), then `key_source` (when
/// absent: `key-service` on a node with a key service, else `tpm-sealed`) and `integrity`.
/// Unknown keys are errors.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct Config {
    /// Which disk is the state disk.
    pub disk: Selector,
    /// Where the disk key comes from.
    pub key_source: KeySourceKind,
    /// `key_source` was written; otherwise [`Config::default_to_key_service`] may choose.
    pub key_source_given: bool,
    /// `"hmac(sha256)"`: dm-integrity under dm-crypt (authenticated sectors). Absent: none.
    pub integrity: Option<Integrity>,
    /// TPM key source: the image's PCR-signing public key (PEM, on the verified root).
    pub pcr_public_key: std::path::PathBuf,
    /// TPM key source: systemd's signed PCR policy JSON (outside what PCR 11 covers).
    pub pcr_signature: std::path::PathBuf,
}

/// `[state_disk]` as written, before the one-selector check.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    serial: Option<String>,
    #[serde(default)]
    device_name: Option<String>,
    #[serde(default)]
    rule: Option<select::Rule>,
    #[serde(default)]
    key_source: Option<KeySourceKind>,
    #[serde(default)]
    integrity: Option<Integrity>,
    #[serde(default)]
    pcr_public_key: Option<std::path::PathBuf>,
    #[serde(default)]
    pcr_signature: Option<std::path::PathBuf>,
}

/// A `[state_disk]` table that names no disk, or more than one way.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl TryFrom<RawConfig> for Config {
    type Error = ConfigError;
    fn try_from(r: RawConfig) -> Result<Config, ConfigError> {
        let mut given = Vec::new();
        if let Some(s) = r.serial {
            select::check_value("serial", &s).map_err(ConfigError)?;
            given.push(("serial", Selector::Serial(s)));
        }
        if let Some(n) = r.device_name {
            select::check_value("device_name", &n).map_err(ConfigError)?;
            given.push(("device_name", Selector::DeviceName(n)));
        }
        if let Some(select::Rule::OnlyDataDisk) = r.rule {
            given.push(("rule", Selector::OnlyDataDisk));
        }
        if given.len() != 1 {
            let keys: Vec<&str> = given.iter().map(|(k, _)| *k).collect();
            return Err(ConfigError(format!(
                "exactly one of serial, device_name, rule names the state disk; {}",
                if keys.is_empty() {
                    "none is given".to_string()
                } else {
                    format!("{} are given", keys.join(" and "))
                }
            )));
        }
        let (_, disk) = given.remove(0);
        if r.key_source == Some(KeySourceKind::KeyService)
            && (r.pcr_public_key.is_some() || r.pcr_signature.is_some())
        {
            return Err(ConfigError(
                "pcr_public_key and pcr_signature are for key_source = \"tpm-sealed\"".into(),
            ));
        }
        Ok(Config {
            disk,
            key_source: r.key_source.unwrap_or_default(),
            key_source_given: r.key_source.is_some(),
            integrity: r.integrity,
            pcr_public_key: r
                .pcr_public_key
                .unwrap_or_else(|| tpm::DEFAULT_PUBLIC_KEY.into()),
            pcr_signature: r
                .pcr_signature
                .unwrap_or_else(|| tpm::DEFAULT_SIGNATURE.into()),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySourceKind {
    /// A random key sealed to this node's TPM under PCR 11 (single node, tests).
    #[default]
    TpmSealed,
    /// The attested key service: HKDF(cluster master secret, disk UUID, owner AK), released after
    /// attestation, nothing stored on the disk. nacre-init provides this source.
    KeyService,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Integrity {
    #[serde(rename = "hmac(sha256)")]
    HmacSha256,
}

impl Config {
    /// Without an explicit `key_source`, a node that has a key service uses it (the disk key is
    /// then released only to an attested node, and bound to it), else the TPM-sealed key.
    pub fn default_to_key_service(&mut self, key_service_configured: bool) {
        if !self.key_source_given && key_service_configured {
            self.key_source = KeySourceKind::KeyService;
        }
    }

    /// The header profile for this configuration and a key source's token type.
    pub fn profile(&self, token_type: Option<&str>) -> luks2::Profile {
        luks2::Profile {
            integrity: self.integrity.is_some(),
            token_type: token_type.map(str::to_string),
        }
    }

    /// The configured key source, when this crate can build it (`None` for the key service,
    /// whose client the caller owns).
    pub fn key_source(&self) -> Option<Box<dyn KeySource>> {
        match self.key_source {
            KeySourceKind::TpmSealed => {
                let mut t =
                    tpm::TpmSealed::new(self.pcr_public_key.clone(), self.pcr_signature.clone());
                // What runs once the disk is open (PCR 11 extended with `ready`: the workload)
                // must not be able to unseal its key: a signature file that allows it is refused.
                let ready = RuntimeEvent::Phase(Phase::Ready).content();
                t.forbid_after(vec![ring::digest::digest(
                    &ring::digest::SHA256,
                    ready.as_bytes(),
                )
                .as_ref()
                .to_vec()]);
                Some(Box::new(t))
            }
            KeySourceKind::KeyService => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateDiskError {
    #[error("no disk matches {selector} within {secs} s; whole disks: {seen}")]
    NotFound {
        selector: String,
        secs: f64,
        seen: String,
    },
    #[error(
        "{selector} matches more than one disk ({matches}): refusing to guess; whole disks: {seen}"
    )]
    Ambiguous {
        selector: String,
        matches: String,
        seen: String,
    },
    #[error("cannot tell the boot disk: {0}")]
    BootDisk(String),
    #[error("refusing the state disk: {0}")]
    Header(#[from] luks2::HeaderError),
    #[error("refusing the state disk: {0}")]
    Refused(String),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("{0}")]
    Effect(String),
}

impl StateDiskError {
    pub(crate) fn io(path: &std::path::Path, cause: std::io::Error) -> Self {
        StateDiskError::Io {
            path: path.display().to_string(),
            cause,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(t: &str) -> Result<Config, String> {
        let v: toml_like::Value = toml_like::parse(t);
        serde_json::from_value(v).map_err(|e| e.to_string())
    }

    /// The init parses TOML; the crate only needs serde: test through JSON with the same shape.
    mod toml_like {
        pub type Value = serde_json::Value;
        pub fn parse(t: &str) -> Value {
            serde_json::from_str(t).unwrap()
        }
    }

    #[test]
    fn config_is_strict() {
        let c = parse(r#"{"serial":"nacre-state"}"#).unwrap();
        assert_eq!(c.disk, Selector::Serial("nacre-state".into()));
        assert_eq!(c.key_source, KeySourceKind::TpmSealed);
        assert!(!c.key_source_given);
        // Unwritten: the key service where one is configured.
        let mut d = c.clone();
        d.default_to_key_service(false);
        assert_eq!(d.key_source, KeySourceKind::TpmSealed);
        d.default_to_key_service(true);
        assert_eq!(d.key_source, KeySourceKind::KeyService);
        // Written: kept.
        let mut e = parse(r#"{"serial":"s","key_source":"tpm-sealed"}"#).unwrap();
        e.default_to_key_service(true);
        assert_eq!(e.key_source, KeySourceKind::TpmSealed);
        assert_eq!(c.integrity, None);
        assert!(!c.profile(None).integrity);
        let c = parse(r#"{"serial":"s","key_source":"tpm-sealed","integrity":"hmac(sha256)"}"#)
            .unwrap();
        assert!(c.profile(Some("x")).integrity);
        assert_eq!(c.profile(Some("x")).volume_key_size(), 96);
        assert!(parse(r#"{"serial":"s","integrity":"hmac(sha1)"}"#).is_err());
        assert!(parse(r#"{"serial":"s","key_source":"insecure"}"#).is_err());
        assert!(parse(r#"{"serial":"s","serail":"t"}"#)
            .unwrap_err()
            .contains("serail"));
        assert!(parse(r#"{}"#).is_err());
    }

    #[test]
    fn exactly_one_selector() {
        let c = parse(r#"{"device_name":"/dev/sdf","key_source":"key-service"}"#).unwrap();
        assert_eq!(c.disk, Selector::DeviceName("/dev/sdf".into()));
        assert_eq!(c.key_source, KeySourceKind::KeyService);
        let c = parse(r#"{"rule":"only-data-disk"}"#).unwrap();
        assert_eq!(c.disk, Selector::OnlyDataDisk);
        let e = parse(r#"{"key_source":"tpm-sealed"}"#).unwrap_err();
        assert!(e.contains("none is given"), "{e}");
        let e = parse(r#"{"serial":"a","rule":"only-data-disk"}"#).unwrap_err();
        assert!(e.contains("serial and rule are given"), "{e}");
        let e = parse(r#"{"serial":"a","device_name":"b","rule":"only-data-disk"}"#).unwrap_err();
        assert!(
            e.contains("serial and device_name and rule are given"),
            "{e}"
        );
        assert!(parse(r#"{"rule":"first-disk"}"#).is_err());
        assert!(parse(r#"{"rule":"only-data-disk","serail":"x"}"#)
            .unwrap_err()
            .contains("serail"));
        assert!(parse(r#"{"serial":""}"#).unwrap_err().contains("empty"));
        assert!(parse(r#"{"device_name":" x"}"#)
            .unwrap_err()
            .contains("blanks"));
        assert!(parse(r#"{"serial":null}"#)
            .unwrap_err()
            .contains("none is given"));
    }
}
