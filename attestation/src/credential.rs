//! TPM2_MakeCredential in software (the verifier's half of credential activation), for an ECC
//! endorsement key made with the TCG default EK template (decrypt-only, restricted,
//! adminWithPolicy = PolicySecret(TPM_RH_ENDORSEMENT)).
//!
//! TPM 2.0 Part 1 §24 "Credential Protection" and Annex C.6.4 (ECC secret sharing):
//! * an ephemeral key pair (d_e, Q_e) on the EK's curve; Z = x(d_e · Q_ek) (ECDH);
//! * seed = KDFe(nameAlg, Z, "IDENTITY", x(Q_e), x(Q_ek), bits(nameAlg)) (Part 1 §11.4.10.3);
//! * symKey = KDFa(nameAlg, seed, "STORAGE", Name(AK), "", bits(symmetric)) (§11.4.10.2);
//! * encIdentity = AES-CFB(symKey, IV = 0, TPM2B_DIGEST(credential));
//! * HMACkey = KDFa(nameAlg, seed, "INTEGRITY", "", "", bits(nameAlg));
//! * outerHMAC = HMAC(nameAlg, HMACkey, encIdentity || Name(AK));
//! * credentialBlob (TPM2B_ID_OBJECT contents) = TPM2B_DIGEST(outerHMAC) || encIdentity, and the
//!   encrypted secret (TPM2B_ENCRYPTED_SECRET contents) = TPMS_ECC_POINT(Q_e).
//!
//! Only a TPM holding the EK's private key can recover the seed, and its TPM2_ActivateCredential
//! releases the credential only if an object with the name Name(AK) is loaded in it (and the
//! caller can authorize it in the ADMIN role). The EK must be restricted: an unrestricted
//! decryption EK (swtpm `--allow-signing` makes one) computes Z for anyone with TPM2_ECDH_ZGen,
//! and its credentials could then be decrypted in software for any name.
//!
//! The EK template is the TCG default for its curve (TCG EK Credential Profile 2.x: P-256 with
//! SHA-256 and AES-128-CFB, P-384 with SHA-384 and AES-256-CFB; swtpm's ECC EK is the latter):
//! the EK certificate gives the curve and the point, the profile gives the rest.
//!
//! RSA EKs are refused: their credential protection needs RSA-OAEP encryption of the seed,
//! which ring (the project's only crypto provider) does not offer; rather than a second RSA
//! implementation, an ECC EK is required (swtpm and most current TPMs have one).
//!
//! ring provides ECDH, HMAC and the digests; AES-CFB comes from RustCrypto's `aes` and
//! `cfb-mode` (ring exposes no raw block cipher).

use ring::agreement;
use ring::digest;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// TPM_ALG_SHA256 / TPM_ALG_SHA384.
const ALG_SHA256: u16 = 0x000b;
const ALG_SHA384: u16 = 0x000c;

/// Why a credential could not be made or checked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    #[error("the EK is an RSA key: credential activation needs RSA-OAEP encryption, which ring does not provide; an ECC EK (P-256 or P-384) is required")]
    RsaEk,
    #[error("EK public key: {0}")]
    EkKey(String),
    #[error("AK name: {0}")]
    AkName(String),
    #[error("credential: {0}")]
    Credential(String),
    #[error("random numbers: the system RNG failed")]
    Rng,
    #[error("ECDH with the EK's point failed (not a point on the curve)")]
    Ecdh,
}

/// The EK's curve and what the TCG default template pairs with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EkCurve {
    /// TCG template L-2: nameAlg SHA-256, AES-128-CFB.
    P256,
    /// TCG template H-3 (swtpm's ECC EK): nameAlg SHA-384, AES-256-CFB.
    P384,
}

