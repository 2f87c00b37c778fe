//! The TPM-sealed key source: a random 64-byte disk key sealed to this node's TPM under a
//! **signed PCR 11 policy**, and anchored in the TPM's NV memory so a planted header is refused.
//!
//! # Sealing (first format)
//!
//! The sealed object (a keyed-hash object under the owner hierarchy's storage primary key, ECC
//! P-256, re-created from the owner seed each boot, never persisted) has the policy
//! `PolicyAuthorize(keyName, policyRef = "nacre state disk")` ([`POLICY_REF`]), where `keyName`
//! is the TPM name of the image's PCR-signing RSA public key: systemd's scheme
//! (`.pcrpkey`/`.pcrsig`) with a policyRef of its own, so that signatures made for systemd's
//! uses (empty policyRef, every phase) never open the disk. No literal PCR value is
//! in the object, so an image update whose PCR 11 values are signed by the same key keeps the
//! disk; an image signed by another key cannot unseal it.
//!
//! # Unsealing (every boot, also right after sealing)
//!
//! 1. The public key comes from the **measured** image (`/etc/nacre/tpm2-pcr-public-key.pem` on
//!    the dm-verity root by default, `[state_disk] pcr_public_key`), loaded with
//!    `TPM2_LoadExternal` (owner hierarchy, so the ticket is usable).
//! 2. The signed policy is systemd's `tpm2-pcr-signature.json` (what `nacre-measure export
//!    pcrsig` writes): it signs PCR 11 and so cannot live in anything PCR 11 covers; it is read
//!    from an unmeasured place (`[state_disk] pcr_signature`; by default QEMU's fw_cfg item
//!    `opt/nacre/tpm2-pcr-signature.json`). Its content is not trusted: the TPM checks it.
//! 3. In a policy session: `PolicyPCR(sha256:11)`, `PolicyGetDigest` gives the policy of PCR 11
//!    *as it is now*; the entry whose `pol` equals it (and whose `pkfp` is the key's) is checked by
//!    `TPM2_VerifySignature` (RSASSA-PKCS1-v1_5 SHA-256 over `SHA256(pol || policyRef)`), whose
//!    ticket feeds `PolicyAuthorize`. No entry for the current PCR 11, or a signature by another
//!    key: a fatal error naming it, nothing written.
//! 4. **Ownership**: the TPM name of the loaded sealed object must equal the content of the NV
//!    index [`ANCHOR_INDEX`], whose public area must be exactly nacre's (policy-written only, under
//!    the same signed policy; readable without auth). Otherwise the header is refused as planted.
//! 5. `TPM2_Unseal` in the authorized session, salted with the primary key, response encrypted.
//!
//! # What an attacker who can create TPM objects and write the disk can do
//!
//! (but does not run a signed image at the phase the disk is opened, `sysinit`)
//! - Create an object under the same public policy with a key they know and plant it in a
//!   header: its name is not in the anchor → refused ("not anchored"). Writing the anchor needs the
//!   signed policy satisfied, i.e. PCR 11 at a signed value.
//! - Define the anchor index before nacre does (the owner auth is empty on these nodes), with
//!   another policy or attributes: nacre compares the index's whole public area and refuses it.
//!   With nacre's exact public area they cannot write it (same policy). They can undefine it (an
//!   owner index can always be deleted by the owner): the next boot refuses the disk (denial of
//!   service, which an attacker who can write the disk has anyway), it never trusts it.
//! - Replay an older header of this node: its object is the anchored one only if it is the
//!   current disk's; otherwise refused.
//! - Out of reach here: an attacker who can bring PCR 11 to a signed value. PCR 11 is extended by
//!   systemd-stub (UKI sections) and nacre-init's phases; code that boots *without* the stub
//!   (another boot loader, or QEMU direct kernel boot as in the tests) can extend the same digests
//!   and satisfy any signed PCR 11 policy — as with systemd's own `.pcrsig`. Binding PCR 7
//!   (Secure Boot state) in addition closes that on Secure Boot nodes; not done yet.
//! - Sign only the phase the disk is opened at (`sysinit`): a signature that also approves
//!   `ready` would let the node's workload (PCR 11 at `ready`) unseal the key and rewrite the
//!   anchor. `nacre-measure export pcrsig --state-disk` signs just that entry with
//!   [`POLICY_REF`]; systemd's signatures cannot serve (their policyRef is empty). The key source refuses
//!   a signature file that signs PCR 11 as it will be after the events the caller names
//!   ([`TpmSealed::forbid_after`]: nacre-init names `ready`).
//!
//! The literal-PCR token of earlier versions (`nacre-tpm2-sealed`) is refused with a clear error
//! (no released users): such a disk must be re-created.
//!
//! tss-esapi 7.7 with the device TCTI (`/dev/tpmrm0`): the TCTI loader dlopens
//! `libtss2-tcti-device.so.0`, which the root image must ship.

