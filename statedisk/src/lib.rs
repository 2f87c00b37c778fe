//! nacre's encrypted state disk.
//!
//! - [`luks2`]: the LUKS2 header parsed and strictly validated against nacre's profile (pure,
//!   host-tested against `cryptsetup luksFormat` output and edited copies).
//! - [`keysource`]: the key source interface; [`tpm`]: the TPM-sealed key source (tss-esapi).
//! - [`disk`]: find the disk by serial, first format, activation from a validated detached
//!   header copy, mount on /var (guest only).
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
pub mod token;
pub mod tpm;

pub use disk::{open, Opened};
pub use keysource::{KeyError, KeySource};

/// `[state_disk]` in `/etc/nacre/init.toml`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The disk's serial (virtio-blk `serial=`), as `/sys/class/block/*/serial` shows it.
    pub serial: String,
    /// Where the disk key comes from.
    #[serde(default)]
    pub key_source: KeySourceKind,
    /// `"hmac(sha256)"`: dm-integrity under dm-crypt (authenticated sectors). Absent: none.
    #[serde(default)]
    pub integrity: Option<Integrity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeySourceKind {
    /// A random key sealed to this node's TPM under PCR 11 (single node, tests).
    #[default]
    TpmSealed,
    /// The attested key service: HKDF(cluster master secret, disk UUID), released after
    /// attestation, nothing stored on the disk. nacre-init provides this source.
    KeyService,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum Integrity {
    #[serde(rename = "hmac(sha256)")]
    HmacSha256,
}

impl Config {
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
            KeySourceKind::TpmSealed => Some(Box::new(tpm::TpmSealed::new())),
            KeySourceKind::KeyService => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateDiskError {
    #[error("no block device with serial {0:?} (looked in /sys/class/block/*/serial)")]
    NotFound(String),
    #[error("more than one block device with serial {0:?}: {1}")]
    Ambiguous(String, String),
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
        assert_eq!(c.key_source, KeySourceKind::TpmSealed);
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
}
