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

/// The confidential VM a guest attests on ([`Attester::cvm_evidence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cvm {
    SevSnp,
    Tdx,
}

/// Makes evidence with one TPM.
pub struct Attester {
    tcti: String,
    /// Where [`Attester::cvm_evidence`] asks Azure's THIM for the VCEK ([`crate::thim`]).
    thim: std::net::SocketAddr,
    /// Where [`Attester::cvm_evidence`] says why it sends no VCEK (default: stderr).
    log: fn(&str),
}

impl Attester {
    /// The node's TPM (`/dev/tpmrm0`).
    pub fn device() -> Self {
        Attester::with_tcti("device:/dev/tpmrm0")
    }

    /// Any TCTI configuration string, e.g. `swtpm:host=127.0.0.1,port=2321`.
    pub fn with_tcti(tcti: &str) -> Self {
        Attester {
            tcti: tcti.into(),
            thim: nacre_cluster::METADATA_ADDR,
            // Not eprintln!: that panics when stderr is closed.
            log: |m| {
                use std::io::Write;
                let _ = writeln!(std::io::stderr(), "{m}");
            },
        }
    }

    /// THIM at `addr` instead of Azure IMDS (tests: a loopback server).
    pub fn with_thim(mut self, addr: std::net::SocketAddr) -> Self {
        self.thim = addr;
        self
    }

