//! Signing and verifying published measurements.
//!
//! - Manifests are signed like `cosign sign-blob --key`: an ECDSA P-256 signature over SHA-256
//!   of the file, ASN.1 DER, base64 in `<file>.sig`. `cosign verify-blob --key pub.pem
//!   --signature f.sig f` and `openssl dgst -sha256 -verify pub.pem -signature <(base64 -d f.sig) f`
//!   both check it.
//! - systemd's signed PCR policies (`.pcrsig`) use RSA PKCS#1 v1.5 with SHA-256.
//!
//! Keys come from PEM files, or, for keys that live in a KMS or an HSM, from an external
//! command ([`CommandSigner`]): nacre hands it the bytes to sign and checks the signature it
//! returns against the configured public key before writing anything.

use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, KeyPair, RsaKeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, SubjectPublicKeyInfoDer};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("cannot read key file {path}: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: no PEM private key found (expected 'PRIVATE KEY' or 'RSA PRIVATE KEY')")]
    NoPrivateKey { path: PathBuf },
    #[error("{path}: SEC1 'EC PRIVATE KEY' is not supported; convert it with `openssl pkcs8 -topk8 -nocrypt -in {path} -out key.pk8.pem`")]
    Sec1Key { path: PathBuf },
    #[error("{path}: not a usable {expected} key: {reason}")]
    BadKey {
        path: PathBuf,
        expected: &'static str,
        reason: String,
    },
    #[error("{path}: no PEM 'PUBLIC KEY' (SubjectPublicKeyInfo) found")]
    NoPublicKey { path: PathBuf },
    #[error("public key: {0}")]
    BadPublicKey(&'static str),
    #[error("signature is not valid base64")]
    SignatureEncoding,
    #[error("signature does not verify against the public key (wrong key, or the signed file was changed)")]
    BadSignature,
    #[error("signing failed: {0}")]
    Signing(String),
    #[error("external signer `{command}`: {reason}")]
    External { command: String, reason: String },
}

fn read(path: &Path) -> Result<Vec<u8>, SignError> {
    std::fs::read(path).map_err(|cause| SignError::Read {
        path: path.to_path_buf(),
        cause,
    })
}

/// Something that produces ECDSA P-256 / SHA-256 signatures in ASN.1 DER.
pub trait BlobSigner {
    /// The signer's public key as SubjectPublicKeyInfo DER.
    fn public_key_spki(&self) -> Vec<u8>;
    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError>;
}

/// An ECDSA P-256 key from a PKCS#8 PEM file.
pub struct PemSigner {
    key: EcdsaKeyPair,
    rng: SystemRandom,
}

/// DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte uncompressed point follows.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

impl PemSigner {
    pub fn from_pem_file(path: &Path) -> Result<Self, SignError> {
        let pem = read(path)?;
        let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| SignError::NoPrivateKey {
            path: path.to_path_buf(),
        })?;
        let pkcs8 = match der {
            PrivateKeyDer::Pkcs8(k) => k,
            PrivateKeyDer::Sec1(_) => {
                return Err(SignError::Sec1Key {
                    path: path.to_path_buf(),
                })
            }
            _ => {
                return Err(SignError::BadKey {
                    path: path.to_path_buf(),
                    expected: "ECDSA P-256",
                    reason: "it is an RSA key".into(),
                })
            }
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.secret_pkcs8_der(),
            &rng,
        )
        .map_err(|e| SignError::BadKey {
            path: path.to_path_buf(),
            expected: "ECDSA P-256",
            reason: e.to_string(),
        })?;
        Ok(PemSigner { key, rng })
    }

    /// Generate a new key; returns the signer and its PKCS#8 PEM.
    pub fn generate() -> Result<(Self, String), SignError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        let key = EcdsaKeyPair::from_pkcs8(
            &signature::ECDSA_P256_SHA256_ASN1_SIGNING,
            pkcs8.as_ref(),
            &rng,
        )
        .map_err(|e| SignError::Signing(e.to_string()))?;
        let pem = to_pem("PRIVATE KEY", pkcs8.as_ref());
        Ok((PemSigner { key, rng }, pem))
    }
}

impl BlobSigner for PemSigner {
    fn public_key_spki(&self) -> Vec<u8> {
        let mut v = P256_SPKI_PREFIX.to_vec();
        v.extend_from_slice(self.key.public_key().as_ref());
        v
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        self.key
            .sign(&self.rng, message)
            .map(|s| s.as_ref().to_vec())
            .map_err(|e| SignError::Signing(e.to_string()))
    }
}

/// A signer that runs an external command (a KMS or HSM client): the message arrives on its
/// standard input, and it prints the base64 DER ECDSA P-256/SHA-256 signature. The signature
/// is verified against `public_key` before it is used.
pub struct CommandSigner {
    pub command: String,
    pub public_key: PublicKey,
}

impl BlobSigner for CommandSigner {
    fn public_key_spki(&self) -> Vec<u8> {
        self.public_key.spki.clone()
    }

    fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let ext = |reason: String| SignError::External {
            command: self.command.clone(),
            reason,
        };
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&self.command)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| ext(format!("cannot start: {e}")))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(message)
                .map_err(|e| ext(format!("cannot write the message: {e}")))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| ext(format!("failed: {e}")))?;
        if !out.status.success() {
            return Err(ext(format!("exited with {}", out.status)));
        }
        let sig = decode_signature(&out.stdout)?;
        self.public_key.verify(message, &sig).map_err(|_| {
            ext(
                "returned a signature that does not verify against the configured public key"
                    .into(),
            )
        })?;
        Ok(sig)
    }
}