impl EkCurve {
    fn ecdh(self) -> &'static agreement::Algorithm {
        match self {
            EkCurve::P256 => &agreement::ECDH_P256,
            EkCurve::P384 => &agreement::ECDH_P384,
        }
    }
    fn coordinate_len(self) -> usize {
        match self {
            EkCurve::P256 => 32,
            EkCurve::P384 => 48,
        }
    }
    fn digest(self) -> &'static digest::Algorithm {
        match self {
            EkCurve::P256 => &digest::SHA256,
            EkCurve::P384 => &digest::SHA384,
        }
    }
    fn hmac(self) -> hmac::Algorithm {
        match self {
            EkCurve::P256 => hmac::HMAC_SHA256,
            EkCurve::P384 => hmac::HMAC_SHA384,
        }
    }
    fn sym_key_bytes(self) -> usize {
        match self {
            EkCurve::P256 => 16,
            EkCurve::P384 => 32,
        }
    }
}

/// An ECC endorsement key: curve and uncompressed point (0x04 || x || y), as in the EK
/// certificate's SubjectPublicKeyInfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EkPublic {
    pub curve: EkCurve,
    pub point: Vec<u8>,
}

impl EkPublic {
    /// From a certificate's SPKI: algorithm OID, parameters OID (for EC), key bytes.
    pub fn from_spki(
        alg_oid: &str,
        curve_oid: Option<&str>,
        key: &[u8],
    ) -> Result<Self, CredentialError> {
        match alg_oid {
            "1.2.840.10045.2.1" => {}
            "1.2.840.113549.1.1.1" => return Err(CredentialError::RsaEk),
            other => {
                return Err(CredentialError::EkKey(format!(
                    "algorithm {other} is not EC"
                )))
            }
        }
        let curve = match curve_oid {
            Some("1.2.840.10045.3.1.7") => EkCurve::P256,
            Some("1.3.132.0.34") => EkCurve::P384,
            Some(other) => {
                return Err(CredentialError::EkKey(format!(
                    "curve {other} is neither P-256 nor P-384"
                )))
            }
            None => return Err(CredentialError::EkKey("no curve parameter".into())),
        };
        if key.len() != 1 + 2 * curve.coordinate_len() || key[0] != 0x04 {
            return Err(CredentialError::EkKey(format!(
                "not an uncompressed {curve:?} point ({} bytes)",
                key.len()
            )));
        }
        Ok(EkPublic {
            curve,
            point: key.to_vec(),
        })
    }

    fn x(&self) -> &[u8] {
        &self.point[1..1 + self.curve.coordinate_len()]
    }
}

/// What the verifier sends: TPM2_ActivateCredential's `credentialBlob` (TPM2B_ID_OBJECT
/// contents) and `secret` (TPM2B_ENCRYPTED_SECRET contents: a TPMS_ECC_POINT).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialChallenge {
    #[serde(with = "hex::serde")]
    pub id_object: Vec<u8>,
    #[serde(with = "hex::serde")]
    pub encrypted_secret: Vec<u8>,
}

/// KDFa (Part 1 §11.4.10.2): HMAC in counter mode over
/// `[i]32 || label || 0x00 || context_u || context_v || [bits]32`.
pub fn kdfa(
    alg: hmac::Algorithm,
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let key = hmac::Key::new(alg, key);
    let want = (bits as usize).div_ceil(8);
    let mut out = Vec::with_capacity(want + 64);
    let mut i: u32 = 1;
    while out.len() < want {
        let mut ctx = hmac::Context::with_key(&key);
        ctx.update(&i.to_be_bytes());
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(context_u);
        ctx.update(context_v);
        ctx.update(&bits.to_be_bytes());
        out.extend_from_slice(ctx.sign().as_ref());
        i += 1;
    }
    out.truncate(want);
    out
}

/// KDFe (Part 1 §11.4.10.3): hash in counter mode over
/// `[i]32 || Z || label || 0x00 || party_u || party_v`.
pub fn kdfe(
    alg: &'static digest::Algorithm,
    z: &[u8],
    label: &str,
    party_u: &[u8],
    party_v: &[u8],
    bits: u32,
) -> Vec<u8> {
    let want = (bits as usize).div_ceil(8);
    let mut out = Vec::with_capacity(want + 64);
    let mut i: u32 = 1;
    while out.len() < want {
        let mut ctx = digest::Context::new(alg);
        ctx.update(&i.to_be_bytes());
        ctx.update(z);
        ctx.update(label.as_bytes());
        ctx.update(&[0]);
        ctx.update(party_u);
        ctx.update(party_v);
        out.extend_from_slice(ctx.finish().as_ref());
        i += 1;
    }
    out.truncate(want);
    out
}