use crate::keysource::{KeyError, KeySource, DISK_KEY_LEN};
use crate::token::{TpmToken, SEALED_PCR, TPM_TOKEN_TYPE};
use serde_json::{Map, Value};
use std::path::PathBuf;
use std::str::FromStr;
use tss_esapi::attributes::{
    NvIndexAttributesBuilder, ObjectAttributesBuilder, SessionAttributesBuilder,
};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, NvIndexHandle, NvIndexTpmHandle, ObjectHandle, TpmHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::key_bits::RsaKeyBits;
use tss_esapi::interface_types::resource_handles::{Hierarchy, NvAuth, Provision};
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, EccPoint, KeyedHashScheme, MaxNvBuffer, Name, Nonce, NvPublic, NvPublicBuilder,
    PcrSelectionListBuilder, PcrSlot, Private, Public, PublicBuilder, PublicEccParametersBuilder,
    PublicKeyRsa, PublicKeyedHashParameters, PublicRsaParametersBuilder, RsaExponent, RsaScheme,
    RsaSignature, SensitiveData, Signature, SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;
use zeroize::Zeroizing;

const NAME: &str = "tpm-sealed";
pub const TPM_DEVICE: &str = "/dev/tpmrm0";
/// The PCR-signing public key on the verified root (the image's, measured with it).
pub const DEFAULT_PUBLIC_KEY: &str = "/etc/nacre/tpm2-pcr-public-key.pem";
/// The signed PCR policy: QEMU's fw_cfg item `opt/nacre/tpm2-pcr-signature.json` (outside
/// everything PCR 11 covers).
pub const DEFAULT_SIGNATURE: &str =
    "/sys/firmware/qemu_fw_cfg/by_name/opt/nacre/tpm2-pcr-signature.json/raw";
/// The NV index holding the TPM name of this node's sealed object (owner range).
pub const ANCHOR_INDEX: u32 = 0x0181_4E43;
/// TPM name of a SHA-256 object: 2-byte algorithm + 32-byte digest.
const NAME_LEN: usize = 34;
/// TPM_CC_PolicyAuthorize.
const TPM_CC_POLICY_AUTHORIZE: u32 = 0x0000_016A;
/// The policyRef of the sealed object's `PolicyAuthorize`: a signature approves a PCR policy
/// for nacre's state disk only if it signs `pol || POLICY_REF` (`nacre-measure export pcrsig
/// --state-disk`, which signs the `sysinit` value alone). systemd's signatures (empty
/// policyRef), whatever phases they sign, never open it: a `ready` one would let the workload
/// unseal the key.
pub const POLICY_REF: &[u8] = b"nacre state disk";

fn fail(what: &str, e: impl std::fmt::Display) -> KeyError {
    KeyError::Failed {
        source_name: NAME,
        reason: format!("{what}: {e}"),
    }
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut c = ring::digest::Context::new(&ring::digest::SHA256);
    for p in parts {
        c.update(p);
    }
    c.finish().as_ref().to_vec()
}