/// A public key for verification: ECDSA P-256 or RSA.
#[derive(Debug, Clone)]
pub struct PublicKey {
    pub spki: Vec<u8>,
    kind: PublicKeyKind,
}

#[derive(Debug, Clone)]
enum PublicKeyKind {
    EcdsaP256(Vec<u8>),
    Rsa(Vec<u8>),
}

const OID_EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_PRIME256V1: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

impl PublicKey {
    pub fn from_pem_file(path: &Path) -> Result<Self, SignError> {
        let pem = read(path)?;
        let spki =
            SubjectPublicKeyInfoDer::from_pem_slice(&pem).map_err(|_| SignError::NoPublicKey {
                path: path.to_path_buf(),
            })?;
        Self::from_spki(spki.as_ref())
    }

    pub fn from_spki(spki: &[u8]) -> Result<Self, SignError> {
        let (alg, params, key) = crate::der::spki_parts(spki)
            .ok_or(SignError::BadPublicKey("malformed SubjectPublicKeyInfo"))?;
        let kind = if alg == OID_EC_PUBLIC_KEY {
            if params != OID_PRIME256V1 {
                return Err(SignError::BadPublicKey("only the P-256 curve is supported"));
            }
            PublicKeyKind::EcdsaP256(key.to_vec())
        } else if alg == OID_RSA_ENCRYPTION {
            PublicKeyKind::Rsa(key.to_vec())
        } else {
            return Err(SignError::BadPublicKey("neither an EC nor an RSA key"));
        };
        Ok(PublicKey {
            spki: spki.to_vec(),
            kind,
        })
    }

    /// Verify an ASN.1 DER ECDSA P-256/SHA-256 or RSA PKCS#1 v1.5/SHA-256 signature.
    pub fn verify(&self, message: &[u8], sig: &[u8]) -> Result<(), SignError> {
        let res = match &self.kind {
            PublicKeyKind::EcdsaP256(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, point)
                    .verify(message, sig)
            }
            PublicKeyKind::Rsa(pkcs1) => {
                signature::UnparsedPublicKey::new(&signature::RSA_PKCS1_2048_8192_SHA256, pkcs1)
                    .verify(message, sig)
            }
        };
        res.map_err(|_| SignError::BadSignature)
    }

    pub fn to_pem(&self) -> String {
        to_pem("PUBLIC KEY", &self.spki)
    }
}

/// A cosign-style blob signature: base64 of the DER signature.
pub fn sign_blob(signer: &dyn BlobSigner, blob: &[u8]) -> Result<String, SignError> {
    let sig = signer.sign(blob)?;
    Ok(base64::engine::general_purpose::STANDARD.encode(sig))
}

/// Check a cosign-style blob signature (base64 DER, surrounding whitespace ignored).
pub fn verify_blob(key: &PublicKey, blob: &[u8], sig_b64: &[u8]) -> Result<(), SignError> {
    key.verify(blob, &decode_signature(sig_b64)?)
}

fn decode_signature(b64: &[u8]) -> Result<Vec<u8>, SignError> {
    let text: Vec<u8> = b64
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| SignError::SignatureEncoding)
}

/// An RSA key for systemd's signed PCR policies, from a PKCS#8 or PKCS#1 PEM file.
pub struct RsaSigner {
    key: RsaKeyPair,
}

impl RsaSigner {
    pub fn from_pem_file(path: &Path) -> Result<Self, SignError> {
        let pem = read(path)?;
        let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|_| SignError::NoPrivateKey {
            path: path.to_path_buf(),
        })?;
        let bad = |e: ring::error::KeyRejected| SignError::BadKey {
            path: path.to_path_buf(),
            expected: "RSA",
            reason: e.to_string(),
        };
        let key = match der {
            PrivateKeyDer::Pkcs8(k) => RsaKeyPair::from_pkcs8(k.secret_pkcs8_der()).map_err(bad)?,
            PrivateKeyDer::Pkcs1(k) => RsaKeyPair::from_der(k.secret_pkcs1_der()).map_err(bad)?,
            _ => {
                return Err(SignError::BadKey {
                    path: path.to_path_buf(),
                    expected: "RSA",
                    reason: "it is an EC key".into(),
                })
            }
        };
        Ok(RsaSigner { key })
    }

    /// The public key as PKCS#1 `RSAPublicKey` DER (what systemd's `pkfp` hashes).
    pub fn public_pkcs1(&self) -> &[u8] {
        self.key.public().as_ref()
    }

    /// The public key as SubjectPublicKeyInfo DER (the `.pcrpkey` PEM's contents).
    pub fn public_spki(&self) -> Vec<u8> {
        crate::der::rsa_spki(self.public_pkcs1())
    }

    /// RSASSA-PKCS1-v1_5 with SHA-256 over `message` (deterministic).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut sig = vec![0u8; self.key.public().modulus_len()];
        self.key
            .sign(
                &signature::RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                message,
                &mut sig,
            )
            .map_err(|e| SignError::Signing(e.to_string()))?;
        Ok(sig)
    }
}

/// PEM armor with 64-column base64.
pub fn to_pem(label: &str, der: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blob_signature_round_trip_and_tamper() {
        let (signer, _pem) = PemSigner::generate().unwrap();
        let key = PublicKey::from_spki(&signer.public_key_spki()).unwrap();
        let sig = sign_blob(&signer, b"measurements").unwrap();
        verify_blob(&key, b"measurements", sig.as_bytes()).unwrap();
        assert!(matches!(
            verify_blob(&key, b"measurementz", sig.as_bytes()),
            Err(SignError::BadSignature)
        ));
        assert!(matches!(
            verify_blob(&key, b"measurements", b"!!"),
            Err(SignError::SignatureEncoding)
        ));
    }
}