fn tpm2b(b: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(2 + b.len());
    v.extend_from_slice(&(b.len() as u16).to_be_bytes());
    v.extend_from_slice(b);
    v
}

/// The TPM name of an object from its TPMT_PUBLIC (nameAlg || H_nameAlg(TPMT_PUBLIC)); SHA-256
/// and SHA-384 name algorithms.
pub fn object_name(public_area: &[u8]) -> Result<Vec<u8>, CredentialError> {
    let alg = public_area
        .get(2..4)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
        .ok_or_else(|| CredentialError::AkName("public area shorter than 4 bytes".into()))?;
    let d = match alg {
        ALG_SHA256 => &digest::SHA256,
        ALG_SHA384 => &digest::SHA384,
        other => {
            return Err(CredentialError::AkName(format!(
                "nameAlg {other:#06x} is neither SHA-256 nor SHA-384"
            )))
        }
    };
    let mut name = alg.to_be_bytes().to_vec();
    name.extend_from_slice(digest::digest(d, public_area).as_ref());
    Ok(name)
}

/// TPM2_MakeCredential(ek, credential, ak_name) with a fresh ephemeral key.
pub fn make_credential(
    ek: &EkPublic,
    ak_name: &[u8],
    credential: &[u8],
) -> Result<CredentialChallenge, CredentialError> {
    let curve = ek.curve;
    let dlen = curve.digest().output_len();
    if credential.is_empty() || credential.len() > dlen {
        return Err(CredentialError::Credential(format!(
            "{} bytes; 1..={dlen} fit the EK's nameAlg",
            credential.len()
        )));
    }
    if ak_name.len() < 2 {
        return Err(CredentialError::AkName(
            "shorter than its algorithm id".into(),
        ));
    }
    let rng = SystemRandom::new();
    let eph = agreement::EphemeralPrivateKey::generate(curve.ecdh(), &rng)
        .map_err(|_| CredentialError::Rng)?;
    let q_e = eph.compute_public_key().map_err(|_| CredentialError::Rng)?;
    let q_e = q_e.as_ref();
    let n = curve.coordinate_len();
    let (qe_x, qe_y) = (&q_e[1..1 + n], &q_e[1 + n..1 + 2 * n]);
    let bits = (dlen * 8) as u32;
    let seed = agreement::agree_ephemeral(
        eph,
        &agreement::UnparsedPublicKey::new(curve.ecdh(), &ek.point),
        |z| kdfe(curve.digest(), z, "IDENTITY", qe_x, ek.x(), bits),
    )
    .map_err(|_| CredentialError::Ecdh)?;
    Ok(protect(curve, &seed, ak_name, credential, qe_x, qe_y))
}

/// The symmetric and integrity protection of `credential` under `seed` (the part of
/// MakeCredential after the seed is shared).
fn protect(
    curve: EkCurve,
    seed: &[u8],
    ak_name: &[u8],
    credential: &[u8],
    qe_x: &[u8],
    qe_y: &[u8],
) -> CredentialChallenge {
    let sym_bits = (curve.sym_key_bytes() * 8) as u32;
    let sym_key = kdfa(curve.hmac(), seed, "STORAGE", ak_name, &[], sym_bits);
    let mut enc_identity = tpm2b(credential);
    aes_cfb_encrypt(&sym_key, &mut enc_identity);
    let hmac_bits = (curve.digest().output_len() * 8) as u32;
    let hmac_key = kdfa(curve.hmac(), seed, "INTEGRITY", &[], &[], hmac_bits);
    let mut mac = hmac::Context::with_key(&hmac::Key::new(curve.hmac(), &hmac_key));
    mac.update(&enc_identity);
    mac.update(ak_name);
    let mut id_object = tpm2b(mac.sign().as_ref());
    id_object.extend_from_slice(&enc_identity);
    let mut encrypted_secret = tpm2b(qe_x);
    encrypted_secret.extend_from_slice(&tpm2b(qe_y));
    CredentialChallenge {
        id_object,
        encrypted_secret,
    }
}

