//! Producing evidence with a TPM 2.0 (tss-esapi 7.7): `device:/dev/tpmrm0` on a node,
//! `swtpm:host=127.0.0.1,port=P` in host tests.
//!
//! The attestation key (AK) is a primary key of the endorsement hierarchy: a restricted ECC
//! P-256 signing key (ECDSA/SHA-256), fixedTPM and fixedParent, re-created from the endorsement
//! seed on each use (the same key every time, nothing to persist) and flushed right after the
//! quote, so at most one transient object is loaded (swtpm has three slots).

use crate::evidence::{p256_spki, qualifying_data, EkBinding, Evidence, Platform, Quote};
use nacre_eventlog::CelRecord;
use std::str::FromStr;
use tss_esapi::attributes::ObjectAttributesBuilder;
use tss_esapi::handles::KeyHandle;
use tss_esapi::interface_types::algorithm::{HashingAlgorithm, PublicAlgorithm};
use tss_esapi::interface_types::ecc::EccCurve;
use tss_esapi::interface_types::resource_handles::Hierarchy;
use tss_esapi::structures::{
    Data, EccPoint, EccScheme, HashScheme, PcrSelectionListBuilder, PcrSlot, Public, PublicBuilder,
    PublicEccParametersBuilder, SignatureScheme,
};
use tss_esapi::tcti_ldr::TctiNameConf;
use tss_esapi::traits::Marshall;
use tss_esapi::Context;

#[derive(Debug, thiserror::Error)]
#[error("TPM: {what}: {reason}")]
pub struct TpmError {
    pub what: String,
    pub reason: String,
}

fn fail(what: &str, e: impl std::fmt::Display) -> TpmError {
    TpmError {
        what: what.to_owned(),
        reason: e.to_string(),
    }
}

/// Makes evidence with one TPM.
pub struct Attester {
    tcti: String,
}

impl Attester {
    /// The node's TPM (`/dev/tpmrm0`).
    pub fn device() -> Self {
        Attester::with_tcti("device:/dev/tpmrm0")
    }

    /// Any TCTI configuration string, e.g. `swtpm:host=127.0.0.1,port=2321`.
    pub fn with_tcti(tcti: &str) -> Self {
        Attester { tcti: tcti.into() }
    }

    fn context(&self) -> Result<Context, TpmError> {
        let conf = TctiNameConf::from_str(&self.tcti)
            .map_err(|e| fail(&format!("TCTI {}", self.tcti), e))?;
        Context::new(conf).map_err(|e| fail(&format!("opening the TPM ({})", self.tcti), e))
    }

    /// The AK's public key (P-256 SPKI DER): what an operator enrolls.
    pub fn ak_public(&self) -> Result<Vec<u8>, TpmError> {
        let mut ctx = self.context()?;
        let (ak, public) = create_ak(&mut ctx)?;
        let _ = ctx.flush_context(ak.into());
        spki_of(&public)
    }

    /// Quotes the sha256 PCRs `pcrs` with qualifying data SHA-256(nonce || tls_public_key),
    /// has the EK certify the AK over the same data where the TPM can ([`EkBinding`]), and
    /// assembles the evidence with the given logs. One TPM context, one AK for both.
    pub fn evidence(
        &self,
        nonce: &[u8],
        tls_public_key: &[u8],
        pcrs: &[u32],
        firmware_log: Vec<u8>,
        runtime_log: Vec<CelRecord>,
    ) -> Result<Evidence, TpmError> {
        let qualifying = qualifying_data(nonce, tls_public_key);
        let mut ctx = self.context()?;
        let (ak, public) = create_ak(&mut ctx)?;
        let r = quote(&mut ctx, ak, &qualifying, pcrs)
            .and_then(|q| Ok((q, ek_binding(&mut ctx, ak, &public, &qualifying)?)));
        let _ = ctx.flush_context(ak.into());
        let (quote, ek) = r?;
        Ok(Evidence {
            platform: Platform::QemuVtpm,
            quote,
            ak_public: spki_of(&public)?,
            firmware_log,
            runtime_log,
            ek,
        })
    }
}

/// TPMS_ATTEST and TPMT_SIGNATURE as the TPM marshals them.
fn marshalled(
    attest: tss_esapi::structures::Attest,
    signature: tss_esapi::structures::Signature,
) -> Result<(Vec<u8>, Vec<u8>), TpmError> {
    Ok((
        attest
            .marshall()
            .map_err(|e| fail("marshalling TPMS_ATTEST", e))?,
        signature
            .marshall()
            .map_err(|e| fail("marshalling TPMT_SIGNATURE", e))?,
    ))
}

