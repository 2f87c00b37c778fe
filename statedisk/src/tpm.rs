//! The TPM-sealed key source (single-node and test use): a random 64-byte disk key sealed under
//! the owner hierarchy's primary key (ECC P-256 storage key, re-created from the owner seed each
//! boot, never persisted) with a policy on PCR 11 (sha256) as it is when the state disk is first
//! opened, i.e. after nacre's `sysinit` phase. The sealed object goes into the header as nacre's
//! token; a later boot unseals it only if PCR 11 holds the same value (same UKI, same phases).
//!
//! tss-esapi 7.7 with the device TCTI (`/dev/tpmrm0`): the TCTI loader dlopens
//! `libtss2-tcti-device.so.0`, which the root image must ship. Unsealing runs in a policy
//! session salted with the primary key and with response encryption, so the key does not cross
//! the TPM interface in the clear.

use crate::keysource::{KeyError, KeySource, DISK_KEY_LEN};
use crate::token::{TpmToken, SEALED_PCR, TPM_TOKEN_TYPE};
use serde_json::{Map, Value};
use std::str::FromStr;
use tss_esapi::attributes::{ObjectAttributesBuilder, SessionAttributesBuilder};
use tss_esapi::constants::SessionType;
use tss_esapi::handles::{KeyHandle, ObjectHandle};
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
use tss_esapi::structures::{
    Digest, EccPoint, KeyedHashScheme, PcrSelectionListBuilder, PcrSlot, Private, Public,
    PublicBuilder, PublicEccParametersBuilder, PublicKeyedHashParameters, SensitiveData,
    SymmetricDefinition, SymmetricDefinitionObject,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::{Marshall, UnMarshall};
use tss_esapi::Context;
use zeroize::Zeroizing;

const NAME: &str = "tpm-sealed";
pub const TPM_DEVICE: &str = "/dev/tpmrm0";

fn fail(what: &str, e: impl std::fmt::Display) -> KeyError {
    KeyError::Failed {
        source_name: NAME,
        reason: format!("{what}: {e}"),
    }
}

pub struct TpmSealed {
    /// The TCTI configuration: `device:/dev/tpmrm0` on a node; `swtpm:host=...,port=...` in
    /// host tests.
    tcti: String,
    stored: Option<TpmToken>,
    created: Option<TpmToken>,
}

impl TpmSealed {
    pub fn new() -> TpmSealed {
        TpmSealed::with_tcti(&format!("device:{TPM_DEVICE}"))
    }

    pub fn with_tcti(tcti: &str) -> TpmSealed {
        TpmSealed {
            tcti: tcti.into(),
            stored: None,
            created: None,
        }
    }

    fn context(&self) -> Result<Context, KeyError> {
        let conf = TctiNameConf::from_str(&self.tcti)
            .map_err(|e| fail(&format!("TCTI {}", self.tcti), e))?;
        Context::new(conf).map_err(|e| fail(&format!("opening the TPM ({})", self.tcti), e))
    }
}

impl Default for TpmSealed {
    fn default() -> Self {
        Self::new()
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

/// A policy session (or a trial one) with PolicyPCR on PCR 11 as it is now.
fn pcr_policy_session(
    ctx: &mut Context,
    trial: bool,
    salt_key: Option<KeyHandle>,
) -> Result<AuthSession, KeyError> {
    let session = ctx
        .start_auth_session(
            salt_key,
            None,
            None,
            if trial {
                SessionType::Trial
            } else {
                SessionType::Policy
            },
            SymmetricDefinition::AES_128_CFB,
            HashingAlgorithm::Sha256,
        )
        .map_err(|e| fail("starting a policy session", e))?
        .ok_or_else(|| fail("starting a policy session", "no session handle"))?;
    let policy = PolicySession::try_from(session).map_err(|e| fail("policy session", e))?;
    ctx.policy_pcr(policy, Digest::default(), pcr_selection()?)
        .map_err(|e| fail("PolicyPCR", e))?;
    Ok(session)
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

impl TpmSealed {
    fn seal(&self, key: &[u8]) -> Result<TpmToken, KeyError> {
        let mut ctx = self.context()?;
        let parent = primary(&mut ctx)?;
        let result = (|| {
            let trial = pcr_policy_session(&mut ctx, true, None)?;
            let digest = PolicySession::try_from(trial)
                .map_err(|e| fail("trial session", e))
                .and_then(|p| {
                    ctx.policy_get_digest(p)
                        .map_err(|e| fail("PolicyGetDigest", e))
                });
            flush_session(&mut ctx, trial);
            let digest = digest?;
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
                .with_auth_policy(digest)
                .with_keyed_hash_parameters(PublicKeyedHashParameters::new(KeyedHashScheme::Null))
                .with_keyed_hash_unique_identifier(Digest::default())
                .build()
                .map_err(|e| fail("sealed object template", e))?;
            let data = SensitiveData::try_from(key.to_vec()).map_err(|e| fail("sealed data", e))?;
            let created = ctx
                .execute_with_nullauth_session(|c| {
                    c.create(parent, public, None, Some(data), None, None)
                })
                .map_err(|e| fail("TPM2_Create (sealing the disk key)", e))?;
            let public = created
                .out_public
                .marshall()
                .map_err(|e| fail("marshalling the sealed object", e))?;
            Ok(TpmToken::new(&public, created.out_private.value()))
        })();
        let _ = ctx.flush_context(parent.into());
        result
    }

    fn unseal(&self, token: &TpmToken) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let public = Public::unmarshall(&token.public_bytes())
            .map_err(|e| fail("token: sealed object public part", e))?;
        let private = Private::try_from(token.private_bytes())
            .map_err(|e| fail("token: sealed object private part", e))?;
        let mut ctx = self.context()?;
        let parent = primary(&mut ctx)?;
        let result = (|| {
            let obj = ctx
                .execute_with_nullauth_session(|c| c.load(parent, private, public))
                .map_err(|e| {
                    fail(
                        "loading the sealed object (sealed by another TPM or another owner?)",
                        e,
                    )
                })?;
            let session = pcr_policy_session(&mut ctx, false, Some(parent))?;
            let (attrs, mask) = SessionAttributesBuilder::new()
                .with_continue_session(true)
                .with_encrypt(true)
                .build();
            let r = ctx
                .tr_sess_set_attributes(session, attrs, mask)
                .map_err(|e| fail("session attributes", e))
                .and_then(|_| {
                    ctx.execute_with_session(Some(session), |c| c.unseal(obj.into()))
                        .map_err(|e| {
                            fail(
                                &format!("unsealing the disk key (PCR {SEALED_PCR} differs from when it was sealed?)"),
                                e,
                            )
                        })
                });
            flush_session(&mut ctx, session);
            let _ = ctx.flush_context(obj.into());
            let data = r?;
            Ok(Zeroizing::new(data.value().to_vec()))
        })();
        let _ = ctx.flush_context(parent.into());
        result
    }
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
        match &self.stored {
            Some(t) => {
                let key = self.unseal(t)?;
                if key.len() != DISK_KEY_LEN {
                    return Err(fail("unsealed key", format!("{} bytes", key.len())));
                }
                Ok(key)
            }
            None => {
                let key = random_key()?;
                self.created = Some(self.seal(&key)?);
                Ok(key)
            }
        }
    }

    fn new_token(&mut self) -> Result<Option<Map<String, Value>>, KeyError> {
        Ok(self.created.as_ref().map(|t| t.to_json()))
    }
}
