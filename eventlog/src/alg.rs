//! TPM 2.0 hash algorithms (TPM_ALG_ID) as they appear in event logs and PCR banks.
//!
//! Event logs name algorithms by their TPM_ALG_ID; CEL-JSON and tpm2-tools name them by
//! lowercase strings. Both mappings live here so every other module agrees on them.
//! Hashing goes through `ring`, the project's single crypto provider. SM3 is known so that
//! a log from a TPM with an SM3 bank can still be *parsed*, but it cannot be hashed.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A hash algorithm a PCR bank can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum HashAlg {
    /// TPM_ALG_SHA1 (0x0004).
    Sha1,
    /// TPM_ALG_SHA256 (0x000B).
    Sha256,
    /// TPM_ALG_SHA384 (0x000C).
    Sha384,
    /// TPM_ALG_SHA512 (0x000D).
    Sha512,
    /// TPM_ALG_SM3_256 (0x0012): parsed, never hashed (ring has no SM3).
    Sm3_256,
}

/// Errors about algorithms: unknown identifiers and algorithms `ring` cannot compute.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgError {
    /// The TPM_ALG_ID is not a hash algorithm this crate knows.
    #[error("unknown hash algorithm id 0x{0:04x}")]
    UnknownId(u16),
    /// The name is not one of "sha1", "sha256", "sha384", "sha512", "sm3_256".
    #[error("unknown hash algorithm name {0:?}")]
    UnknownName(String),
    /// The algorithm is known but cannot be computed (SM3).
    #[error("hash algorithm {0} is not supported for hashing")]
    Unsupported(HashAlg),
}

impl HashAlg {
    /// Every algorithm this crate knows, in TPM_ALG_ID order.
    pub const ALL: [HashAlg; 5] = [
        HashAlg::Sha1,
        HashAlg::Sha256,
        HashAlg::Sha384,
        HashAlg::Sha512,
        HashAlg::Sm3_256,
    ];

    /// The TPM_ALG_ID used in binary logs and TPM commands.
    pub const fn id(self) -> u16 {
        match self {
            HashAlg::Sha1 => 0x0004,
            HashAlg::Sha256 => 0x000B,
            HashAlg::Sha384 => 0x000C,
            HashAlg::Sha512 => 0x000D,
            HashAlg::Sm3_256 => 0x0012,
        }
    }

    /// Maps a TPM_ALG_ID back to the algorithm.
    pub fn from_id(id: u16) -> Result<Self, AlgError> {
        Self::ALL
            .into_iter()
            .find(|a| a.id() == id)
            .ok_or(AlgError::UnknownId(id))
    }

    /// Digest length in bytes, which is also the PCR size of this bank.
    pub const fn digest_size(self) -> usize {
        match self {
            HashAlg::Sha1 => 20,
            HashAlg::Sha256 | HashAlg::Sm3_256 => 32,
            HashAlg::Sha384 => 48,
            HashAlg::Sha512 => 64,
        }
    }

    /// The name tpm2-tools, systemd and CEL-JSON use ("sha256", ...).
    pub const fn name(self) -> &'static str {
        match self {
            HashAlg::Sha1 => "sha1",
            HashAlg::Sha256 => "sha256",
            HashAlg::Sha384 => "sha384",
            HashAlg::Sha512 => "sha512",
            HashAlg::Sm3_256 => "sm3_256",
        }
    }

    fn ring_alg(self) -> Result<&'static ring::digest::Algorithm, AlgError> {
        match self {
            HashAlg::Sha1 => Ok(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY),
            HashAlg::Sha256 => Ok(&ring::digest::SHA256),
            HashAlg::Sha384 => Ok(&ring::digest::SHA384),
            HashAlg::Sha512 => Ok(&ring::digest::SHA512),
            HashAlg::Sm3_256 => Err(AlgError::Unsupported(self)),
        }
    }

    /// Whether [`HashAlg::hash`] works for this algorithm.
    pub fn is_supported(self) -> bool {
        self.ring_alg().is_ok()
    }

    /// One-shot digest of `data`.
    pub fn hash(self, data: &[u8]) -> Result<Vec<u8>, AlgError> {
        Ok(ring::digest::digest(self.ring_alg()?, data)
            .as_ref()
            .to_vec())
    }

    /// A streaming hasher, for data that arrives in pieces (files, sections).
    pub fn hasher(self) -> Result<Hasher, AlgError> {
        Ok(Hasher {
            alg: self,
            ctx: ring::digest::Context::new(self.ring_alg()?),
        })
    }

    /// The TPM extend operation: `H(old || digest)`.
    ///
    /// Neither input length is checked here; [`crate::replay::PcrBank::extend`] checks them.
    pub fn extend(self, old: &[u8], digest: &[u8]) -> Result<Vec<u8>, AlgError> {
        let mut h = self.hasher()?;
        h.update(old);
        h.update(digest);
        Ok(h.finish())
    }
}

impl fmt::Display for HashAlg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HashAlg {
    type Err = AlgError;
    fn from_str(s: &str) -> Result<Self, AlgError> {
        Self::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| AlgError::UnknownName(s.to_owned()))
    }
}

impl Serialize for HashAlg {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for HashAlg {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Streaming hasher returned by [`HashAlg::hasher`].
#[derive(Clone)]
pub struct Hasher {
    alg: HashAlg,
    ctx: ring::digest::Context,
}

impl Hasher {
    /// Feeds more data.
    pub fn update(&mut self, data: &[u8]) {
        self.ctx.update(data);
    }

    /// The algorithm this hasher computes.
    pub fn alg(&self) -> HashAlg {
        self.alg
    }

    /// Finishes and returns the digest.
    pub fn finish(self) -> Vec<u8> {
        self.ctx.finish().as_ref().to_vec()
    }
}

impl fmt::Debug for Hasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hasher").field("alg", &self.alg).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_names_sizes_round_trip() {
        for a in HashAlg::ALL {
            assert_eq!(HashAlg::from_id(a.id()), Ok(a));
            assert_eq!(a.name().parse::<HashAlg>(), Ok(a));
            if a.is_supported() {
                assert_eq!(a.hash(b"").unwrap().len(), a.digest_size());
            }
        }
        assert_eq!(HashAlg::from_id(0x0027), Err(AlgError::UnknownId(0x27)));
        assert!("SHA256".parse::<HashAlg>().is_err());
        assert_eq!(
            HashAlg::Sm3_256.hash(b"x"),
            Err(AlgError::Unsupported(HashAlg::Sm3_256))
        );
    }

    #[test]
    fn known_answers() {
        assert_eq!(
            hex::encode(HashAlg::Sha256.hash(b"abc").unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex::encode(HashAlg::Sha1.hash(b"abc").unwrap()),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        let mut h = HashAlg::Sha384.hasher().unwrap();
        h.update(b"a");
        h.update(b"bc");
        assert_eq!(h.finish(), HashAlg::Sha384.hash(b"abc").unwrap());
    }

    #[test]
    fn serde_uses_names() {
        assert_eq!(
            serde_json::to_string(&HashAlg::Sha512).unwrap(),
            "\"sha512\""
        );
        assert_eq!(
            serde_json::from_str::<HashAlg>("\"sha1\"").unwrap(),
            HashAlg::Sha1
        );
        assert!(serde_json::from_str::<HashAlg>("\"md5\"").is_err());
    }
}
