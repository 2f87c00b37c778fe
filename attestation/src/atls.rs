//! Attested TLS (rustls 0.23 with the ring provider, rcgen, x509-parser), node → key service
//! direction: the node (TLS client) presents a short-lived self-signed ECDSA P-256 certificate
//! whose extension [`EVIDENCE_OID`] holds its [`Evidence`] (JSON), with qualifying data
//! SHA-256(server nonce || certificate SPKI). The server's fresh per-connection nonce travels in
//! the CertificateRequest's acceptable-CA list (one Name with CN `nacre-nonce:<hex>`), so the
//! evidence can neither be replayed nor moved to another key; the TLS handshake proves the
//! client holds the certificate's key. The server's [`AttestedClientVerifier`] runs a
//! [`Verifier`] and refuses the handshake on any refusal; the verdict is kept for the caller.
//!
//! Mutual, for a server that runs in a CVM itself (the key service on attested control-plane
//! nodes). A TPM quote costs the server tens of milliseconds of a shared TPM, so it is made only
//! for a client whose own evidence was verified (issue 14): TLS 1.3 sends the server's
//! certificate before the client's, so the server's evidence cannot ride in its certificate.
//! Instead:
//!
//! 1. The client's fresh nonce travels in SNI ([`server_name_for_nonce`]).
//! 2. The server's [`AttestedServerResolver`] (one per connection) answers with a certificate for
//!    a fresh per-connection key, *without* evidence, and remembers the nonce and the key's SPKI.
//!    The client's [`AttestedServerVerifier`] only records that SPKI (and checks the
//!    CertificateVerify signature: the server holds the key); the server is not yet trusted.
//! 3. The client sends its attested certificate (as in the one-way mode); the server verifies it.
//! 4. Only then does the server compute its evidence ([`AttestedServerResolver::evidence`]),
//!    bound exactly as a certificate extension would bind it: qualifying data
//!    SHA-256(client nonce || the server certificate's SPKI), and sends it as the first line over
//!    the established channel (`{"server-evidence": ...}`, [`crate::join`]).
//! 5. The client verifies it ([`AttestedServerVerifier::verify_evidence`]) against the nonce it
//!    sent and the SPKI the server proved in the handshake, and sends nothing else (no request,
//!    nothing secret) before it is accepted. Until then the server is unauthenticated: any alert
//!    or failure is a transport error to the client, retried (a refused node's attestation in
//!    this mode is therefore retried until its timeout: the service does not attest to a client
//!    it refused).
//!
//! A server outside a CVM (the operator's machine) is trusted through ordinary roots instead
//! ([`client_config`]); it is authenticated once the client's handshake is complete.

use crate::evidence::Evidence;
use crate::tpm::Attester;
use crate::verify::{Accepted, Check, Expectation, JoinKind, Refusal, Verifier};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::ResolvesClientCert;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::sync::{Arc, Mutex};

/// The evidence extension's OID, nacre's own without registration (ITU-T X.667: the UUID
/// 33bbe192-d7e9-450e-b699-19cd200b76bb as an arc under 2.25). Defined here once for both sides;
/// `docs/attested-tls.md` gives the extension's ASN.1.
pub const EVIDENCE_OID: &str = "2.25.68766162473870553935326749242941994683";
/// [`EVIDENCE_OID`] as DER content octets (first octet 2*40+25, then the UUID's 128-bit
/// integer in base 128).
pub const EVIDENCE_OID_DER: [u8; 19] = [
    0x69, 0xe7, 0xbb, 0xf0, 0xe4, 0xda, 0xfe, 0xca, 0x94, 0x9d, 0xb6, 0xcc, 0xc6, 0xb9, 0xd2, 0x80,
    0xad, 0xed, 0x3b,
];
/// rcgen writes OID arcs of at most 64 bits: the extension is written under this private
/// stand-in, then its OID is replaced by [`EVIDENCE_OID_DER`] and the certificate re-signed
/// ([`with_evidence_oid`]). Never on the wire.
const STAND_IN_OID: &[u64] = &[1, 3, 6, 1, 4, 1, 99999, 1, 1];
const STAND_IN_OID_DER: [u8; 10] = [0x2b, 0x06, 0x01, 0x04, 0x01, 0x86, 0x8d, 0x1f, 0x01, 0x01];
const NONCE_PREFIX: &str = "nacre-nonce:";
/// Validity of the attested certificate.
pub const CERT_LIFETIME: time::Duration = time::Duration::minutes(10);

