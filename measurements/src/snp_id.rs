//! SEV-SNP ID block and ID authentication structure (SEV-SNP ABI, SNP_LAUNCH_FINISH): a guest
//! launched with them carries, in every attestation report, the SHA-384 digest of the ID key
//! (ID_KEY_DIGEST) and of the author key that signed it (AUTHOR_KEY_DIGEST); the PSP refuses to
//! launch a guest whose launch digest is not the one the ID block names. A verifier that knows
//! the release's ID key digest thus knows the guest was launched as the release intended.
//!
//! Layout as PyPI's sev-snp-measure `snp-create-id-block` writes it (the format QEMU takes as
//! `sev-snp-guest,id-block=<base64>,id-auth=<base64>`). Keys are ECDSA P-384 (the only curve SNP
//! accepts), PKCS#8 PEM; signatures are r and s, 72 bytes little-endian each.

use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P384_SHA384_FIXED_SIGNING};

/// ID_BLOCK size.
pub const ID_BLOCK_LEN: usize = 0x60;
/// ID_AUTH_INFO size.
pub const ID_AUTH_LEN: usize = 0x1000;
/// The default guest policy of sev-snp-measure: ABI 0.0, SMT allowed, bit 17 (reserved, must be
/// one) set; debugging and migration agents off.
pub const DEFAULT_POLICY: u64 = 0x30000;
const KEY_ALGO_ECDSA_P384_SHA384: u32 = 1;
const CURVE_P384: u32 = 2;
const PUBKEY_LEN: usize = 0x404;
const SIG_LEN: usize = 0x200;
const BLOCK_SIG_AT: usize = 0x40;
const ID_KEY_AT: usize = 0x240;
const ID_KEY_SIG_AT: usize = 0x680;
const AUTHOR_KEY_AT: usize = 0x880;

#[derive(Debug, thiserror::Error)]
pub enum IdBlockError {
    #[error("{0}: not an ECDSA P-384 private key in PKCS#8 PEM (SEV-SNP ID and author keys are P-384; convert with `openssl pkcs8 -topk8 -nocrypt`)")]
    Key(String),
    #[error("signing failed")]
    Sign,
}

/// An ID or author key.
pub struct SnpKey {
    key: EcdsaKeyPair,
}

impl SnpKey {
    pub fn from_pem(pem: &[u8], what: &str) -> Result<SnpKey, IdBlockError> {
        use rustls_pki_types::{pem::PemObject, PrivatePkcs8KeyDer};
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem)
            .map_err(|_| IdBlockError::Key(what.to_string()))?;
        let key = EcdsaKeyPair::from_pkcs8(
            &ECDSA_P384_SHA384_FIXED_SIGNING,
            der.secret_pkcs8_der(),
            &SystemRandom::new(),
        )
        .map_err(|_| IdBlockError::Key(what.to_string()))?;
        Ok(SnpKey { key })
    }

    /// A new key, PKCS#8 DER.
    pub fn generate() -> Result<Vec<u8>, IdBlockError> {
        EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| IdBlockError::Sign)
    }

    /// The public key as SNP marshals it (curve, Qx, Qy little-endian, 0x404 bytes).
    pub fn public(&self) -> Vec<u8> {
        let point = self.key.public_key().as_ref(); // 0x04 || x || y, big-endian
        let mut out = vec![0u8; PUBKEY_LEN];
        out[..4].copy_from_slice(&CURVE_P384.to_le_bytes());
        for (i, c) in [&point[1..49], &point[49..97]].into_iter().enumerate() {
            let at = 4 + i * 72;
            for (j, b) in c.iter().rev().enumerate() {
                out[at + j] = *b;
            }
        }
        out
    }

    /// SHA-384 of [`SnpKey::public`]: what a report's ID_KEY_DIGEST / AUTHOR_KEY_DIGEST holds.
    pub fn digest(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA384, &self.public()).as_ref());
        out
    }

    /// ECDSA P-384/SHA-384 over `data`, as SNP marshals it (r, s little-endian, 0x200 bytes).
    pub fn sign(&self, data: &[u8]) -> Result<Vec<u8>, IdBlockError> {
        let sig = self
            .key
            .sign(&SystemRandom::new(), data)
            .map_err(|_| IdBlockError::Sign)?;
        let rs = sig.as_ref();
        let mut out = vec![0u8; SIG_LEN];
        for (i, c) in [&rs[..48], &rs[48..96]].into_iter().enumerate() {
            for (j, b) in c.iter().rev().enumerate() {
                out[i * 72 + j] = *b;
            }
        }
        Ok(out)
    }
}