/// The signed PCR policy and the public key that signs it, as read from their files.
#[derive(Debug, Clone)]
pub struct SignedPolicy {
    modulus: Vec<u8>,
    exponent: u32,
    /// sha256 entries with `pcrs = [11]`: (pol, sig).
    entries: Vec<(Vec<u8>, Vec<u8>)>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SigEntry {
    pcrs: Vec<u32>,
    pkfp: String,
    pol: String,
    sig: String,
}

impl SignedPolicy {
    /// From the public key PEM (SubjectPublicKeyInfo, as `.pcrpkey`) and systemd's
    /// `tpm2-pcr-signature.json`. Entries for other banks, PCRs or keys are ignored; none left
    /// is an error.
    pub fn parse(public_pem: &[u8], signature_json: &[u8]) -> Result<SignedPolicy, String> {
        let pem = std::str::from_utf8(public_pem).map_err(|_| "public key: not PEM text")?;
        let b64: String = pem
            .lines()
            .map(str::trim)
            .skip_while(|l| *l != "-----BEGIN PUBLIC KEY-----")
            .skip(1)
            .take_while(|l| *l != "-----END PUBLIC KEY-----")
            .collect();
        use base64::Engine;
        let spki = base64::engine::general_purpose::STANDARD
            .decode(b64.as_bytes())
            .map_err(|e| format!("public key: no PUBLIC KEY PEM block ({e})"))?;
        let (pkcs1, modulus, exponent) =
            rsa_from_spki(&spki).map_err(|e| format!("public key: {e}"))?;
        let pkfp = hex::encode(sha256(&[&pkcs1]));
        let doc: std::collections::BTreeMap<String, serde_json::Value> =
            serde_json::from_slice(signature_json)
                .map_err(|e| format!("signature file: not systemd's PCR signature JSON ({e})"))?;
        let list = doc.get("sha256").ok_or("signature file: no sha256 bank")?;
        let list: Vec<SigEntry> = serde_json::from_value(list.clone())
            .map_err(|e| format!("signature file: sha256: {e}"))?;
        let mut entries = Vec::new();
        let mut other_keys = 0;
        for e in list {
            if e.pcrs != [SEALED_PCR] {
                continue;
            }
            if !e.pkfp.eq_ignore_ascii_case(&pkfp) {
                other_keys += 1;
                continue;
            }
            let pol = hex::decode(&e.pol).map_err(|_| "signature file: pol is not hex")?;
            let sig = base64::engine::general_purpose::STANDARD
                .decode(e.sig.as_bytes())
                .map_err(|_| "signature file: sig is not base64")?;
            if pol.len() != 32 || sig.is_empty() || sig.len() > 512 {
                return Err("signature file: an entry of the wrong size".into());
            }
            entries.push((pol, sig));
        }
        if entries.is_empty() {
            return Err(format!(
                "signature file: no sha256 PCR {SEALED_PCR} entry signed by the image's key \
                 (pkfp {pkfp}; {other_keys} entries by other keys)"
            ));
        }
        Ok(SignedPolicy {
            modulus,
            exponent,
            entries,
        })
    }

    /// The TPM public area of the key as LoadExternal takes it.
    fn public(&self) -> Result<Public, KeyError> {
        let bits = match self.modulus.len() * 8 {
            2048 => RsaKeyBits::Rsa2048,
            3072 => RsaKeyBits::Rsa3072,
            4096 => RsaKeyBits::Rsa4096,
            n => return Err(fail("PCR public key", format!("RSA-{n} is not supported"))),
        };
        let attrs = ObjectAttributesBuilder::new()
            .with_sign_encrypt(true)
            .with_decrypt(true)
            .with_user_with_auth(true)
            .build()
            .map_err(|e| fail("PCR public key attributes", e))?;
        let params = PublicRsaParametersBuilder::new()
            .with_scheme(RsaScheme::Null)
            .with_key_bits(bits)
            // 65537 as 0 (the TPM's default exponent, which every TPM takes; the key's name, and
            // so the sealed object's policy, depends on this encoding).
            .with_exponent(if self.exponent == 65537 {
                RsaExponent::default()
            } else {
                RsaExponent::create(self.exponent).map_err(|e| fail("PCR public key", e))?
            })
            .with_symmetric(SymmetricDefinitionObject::Null)
            .with_is_signing_key(true)
            .with_is_decryption_key(true)
            .with_restricted(false)
            .build()
            .map_err(|e| fail("PCR public key parameters", e))?;
        PublicBuilder::new()
            .with_public_algorithm(PublicAlgorithm::Rsa)
            .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
            .with_object_attributes(attrs)
            .with_rsa_parameters(params)
            .with_rsa_unique_identifier(
                PublicKeyRsa::try_from(self.modulus.clone())
                    .map_err(|e| fail("PCR public key modulus", e))?,
            )
            .build()
            .map_err(|e| fail("PCR public key", e))
    }
}

/// A minimal DER reader: (tag, content, rest).
fn der(b: &[u8]) -> Result<(u8, &[u8], &[u8]), &'static str> {
    let (&tag, b) = b.split_first().ok_or("truncated DER")?;
    let (&l0, mut b) = b.split_first().ok_or("truncated DER")?;
    let len = if l0 < 0x80 {
        l0 as usize
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 2 || b.len() < n {
            return Err("bad DER length");
        }
        let mut l = 0usize;
        for &x in &b[..n] {
            l = (l << 8) | x as usize;
        }
        b = &b[n..];
        l
    };
    if b.len() < len {
        return Err("truncated DER");
    }
    Ok((tag, &b[..len], &b[len..]))
}