/// The ring provider: the project's one crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Something that can produce evidence bound to `(nonce, tls_spki)`.
pub trait Attest: Send + Sync {
    fn evidence(&self, nonce: &[u8], tls_spki: &[u8]) -> Result<Evidence, String>;
    /// TPM2_ActivateCredential of a verifier's challenge with this TPM's EK and AK (when the
    /// peer trusts the AK through the EK certificate, [`crate::credential`]).
    fn activate_credential(
        &self,
        _challenge: &crate::credential::CredentialChallenge,
    ) -> Result<Vec<u8>, String> {
        Err("this attester has no TPM to activate a credential with".into())
    }
}

/// A shared attester attests like the one it shares.
impl<T: Attest + ?Sized> Attest for Arc<T> {
    fn evidence(&self, nonce: &[u8], tls_spki: &[u8]) -> Result<Evidence, String> {
        (**self).evidence(nonce, tls_spki)
    }
    fn activate_credential(
        &self,
        challenge: &crate::credential::CredentialChallenge,
    ) -> Result<Vec<u8>, String> {
        (**self).activate_credential(challenge)
    }
}

/// The TPM attester with the PCRs to quote and the logs to send.
pub struct TpmAttest {
    pub attester: Attester,
    pub pcrs: Vec<u32>,
    pub firmware_log: Vec<u8>,
    pub runtime_log: Vec<nacre_eventlog::CelRecord>,
}

impl Attest for TpmAttest {
    fn evidence(&self, nonce: &[u8], tls_spki: &[u8]) -> Result<Evidence, String> {
        self.attester
            .evidence(
                nonce,
                tls_spki,
                &self.pcrs,
                self.firmware_log.clone(),
                self.runtime_log.clone(),
            )
            .map_err(|e| e.to_string())
    }
    fn activate_credential(
        &self,
        challenge: &crate::credential::CredentialChallenge,
    ) -> Result<Vec<u8>, String> {
        self.attester
            .activate_credential(challenge)
            .map_err(|e| e.to_string())
    }
}

/// The TPM attester reading the logs fresh for every evidence (a running machine: nacre-init
/// keeps appending to its runtime log).
pub struct LiveTpmAttest {
    pub attester: Attester,
    pub pcrs: Vec<u32>,
    pub firmware_log: std::path::PathBuf,
    pub runtime_log: std::path::PathBuf,
}

impl Attest for LiveTpmAttest {
    fn evidence(&self, nonce: &[u8], tls_spki: &[u8]) -> Result<Evidence, String> {
        let fw = std::fs::read(&self.firmware_log)
            .map_err(|e| format!("{}: {e}", self.firmware_log.display()))?;
        let rt = nacre_eventlog::cel::read(&self.runtime_log)
            .map_err(|e| format!("{}: {e}", self.runtime_log.display()))?;
        self.attester
            .evidence(nonce, tls_spki, &self.pcrs, fw, rt)
            .map_err(|e| e.to_string())
    }
    fn activate_credential(
        &self,
        challenge: &crate::credential::CredentialChallenge,
    ) -> Result<Vec<u8>, String> {
        self.attester
            .activate_credential(challenge)
            .map_err(|e| e.to_string())
    }
}

/// A fresh key and a self-signed certificate carrying evidence for `nonce`.
pub fn attested_cert(
    attest: &dyn Attest,
    nonce: &[u8],
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| format!("key generation: {e}"))?;
    let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
    let evidence = attest.evidence(nonce, &spki)?;
    self_signed(&key, "nacre-node", Some(evidence.to_json()))
}