    /// Warnings (no VCEK from THIM) to `log` instead of stderr.
    pub fn with_log(mut self, log: fn(&str)) -> Self {
        self.log = log;
        self
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
    /// adds the EK certificate and the AK's public area where the TPM has them ([`EkBinding`]), and
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
            .and_then(|q| Ok((q, ek_binding(&mut ctx, &public)?)));
        let _ = ctx.flush_context(ak.into());
        let (quote, ek) = r?;
        Ok(Evidence {
            platform: Platform::QemuVtpm,
            quote,
            ak_public: spki_of(&public)?,
            firmware_log,
            runtime_log,
            ek,
            binding: None,
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
    let ecdsa = SignatureScheme::EcDsa {
        hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
    };
    quote_with(ctx, ak, qualifying, pcrs, ecdsa)
}

/// [`quote`] with the AK's signature scheme (RSASSA/SHA-256 for an RSA AK).
fn quote_with(
    ctx: &mut Context,
    ak: KeyHandle,
    qualifying: &[u8],
    pcrs: &[u32],
    scheme: SignatureScheme,
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
        .execute_with_nullauth_session(|c| c.quote(ak, data, scheme, selection))
        .map_err(|e| fail("TPM2_Quote", e))?;
    let (attest, signature) = marshalled(attest, signature)?;
    Ok(Quote { attest, signature })
}

/// The EK certificate from [`EK_CERT_NV`] and the AK's public area, for a verifier that trusts
/// the AK through the EK by credential activation ([`Attester::activate_credential`]); `None` if
/// this TPM has no ECC EK at [`EK_HANDLE`] or no certificate for it. The EK is not used to sign
/// anything (the TCG default EK is decrypt-only and restricted).
fn ek_binding(ctx: &mut Context, ak_public: &Public) -> Result<Option<EkBinding>, TpmError> {
    use tss_esapi::abstraction::nv;
    use tss_esapi::handles::NvIndexTpmHandle;
    use tss_esapi::interface_types::resource_handles::NvAuth;
    if ek_handle(ctx)?.is_none() {
        return Ok(None);
    }
    let nv_index = NvIndexTpmHandle::new(EK_CERT_NV).map_err(|e| fail("EK NV index", e))?;
    let Ok(cert) = ctx.execute_with_nullauth_session(|c| nv::read_full(c, NvAuth::Owner, nv_index))
    else {
        return Ok(None);
    };
    Ok(Some(EkBinding {
        ek_certificate: cert,
        ak_public_area: ak_public
            .marshall()
            .map_err(|e| fail("marshalling the AK's TPMT_PUBLIC", e))?,
        certify_attest: Vec::new(),
        certify_signature: Vec::new(),
    }))
}

/// The persistent ECC EK at [`EK_HANDLE`], if the TPM has one (looked up before touching it:
/// asking the TPM for a handle it lacks makes tss2 log errors).
fn ek_handle(ctx: &mut Context) -> Result<Option<tss_esapi::handles::ObjectHandle>, TpmError> {
    use tss_esapi::constants::CapabilityType;
    use tss_esapi::handles::{PersistentTpmHandle, TpmHandle};
    use tss_esapi::structures::CapabilityData;
    let ek_tpm = PersistentTpmHandle::new(EK_HANDLE).map_err(|e| fail("EK handle", e))?;
    let present = match ctx.get_capability(CapabilityType::Handles, EK_HANDLE, 1) {
        Ok((CapabilityData::Handles(list), _)) => list.contains(&TpmHandle::Persistent(ek_tpm)),
        _ => false,
    };
    if !present {
        return Ok(None);
    }
    Ok(ctx.tr_from_tpm_public(TpmHandle::Persistent(ek_tpm)).ok())
}

impl Attester {
    /// TPM2_ActivateCredential: recovers the credential a verifier made for this TPM's AK with
    /// [`crate::credential::make_credential`] against the EK at [`EK_HANDLE`]. The EK (TCG
    /// default template: adminWithPolicy, policy PolicySecret(TPM_RH_ENDORSEMENT)) is used
    /// through a policy session; the AK (ADMIN role, no adminWithPolicy) with its empty
    /// password. The TPM returns the credential only if the challenge was made for this AK's
    /// name and this EK.
    pub fn activate_credential(
        &self,
        challenge: &crate::credential::CredentialChallenge,
    ) -> Result<Vec<u8>, TpmError> {
        let mut ctx = self.context()?;
        let ek = ek_handle(&mut ctx)?
            .ok_or_else(|| fail("credential activation", format!("no EK at {EK_HANDLE:#x}")))?;
        let (ak, _) = create_ak(&mut ctx)?;
        let r = activate(&mut ctx, ak, ek.into(), challenge);
        let _ = ctx.flush_context(ak.into());
        r
    }
}

/// The TCG EK Credential Profile's EK policies (2.x, "Computing PolicyA/B/C"): PolicyA =
/// PolicySecret(TPM_RH_ENDORSEMENT); PolicyC = PolicyAuthorizeNV of the EK policy index;
/// PolicyB = PolicyOR(PolicyA, PolicyC). SHA-256 and SHA-384.
const EK_POLICY_A_SHA256: &str = "837197674484b3f81a90cc8d46a5d724fd52d76e06520b64f2a1da1b331469aa";
const EK_POLICY_B_SHA256: &str = "ca3d0a99a2b93906f7a3342414efcfb3a385d44cd1fd459089d19b5071c0b7a0";
const EK_POLICY_C_SHA256: &str = "3767e2edd43ff45a3a7e1eaefcef78643dca964632e7aad82c673a30d8633fde";
const EK_POLICY_A_SHA384: &str = "8bbf2266537c171cb56e403c4dc1d4b64f432611dc386e6f532050c3278c930e143e8bb1133824ccb431053871c6db53";
const EK_POLICY_B_SHA384: &str = "b26e7d28d11a50bc53d882bcf5fd3a1a074148bb35d3b4e4cb1c0ad9bde419cacb47ba09699646150f9fc000f3f80e12";
const EK_POLICY_C_SHA384: &str = "d6032ce61f2fb3c240eb3cf6a33237ef2b6a16f4293c22b455e261cffd217ad5b4947c2d73e63005eed2dc2b3593d165";

fn hex_bytes(h: &str) -> Vec<u8> {
    hex::decode(h).unwrap_or_default()
}

/// `None` for an EK whose policy is PolicyA, the PolicyOR branches for PolicyB; an error for
/// any other policy (not a TCG default EK).
fn ek_policy_b_branches(ek: &Public) -> Result<Option<[&'static str; 2]>, TpmError> {
    let policy = match ek {
        Public::Ecc { auth_policy, .. } | Public::Rsa { auth_policy, .. } => {
            hex::encode(auth_policy.value())
        }
        _ => return Err(fail("EK", "not an asymmetric key")),
    };
    match policy.as_str() {
        EK_POLICY_A_SHA256 | EK_POLICY_A_SHA384 => Ok(None),
        EK_POLICY_B_SHA256 => Ok(Some([EK_POLICY_A_SHA256, EK_POLICY_C_SHA256])),
        EK_POLICY_B_SHA384 => Ok(Some([EK_POLICY_A_SHA384, EK_POLICY_C_SHA384])),
        other => Err(fail(
            "EK policy",
            format!("{other} is not a TCG default EK policy (PolicyA or PolicyB, SHA-256/384)"),
        )),
    }
}

/// TPM2_ActivateCredential of `challenge` for the object `ak` under the EK `ek`, through the
/// EK's policy session (PolicySecret(endorsement), then PolicyOR for PolicyB EKs): what
/// [`Attester::activate_credential`] does with the AK it re-creates. Public so a test can try it
/// with any loaded object (a public-only copy of a software AK must fail).
#[doc(hidden)]
pub fn activate(
    ctx: &mut Context,
    ak: KeyHandle,
    ek: KeyHandle,
    challenge: &crate::credential::CredentialChallenge,
) -> Result<Vec<u8>, TpmError> {
    use tss_esapi::attributes::SessionAttributesBuilder;
    use tss_esapi::constants::SessionType;
    use tss_esapi::interface_types::session_handles::{AuthSession, PolicySession};
    use tss_esapi::structures::{EncryptedSecret, IdObject, SymmetricDefinition};
    let (ek_public, _, _) = ctx
        .read_public(ek)
        .map_err(|e| fail("reading the EK's public area", e))?;
    let id =
        IdObject::try_from(challenge.id_object.clone()).map_err(|e| fail("credential blob", e))?;
    let secret = EncryptedSecret::try_from(challenge.encrypted_secret.clone())
        .map_err(|e| fail("encrypted secret", e))?;
    // The EK's policy is computed with its nameAlg: the session must use the same hash.
    let session = ctx
        .start_auth_session(
            None,
            None,
            None,
            SessionType::Policy,
            SymmetricDefinition::AES_128_CFB,
            ek_public.name_hashing_algorithm(),
        )
        .map_err(|e| fail("starting the EK policy session", e))?
        .ok_or_else(|| fail("starting the EK policy session", "no session returned"))?;
    let r = (|| {
        let (attrs, mask) = SessionAttributesBuilder::new()
            .with_continue_session(true)
            .build();
        ctx.tr_sess_set_attributes(session, attrs, mask)
            .map_err(|e| fail("EK policy session attributes", e))?;
        let policy = PolicySession::try_from(session).map_err(|e| fail("EK policy session", e))?;
        ctx.execute_with_nullauth_session(|c| {
            c.policy_secret(
                policy,
                tss_esapi::handles::AuthHandle::Endorsement,
                Default::default(),
                Default::default(),
                Default::default(),
                None,
            )
        })
        .map_err(|e| fail("TPM2_PolicySecret(TPM_RH_ENDORSEMENT)", e))?;
        // The high-range EK templates (swtpm's P-384 EK) use PolicyB = PolicyOR(PolicyA,
        // PolicyC): after PolicySecret the session holds PolicyA; PolicyOR takes it to PolicyB.
        if let Some(branches) = ek_policy_b_branches(&ek_public)? {
            let mut list = tss_esapi::structures::DigestList::new();
            for b in branches {
                let d = tss_esapi::structures::Digest::try_from(hex_bytes(b))
                    .map_err(|e| fail("EK PolicyOR branch", e))?;
                list.add(d).map_err(|e| fail("EK PolicyOR branch", e))?;
            }
            ctx.policy_or(policy, list)
                .map_err(|e| fail("TPM2_PolicyOR (EK PolicyB)", e))?;
        }
        ctx.execute_with_sessions((Some(AuthSession::Password), Some(session), None), |c| {
            c.activate_credential(ak, ek, id, secret)
        })
        .map(|d| d.value().to_vec())
        .map_err(|e| fail("TPM2_ActivateCredential", e))
    })();
    let _ = ctx.flush_context(tss_esapi::handles::SessionHandle::from(session).into());
    r
}

/// swtpm's ECC (P-384) endorsement key, persistent, made by `swtpm_setup --create-ek-cert`
/// with the TCG default template (SHA-384, AES-256-CFB, restricted|decrypt, adminWithPolicy).
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
        // Azure's HCLAkPub, GCE's RSA AK: exponent 0 means 65537 (TPM 2.0 Part 2, 12.2.3.5).
        Public::Rsa {
            unique, parameters, ..
        } => {
            let e = match parameters.exponent().value() {
                0 => 65537,
                e => e,
            };
            let e = e.to_be_bytes();
            Ok(crate::x509util::rsa_spki(unique.value(), &e))
        }
        _ => Err(fail("AK public key", "neither an ECC nor an RSA key")),
    }
}

impl Attester {
    /// An NV index's contents, read in full with (empty) owner authorization: Azure's HCL
    /// report ([`crate::azure::HCL_REPORT_NV_INDEX`]), GCE's AK certificate and template
    /// ([`crate::gce::AK_CERT_ECC_NV_INDEX`], [`crate::gce::AK_TEMPLATE_ECC_NV_INDEX`]).
    pub fn read_nv(&self, index: u32) -> Result<Vec<u8>, TpmError> {
        use tss_esapi::abstraction::nv;
        use tss_esapi::handles::NvIndexTpmHandle;
        use tss_esapi::interface_types::resource_handles::NvAuth;
        let mut ctx = self.context()?;
        let handle =
            NvIndexTpmHandle::new(index).map_err(|e| fail(&format!("NV index {index:#x}"), e))?;
        ctx.execute_with_nullauth_session(|c| nv::read_full(c, NvAuth::Owner, handle))
            .map(|b| b.to_vec())
            .map_err(|e| fail(&format!("reading NV index {index:#x}"), e))
    }

