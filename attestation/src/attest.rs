//! TPMS_ATTEST (type TPM_ST_ATTEST_QUOTE) and TPMT_SIGNATURE (ECDSA) as the TPM marshals them
//! (TPM 2.0 Part 2, big-endian). Parsed here, not through tss-esapi, so a verifier needs no TPM
//! library and checks exactly the bytes that were signed.

/// TPM_GENERATED_VALUE.
pub const TPM_GENERATED: u32 = 0xff54_4347;
/// TPM_ST_ATTEST_QUOTE.
pub const ST_ATTEST_QUOTE: u16 = 0x8018;
/// TPM_ALG_SHA256.
pub const ALG_SHA256: u16 = 0x000b;
/// TPM_ALG_ECDSA.
pub const ALG_ECDSA: u16 = 0x0018;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AttestError {
    #[error("truncated at byte {0}")]
    Truncated(usize),
    #[error("{0} trailing bytes")]
    Trailing(usize),
    #[error("magic is {0:#010x}, not TPM_GENERATED_VALUE (0xff544347)")]
    Magic(u32),
    #[error("type is {0:#06x}, not TPM_ST_ATTEST_QUOTE (0x8018)")]
    Type(u16),
    #[error("signature algorithm {0:#06x} is not ECDSA (0x0018)")]
    SigAlg(u16),
    #[error("signature hash {0:#06x} is not the one expected")]
    SigHash(u16),
    #[error("ECDSA r or s is {0} bytes, longer than the curve's")]
    SigComponent(usize),
    #[error("{0}")]
    Other(String),
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], AttestError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(AttestError::Truncated(self.pos))?;
        let s = self
            .data
            .get(self.pos..end)
            .ok_or(AttestError::Truncated(self.pos))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, AttestError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, AttestError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, AttestError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, AttestError> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn tpm2b(&mut self) -> Result<&'a [u8], AttestError> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn end(&self) -> Result<(), AttestError> {
        match self.data.len() - self.pos {
            0 => Ok(()),
            n => Err(AttestError::Trailing(n)),
        }
    }
}

/// One TPMS_PCR_SELECTION.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrSelection {
    pub hash: u16,
    /// Selected PCR indices, ascending (the order the TPM hashes them into pcrDigest).
    pub pcrs: Vec<u32>,
}

/// A parsed TPMS_ATTEST of type quote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteInfo {
    pub qualified_signer: Vec<u8>,
    pub extra_data: Vec<u8>,
    pub clock: u64,
    pub reset_count: u32,
    pub restart_count: u32,
    pub safe: bool,
    pub firmware_version: u64,
    pub selections: Vec<PcrSelection>,
    pub pcr_digest: Vec<u8>,
}

/// A reader past a TPMS_ATTEST's magic and type, which must be `expected` (`wrong` names the
/// error otherwise).
fn attest_body(
    attest: &[u8],
    expected: u16,
    wrong: impl FnOnce(u16) -> AttestError,
) -> Result<Reader<'_>, AttestError> {
    let mut r = Reader {
        data: attest,
        pos: 0,
    };
    let magic = r.u32()?;
    if magic != TPM_GENERATED {
        return Err(AttestError::Magic(magic));
    }
    let ty = r.u16()?;
    if ty != expected {
        return Err(wrong(ty));
    }
    Ok(r)
}

pub fn parse_quote(attest: &[u8]) -> Result<QuoteInfo, AttestError> {
    let mut r = attest_body(attest, ST_ATTEST_QUOTE, AttestError::Type)?;
    let qualified_signer = r.tpm2b()?.to_vec();
    let extra_data = r.tpm2b()?.to_vec();
    let clock = r.u64()?;
    let reset_count = r.u32()?;
    let restart_count = r.u32()?;
    let safe = r.u8()? != 0;
    let firmware_version = r.u64()?;
    let count = r.u32()?;
    let mut selections = Vec::new();
    for _ in 0..count {
        let hash = r.u16()?;
        let size = r.u8()? as usize;
        let bits = r.take(size)?;
        let mut pcrs = Vec::new();
        for (i, byte) in bits.iter().enumerate() {
            for bit in 0..8 {
                if byte & (1 << bit) != 0 {
                    pcrs.push((i * 8 + bit) as u32);
                }
            }
        }
        selections.push(PcrSelection { hash, pcrs });
    }
    let pcr_digest = r.tpm2b()?.to_vec();
    r.end()?;
    Ok(QuoteInfo {
        qualified_signer,
        extra_data,
        clock,
        reset_count,
        restart_count,
        safe,
        firmware_version,
        selections,
        pcr_digest,
    })
}

/// The fixed-size r||s (64 bytes) of an ECDSA/SHA-256 TPMT_SIGNATURE (a P-256 AK's).
pub fn parse_ecdsa_signature(sig: &[u8]) -> Result<[u8; 64], AttestError> {
    let v = parse_ecdsa(sig, ALG_SHA256, 32)?;
    let mut out = [0u8; 64];
    out.copy_from_slice(&v);
    Ok(out)
}

/// TPM_ST_ATTEST_CERTIFY.
pub const ST_ATTEST_CERTIFY: u16 = 0x8017;
/// TPM_ALG_SHA384.
pub const ALG_SHA384: u16 = 0x000c;
const ALG_NULL: u16 = 0x0010;
const ALG_ECC: u16 = 0x0023;

/// A parsed TPMS_ATTEST of type certify.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertifyInfo {
    pub extra_data: Vec<u8>,
    /// The certified object's name (nameAlg || H(TPMT_PUBLIC)).
    pub name: Vec<u8>,
}