/// A self-signed short-lived certificate for `key`, with the evidence extension if given.
fn self_signed(
    key: &rcgen::KeyPair,
    name: &str,
    evidence: Option<Vec<u8>>,
) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), String> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_string()])
        .map_err(|e| format!("certificate parameters: {e}"))?;
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(1);
    params.not_after = now + CERT_LIFETIME;
    if let Some(evidence) = evidence {
        params
            .custom_extensions
            .push(rcgen::CustomExtension::from_oid_content(
                STAND_IN_OID,
                evidence,
            ));
    }
    let with_evidence = !params.custom_extensions.is_empty();
    let cert = params
        .self_signed(key)
        .map_err(|e| format!("self-signing: {e}"))?;
    let pkcs8 = key.serialize_der();
    let der = if with_evidence {
        CertificateDer::from(with_evidence_oid(cert.der(), &pkcs8)?)
    } else {
        cert.der().clone()
    };
    Ok((der, PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(pkcs8))))
}

/// One DER TLV: (tag, content, the rest after it). Definite lengths only (DER).
fn der_tlv(b: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    let bad = || "certificate DER: truncated or indefinite length".to_string();
    let (&tag, rest) = b.split_first().ok_or_else(bad)?;
    let (&l0, rest) = rest.split_first().ok_or_else(bad)?;
    let (len, rest) = if l0 < 0x80 {
        (l0 as usize, rest)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad());
        }
        let len = rest[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize);
        (len, &rest[n..])
    };
    if rest.len() < len {
        return Err(bad());
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

fn der_push(out: &mut Vec<u8>, tag: u8, content: &[u8]) {
    out.push(tag);
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let be = (n as u32).to_be_bytes();
        let skip = be.iter().take_while(|&&x| x == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
    out.extend_from_slice(content);
}

/// A DER value with every OID equal to the stand-in replaced by the evidence OID; constructed
/// values are walked (their lengths re-encoded), primitive ones copied.
fn replace_oid(b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(b.len() + 16);
    let mut rest = b;
    while !rest.is_empty() {
        let (tag, content, next) = der_tlv(rest)?;
        if tag == 0x06 && content == STAND_IN_OID_DER {
            der_push(&mut out, tag, &EVIDENCE_OID_DER);
        } else if tag & 0x20 != 0 {
            der_push(&mut out, tag, &replace_oid(content)?);
        } else {
            der_push(&mut out, tag, content);
        }
        rest = next;
    }
    Ok(out)
}

/// The certificate `der` (self-signed by `pkcs8`, ECDSA P-256 SHA-256) with the evidence
/// extension's stand-in OID replaced and the TBSCertificate signed again.
fn with_evidence_oid(der: &[u8], pkcs8: &[u8]) -> Result<Vec<u8>, String> {
    let (tag, cert, rest) = der_tlv(der)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err("certificate DER: not one SEQUENCE".into());
    }
    let (tbs_tag, tbs, after) = der_tlv(cert)?;
    let (alg_tag, alg, _) = der_tlv(after)?;
    let mut new_tbs = Vec::new();
    der_push(&mut new_tbs, tbs_tag, &replace_oid(tbs)?);
    let rng = ring::rand::SystemRandom::new();
    let key = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8,
        &rng,
    )
    .map_err(|e| format!("certificate key: {e}"))?;
    let sig = key
        .sign(&rng, &new_tbs)
        .map_err(|e| format!("re-signing the certificate: {e}"))?;
    let mut bits = vec![0u8];
    bits.extend_from_slice(sig.as_ref());
    let mut body = new_tbs;
    der_push(&mut body, alg_tag, alg);
    der_push(&mut body, 0x03, &bits);
    let mut out = Vec::new();
    der_push(&mut out, 0x30, &body);
    Ok(out)
}

