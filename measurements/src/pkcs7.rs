//! The Authenticode signature of a PE image (a PKCS#7 SignedData in its certificate table) read
//! from its structure, as firmware reads it: the signer named by its `SignerInfo` (issuer and
//! serial number) among the embedded certificates, the image digest its
//! `SpcIndirectDataContent` carries, the signer's signature over the signed attributes (whose
//! `messageDigest` covers that content), and which certificates issued which (signatures
//! checked with ring: no second crypto provider). Decoding is RustCrypto's `cms`/`x509-cert`
//! (formats only).

use cms::cert::CertificateChoices;
use cms::content_info::ContentInfo;
use cms::signed_data::{SignedData, SignerIdentifier};
use der::asn1::{ObjectIdentifier, OctetString};
use der::{Decode, Encode, Reader, Sequence, SliceReader};
use ring::signature::{self, UnparsedPublicKey, VerificationAlgorithm};
use spki::AlgorithmIdentifierOwned;
use x509_cert::Certificate;

const ID_SIGNED_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.7.2");
const SPC_INDIRECT_DATA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.6.1.4.1.311.2.1.4");
const ID_MESSAGE_DIGEST: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.9.4");
const ID_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.1");
const ID_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.2");
const ID_SHA512: ObjectIdentifier = ObjectIdentifier::new_unwrap("2.16.840.1.101.3.4.2.3");
const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const SHA256_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.11");
const SHA384_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.12");
const SHA512_WITH_RSA: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.13");
const ECDSA_WITH_SHA256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.2");
const ECDSA_WITH_SHA384: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.4.3.3");
const ID_EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const SECP256R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
/// How many issuers up from the signer a trust anchor is looked for.
const MAX_CHAIN: usize = 8;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Pkcs7Error {
    #[error("not a PKCS#7 SignedData: {0}")]
    Structure(String),
    #[error("the signature names no certificate it embeds as its signer")]
    NoSigner,
    #[error("the signer's signature does not verify: {0}")]
    BadSignature(String),
}

/// `SpcIndirectDataContent ::= SEQUENCE { data SpcAttributeTypeAndOptionalValue, messageDigest
/// DigestInfo }`.
#[derive(Sequence)]
struct SpcIndirectDataContent {
    data: der::Any,
    message_digest: DigestInfo,
}

#[derive(Sequence)]
struct DigestInfo {
    algorithm: AlgorithmIdentifierOwned,
    digest: OctetString,
}

/// An Authenticode signature whose signer's signature verified.
#[derive(Debug, Clone)]
pub struct Authenticode {
    /// The signer's certificate.
    pub signer: Certificate,
    /// Every certificate the SignedData embeds (the signer's among them).
    pub certificates: Vec<Certificate>,
    /// The image digest the signer signed (`SpcIndirectDataContent.messageDigest.digest`).
    pub image_digest: Vec<u8>,
}

fn structure(e: impl std::fmt::Display) -> Pkcs7Error {
    Pkcs7Error::Structure(e.to_string())
}