pub fn parse_certify(attest: &[u8]) -> Result<CertifyInfo, AttestError> {
    let mut r = attest_body(attest, ST_ATTEST_CERTIFY, |ty| {
        AttestError::Other(format!(
            "type is {ty:#06x}, not TPM_ST_ATTEST_CERTIFY (0x8017)"
        ))
    })?;
    r.tpm2b()?; // qualifiedSigner
    let extra_data = r.tpm2b()?.to_vec();
    r.take(8 + 4 + 4 + 1 + 8)?; // clockInfo, firmwareVersion
    let name = r.tpm2b()?.to_vec();
    r.tpm2b()?; // qualifiedName
    r.end()?;
    Ok(CertifyInfo { extra_data, name })
}

/// The parts of an ECC TPMT_PUBLIC a verifier checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EccPublic {
    pub name_alg: u16,
    pub attributes: u32,
    pub curve: u16,
    pub x: Vec<u8>,
    pub y: Vec<u8>,
}

/// TPMA_OBJECT bits.
pub const ATTR_FIXED_TPM: u32 = 1 << 1;
pub const ATTR_FIXED_PARENT: u32 = 1 << 4;
pub const ATTR_SENSITIVE_DATA_ORIGIN: u32 = 1 << 5;
pub const ATTR_RESTRICTED: u32 = 1 << 16;
pub const ATTR_SIGN: u32 = 1 << 18;

pub fn parse_ecc_public(area: &[u8]) -> Result<EccPublic, AttestError> {
    let mut r = Reader { data: area, pos: 0 };
    let ty = r.u16()?;
    if ty != ALG_ECC {
        return Err(AttestError::Other(format!(
            "TPMT_PUBLIC type {ty:#06x} is not ECC"
        )));
    }
    let name_alg = r.u16()?;
    let attributes = r.u32()?;
    r.tpm2b()?; // authPolicy
    if r.u16()? != ALG_NULL {
        r.take(4)?; // symmetric keyBits, mode
    }
    if r.u16()? != ALG_NULL {
        r.u16()?; // scheme hash
    }
    let curve = r.u16()?;
    if r.u16()? != ALG_NULL {
        r.u16()?; // kdf hash
    }
    let x = r.tpm2b()?.to_vec();
    let y = r.tpm2b()?.to_vec();
    r.end()?;
    Ok(EccPublic {
        name_alg,
        attributes,
        curve,
        x,
        y,
    })
}

/// r || s (each `size` bytes) of an ECDSA TPMT_SIGNATURE with hash `hash`.
pub fn parse_ecdsa(sig: &[u8], hash: u16, size: usize) -> Result<Vec<u8>, AttestError> {
    let mut r = Reader { data: sig, pos: 0 };
    let alg = r.u16()?;
    if alg != ALG_ECDSA {
        return Err(AttestError::SigAlg(alg));
    }
    let h = r.u16()?;
    if h != hash {
        return Err(AttestError::SigHash(h));
    }
    let sr = r.tpm2b()?;
    let ss = r.tpm2b()?;
    r.end()?;
    let mut out = vec![0u8; 2 * size];
    for (i, c) in [sr, ss].into_iter().enumerate() {
        let c = &c[c.iter().take_while(|b| **b == 0).count()..];
        if c.len() > size {
            return Err(AttestError::SigComponent(c.len()));
        }
        out[i * size + size - c.len()..(i + 1) * size].copy_from_slice(c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&TPM_GENERATED.to_be_bytes());
        v.extend_from_slice(&ST_ATTEST_QUOTE.to_be_bytes());
        v.extend_from_slice(&[0, 2, 0xaa, 0xbb]); // signer
        v.extend_from_slice(&[0, 3, 1, 2, 3]); // extraData
        v.extend_from_slice(&[0; 17]); // clockInfo
        v.extend_from_slice(&[0; 8]); // firmwareVersion
        v.extend_from_slice(&1u32.to_be_bytes());
        v.extend_from_slice(&ALG_SHA256.to_be_bytes());
        v.extend_from_slice(&[3, 0b0001_0001, 0b1000_0000, 0]); // PCR 0, 4, 15
        v.extend_from_slice(&[0, 32]);
        v.extend_from_slice(&[7; 32]);
        v
    }

    #[test]
    fn parses_a_quote() {
        let q = parse_quote(&sample()).unwrap();
        assert_eq!(q.extra_data, vec![1, 2, 3]);
        assert_eq!(q.selections[0].pcrs, vec![0, 4, 15]);
        assert_eq!(q.pcr_digest, vec![7; 32]);
    }

    #[test]
    fn refuses_bad_magic_type_and_trailing() {
        let mut s = sample();
        s[0] = 0;
        assert!(matches!(parse_quote(&s), Err(AttestError::Magic(_))));
        let mut s = sample();
        s[5] = 0x17;
        assert!(matches!(parse_quote(&s), Err(AttestError::Type(0x8017))));
        let mut s = sample();
        s.push(0);
        assert_eq!(parse_quote(&s), Err(AttestError::Trailing(1)));
        let s = sample();
        assert!(matches!(
            parse_quote(&s[..s.len() - 1]),
            Err(AttestError::Truncated(_))
        ));
    }

    #[test]
    fn ecdsa_signature_pads_components() {
        let mut s = vec![0, 0x18, 0, 0x0b, 0, 31];
        s.extend_from_slice(&[1; 31]);
        s.extend_from_slice(&[0, 33, 0]);
        s.extend_from_slice(&[2; 32]);
        let rs = parse_ecdsa_signature(&s).unwrap();
        assert_eq!(rs[0], 0);
        assert_eq!(&rs[1..32], &[1; 31]);
        assert_eq!(&rs[32..], &[2; 32]);
    }
}