/// The evidence and the SPKI (DER) of an attested certificate, and whether it is valid now.
pub fn evidence_from_cert(cert: &[u8], now: UnixTime) -> Result<(Evidence, Vec<u8>), String> {
    let (rest, x) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("certificate does not parse: {e}"))?;
    if !rest.is_empty() {
        return Err("trailing bytes after the certificate".into());
    }
    if !crate::x509util::valid_at(&x, now.as_secs() as i64) {
        return Err("certificate is not valid now".into());
    }
    let mut found = x
        .extensions()
        .iter()
        .filter(|e| e.oid.as_bytes() == EVIDENCE_OID_DER);
    let ext = found
        .next()
        .ok_or("certificate has no evidence extension")?;
    if found.next().is_some() {
        return Err("certificate has the evidence extension more than once".into());
    }
    let evidence =
        Evidence::from_json(ext.value).map_err(|e| format!("evidence does not parse: {e}"))?;
    Ok((evidence, x.public_key().raw.to_vec()))
}

fn check_cert(
    verifier: &dyn Verifier,
    nonce: &[u8],
    join: JoinKind,
    cert: &[u8],
    now: UnixTime,
) -> Result<Accepted, Refusal> {
    match evidence_from_cert(cert, now) {
        Err(reason) => Err(Refusal {
            check: Check::QuoteFormat,
            reason: format!("attested certificate: {reason}"),
        }),
        Ok((evidence, spki)) => verifier.verify(
            &evidence,
            &Expectation {
                nonce,
                tls_public_key: &spki,
                join,
            },
        ),
    }
}

fn random_nonce() -> Result<[u8; 32], String> {
    use ring::rand::SecureRandom;
    let mut nonce = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut nonce)
        .map_err(|_| "the system RNG failed".to_string())?;
    Ok(nonce)
}

const SNI_SUFFIX: &str = ".nonce.nacre.invalid";

/// The server name a client uses to send its 32-byte nonce in SNI:
/// `<hex 0..16>.<hex 16..32>.nonce.nacre.invalid` (DNS labels are at most 63 characters).
pub fn server_name_for_nonce(nonce: &[u8; 32]) -> ServerName<'static> {
    let h = hex::encode(nonce);
    let name = format!("{}.{}{SNI_SUFFIX}", &h[..32], &h[32..]);
    ServerName::try_from(name).expect("a valid DNS name")
}

fn nonce_from_sni(name: &str) -> Option<Vec<u8>> {
    let labels = name.strip_suffix(SNI_SUFFIX)?;
    let (a, b) = labels.split_once('.')?;
    if a.len() != 32 || b.len() != 32 {
        return None;
    }
    hex::decode(format!("{a}{b}")).ok()
}

/// The acceptable-CA Name (DER) that carries a nonce.
fn nonce_hint(nonce: &[u8]) -> DistinguishedName {
    let cn = format!("{NONCE_PREFIX}{}", hex::encode(nonce));
    let mut atv = vec![0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, cn.len() as u8];
    atv.extend_from_slice(cn.as_bytes());
    let mut seq = vec![0x30, atv.len() as u8];
    seq.extend(atv);
    let mut set = vec![0x31, seq.len() as u8];
    set.extend(seq);
    DistinguishedName::in_sequence(&set)
}

/// The nonce in the server's acceptable-CA hints, if any.
fn nonce_from_hints(hints: &[&[u8]]) -> Option<Vec<u8>> {
    hints.iter().find_map(|h| {
        let p = NONCE_PREFIX.as_bytes();
        let i = h.windows(p.len()).position(|w| w == p)?;
        let hexs = h.get(i + p.len()..i + p.len() + 64)?;
        hex::decode(hexs).ok()
    })
}

/// Server side: requires a client certificate carrying evidence for this connection's nonce.
/// Make one per connection (`ServerConfig` per connection).
#[derive(Debug)]
pub struct AttestedClientVerifier {
    verifier: Arc<dyn Verifier>,
    join: JoinKind,
    nonce: [u8; 32],
    hints: Vec<DistinguishedName>,
    verdict: Mutex<Option<Result<Accepted, Refusal>>>,
    provider: Arc<CryptoProvider>,
}

impl AttestedClientVerifier {
    pub fn new(verifier: Arc<dyn Verifier>, join: JoinKind) -> Result<Self, String> {
        let nonce = random_nonce()?;
        Ok(AttestedClientVerifier {
            verifier,
            join,
            nonce,
            hints: vec![nonce_hint(&nonce)],
            verdict: Mutex::new(None),
            provider: provider(),
        })
    }