/// SubjectPublicKeyInfo (rsaEncryption) → (PKCS#1 RSAPublicKey DER, modulus, exponent).
fn rsa_from_spki(spki: &[u8]) -> Result<(Vec<u8>, Vec<u8>, u32), &'static str> {
    const RSA_OID: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
    let (t, seq, _) = der(spki)?;
    let (ta, alg, rest) = der(seq)?;
    let (tb, bits, _) = der(rest)?;
    let (to, oid, _) = der(alg)?;
    if t != 0x30 || ta != 0x30 || tb != 0x03 || to != 0x06 || oid != RSA_OID {
        return Err("not an RSA SubjectPublicKeyInfo");
    }
    let pkcs1 = bits.strip_prefix(&[0u8]).ok_or("bad BIT STRING")?;
    let (tk, key, _) = der(pkcs1)?;
    let (tn, n, rest) = der(key)?;
    let (te, e, _) = der(rest)?;
    if tk != 0x30 || tn != 0x02 || te != 0x02 || e.is_empty() || e.len() > 5 {
        return Err("not an RSAPublicKey");
    }
    let n = n.strip_prefix(&[0u8]).unwrap_or(n);
    let e = e.iter().fold(0u64, |a, &x| (a << 8) | x as u64);
    let e = u32::try_from(e).map_err(|_| "RSA exponent too large")?;
    Ok((pkcs1.to_vec(), n.to_vec(), e))
}

/// The PolicyPCR digest of sha256 PCR 11 = `value` on a fresh session (systemd's `pol`).
fn policy_pcr11(value: &[u8]) -> Vec<u8> {
    const TPM_CC_POLICY_PCR: u32 = 0x0000_017f;
    let select = [0u8, 0x08, 0]; // PCR 11
    sha256(&[
        &[0u8; 32],
        &TPM_CC_POLICY_PCR.to_be_bytes(),
        &1u32.to_be_bytes(),
        &0x000bu16.to_be_bytes(),
        &[3],
        &select,
        &sha256(&[value]),
    ])
}

/// The policy digest of `PolicyAuthorize(keyName, POLICY_REF)` on a fresh SHA-256 session:
/// H(H(0^32 || TPM_CC_PolicyAuthorize || keyName) || policyRef).
fn authorize_policy(key_name: &[u8]) -> Vec<u8> {
    let inner = sha256(&[&[0u8; 32], &TPM_CC_POLICY_AUTHORIZE.to_be_bytes(), key_name]);
    sha256(&[&inner, POLICY_REF])
}

pub struct TpmSealed {
    /// The TCTI configuration: `device:/dev/tpmrm0` on a node; `swtpm:host=...,port=...` in
    /// host tests.
    tcti: String,
    public_key: PathBuf,
    signature: PathBuf,
    policy: Option<SignedPolicy>,
    /// Digests whose extension of PCR 11 (as it is now) must not be signed.
    forbidden_after: Vec<Vec<u8>>,
    stored: Option<TpmToken>,
    created: Option<TpmToken>,
}

impl TpmSealed {
    /// On a node: `/dev/tpmrm0`, the key and signature at the given paths (read when the key is
    /// needed).
    pub fn new(public_key: PathBuf, signature: PathBuf) -> TpmSealed {
        TpmSealed {
            tcti: format!("device:{TPM_DEVICE}"),
            public_key,
            signature,
            policy: None,
            forbidden_after: Vec::new(),
            stored: None,
            created: None,
        }
    }

    /// Another TPM (host tests: `swtpm:host=...,port=...`) and an already parsed policy.
    pub fn with_tcti(tcti: &str, policy: SignedPolicy) -> TpmSealed {
        TpmSealed {
            tcti: tcti.into(),
            public_key: PathBuf::new(),
            signature: PathBuf::new(),
            policy: Some(policy),
            forbidden_after: Vec::new(),
            stored: None,
            created: None,
        }
    }

    /// SHA-256 event digests the node extends into PCR 11 after the disk is open (`ready`):
    /// a signature file that signs PCR 11 after one of them (from its value now) is refused, as
    /// it would let what runs then (the workload) unseal the key.
    pub fn forbid_after(&mut self, digests: Vec<Vec<u8>>) {
        self.forbidden_after = digests;
    }

