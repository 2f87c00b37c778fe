//! Small X.509/DER helpers for the cloud AK bindings ([`crate::gce`], [`crate::azure`]) and the
//! other certificate checks (EK, Nitro, aTLS): certificate signatures checked with ring, public keys
//! compared by value, validity at a time, an SPKI's curve, RSA SPKI built from
//! a modulus and exponent.

use x509_parser::prelude::*;

/// One DER TLV (short or long definite length).
pub(crate) struct Tlv<'a> {
    pub tag: u8,
    pub value: &'a [u8],
}

/// The first TLV of `b` and the bytes after it.
pub(crate) fn der_tlv(b: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *b.first()?;
    let l0 = *b.get(1)?;
    let (len, hdr) = if l0 < 0x80 {
        (usize::from(l0), 2)
    } else {
        let n = usize::from(l0 & 0x7f);
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | usize::from(*b.get(2 + i)?);
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    let value = b.get(hdr..end)?;
    Some((Tlv { tag, value }, &b[end..]))
}

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn der(tag: u8, value: &[u8]) -> Vec<u8> {
    let mut v = vec![tag];
    der_len(value.len(), &mut v);
    v.extend_from_slice(value);
    v
}

fn der_uint(big_endian: &[u8]) -> Vec<u8> {
    let b = strip_zeros(big_endian);
    let mut v = Vec::with_capacity(b.len() + 1);
    if b.first().is_none_or(|x| x & 0x80 != 0) {
        v.push(0);
    }
    v.extend_from_slice(b);
    der(0x02, &v)
}

fn strip_zeros(b: &[u8]) -> &[u8] {
    let skip = b.iter().take_while(|x| **x == 0).count();
    &b[skip..]
}

/// rsaEncryption SubjectPublicKeyInfo DER of modulus `n` and exponent `e` (big-endian).
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    let mut rsa_key = der_uint(n);
    rsa_key.extend(der_uint(e));
    let rsa_key = der(0x30, &rsa_key);
    // AlgorithmIdentifier { rsaEncryption, NULL }.
    let alg = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8];
    bits.extend(rsa_key);
    let mut body = alg.to_vec();
    body.extend(der(0x03, &bits));
    der(0x30, &body)
}

/// A public key, by value: what two encodings of the same key have in common.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum KeyValue {
    /// Curve OID (dotted) and the uncompressed point.
    Ec(String, Vec<u8>),
    /// Modulus and exponent without leading zeros.
    Rsa(Vec<u8>, Vec<u8>),
}

pub(crate) fn public_key_of(spki: &SubjectPublicKeyInfo<'_>) -> Option<KeyValue> {
    match spki.parsed().ok()? {
        x509_parser::public_key::PublicKey::RSA(k) => Some(KeyValue::Rsa(
            strip_zeros(k.modulus).to_vec(),
            strip_zeros(k.exponent).to_vec(),
        )),
        x509_parser::public_key::PublicKey::EC(p) => {
            Some(KeyValue::Ec(spki_curve(spki)?, p.data().to_vec()))
        }
        _ => None,
    }
}

/// The named curve (dotted OID) in an SPKI's algorithm parameters, if it names one.
pub(crate) fn spki_curve(spki: &SubjectPublicKeyInfo<'_>) -> Option<String> {
    spki.algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string())
}

/// `c` is valid at `t` (UNIX seconds): notBefore <= t <= notAfter.
pub(crate) fn valid_at(c: &X509Certificate<'_>, t: i64) -> bool {
    let v = c.validity();
    t >= v.not_before.timestamp() && t <= v.not_after.timestamp()
}

/// `child`'s signature verifies with `issuer`'s key (ring: RSA PKCS#1 v1.5 SHA-256/384/512,
/// ECDSA P-256/SHA-256, P-384/SHA-384).
pub(crate) fn check_signed_by(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
) -> Result<(), String> {
    use ring::signature as sig;
    let oid = child.signature_algorithm.algorithm.to_id_string();
    let alg: &dyn sig::VerificationAlgorithm = match oid.as_str() {
        "1.2.840.113549.1.1.11" => &sig::RSA_PKCS1_2048_8192_SHA256,
        "1.2.840.113549.1.1.12" => &sig::RSA_PKCS1_2048_8192_SHA384,
        "1.2.840.113549.1.1.13" => &sig::RSA_PKCS1_2048_8192_SHA512,
        "1.2.840.10045.4.3.2" => &sig::ECDSA_P256_SHA256_ASN1,
        "1.2.840.10045.4.3.3" => &sig::ECDSA_P384_SHA384_ASN1,
        other => return Err(format!("signature algorithm {other} is not supported")),
    };
    let key = issuer.public_key().subject_public_key.data.as_ref();
    sig::UnparsedPublicKey::new(alg, key)
        .verify(
            child.tbs_certificate.as_ref(),
            child.signature_value.data.as_ref(),
        )
        .map_err(|_| "the signature does not verify".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsa_spki_parses_back() {
        let n = [0xc1u8; 256];
        let spki = rsa_spki(&n, &[1, 0, 1]);
        let (rest, parsed) = SubjectPublicKeyInfo::from_der(&spki).unwrap();
        assert!(rest.is_empty());
        assert_eq!(
            public_key_of(&parsed),
            Some(KeyValue::Rsa(n.to_vec(), vec![1, 0, 1]))
        );
    }

    #[test]
    fn tlv_lengths() {
        let long = der(0x04, &[7u8; 300]);
        let (t, rest) = der_tlv(&long).unwrap();
        assert_eq!((t.tag, t.value.len(), rest.len()), (0x04, 300, 0));
        assert!(der_tlv(&long[..long.len() - 1]).is_none());
        assert!(der_tlv(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_none());
    }
}