    /// The verdict on the client's evidence, once the handshake got that far.
    pub fn verdict(&self) -> Option<Result<Accepted, Refusal>> {
        self.verdict.lock().ok().and_then(|v| v.clone())
    }
}

/// Check a peer's attested certificate and keep the verdict for the caller (both directions).
fn check_and_record(
    verifier: &dyn Verifier,
    nonce: &[u8; 32],
    join: JoinKind,
    slot: &Mutex<Option<Result<Accepted, Refusal>>>,
    end_entity: &CertificateDer<'_>,
    now: UnixTime,
) -> Result<(), rustls::Error> {
    let verdict = check_cert(verifier, nonce, join, end_entity, now);
    let result = match &verdict {
        Ok(_) => Ok(()),
        Err(r) => Err(rustls::Error::General(r.to_string())),
    };
    if let Ok(mut v) = slot.lock() {
        *v = Some(verdict);
    }
    result
}

/// A fresh attested certificate for `nonce` with its key, ready for rustls (both directions).
fn certified_key(
    attest: &dyn Attest,
    provider: &CryptoProvider,
    nonce: &[u8],
) -> Option<Arc<CertifiedKey>> {
    let (cert, key) = attested_cert(attest, nonce).ok()?;
    let key = provider.key_provider.load_private_key(key).ok()?;
    Some(Arc::new(CertifiedKey::new(vec![cert], key)))
}

/// The TLS 1.3 handshake signature with the peer's (attested) certificate key.
fn verify_tls13(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

fn tls12_refused() -> Result<HandshakeSignatureValid, rustls::Error> {
    Err(rustls::Error::General(
        "attested TLS is TLS 1.3 only".into(),
    ))
}

impl ClientCertVerifier for AttestedClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &self.hints
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        check_and_record(
            self.verifier.as_ref(),
            &self.nonce,
            self.join,
            &self.verdict,
            end_entity,
            now,
        )
        .map(|()| ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    }
}

/// Client side: answers the server's nonce with a fresh attested certificate.
pub struct AttestedCertResolver {
    attest: Box<dyn Attest>,
    provider: Arc<CryptoProvider>,
}

impl std::fmt::Debug for AttestedCertResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttestedCertResolver")
    }
}

impl AttestedCertResolver {
    pub fn new(attest: Box<dyn Attest>) -> Self {
        AttestedCertResolver {
            attest,
            provider: provider(),
        }
    }
}