/// AES-CFB (full-block feedback), zero IV, as TPM 2.0 uses it; 128- or 256-bit key.
fn aes_cfb_encrypt(key: &[u8], buf: &mut [u8]) {
    use cfb_mode::cipher::{AsyncStreamCipher, KeyIvInit};
    let iv = [0u8; 16];
    match key.len() {
        16 => cfb_mode::Encryptor::<aes::Aes128>::new(key.into(), &iv.into()).encrypt(buf),
        _ => cfb_mode::Encryptor::<aes::Aes256>::new(key.into(), &iv.into()).encrypt(buf),
    }
}

/// A fresh random 32-byte credential (fits every supported EK nameAlg).
pub fn fresh_credential() -> Result<[u8; 32], CredentialError> {
    let mut c = [0u8; 32];
    SystemRandom::new()
        .fill(&mut c)
        .map_err(|_| CredentialError::Rng)?;
    Ok(c)
}

/// Constant-time comparison of the returned credential with the one sent.
pub fn credential_matches(sent: &[u8], returned: &[u8]) -> bool {
    // Every byte is looked at whatever the first difference (ring's constant-time helper is
    // deprecated for outside use).
    let diff = sent
        .iter()
        .zip(returned)
        .fold(0u8, |acc, (a, b)| acc | std::hint::black_box(a ^ b));
    sent.len() == returned.len() && diff == 0
}

/// An acceptance's missing piece: the challenge sent to the peer and the credential that must
/// come back. Made by [`crate::ek::EkCertified`]; its fields are private.
#[derive(Clone, PartialEq, Eq)]
pub struct Pending {
    challenge: CredentialChallenge,
    credential: [u8; 32],
    ak_spki: Vec<u8>,
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending(credential activation)")
    }
}

impl Pending {
    /// A fresh credential for the AK named `ak_name` (whose key is `ak_spki`), encrypted to `ek`.
    pub fn new(ek: &EkPublic, ak_name: &[u8], ak_spki: &[u8]) -> Result<Pending, CredentialError> {
        let credential = fresh_credential()?;
        Ok(Pending {
            challenge: make_credential(ek, ak_name, &credential)?,
            credential,
            ak_spki: ak_spki.to_vec(),
        })
    }

    pub fn challenge(&self) -> &CredentialChallenge {
        &self.challenge
    }

    /// `Ok` iff `returned` is the credential (constant-time comparison).
    pub fn complete(&self, returned: &[u8]) -> Result<(), String> {
        if credential_matches(&self.credential, returned) {
            Ok(())
        } else {
            Err("the returned credential is not the one sent: the AK is not in the TPM whose EK certificate was presented".into())
        }
    }
}

/// The credential-activation messages of the join protocol: after the attested-TLS handshake
/// the verifier sends a [`ActivationMessage::Challenge`] line (only when the peer's AK is
/// trusted through an EK certificate) and the peer answers with a
/// [`ActivationMessage::Credential`] line, before anything else is served.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "activation", rename_all = "kebab-case", deny_unknown_fields)]
pub enum ActivationMessage {
    Challenge(CredentialChallenge),
    Credential {
        #[serde(with = "hex::serde")]
        credential: Vec<u8>,
    },
}

/// An acceptance split by whether it still needs credential activation.
#[derive(Debug)]
pub enum Settled {
    /// Nothing pending: the AK is trusted without activation.
    Ready(crate::verify::Accepted),
    /// The AK is trusted through an EK certificate: only [`PendingAcceptance::finish`] with the
    /// returned credential gives the [`crate::verify::Accepted`].
    Pending(PendingAcceptance),
}

/// An acceptance that cannot be used until the peer activated the credential.
#[derive(Debug)]
pub struct PendingAcceptance {
    accepted: crate::verify::Accepted,
    pending: Pending,
}

impl PendingAcceptance {
    pub fn challenge(&self) -> &CredentialChallenge {
        self.pending.challenge()
    }

