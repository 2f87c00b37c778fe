//! Just enough DER for the few fixed shapes nacre-measure writes or splits itself (a
//! SubjectPublicKeyInfo's parts, an RSA key wrapped as one). Certificates and PKCS#7 are read
//! with RustCrypto's `x509-cert`/`cms` ([`crate::pkcs7`]).

/// Split one TLV off the front: (tag, whole TLV, contents, rest).
/// (tag, whole TLV, contents, rest)
type Tlv<'a> = (u8, &'a [u8], &'a [u8], &'a [u8]);

fn tlv(b: &[u8]) -> Option<Tlv<'_>> {
    let tag = *b.first()?;
    let first = *b.get(1)?;
    let (len, hdr) = if first < 0x80 {
        (first as usize, 2)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 {
            return None;
        }
        let mut len = 0usize;
        for i in 0..n {
            len = (len << 8) | *b.get(2 + i)? as usize;
        }
        (len, 2 + n)
    };
    let end = hdr.checked_add(len)?;
    let whole = b.get(..end)?;
    Some((tag, whole, &whole[hdr..], &b[end..]))
}

/// The parts of a SubjectPublicKeyInfo: (algorithm OID contents, parameters OID contents or
/// empty, subject public key bits without the unused-bits byte).
pub fn spki_parts(spki: &[u8]) -> Option<(&[u8], &[u8], &[u8])> {
    let (0x30, _, body, _) = tlv(spki)? else {
        return None;
    };
    let (0x30, _, alg_id, rest) = tlv(body)? else {
        return None;
    };
    let (0x06, _, oid, params) = tlv(alg_id)? else {
        return None;
    };
    let params = match tlv(params) {
        Some((0x06, _, p, _)) => p,
        _ => &[],
    };
    let (0x03, _, bits, _) = tlv(rest)? else {
        return None;
    };
    let (&unused, key) = bits.split_first()?;
    (unused == 0).then_some((oid, params, key))
}

fn encode_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|&b| b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
}

fn encode_tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    encode_len(contents.len(), &mut out);
    out.extend_from_slice(contents);
    out
}

/// Wrap a PKCS#1 `RSAPublicKey` in a SubjectPublicKeyInfo (rsaEncryption, NULL parameters).
pub fn rsa_spki(pkcs1: &[u8]) -> Vec<u8> {
    let alg = [
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8];
    bits.extend_from_slice(pkcs1);
    let mut body = alg.to_vec();
    body.extend(encode_tlv(0x03, &bits));
    encode_tlv(0x30, &body)
}