impl ResolvesClientCert for AttestedCertResolver {
    fn resolve(
        &self,
        root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        // No nonce from the server: nothing fresh to attest to, send no certificate.
        let nonce = nonce_from_hints(root_hint_subjects)?;
        certified_key(self.attest.as_ref(), &self.provider, &nonce)
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Client side of mutual attestation: records the server's per-connection certificate key in
/// the handshake (the server proves it holds it), then checks the server's evidence, sent after
/// the handshake, against this connection's nonce (sent in SNI) and that key
/// ([`AttestedServerVerifier::verify_evidence`]). Make one per connection.
#[derive(Debug)]
pub struct AttestedServerVerifier {
    verifier: Arc<dyn Verifier>,
    join: JoinKind,
    nonce: [u8; 32],
    server_spki: Mutex<Option<Vec<u8>>>,
    verdict: Mutex<Option<Result<Accepted, Refusal>>>,
    provider: Arc<CryptoProvider>,
}

impl AttestedServerVerifier {
    /// `join`: what the server must show (a control-plane node is initialized: `Rejoin`).
    pub fn new(verifier: Arc<dyn Verifier>, join: JoinKind) -> Result<Self, String> {
        Ok(AttestedServerVerifier {
            verifier,
            join,
            nonce: random_nonce()?,
            server_spki: Mutex::new(None),
            verdict: Mutex::new(None),
            provider: provider(),
        })
    }

    /// The name to connect to: it carries this verifier's nonce.
    pub fn server_name(&self) -> ServerName<'static> {
        server_name_for_nonce(&self.nonce)
    }

    /// The verdict on the server's evidence, once [`Self::verify_evidence`] ran.
    pub fn verdict(&self) -> Option<Result<Accepted, Refusal>> {
        self.verdict.lock().ok().and_then(|v| v.clone())
    }

    /// Check the evidence the server sent after the handshake: bound to this connection's nonce
    /// and to the key of the certificate the server used in this handshake. The verdict is kept.
    pub fn verify_evidence(&self, evidence: &Evidence) -> Result<Accepted, Refusal> {
        let spki = self.server_spki.lock().ok().and_then(|s| s.clone());
        let verdict = match spki {
            None => Err(Refusal {
                check: Check::QuoteFormat,
                reason: "no server certificate was verified on this connection".into(),
            }),
            Some(spki) => self.verifier.verify(
                evidence,
                &Expectation {
                    nonce: &self.nonce,
                    tls_public_key: &spki,
                    join: self.join,
                },
            ),
        };
        if let Ok(mut v) = self.verdict.lock() {
            *v = Some(verdict.clone());
        }
        verdict
    }
}

impl ServerCertVerifier for AttestedServerVerifier {
    /// Not trust: the certificate is the server's per-connection key, which its evidence (sent
    /// after the handshake) must bind. Only its form and validity are checked here.
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let (rest, x) = x509_parser::parse_x509_certificate(end_entity)
            .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
        if !rest.is_empty() || !crate::x509util::valid_at(&x, now.as_secs() as i64) {
            return Err(rustls::Error::General(
                "server certificate: trailing bytes or not valid now".into(),
            ));
        }
        if let Ok(mut s) = self.server_spki.lock() {
            *s = Some(x.public_key().raw.to_vec());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls12_refused()
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        vec![SignatureScheme::ECDSA_NISTP256_SHA256]
    }
}

/// Server side of mutual attestation, one per connection: answers a ClientHello that carries a
/// nonce in SNI with a certificate for a fresh key and no evidence (no TPM is used before the
/// client is verified); a client that sends no nonce gets no certificate (the handshake fails).
/// After the client's evidence was accepted, [`Self::evidence`] makes the server's own.
pub struct AttestedServerResolver {
    attest: Box<dyn Attest>,
    provider: Arc<CryptoProvider>,
    /// The client's nonce and this connection's certificate SPKI, once resolved.
    bound: Mutex<Option<(Vec<u8>, Vec<u8>)>>,
    /// The certificate of this connection: a second ClientHello (after a HelloRetryRequest)
    /// with the same nonce gets the same one.
    issued: Mutex<Option<Arc<CertifiedKey>>>,
}

impl std::fmt::Debug for AttestedServerResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttestedServerResolver")
    }
}

impl AttestedServerResolver {
    pub fn new(attest: Box<dyn Attest>) -> Self {
        AttestedServerResolver {
            attest,
            provider: provider(),
            bound: Mutex::new(None),
            issued: Mutex::new(None),
        }
    }

    /// The server's evidence for this connection: bound to the client's nonce and to the key
    /// of the certificate presented in the handshake. Call it only once the client's evidence
    /// was verified.
    pub fn evidence(&self) -> Result<Evidence, String> {
        let (nonce, spki) = self
            .bound
            .lock()
            .ok()
            .and_then(|b| b.clone())
            .ok_or("no certificate was presented on this connection")?;
        self.attest.evidence(&nonce, &spki)
    }

    fn fresh(&self, nonce: Vec<u8>) -> Result<Arc<CertifiedKey>, String> {
        if let Some((n, _)) = self
            .bound
            .lock()
            .map_err(|_| "poisoned".to_string())?
            .as_ref()
        {
            // A retried ClientHello of the same connection: the same nonce, the same
            // certificate; another nonce on one connection is refused.
            if *n != nonce {
                return Err("one connection, one nonce".into());
            }
            return self
                .issued
                .lock()
                .map_err(|_| "poisoned".to_string())?
                .clone()
                .ok_or_else(|| "no certificate issued".to_string());
        }
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| format!("key generation: {e}"))?;
        let spki = rcgen::PublicKeyData::subject_public_key_info(&key);
        let (cert, der) = self_signed(&key, "nacre-keyservice", None)?;
        let signer = self
            .provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| e.to_string())?;
        let mut bound = self.bound.lock().map_err(|_| "poisoned".to_string())?;
        if bound.is_some() {
            return Err("one connection, one certificate".into());
        }
        *bound = Some((nonce, spki));
        let ck = Arc::new(CertifiedKey::new(vec![cert], signer));
        if let Ok(mut i) = self.issued.lock() {
            *i = Some(ck.clone());
        }
        Ok(ck)
    }
}