/// TPM2_Quote of the sha256 PCRs `pcrs` by `ak` with this qualifying data.
fn quote(
    ctx: &mut Context,
    ak: KeyHandle,
    qualifying: &[u8],
    pcrs: &[u32],
) -> Result<Quote, TpmError> {
    let slots = pcrs
        .iter()
        .map(|&p| {
            1u32.checked_shl(p)
                .and_then(|bit| PcrSlot::try_from(bit).ok())
                .ok_or_else(|| fail("PCR selection", format!("PCR {p} out of range")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let selection = PcrSelectionListBuilder::new()
        .with_selection(HashingAlgorithm::Sha256, &slots)
        .build()
        .map_err(|e| fail("PCR selection", e))?;
    let data = Data::try_from(qualifying.to_vec()).map_err(|e| fail("qualifying data", e))?;
    let (attest, signature) = ctx
        .execute_with_nullauth_session(|c| {
            c.quote(
                ak,
                data,
                SignatureScheme::EcDsa {
                    hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
                },
                selection,
            )
        })
        .map_err(|e| fail("TPM2_Quote", e))?;
    let (attest, signature) = marshalled(attest, signature)?;
    Ok(Quote { attest, signature })
}

/// TPM2_Certify of `ak` by the signing ECC EK at [`EK_HANDLE`], with the EK certificate from
/// [`EK_CERT_NV`]; `None` if this TPM has no such EK or certificate.
fn ek_binding(
    ctx: &mut Context,
    ak: KeyHandle,
    ak_public: &Public,
    qualifying: &[u8],
) -> Result<Option<EkBinding>, TpmError> {
    use tss_esapi::abstraction::nv;
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::handles::{NvIndexTpmHandle, PersistentTpmHandle, TpmHandle};
    use tss_esapi::interface_types::resource_handles::NvAuth;
    use tss_esapi::interface_types::session_handles::AuthSession;
    use tss_esapi::structures::CapabilityData;
    let ek_tpm = PersistentTpmHandle::new(EK_HANDLE).map_err(|e| fail("EK handle", e))?;
    // Look before touching: asking the TPM for a handle it lacks makes tss2 log errors.
    let present = match ctx.get_capability(CapabilityType::Handles, EK_HANDLE, 1) {
        Ok((CapabilityData::Handles(list), _)) => list.contains(&TpmHandle::Persistent(ek_tpm)),
        _ => false,
    };
    if !present {
        return Ok(None);
    }
    let Ok(ek) = ctx.tr_from_tpm_public(TpmHandle::Persistent(ek_tpm)) else {
        return Ok(None);
    };
    // A decrypt-only EK (the TCG default) cannot certify: no binding, the AK must then be
    // trusted another way (enrollment).
    match ctx.read_public(ek.into()) {
        Ok((
            Public::Ecc {
                object_attributes, ..
            },
            _,
            _,
        )) if object_attributes.sign_encrypt() => {}
        _ => return Ok(None),
    }
    let nv_index = NvIndexTpmHandle::new(EK_CERT_NV).map_err(|e| fail("EK NV index", e))?;
    let Ok(cert) = ctx.execute_with_nullauth_session(|c| nv::read_full(c, NvAuth::Owner, nv_index))
    else {
        return Ok(None);
    };
    let data = Data::try_from(qualifying.to_vec()).map_err(|e| fail("qualifying data", e))?;
    let (attest, signature) = ctx
        .execute_with_sessions(
            (
                Some(AuthSession::Password),
                Some(AuthSession::Password),
                None,
            ),
            |c| {
                c.certify(
                    ak.into(),
                    ek.into(),
                    data,
                    SignatureScheme::EcDsa {
                        hash_scheme: HashScheme::new(HashingAlgorithm::Sha384),
                    },
                )
            },
        )
        .map_err(|e| fail("TPM2_Certify (AK by EK)", e))?;
    let (certify_attest, certify_signature) = marshalled(attest, signature)?;
    Ok(Some(EkBinding {
        ek_certificate: cert,
        ak_public_area: ak_public
            .marshall()
            .map_err(|e| fail("marshalling the AK's TPMT_PUBLIC", e))?,
        certify_attest,
        certify_signature,
    }))
}

/// swtpm's ECC (P-384) endorsement key, persistent; made sign-capable by
/// `swtpm_setup --allow-signing` (attributes sign|decrypt|userWithAuth).
pub const EK_HANDLE: u32 = 0x8101_0016;
/// The NV index of that EK's certificate (written by `swtpm_setup --create-ek-cert`).
pub const EK_CERT_NV: u32 = 0x01c0_0016;

/// The AK template: restricted ECC P-256 ECDSA/SHA-256 signing key, fixedTPM, fixedParent,
/// sensitiveDataOrigin, userWithAuth (empty auth).
pub fn ak_template() -> Result<Public, TpmError> {
    let attrs = ObjectAttributesBuilder::new()
        .with_fixed_tpm(true)
        .with_fixed_parent(true)
        .with_sensitive_data_origin(true)
        .with_user_with_auth(true)
        .with_restricted(true)
        .with_sign_encrypt(true)
        .with_no_da(true)
        .build()
        .map_err(|e| fail("AK attributes", e))?;
    let params = PublicEccParametersBuilder::new_unrestricted_signing_key(
        EccScheme::EcDsa(HashScheme::new(HashingAlgorithm::Sha256)),
        EccCurve::NistP256,
    )
    .with_restricted(true)
    .build()
    .map_err(|e| fail("AK parameters", e))?;
    PublicBuilder::new()
        .with_public_algorithm(PublicAlgorithm::Ecc)
        .with_name_hashing_algorithm(HashingAlgorithm::Sha256)
        .with_object_attributes(attrs)
        .with_ecc_parameters(params)
        .with_ecc_unique_identifier(EccPoint::default())
        .build()
        .map_err(|e| fail("AK template", e))
}

fn create_ak(ctx: &mut Context) -> Result<(KeyHandle, Public), TpmError> {
    let template = ak_template()?;
    ctx.execute_with_nullauth_session(|c| {
        c.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
    })
    .map(|r| (r.key_handle, r.out_public))
    .map_err(|e| fail("creating the AK (endorsement hierarchy primary)", e))
}

fn spki_of(public: &Public) -> Result<Vec<u8>, TpmError> {
    match public {
        Public::Ecc { unique, .. } => p256_spki(unique.x().value(), unique.y().value())
            .ok_or_else(|| fail("AK public key", "coordinates longer than 32 bytes")),
        _ => Err(fail("AK public key", "not an ECC key")),
    }
}