    /// gcp-sev-snp, gcp-tdx: evidence quoted by GCE's AK — the endorsement-hierarchy primary
    /// created from GCE's ECC AK template (NV [`crate::gce::AK_TEMPLATE_ECC_NV_INDEX`], a
    /// TPMT_PUBLIC, as go-tpm-tools' `GceAttestationKeyECC` does) — with GCE's certificate for
    /// it (NV [`crate::gce::AK_CERT_ECC_NV_INDEX`]) as the binding. The platform part is the
    /// caller's (its REPORT_DATA names this AK), as for [`Attester::evidence`].
    pub fn gce_evidence(
        &self,
        nonce: &[u8],
        tls_public_key: &[u8],
        pcrs: &[u32],
        firmware_log: Vec<u8>,
        runtime_log: Vec<CelRecord>,
    ) -> Result<Evidence, TpmError> {
        use tss_esapi::traits::UnMarshall;
        let template = self.read_nv(crate::gce::AK_TEMPLATE_ECC_NV_INDEX)?;
        let template = Public::unmarshall(&template)
            .map_err(|e| fail("GCE's AK template (TPMT_PUBLIC)", e))?;
        let certificate = self.read_nv(crate::gce::AK_CERT_ECC_NV_INDEX)?;
        let qualifying = qualifying_data(nonce, tls_public_key);
        let mut ctx = self.context()?;
        let (ak, public) = ctx
            .execute_with_nullauth_session(|c| {
                c.create_primary(Hierarchy::Endorsement, template, None, None, None, None)
            })
            .map(|r| (r.key_handle, r.out_public))
            .map_err(|e| fail("creating GCE's AK from its template", e))?;
        let r = quote(&mut ctx, ak, &qualifying, pcrs);
        let _ = ctx.flush_context(ak.into());
        Ok(Evidence {
            platform: Platform::QemuVtpm,
            quote: r?,
            ak_public: spki_of(&public)?,
            firmware_log,
            runtime_log,
            ek: None,
            binding: Some(crate::binding::AkBinding::GceAkCert { certificate }),
        })
    }