impl ResolvesServerCert for AttestedServerResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let nonce = nonce_from_sni(client_hello.server_name()?)?;
        self.fresh(nonce).ok()
    }
}

/// Mutual attestation, server side: attested itself, requires an attested client.
pub fn mutual_server_config(
    client_verifier: Arc<AttestedClientVerifier>,
    resolver: Arc<AttestedServerResolver>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(client_verifier)
        .with_cert_resolver(resolver))
}

/// Mutual attestation, client side: connect to `server_verifier.server_name()`.
pub fn mutual_client_config(
    server_verifier: Arc<dyn ServerCertVerifier>,
    resolver: Arc<dyn ResolvesClientCert>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(server_verifier)
        .with_client_cert_resolver(resolver))
}

/// A TLS 1.3 server config (ring) that requires an attested client.
pub fn server_config(
    verifier: Arc<AttestedClientVerifier>,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
}

/// A TLS 1.3 client config (ring) that trusts the server through `roots` and attests itself.
pub fn client_config(
    roots: rustls::RootCertStore,
    resolver: Arc<dyn ResolvesClientCert>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    client_config_with(ca_verifier(roots)?, resolver)
}

/// The server verifier of [`client_config`]: the service's certificate chain to `roots`.
pub fn ca_verifier(
    roots: rustls::RootCertStore,
) -> Result<Arc<dyn ServerCertVerifier>, rustls::Error> {
    rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map(|v| v as Arc<dyn ServerCertVerifier>)
        .map_err(|e| rustls::Error::General(format!("server verifier: {e}")))
}

/// [`client_config`] with any server verifier (e.g. an [`AuthenticatingVerifier`] around
/// [`ca_verifier`]).
pub fn client_config_with(
    server_verifier: Arc<dyn ServerCertVerifier>,
    resolver: Arc<dyn ResolvesClientCert>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(server_verifier)
        .with_client_cert_resolver(resolver))
}

/// Whether the server proved who it is in this handshake: its certificate was accepted by the
/// inner verifier **and** its CertificateVerify signature (over the transcript, which includes
/// the key exchange) checked out. Until then anything the client receives may come from
/// whoever is on the path: a TLS alert before it is not the service's word (a plaintext alert
/// needs no key; an encrypted one after ServerHello needs only the attacker's own key share).
/// After it, records are protected by keys only the authenticated server has, so an alert is
/// the service's. One per connection.
pub struct AuthenticatingVerifier {
    inner: Arc<dyn ServerCertVerifier>,
    cert_ok: std::sync::atomic::AtomicBool,
    authenticated: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for AuthenticatingVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthenticatingVerifier")
            .field("authenticated", &self.authenticated())
            .finish_non_exhaustive()
    }
}

impl AuthenticatingVerifier {
    pub fn new(inner: Arc<dyn ServerCertVerifier>) -> Arc<Self> {
        Arc::new(AuthenticatingVerifier {
            inner,
            cert_ok: Default::default(),
            authenticated: Default::default(),
        })
    }

    /// The server's certificate and its handshake signature were both verified.
    pub fn authenticated(&self) -> bool {
        self.authenticated
            .load(std::sync::atomic::Ordering::Acquire)
    }
}

