//! Where the disk key comes from. One interface for the attested key service (the attestation
//! issue: a key derived from the cluster's master secret and the disk UUID, released after
//! attestation, nothing stored on the disk) and, for single-node and test use, a key sealed to
//! the node's TPM under a PCR policy (the sealed blob is kept in the LUKS2 header as a token of
//! nacre's own type).
//!
//! The disk key is what opens the disk's keyslot; the volume key (which encrypts the data) is
//! random and never leaves libcryptsetup and the kernel.

use serde_json::{Map, Value};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("key source {source_name}: {reason}")]
    Failed {
        source_name: &'static str,
        reason: String,
    },
    #[error("key source {source_name}: token: {reason}")]
    Token {
        source_name: &'static str,
        reason: String,
    },
}

/// A source of disk keys.
///
/// For a disk being formatted: `disk_key` (a new key), then `new_token` (what the header must
/// keep for the next boot, if anything). For an existing disk: `use_token` with the source's
/// token from the validated header copy (when `token_type` is `Some`), then `disk_key` (the same
/// key as at format time, or an error: a key source that cannot give the key stops the boot).
pub trait KeySource {
    /// A short name for logs ("tpm-sealed", "key-service").
    fn name(&self) -> &'static str;
    /// The LUKS2 token type this source stores in the header; the header validator then expects
    /// exactly one token of this type and no other token. `None`: the header has no tokens.
    fn token_type(&self) -> Option<&'static str>;
    /// The token of an existing disk, from the validated header (called before `disk_key`).
    fn use_token(&mut self, token: &Map<String, Value>) -> Result<(), KeyError>;
    /// The disk key for the disk with this LUKS2 UUID.
    fn disk_key(&mut self, disk_uuid: &str) -> Result<Zeroizing<Vec<u8>>, KeyError>;
    /// After `disk_key` on a new disk: the token to store in its header (with `keyslots` set by
    /// the caller).
    fn new_token(&mut self) -> Result<Option<Map<String, Value>>, KeyError>;
}

/// Length of nacre's disk keys (random bytes, used as the keyslot passphrase).
pub const DISK_KEY_LEN: usize = 64;