    /// A guest's evidence as nodes and an in-cluster key service send it (one code path):
    /// `cvm` names the confidential VM (`None`: a TPM quote alone). On SEV-SNP with Azure's HCL
    /// report in the vTPM: [`Attester::azure_evidence`] (the paravisor's AK and its binding)
    /// with the VCEK from THIM ([`crate::thim::vcek_for`]; none, logged, when that fails).
    /// Otherwise GCE's AK certificate where the vTPM holds its template
    /// ([`Attester::gce_evidence`]), else a plain quote; its platform part is `platform(AK)`
    /// (the SEV-SNP report / TDX quote whose REPORT_DATA is SHA-512(nonce || AK || TLS key)),
    /// and on SEV-SNP behind a NitroTPM AWS's attestation document binds the AK
    /// ([`crate::nitro::node_binding`]; raw device: the TCTI's `device:` path).
    #[allow(clippy::too_many_arguments)]
    pub fn cvm_evidence(
        &self,
        cvm: Option<Cvm>,
        nonce: &[u8],
        tls_public_key: &[u8],
        pcrs: &[u32],
        firmware_log: Vec<u8>,
        runtime_log: Vec<CelRecord>,
        platform: &dyn Fn(&[u8]) -> Result<Platform, String>,
    ) -> Result<Evidence, String> {
        let has = |index: u32| cvm.is_some() && self.read_nv(index).is_ok();
        if cvm == Some(Cvm::SevSnp) && has(crate::azure::HCL_REPORT_NV_INDEX) {
            let mut ev = self
                .azure_evidence(
                    nonce,
                    tls_public_key,
                    pcrs,
                    firmware_log,
                    runtime_log,
                    vec![],
                )
                .map_err(|e| e.to_string())?;
            // Azure's hosts give no certificate table: the VCEK comes from THIM, checked
            // against the report with AMD's roots. Without it the verifier needs it in its
            // store (and fails closed otherwise).
            if let Platform::SevSnp { report, vcek } = &mut ev.platform {
                match crate::thim::vcek_for(self.thim, report) {
                    Ok(v) => *vcek = v,
                    Err(e) => (self.log)(&format!(
                        "azure-sev-snp: sending no VCEK ({e}); the key service must hold it in its certificate store"
                    )),
                }
            }
            return Ok(ev);
        }
        let mut ev = if has(crate::gce::AK_TEMPLATE_ECC_NV_INDEX) {
            self.gce_evidence(nonce, tls_public_key, pcrs, firmware_log, runtime_log)
        } else {
            self.evidence(nonce, tls_public_key, pcrs, firmware_log, runtime_log)
        }
        .map_err(|e| e.to_string())?;
        ev.platform = platform(&ev.ak_public)?;
        if cvm == Some(Cvm::SevSnp) && ev.binding.is_none() {
            let raw = self.tcti.strip_prefix("device:").unwrap_or("/dev/tpmrm0");
            ev.binding = crate::nitro::node_binding(
                &self.tcti,
                std::path::Path::new(raw),
                nonce,
                &ev.ak_public,
                tls_public_key,
            )
            .map_err(|e| e.to_string())?;
        }
        Ok(ev)
    }