/// The ID block for a launch digest (family and image ids zero, version 1, guest SVN 0).
pub fn id_block(launch_digest: &[u8; 48], policy: u64) -> [u8; ID_BLOCK_LEN] {
    let mut b = [0u8; ID_BLOCK_LEN];
    b[..48].copy_from_slice(launch_digest);
    // 0x30..0x50: FAMILY_ID, IMAGE_ID (zero)
    b[0x50..0x54].copy_from_slice(&1u32.to_le_bytes()); // VERSION
                                                        // 0x54..0x58: GUEST_SVN (zero)
    b[0x58..0x60].copy_from_slice(&policy.to_le_bytes());
    b
}

/// The ID authentication structure: the ID block signed with the ID key, the ID key signed
/// with the author key.
pub fn id_auth(
    block: &[u8; ID_BLOCK_LEN],
    id_key: &SnpKey,
    author_key: &SnpKey,
) -> Result<Vec<u8>, IdBlockError> {
    let mut a = vec![0u8; ID_AUTH_LEN];
    a[..4].copy_from_slice(&KEY_ALGO_ECDSA_P384_SHA384.to_le_bytes());
    a[4..8].copy_from_slice(&KEY_ALGO_ECDSA_P384_SHA384.to_le_bytes());
    a[BLOCK_SIG_AT..BLOCK_SIG_AT + SIG_LEN].copy_from_slice(&id_key.sign(block)?);
    let id_pub = id_key.public();
    a[ID_KEY_AT..ID_KEY_AT + PUBKEY_LEN].copy_from_slice(&id_pub);
    a[ID_KEY_SIG_AT..ID_KEY_SIG_AT + SIG_LEN].copy_from_slice(&author_key.sign(&id_pub)?);
    a[AUTHOR_KEY_AT..AUTHOR_KEY_AT + PUBKEY_LEN].copy_from_slice(&author_key.public());
    Ok(a)
}

/// Check an ID_AUTH_INFO's two signatures (the ID block's, the ID key's); returns the ID key
/// and author key digests.
pub fn verify_id_auth(
    block: &[u8; ID_BLOCK_LEN],
    auth: &[u8],
) -> Result<([u8; 48], [u8; 48]), String> {
    if auth.len() != ID_AUTH_LEN {
        return Err(format!(
            "ID auth is {} bytes, not {ID_AUTH_LEN}",
            auth.len()
        ));
    }
    let point = |k: &[u8]| -> Result<Vec<u8>, String> {
        if k[..4] != CURVE_P384.to_le_bytes() {
            return Err("key is not P-384".into());
        }
        let mut p = vec![0x04];
        for at in [4, 76] {
            p.extend(k[at..at + 48].iter().rev());
        }
        Ok(p)
    };
    let sig = |s: &[u8]| -> Vec<u8> {
        let mut v: Vec<u8> = s[..48].iter().rev().copied().collect();
        v.extend(s[72..120].iter().rev());
        v
    };
    let id_pub = &auth[ID_KEY_AT..ID_KEY_AT + PUBKEY_LEN];
    let author_pub = &auth[AUTHOR_KEY_AT..AUTHOR_KEY_AT + PUBKEY_LEN];
    let verify = |key: &[u8], data: &[u8], s: &[u8], what: &str| -> Result<(), String> {
        ring::signature::UnparsedPublicKey::new(
            &ring::signature::ECDSA_P384_SHA384_FIXED,
            point(key)?,
        )
        .verify(data, &sig(s))
        .map_err(|_| format!("{what} signature does not verify"))
    };
    verify(
        id_pub,
        block,
        &auth[BLOCK_SIG_AT..BLOCK_SIG_AT + SIG_LEN],
        "ID block",
    )?;
    verify(
        author_pub,
        id_pub,
        &auth[ID_KEY_SIG_AT..ID_KEY_SIG_AT + SIG_LEN],
        "ID key",
    )?;
    let d = |k: &[u8]| {
        let mut out = [0u8; 48];
        out.copy_from_slice(ring::digest::digest(&ring::digest::SHA384, k).as_ref());
        out
    };
    Ok((d(id_pub), d(author_pub)))
}