/// Read a `WIN_CERTIFICATE`'s PKCS#7 blob (trailing alignment bytes allowed) and check its
/// signer's signature: exactly one `SignerInfo`, its certificate embedded, the
/// `messageDigest` attribute equal to the digest of the `SpcIndirectDataContent`'s contents
/// (Authenticode hashes them without their tag and length), and the signature over the signed
/// attributes made with the signer's key.
pub fn parse_authenticode(blob: &[u8]) -> Result<Authenticode, Pkcs7Error> {
    let mut r = SliceReader::new(blob).map_err(structure)?;
    let ci: ContentInfo = r.decode().map_err(structure)?;
    if r.remaining_len() > der::Length::new(8) {
        return Err(structure("more than alignment after the SignedData"));
    }
    if ci.content_type != ID_SIGNED_DATA {
        return Err(structure(format!("content type {}", ci.content_type)));
    }
    let sd: SignedData = ci.content.decode_as().map_err(structure)?;
    if sd.encap_content_info.econtent_type != SPC_INDIRECT_DATA {
        return Err(structure(format!(
            "encapsulated content type {} (not SpcIndirectDataContent)",
            sd.encap_content_info.econtent_type
        )));
    }
    let econtent = sd
        .encap_content_info
        .econtent
        .as_ref()
        .ok_or_else(|| structure("no encapsulated content"))?;
    let spc: SpcIndirectDataContent = econtent.decode_as().map_err(structure)?;
    let certificates: Vec<Certificate> = sd
        .certificates
        .as_ref()
        .map(|set| {
            set.0
                .iter()
                .filter_map(|c| match c {
                    CertificateChoices::Certificate(c) => Some(c.clone()),
                    CertificateChoices::Other(_) => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let infos: Vec<_> = sd.signer_infos.0.iter().collect();
    let [si] = infos.as_slice() else {
        return Err(structure(format!(
            "{} SignerInfos (Authenticode has one)",
            infos.len()
        )));
    };
    let signer = match &si.sid {
        SignerIdentifier::IssuerAndSerialNumber(isn) => certificates
            .iter()
            .find(|c| {
                c.tbs_certificate().issuer() == &isn.issuer
                    && c.tbs_certificate().serial_number() == &isn.serial_number
            })
            .cloned()
            .ok_or(Pkcs7Error::NoSigner)?,
        SignerIdentifier::SubjectKeyIdentifier(_) => {
            return Err(structure(
                "a signer named by key identifier (Authenticode names issuer and serial)",
            ))
        }
    };
    let attrs = si
        .signed_attrs
        .as_ref()
        .ok_or_else(|| structure("no signed attributes"))?;
    let content_digest = digest(&si.digest_alg.oid, econtent.value())
        .ok_or_else(|| structure(format!("digest algorithm {}", si.digest_alg.oid)))?;
    let message_digest = attrs
        .iter()
        .find(|a| a.oid == ID_MESSAGE_DIGEST)
        .and_then(|a| a.values.iter().next())
        .ok_or_else(|| structure("no messageDigest attribute"))?
        .decode_as::<OctetString>()
        .map_err(structure)?;
    if message_digest.as_bytes() != content_digest.as_slice() {
        return Err(Pkcs7Error::BadSignature(
            "the messageDigest attribute is not the digest of the signed content".into(),
        ));
    }
    // The signature covers the DER of the attributes as a SET OF (tag 0x31).
    let signed = attrs.to_der().map_err(structure)?;
    verify(
        &signer,
        &si.signature_algorithm.oid,
        Some(&si.digest_alg.oid),
        &signed,
        si.signature.as_bytes(),
    )
    .map_err(Pkcs7Error::BadSignature)?;
    Ok(Authenticode {
        signer,
        certificates,
        image_digest: spc.message_digest.digest.as_bytes().to_vec(),
    })
}

fn digest(alg: &ObjectIdentifier, data: &[u8]) -> Option<Vec<u8>> {
    let a = match *alg {
        ID_SHA256 => &ring::digest::SHA256,
        ID_SHA384 => &ring::digest::SHA384,
        ID_SHA512 => &ring::digest::SHA512,
        _ => return None,
    };
    Some(ring::digest::digest(a, data).as_ref().to_vec())
}

/// Verify `sig` over `message` with `key_cert`'s public key, for the signature algorithm `alg`
/// (rsaEncryption takes its hash from `digest_alg`, as in a SignerInfo).
fn verify(
    key_cert: &Certificate,
    alg: &ObjectIdentifier,
    digest_alg: Option<&ObjectIdentifier>,
    message: &[u8],
    sig: &[u8],
) -> Result<(), String> {
    let spki = key_cert.tbs_certificate().subject_public_key_info();
    let key = spki
        .subject_public_key
        .as_bytes()
        .ok_or("the public key is not whole bytes")?;
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.decode_as::<ObjectIdentifier>().ok());
    let scheme: &dyn VerificationAlgorithm = match (*alg, digest_alg.copied()) {
        (SHA256_WITH_RSA, _) | (RSA_ENCRYPTION, Some(ID_SHA256)) => {
            &signature::RSA_PKCS1_2048_8192_SHA256
        }
        (SHA384_WITH_RSA, _) | (RSA_ENCRYPTION, Some(ID_SHA384)) => {
            &signature::RSA_PKCS1_2048_8192_SHA384
        }
        (SHA512_WITH_RSA, _) | (RSA_ENCRYPTION, Some(ID_SHA512)) => {
            &signature::RSA_PKCS1_2048_8192_SHA512
        }
        (ECDSA_WITH_SHA256, _) if curve == Some(SECP256R1) => &signature::ECDSA_P256_SHA256_ASN1,
        (ECDSA_WITH_SHA384, _) if curve == Some(SECP384R1) => &signature::ECDSA_P384_SHA384_ASN1,
        (ECDSA_WITH_SHA256, _) if curve == Some(SECP384R1) => &signature::ECDSA_P384_SHA256_ASN1,
        (ECDSA_WITH_SHA384, _) if curve == Some(SECP256R1) => &signature::ECDSA_P256_SHA384_ASN1,
        _ => return Err(format!("signature algorithm {alg} is not supported")),
    };
    let rsa_key = spki.algorithm.oid == RSA_ENCRYPTION;
    let ec_key = spki.algorithm.oid == ID_EC_PUBLIC_KEY;
    let rsa_scheme = matches!(
        *alg,
        SHA256_WITH_RSA | SHA384_WITH_RSA | SHA512_WITH_RSA | RSA_ENCRYPTION
    );
    if (rsa_scheme && !rsa_key) || (!rsa_scheme && !ec_key) {
        return Err(format!("a {alg} signature by a {} key", spki.algorithm.oid));
    }
    UnparsedPublicKey::new(scheme, key)
        .verify(message, sig)
        .map_err(|_| "the signature does not match".to_string())
}

/// Whether `issuer` issued `cert`: `cert`'s issuer is `issuer`'s subject and `cert`'s
/// signature verifies with `issuer`'s key.
pub fn issued_by(cert: &Certificate, issuer: &Certificate) -> bool {
    if cert.tbs_certificate().issuer() != issuer.tbs_certificate().subject() {
        return false;
    }
    let Ok(tbs) = cert.tbs_certificate().to_der() else {
        return false;
    };
    let Some(sig) = cert.signature().as_bytes() else {
        return false;
    };
    verify(issuer, &cert.signature_algorithm().oid, None, &tbs, sig).is_ok()
}

/// Whether the trust anchor `anchor` (a certificate in db) vouches for the signer: the chain
/// from the signer up through the embedded certificates reaches a certificate equal to
/// `anchor`, or one `anchor` issued (edk2 verifies with the db certificate as the only trusted
/// one and accepts a partial chain).
pub fn chains_to(a: &Authenticode, anchor: &Certificate) -> bool {
    let mut current = a.signer.clone();
    for _ in 0..MAX_CHAIN {
        if &current == anchor || issued_by(&current, anchor) {
            return true;
        }
        let Some(next) = a
            .certificates
            .iter()
            .find(|c| *c != &current && issued_by(&current, c))
        else {
            return false;
        };
        current = next.clone();
    }
    false
}

/// A db entry's certificate, if it is one.
pub fn certificate(der: &[u8]) -> Option<Certificate> {
    Certificate::from_der(der).ok()
}