    /// azure-sev-snp: evidence quoted by the paravisor's AK (persistent
    /// [`crate::azure::AK_PERSISTENT_HANDLE`], RSA, `HCLAkPub`) with the HCL report (NV
    /// [`crate::azure::HCL_REPORT_NV_INDEX`]) as its binding; the platform part is the SEV-SNP
    /// report inside it with `vcek` (empty: the key service looks it up in its store;
    /// [`Attester::cvm_evidence`] fills it from THIM).
    pub fn azure_evidence(
        &self,
        nonce: &[u8],
        tls_public_key: &[u8],
        pcrs: &[u32],
        firmware_log: Vec<u8>,
        runtime_log: Vec<CelRecord>,
        vcek: Vec<u8>,
    ) -> Result<Evidence, TpmError> {
        use tss_esapi::handles::{PersistentTpmHandle, TpmHandle};
        let hcl = self.read_nv(crate::azure::HCL_REPORT_NV_INDEX)?;
        let report = crate::azure::HclReport::parse(&hcl)
            .map_err(|e| fail("the HCL report", e))?
            .hw_report
            .to_vec();
        let qualifying = qualifying_data(nonce, tls_public_key);
        let mut ctx = self.context()?;
        let persistent = PersistentTpmHandle::new(crate::azure::AK_PERSISTENT_HANDLE)
            .map_err(|e| fail("the HCL AK handle", e))?;
        let object = ctx
            .tr_from_tpm_public(TpmHandle::Persistent(persistent))
            .map_err(|e| fail("loading the HCL AK (0x81000003)", e))?;
        let ak = KeyHandle::from(object);
        let (public, _, _) = ctx
            .read_public(ak)
            .map_err(|e| fail("reading the HCL AK's public area", e))?;
        let rsassa = SignatureScheme::RsaSsa {
            hash_scheme: HashScheme::new(HashingAlgorithm::Sha256),
        };
        let quote = quote_with(&mut ctx, ak, &qualifying, pcrs, rsassa)?;
        Ok(Evidence {
            platform: Platform::SevSnp { report, vcek },
            quote,
            ak_public: spki_of(&public)?,
            firmware_log,
            runtime_log,
            ek: None,
            binding: Some(crate::binding::AkBinding::AzureHcl { hcl_report: hcl }),
        })
    }
}