impl ServerCertVerifier for AuthenticatingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let r = self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        );
        if r.is_ok() {
            self.cert_ok
                .store(true, std::sync::atomic::Ordering::Release);
        }
        r
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // TLS 1.2 is not offered; never authenticates.
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let r = self.inner.verify_tls13_signature(message, cert, dss);
        if r.is_ok() && self.cert_ok.load(std::sync::atomic::Ordering::Acquire) {
            self.authenticated
                .store(true, std::sync::atomic::Ordering::Release);
        }
        r
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The evidence extension carries nacre's 2.25 OID (read back by x509-parser and, as
    /// text, by OpenSSL when it is installed), and the rewritten certificate's self-signature
    /// verifies.
    #[test]
    fn the_evidence_extension_has_nacres_uuid_oid() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (der, _) = self_signed(&key, "nacre-node", Some(br#"{"x":1}"#.to_vec())).unwrap();
        let (_, x) = x509_parser::parse_x509_certificate(&der).unwrap();
        let ext: Vec<_> = x
            .extensions()
            .iter()
            .filter(|e| e.oid.as_bytes() == EVIDENCE_OID_DER)
            .collect();
        assert_eq!(ext.len(), 1);
        assert_eq!(ext[0].value, br#"{"x":1}"#);
        assert!(!x
            .extensions()
            .iter()
            .any(|e| e.oid.as_bytes() == STAND_IN_OID_DER));
        let spki = x.public_key().subject_public_key.data.to_vec();
        ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, spki)
            .verify(x.tbs_certificate.as_ref(), &x.signature_value.data)
            .expect("the re-signed certificate's signature");
        // The DER content is the OID's text form.
        let mut arcs = vec![2u128, 25];
        let mut v: u128 = 0;
        for &b in &EVIDENCE_OID_DER[1..] {
            v = (v << 7) | u128::from(b & 0x7f);
            if b & 0x80 == 0 {
                arcs.push(v);
                v = 0;
            }
        }
        assert_eq!(EVIDENCE_OID_DER[0], 2 * 40 + 25);
        let text: Vec<String> = arcs.iter().map(u128::to_string).collect();
        assert_eq!(text.join("."), EVIDENCE_OID);
        assert_eq!(
            arcs[2],
            u128::from_str_radix("33bbe192d7e9450eb69919cd200b76bb", 16).unwrap()
        );
        // OpenSSL, an independent reader, prints the same OID.
        let dir = std::env::temp_dir().join(format!("nacre-oid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("cert.der");
        std::fs::write(&path, &der).unwrap();
        if let Ok(o) = std::process::Command::new("openssl")
            .args(["x509", "-inform", "DER", "-noout", "-text", "-in"])
            .arg(&path)
            .output()
        {
            let t = String::from_utf8_lossy(&o.stdout);
            assert!(o.status.success() && t.contains(EVIDENCE_OID), "{t}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_certificate_with_the_extension_twice_carries_no_evidence() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["n".to_string()]).unwrap();
        for _ in 0..2 {
            params
                .custom_extensions
                .push(rcgen::CustomExtension::from_oid_content(
                    STAND_IN_OID,
                    b"{}".to_vec(),
                ));
        }
        let cert = params.self_signed(&key).unwrap();
        let der = with_evidence_oid(cert.der(), &key.serialize_der()).unwrap();
        let e = evidence_from_cert(&der, UnixTime::now()).unwrap_err();
        assert!(e.contains("more than once"), "{e}");
    }

    #[test]
    fn der_rewriting_refuses_truncated_input() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let (der, _) = self_signed(&key, "n", Some(b"{}".to_vec())).unwrap();
        let pkcs8 = key.serialize_der();
        for cut in [1, 10, der.len() / 2, der.len() - 1] {
            assert!(with_evidence_oid(&der[..cut], &pkcs8).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn nonce_round_trips_through_the_hint() {
        let n = [0x5a; 32];
        let h = nonce_hint(&n);
        assert_eq!(nonce_from_hints(&[h.as_ref()]), Some(n.to_vec()));
        assert_eq!(nonce_from_hints(&[b"other".as_ref()]), None);
    }

    #[test]
    fn nonce_round_trips_through_sni() {
        let n = [0xa5; 32];
        let name = match server_name_for_nonce(&n) {
            ServerName::DnsName(d) => d.as_ref().to_owned(),
            _ => unreachable!(),
        };
        assert_eq!(nonce_from_sni(&name), Some(n.to_vec()));
        assert_eq!(nonce_from_sni("localhost"), None);
    }
}