    /// Refuse a policy that signs a PCR 11 value reachable after the disk is open.
    fn check_forbidden(&self, ctx: &mut Context, p: &SignedPolicy) -> Result<(), KeyError> {
        if self.forbidden_after.is_empty() {
            return Ok(());
        }
        let sel = pcr_selection()?;
        let (_, _, values) = ctx
            .execute_without_session(|c| c.pcr_read(sel))
            .map_err(|e| fail("reading PCR 11", e))?;
        let now = values
            .value()
            .first()
            .ok_or_else(|| fail("reading PCR 11", "no value"))?
            .value()
            .to_vec();
        for d in &self.forbidden_after {
            let later = sha256(&[&now, d]);
            let pol = policy_pcr11(&later);
            if p.entries.iter().any(|(e, _)| *e == pol) {
                return Err(fail(
                    "signature file",
                    format!(
                        "it also signs PCR 11 as it is after the disk is open (policy {}): \
                         what runs then could unseal the disk key; sign only the phase the \
                         disk is opened at",
                        hex::encode(pol)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn context(&self) -> Result<Context, KeyError> {
        let conf = TctiNameConf::from_str(&self.tcti)
            .map_err(|e| fail(&format!("TCTI {}", self.tcti), e))?;
        Context::new(conf).map_err(|e| fail(&format!("opening the TPM ({})", self.tcti), e))
    }

    fn signed_policy(&mut self) -> Result<SignedPolicy, KeyError> {
        if self.policy.is_none() {
            let read = |p: &PathBuf, what: &str| {
                std::fs::read(p).map_err(|e| {
                    fail(
                        &format!("reading the {what} {}", p.display()),
                        format!("{e} (the image's signed PCR policy is needed to open the disk)"),
                    )
                })
            };
            let pk = read(&self.public_key, "PCR public key")?;
            let sig = read(&self.signature, "PCR signature")?;
            let p = SignedPolicy::parse(&pk, &sig).map_err(|e| {
                fail(
                    &format!(
                        "{} / {}",
                        self.public_key.display(),
                        self.signature.display()
                    ),
                    e,
                )
            })?;
            self.policy = Some(p);
        }
        self.policy
            .clone()
            .ok_or_else(|| fail("signed policy", "none"))
    }
}

fn pcr_selection() -> Result<tss_esapi::structures::PcrSelectionList, KeyError> {
    let slot = match SEALED_PCR {
        11 => PcrSlot::Slot11,
        n => return Err(fail("PCR selection", format!("PCR {n} unsupported"))),
    };
    PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &[slot])
        .build()
        .map_err(|e| fail("PCR selection", e))
}

/// The owner hierarchy's storage primary key (ECC P-256, AES-128-CFB): the same key every time
/// from the same owner seed.
fn primary(ctx: &mut Context) -> Result<KeyHandle, KeyError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_decrypt(true)
        .with_no_da(true)
        .build()
        .map_err(|e| fail("primary key attributes", e))?;
    let params = PublicEccParametersBuilder::new_restricted_decryption_key(
        SymmetricDefinitionObject::AES_128_CFB,
        EccCurve::NistP256,
    )
    .build()
    .map_err(|e| fail("primary key parameters", e))?;
    let public = PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|e| fail("primary key template", e))?;
    ctx.execute_with_nullauth_session(|c| {
        c.create_primary(Hierarchy::Owner, public, None, None, None, None)
    })
    .map(|r| r.key_handle)
    .map_err(|e| fail("creating the owner primary key", e))
}

fn flush_session(ctx: &mut Context, s: AuthSession) {
    let h = tss_esapi::handles::SessionHandle::from(s);
    let _ = ctx.flush_context(ObjectHandle::from(h));
}

fn random_key() -> Result<Zeroizing<Vec<u8>>, KeyError> {
    use ring::rand::SecureRandom;
    let mut key = Zeroizing::new(vec![0u8; DISK_KEY_LEN]);
    ring::rand::SystemRandom::new()
        .fill(&mut key)
        .map_err(|_| fail("random key", "the system RNG failed"))?;
    Ok(key)
}

/// The PCR-signing key loaded into the TPM (public part only) and its TPM name.
fn load_signing_key(ctx: &mut Context, p: &SignedPolicy) -> Result<(KeyHandle, Name), KeyError> {
    let public = p.public()?;
    let key = ctx
        .load_external_public(public, Hierarchy::Owner)
        .map_err(|e| fail("TPM2_LoadExternal (the image's PCR public key)", e))?;
    match ctx.tr_get_name(key.into()) {
        Ok(n) => Ok((key, n)),
        Err(e) => {
            let _ = ctx.flush_context(key.into());
            Err(fail("name of the PCR public key", e))
        }
    }
}

/// A policy session satisfying `PolicyPCR(11)` + `PolicyAuthorize(key)` with the signed entry
/// for PCR 11 as it is now.
fn authorized_session(
    ctx: &mut Context,
    p: &SignedPolicy,
    key: KeyHandle,
    key_name: &Name,
    salt_key: Option<KeyHandle>,
) -> Result<AuthSession, KeyError> {
    let session = ctx
        .start_auth_session(
            salt_key,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(|e| fail("starting a policy session", e))?
        .ok_or_else(|| fail("starting a policy session", "no session handle"))?;
    let r = (|| {
        let policy = PolicySession::try_from(session).map_err(|e| fail("policy session", e))?;
        ctx.policy_pcr(policy, Digest::default(), pcr_selection()?)
            .map_err(|e| fail("PolicyPCR", e))?;
        let now = ctx
            .policy_get_digest(policy)
            .map_err(|e| fail("PolicyGetDigest", e))?;
        let (pol, sig) = p
            .entries
            .iter()
            .find(|(pol, _)| pol.as_slice() == now.value())
            .ok_or_else(|| {
                fail(
                    "signed PCR policy",
                    format!(
                        "no signature for PCR {SEALED_PCR} as it is now (policy {}); the file \
                         signs {} other value(s): an image or phase this signature is not for",
                        hex::encode(now.value()),
                        p.entries.len()
                    ),
                )
            })?;
        let a_hash = Digest::try_from(sha256(&[pol, POLICY_REF])).map_err(|e| fail("aHash", e))?;
        let signature = Signature::RsaSsa(
            RsaSignature::create(
                HashingAlgorithm::Sha256,
                PublicKeyRsa::try_from(sig.clone()).map_err(|e| fail("signature", e))?,
            )
            .map_err(|e| fail("signature", e))?,
        );
        let ticket = ctx.verify_signature(key, a_hash, signature).map_err(|e| {
            fail(
                "TPM2_VerifySignature: the PCR signature does not verify with the image's \
                     PCR public key",
                e,
            )
        })?;
        let policy_ref = Nonce::try_from(POLICY_REF.to_vec()).map_err(|e| fail("policyRef", e))?;
        ctx.policy_authorize(policy, now, policy_ref, key_name, ticket)
            .map_err(|e| fail("PolicyAuthorize", e))?;
        Ok(())
    })();
    match r {
        Ok(()) => Ok(session),
        Err(e) => {
            flush_session(ctx, session);
            Err(e)
        }
    }
}

/// nacre's anchor index: exactly this public area (before and after the first write).
fn anchor_public(policy: &[u8], written: bool) -> Result<NvPublic, KeyError> {
    let attrs = NvIndexAttributesBuilder::new()
        .with_policy_write(true)
        .with_auth_read(true)
        .with_no_da(true)
        .with_written(written)
        .build()
        .map_err(|e| fail("anchor index attributes", e))?;
    NvPublicBuilder::new()
        .with_nv_index(NvIndexTpmHandle::new(ANCHOR_INDEX).map_err(|e| fail("anchor index", e))?)
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(attrs)
        .with_index_auth_policy(
            Digest::try_from(policy.to_vec()).map_err(|e| fail("anchor policy", e))?,
        )
        .with_data_area_size(NAME_LEN)
        .build()
        .map_err(|e| fail("anchor index", e))
}

/// The anchor index if it exists: its handle and public area.
fn anchor(ctx: &mut Context) -> Result<Option<(NvIndexHandle, NvPublic)>, KeyError> {
    let tpm_handle = TpmHandle::NvIndex(
        NvIndexTpmHandle::new(ANCHOR_INDEX).map_err(|e| fail("anchor index", e))?,
    );
    let h = match ctx.execute_without_session(|c| c.tr_from_tpm_public(tpm_handle)) {
        Ok(h) => NvIndexHandle::from(h),
        Err(_) => return Ok(None),
    };
    let (public, _) = ctx
        .execute_without_session(|c| c.nv_read_public(h))
        .map_err(|e| fail("reading the anchor index's public area", e))?;
    Ok(Some((h, public)))
}

impl TpmSealed {
    /// The steps sealing and unsealing share: the signed policy (read once), the TPM, the
    /// refusal of a policy that signs PCR 11 after the forbidden events, the image's PCR key
    /// loaded (public part) and the owner primary key; `f` runs with them, and both keys are
    /// flushed whatever it returns.
    fn with_keys<T>(
        &mut self,
        f: impl FnOnce(&mut Context, &SignedPolicy, KeyHandle, &Name, KeyHandle) -> Result<T, KeyError>,
    ) -> Result<T, KeyError> {
        let p = self.signed_policy()?;
        let mut ctx = self.context()?;
        self.check_forbidden(&mut ctx, &p)?;
        let (sign_key, key_name) = load_signing_key(&mut ctx, &p)?;
        let parent = match primary(&mut ctx) {
            Ok(k) => k,
            Err(e) => {
                let _ = ctx.flush_context(sign_key.into());
                return Err(e);
            }
        };
        let result = f(&mut ctx, &p, sign_key, &key_name, parent);
        let _ = ctx.flush_context(parent.into());
        let _ = ctx.flush_context(sign_key.into());
        result
    }

    fn seal(&mut self, key: &[u8]) -> Result<TpmToken, KeyError> {
        self.with_keys(|ctx, p, sign_key, key_name, parent| {
            let digest = authorize_policy(key_name.value());
            // Sealed data: no user auth (the policy is the only way to unseal), bound to this TPM.
            let attrs = ObjectAttributesBuilder::new()
                .with_fixed_tpm(true)
                .with_fixed_parent(true)
                .with_no_da(true)
                .build()
                .map_err(|e| fail("sealed object attributes", e))?;
            let public = PublicBuilder::new()
                .with_public_algorithm(PublicAlgorithm::KeyedHash)
                .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
                .with_object_attributes(attrs)
                .with_auth_policy(
                    Digest::try_from(digest.clone()).map_err(|e| fail("sealed policy", e))?,
                )
                .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
                .with_keyed_hash_unique_identifier(Digest::default())
                .build()
                .map_err(|e| fail("sealed object template", e))?;
            let data = SensitiveData::try_from(key.to_vec()).map_err(|e| fail("sealed data", e))?;
            // The key crosses to the TPM encrypted: a session salted with the primary key, with
            // parameter encryption of the command (TPM2_Create's sensitive data).
            let session = ctx
                .start_auth_session(
                    Some(parent),
                    None,
                    None,
                    SessionType::Hmac,
                    SymmetricDefinition::AES_128_CFB,
                    HashingAlgorithm::Sha256,
                )
                .map_err(|e| fail("starting a salted session", e))?
                .ok_or_else(|| fail("starting a salted session", "no session handle"))?;
            let (attrs, mask) = SessionAttributesBuilder::new()
                .with_continue_session(true)
                .with_decrypt(true)
                .build();
            let created = ctx
                .tr_sess_set_attributes(session, attrs, mask)
                .map_err(|e| fail("session attributes", e))
                .and_then(|_| {
                    ctx.execute_with_session(Some(session), |c| {
                        c.create(parent, public, None, Some(data), None, None)
                    })
                    .map_err(|e| fail("TPM2_Create (sealing the disk key)", e))
                });
            flush_session(ctx, session);
            let created = created?;
            // The object's name, from the TPM.
            let obj = ctx
                .execute_with_nullauth_session(|c| {
                    c.load(
                        parent,
                        created.out_private.clone(),
                        created.out_public.clone(),
                    )
                })
                .map_err(|e| fail("loading the new sealed object", e))?;
            let name = ctx.tr_get_name(obj.into());
            let _ = ctx.flush_context(obj.into());
            let name = name.map_err(|e| fail("name of the sealed object", e))?;
            // Anchor it: define nacre's index if absent (a foreign one is refused), then write
            // the name under the signed policy.
            let h = match anchor(ctx)? {
                Some((h, public)) => {
                    check_anchor_public(&public, &digest)?;
                    h
                }
                None => {
                    let nv = anchor_public(&digest, false)?;
                    ctx.execute_with_nullauth_session(|c| {
                        c.nv_define_space(Provision::Owner, None, nv)
                    })
                    .map_err(|e| fail("defining the anchor NV index", e))?
                }
            };
            let session = authorized_session(ctx, p, sign_key, key_name, None)?;
            let buf =
                MaxNvBuffer::try_from(name.value().to_vec()).map_err(|e| fail("anchor data", e))?;
            let w = ctx
                .execute_with_session(Some(session), |c| c.nv_write(NvAuth::NvIndex(h), h, buf, 0));
            flush_session(ctx, session);
            w.map_err(|e| fail("writing the anchor NV index", e))?;
            let public = created
                .out_public
                .marshall()
                .map_err(|e| fail("marshalling the sealed object", e))?;
            Ok(TpmToken::new(&public, created.out_private.value()))
        })
    }

    fn unseal(&mut self, token: &TpmToken) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let public = Public::unmarshall(&token.public_bytes())
            .map_err(|e| fail("token: sealed object public part", e))?;
        let private = Private::try_from(token.private_bytes())
            .map_err(|e| fail("token: sealed object private part", e))?;
        self.with_keys(|ctx, p, sign_key, key_name, parent| {
            let digest = authorize_policy(key_name.value());
            if public.auth_policy().value() != digest.as_slice() {
                return Err(fail(
                    "token",
                    "the sealed object's policy is not PolicyAuthorize with the image's PCR \
                     public key (sealed under another key or policy)",
                ));
            }
            let obj = ctx
                .execute_with_nullauth_session(|c| c.load(parent, private, public))
                .map_err(|e| {
                    fail(
                        "loading the sealed object (sealed by another TPM or another owner?)",
                        e,
                    )
                })?;
            let r = (|| {
                let name = ctx
                    .tr_get_name(obj.into())
                    .map_err(|e| fail("name of the sealed object", e))?;
                let (h, nv_public) = anchor(ctx)?.ok_or_else(|| {
                    fail(
                        "refusing the sealed object",
                        format!(
                            "no anchor NV index {ANCHOR_INDEX:#010x} in this TPM: the header's \
                             object was not sealed by this node (planted header?)"
                        ),
                    )
                })?;
                check_anchor_public(&nv_public, &digest)?;
                let anchored = ctx
                    .execute_with_nullauth_session(|c| {
                        c.nv_read(NvAuth::NvIndex(h), h, NAME_LEN as u16, 0)
                    })
                    .map_err(|e| fail("reading the anchor NV index", e))?;
                if anchored.value() != name.value() {
                    return Err(fail(
                        "refusing the sealed object",
                        format!(
                            "its name {} is not the one anchored in NV index {ANCHOR_INDEX:#010x} \
                             ({}): not this node's (planted header?)",
                            hex::encode(name.value()),
                            hex::encode(anchored.value())
                        ),
                    ));
                }
                let session = authorized_session(ctx, p, sign_key, key_name, Some(parent))?;
                let (attrs, mask) = SessionAttributesBuilder::new()
                    .with_continue_session(true)
                    .with_encrypt(true)
                    .build();
                let r = ctx
                    .tr_sess_set_attributes(session, attrs, mask)
                    .map_err(|e| fail("session attributes", e))
                    .and_then(|_| {
                        ctx.execute_with_session(Some(session), |c| c.unseal(obj.into()))
                            .map_err(|e| fail("unsealing the disk key", e))
                    });
                flush_session(ctx, session);
                Ok(Zeroizing::new(r?.value().to_vec()))
            })();
            let _ = ctx.flush_context(obj.into());
            r
        })
    }
}

/// The anchor index must be exactly nacre's (attributes, policy, size) and written.
fn check_anchor_public(public: &NvPublic, policy: &[u8]) -> Result<(), KeyError> {
    let want = anchor_public(policy, true)?;
    let unwritten = anchor_public(policy, false)?;
    if *public != want && *public != unwritten {
        return Err(fail(
            "refusing the anchor NV index",
            format!(
                "{ANCHOR_INDEX:#010x} exists with another public area (attributes {:?}, \
                 policy {}): not defined by nacre under the image's PCR key",
                public.attributes(),
                hex::encode(public.authorization_policy().value())
            ),
        ));
    }
    Ok(())
}

impl KeySource for TpmSealed {
    fn name(&self) -> &'static str {
        NAME
    }

    fn token_type(&self) -> Option<&'static str> {
        Some(TPM_TOKEN_TYPE)
    }

    fn use_token(&mut self, token: &Map<String, Value>) -> Result<(), KeyError> {
        let t = TpmToken::from_json(token).map_err(|reason| KeyError::Token {
            source_name: NAME,
            reason,
        })?;
        self.stored = Some(t);
        Ok(())
    }

    fn disk_key(&mut self, _disk_uuid: &str) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        match self.stored.clone() {
            Some(t) => {
                let key = self.unseal(&t)?;
                if key.len() != DISK_KEY_LEN {
                    return Err(fail("unsealed key", format!("{} bytes", key.len())));
                }
                Ok(key)
            }
            None => {
                let key = random_key()?;
                let token = self.seal(&key)?;
                // Read back as the next boot will (the anchor readable without authorization,
                // the signed policy satisfied): a key that could not be opened again is never
                // used (e.g. an anchor index someone defined beforehand with an auth value).
                let again = self.unseal(&token).map_err(|e| {
                    fail(
                        "unsealing the key just sealed (the disk is not formatted)",
                        e,
                    )
                })?;
                if again.as_slice() != key.as_slice() {
                    return Err(fail(
                        "unsealing the key just sealed",
                        "another key came back",
                    ));
                }
                self.created = Some(token);
                Ok(key)
            }
        }
    }

    fn new_token(&mut self) -> Result<Option<Map<String, Value>>, KeyError> {
        Ok(self.created.as_ref().map(|t| t.to_json()))
    }
}