    /// SHA-256 of the AK's SPKI, hex (for records before the acceptance is final).
    pub fn ak_fingerprint(&self) -> String {
        hex::encode(digest::digest(&digest::SHA256, &self.pending.ak_spki))
    }

    /// The acceptance, if `credential` is the one sent.
    pub fn finish(self, credential: &[u8]) -> Result<crate::verify::Accepted, String> {
        self.pending.complete(credential)?;
        Ok(self.accepted)
    }
}

/// Splits off an acceptance's pending activation ([`crate::verify::Accepted::ek_activation`]).
pub fn settle(mut accepted: crate::verify::Accepted) -> Settled {
    match accepted.ek_activation.take() {
        None => Settled::Ready(accepted),
        Some(pending) => Settled::Pending(PendingAcceptance { accepted, pending }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The KDFs are checked end to end against swtpm's TPM2_ActivateCredential (tests/ek.rs);
    /// here: lengths and that every input matters.
    #[test]
    fn kdfs_give_the_requested_length_and_depend_on_every_input() {
        let a = kdfa(hmac::HMAC_SHA256, b"k", "STORAGE", b"n", &[], 256);
        assert_eq!(a.len(), 32);
        assert_eq!(
            kdfa(hmac::HMAC_SHA256, b"k", "STORAGE", b"n", &[], 128).len(),
            16
        );
        assert_ne!(
            a,
            kdfa(hmac::HMAC_SHA256, b"k", "INTEGRITY", b"n", &[], 256)
        );
        assert_ne!(a, kdfa(hmac::HMAC_SHA256, b"k", "STORAGE", b"m", &[], 256));
        // The bit count is part of the input: a 128-bit key is not a prefix of a 256-bit one.
        assert_ne!(
            a[..16],
            kdfa(hmac::HMAC_SHA256, b"k", "STORAGE", b"n", &[], 128)[..]
        );
        let e = kdfe(&digest::SHA384, b"z", "IDENTITY", b"u", b"v", 384);
        assert_eq!(e.len(), 48);
        assert_ne!(e, kdfe(&digest::SHA384, b"z", "IDENTITY", b"v", b"u", 384));
    }

    #[test]
    fn rsa_and_odd_keys_are_refused_with_a_reason() {
        let e = EkPublic::from_spki("1.2.840.113549.1.1.1", None, &[0; 10]).unwrap_err();
        assert_eq!(e, CredentialError::RsaEk);
        assert!(e.to_string().contains("RSA-OAEP"));
        assert!(EkPublic::from_spki("1.2.840.10045.2.1", Some("1.3.132.0.35"), &[4; 133]).is_err());
        assert!(EkPublic::from_spki("1.2.840.10045.2.1", Some("1.3.132.0.34"), &[4; 65]).is_err());
    }

    #[test]
    fn a_challenge_has_the_tpm_layout() {
        let rng = SystemRandom::new();
        let k = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P384, &rng).unwrap();
        let ek = EkPublic {
            curve: EkCurve::P384,
            point: k.compute_public_key().unwrap().as_ref().to_vec(),
        };
        let name = [0u8, 0x0b]
            .iter()
            .chain(&[7u8; 32])
            .copied()
            .collect::<Vec<_>>();
        let c = make_credential(&ek, &name, &[1; 32]).unwrap();
        // TPM2B_DIGEST(48-byte HMAC) || encrypted TPM2B_DIGEST(32-byte credential).
        assert_eq!(c.id_object.len(), 2 + 48 + 2 + 32);
        assert_eq!(&c.id_object[..2], &[0, 48]);
        assert_eq!(c.encrypted_secret.len(), 2 + 48 + 2 + 48);
        // Fresh ephemeral key each time.
        assert_ne!(c, make_credential(&ek, &name, &[1; 32]).unwrap());
        assert!(make_credential(&ek, &name, &[1; 49]).is_err());
        assert!(credential_matches(&[1, 2], &[1, 2]));
        assert!(!credential_matches(&[1, 2], &[1, 3]));
        assert!(!credential_matches(&[1, 2], &[1]));
    }
}
