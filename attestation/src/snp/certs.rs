//! AMD's certificate chains for SEV-SNP: per product (Milan, Genoa, Turin) the ARK (root,
//! self-signed), the ASK (signs VCEKs) and the ASVK (signs VLEKs), all RSA-PSS SHA-384; AMD's
//! revocation lists (signed by the ARK, listing revoked ASKs/ASVKs); and the endorsement key
//! certificate (VCEK or VLEK, ECDSA P-384) with its TCB and chip extensions
//! (1.3.6.1.4.1.3704.1.x, AMD's "Versioned Chip Endorsement Key (VCEK) Certificate and KDS
//! Interface Specification", 57230).
//!
//! Validity periods are not checked: a VCEK's window starts when KDS generated it (seven
//! years), a VLEK's lasts one year (AWS's real one in the fixtures has expired), and what ties
//! the key to a report is its TCB and chip, checked against the report's. Revocation is AMD's
//! CRLs (revoked ASKs/ASVKs), honoured when the operator imports them.

use super::report::{Generation, SigningKey, Tcb};
use super::SnpError;
use ring::signature::{UnparsedPublicKey, RSA_PSS_2048_8192_SHA384};
use x509_parser::prelude::*;

const RSA_PSS_OID: &str = "1.2.840.113549.1.1.10";
/// productName (IA5String: "Milan-B0", "Genoa", "Turin").
const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
/// hwID: the chip id (VCEK only; 64 bytes, Turin 8).
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";
/// cspID (VLEK only): the cloud provider the VLEK was issued to.
const OID_CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
/// fmcSPL (Turin).
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";

/// A certificate's DER from DER or PEM.
pub fn der_of_pem_or_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.starts_with(b"-----BEGIN") {
        use rustls::pki_types::{pem::PemObject, CertificateDer};
        CertificateDer::from_pem_slice(bytes)
            .map(|c| c.as_ref().to_vec())
            .map_err(|e| format!("PEM: {e}"))
    } else {
        Ok(bytes.to_vec())
    }
}

fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, SnpError> {
    let (rest, c) =
        parse_x509_certificate(der).map_err(|e| SnpError::Chain(format!("{what}: {e}")))?;
    if !rest.is_empty() {
        return Err(SnpError::Chain(format!("{what}: trailing bytes")));
    }
    Ok(c)
}

fn rsa_pss_verify(
    issuer: &X509Certificate<'_>,
    alg: &AlgorithmIdentifier<'_>,
    tbs: &[u8],
    sig: &[u8],
    what: &str,
) -> Result<(), SnpError> {
    if alg.algorithm.to_id_string() != RSA_PSS_OID {
        return Err(SnpError::Chain(format!(
            "{what} is not signed with RSA-PSS ({})",
            alg.algorithm.to_id_string()
        )));
    }
    let key = &issuer.public_key().subject_public_key.data;
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, key)
        .verify(tbs, sig)
        .map_err(|_| {
            SnpError::Chain(format!(
                "{what}'s signature does not verify with {}'s key",
                issuer.subject()
            ))
        })
}

/// `child` is signed by `issuer`'s RSA key with RSA-PSS SHA-384 (AMD's ARK, ASK, ASVK).
fn check_rsa_pss(
    child: &X509Certificate<'_>,
    issuer: &X509Certificate<'_>,
    what: &str,
) -> Result<(), SnpError> {
    if child.issuer() != issuer.subject() {
        return Err(SnpError::Chain(format!(
            "{what}'s issuer {} is not {}",
            child.issuer(),
            issuer.subject()
        )));
    }
    rsa_pss_verify(
        issuer,
        &child.signature_algorithm,
        child.tbs_certificate.as_ref(),
        &child.signature_value.data,
        what,
    )
}

fn ext<'a>(cert: &'a X509Certificate<'_>, oid: &str) -> Option<&'a [u8]> {
    cert.extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == oid)
        .map(|e| e.value)
}

fn ext_u8(cert: &X509Certificate<'_>, oid: &str) -> Result<Option<u8>, SnpError> {
    // An INTEGER (02 01 xx, or 02 02 00 xx for values >= 0x80).
    match ext(cert, oid) {
        None => Ok(None),
        Some([0x02, 1, v]) if *v < 0x80 => Ok(Some(*v)),
        Some([0x02, 2, 0, v]) if *v >= 0x80 => Ok(Some(*v)),
        Some(_) => Err(SnpError::Vek(format!(
            "extension {oid} is not a small INTEGER"
        ))),
    }
}

fn cn(name: &X509Name<'_>) -> String {
    name.iter_common_name()
        .next()
        .and_then(|c| c.as_str().ok())
        .unwrap_or("")
        .to_string()
}

/// What an endorsement key certificate (VCEK or VLEK) says, once its chain verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vek {
    pub kind: SigningKey,
    pub generation: Generation,
    /// The TCB the key was derived for (its SPL extensions).
    pub tcb: Tcb,
    /// hwID (VCEK): the chip id.
    pub hwid: Option<Vec<u8>>,
    /// cspID (VLEK): e.g. "CN=cc-us-east-2.amazonaws.com".
    pub csp_id: Option<String>,
    /// The uncompressed P-384 point.
    pub public_key: Vec<u8>,
}

/// One product's roots.
#[derive(Debug, Clone)]
struct Product {
    generation: Generation,
    ark: Vec<u8>,
    ask: Vec<u8>,
    asvk: Option<Vec<u8>>,
    /// Serial numbers (big-endian bytes) the product's ARK revoked, from imported CRLs.
    revoked: Vec<Vec<u8>>,
}

/// AMD's roots for every product nacre knows, and what their revocation lists revoked.
#[derive(Debug, Clone)]
pub struct AmdRoots {
    products: Vec<Product>,
}

macro_rules! bundled {
    ($g:expr, $p:literal) => {
        (
            $g,
            &include_bytes!(concat!("amd/", $p, "-ark.pem"))[..],
            &include_bytes!(concat!("amd/", $p, "-ask.pem"))[..],
            &include_bytes!(concat!("amd/", $p, "-asvk.pem"))[..],
        )
    };
}

impl AmdRoots {
    /// AMD's published ARK, ASK and ASVK of Milan, Genoa and Turin, compiled in (origin:
    /// `src/snp/amd/README.md`), each signature checked here.
    pub fn bundled() -> Result<AmdRoots, SnpError> {
        let mut roots = AmdRoots { products: vec![] };
        for (g, ark, ask, asvk) in [
            bundled!(Generation::Milan, "milan"),
            bundled!(Generation::Genoa, "genoa"),
            bundled!(Generation::Turin, "turin"),
        ] {
            roots.set(g, ark, ask, Some(asvk))?;
        }
        Ok(roots)
    }

    /// No product: add each with [`AmdRoots::set`].
    pub fn empty() -> AmdRoots {
        AmdRoots { products: vec![] }
    }

    /// Sets `generation`'s ARK, ASK and (optionally) ASVK, PEM or DER, after checking that
    /// the ARK is self-signed and signed the others (replaces the product's roots and forgets
    /// its revocations).
    pub fn set(
        &mut self,
        generation: Generation,
        ark: &[u8],
        ask: &[u8],
        asvk: Option<&[u8]>,
    ) -> Result<(), SnpError> {
        let der = |b: &[u8], what: &str| {
            der_of_pem_or_der(b).map_err(|e| SnpError::Chain(format!("{generation} {what}: {e}")))
        };
        let p = Product {
            generation,
            ark: der(ark, "ARK")?,
            ask: der(ask, "ASK")?,
            asvk: asvk.map(|a| der(a, "ASVK")).transpose()?,
            revoked: vec![],
        };
        let ark = parse_cert(&p.ark, "ARK")?;
        check_rsa_pss(&ark, &ark, &format!("the {generation} ARK"))?;
        let ask = parse_cert(&p.ask, "ASK")?;
        check_rsa_pss(&ask, &ark, &format!("the {generation} ASK"))?;
        if let Some(asvk) = &p.asvk {
            let asvk = parse_cert(asvk, "ASVK")?;
            check_rsa_pss(&asvk, &ark, &format!("the {generation} ASVK"))?;
        }
        self.products.retain(|q| q.generation != generation);
        self.products.push(p);
        Ok(())
    }

    fn product(&self, g: Generation) -> Result<&Product, SnpError> {
        self.products
            .iter()
            .find(|p| p.generation == g)
            .ok_or_else(|| SnpError::Chain(format!("no AMD roots are configured for {g}")))
    }

    /// The product whose ARK signed this CRL (DER or PEM "X509 CRL"), after checking its
    /// signature; its revoked serials are honoured from now on. Returns the product and how
    /// many serials it lists.
    pub fn add_crl(&mut self, crl: &[u8]) -> Result<(Generation, usize), SnpError> {
        let der = crl_der(crl)?;
        let (g, serials) = self.check_crl(&der)?;
        let n = serials.len();
        if let Some(p) = self.products.iter_mut().find(|p| p.generation == g) {
            for s in serials {
                if !p.revoked.contains(&s) {
                    p.revoked.push(s);
                }
            }
        }
        Ok((g, n))
    }

    /// Checks a CRL (DER) against the ARKs: the product whose ARK signed it and its serials.
    pub fn check_crl(&self, der: &[u8]) -> Result<(Generation, Vec<Vec<u8>>), SnpError> {
        let (rest, crl) = x509_parser::parse_x509_crl(der)
            .map_err(|e| SnpError::Crl(format!("does not parse: {e}")))?;
        if !rest.is_empty() {
            return Err(SnpError::Crl("trailing bytes".into()));
        }
        for p in &self.products {
            let ark = parse_cert(&p.ark, "ARK")?;
            if crl.issuer() != ark.subject() {
                continue;
            }
            rsa_pss_verify(
                &ark,
                &crl.signature_algorithm,
                crl.tbs_cert_list.as_ref(),
                &crl.signature_value.data,
                &format!("the {} CRL", p.generation),
            )
            .map_err(|e| SnpError::Crl(e.to_string()))?;
            let serials = crl
                .iter_revoked_certificates()
                .map(|r| r.raw_serial().to_vec())
                .collect();
            return Ok((p.generation, serials));
        }
        Err(SnpError::Crl(format!(
            "issued by {}, not by a configured AMD ARK",
            crl.issuer()
        )))
    }

    /// Which product an endorsement key certificate (DER) belongs to: its productName
    /// extension, or else the product whose ASK/ASVK issued it.
    pub fn generation_of(&self, vek_der: &[u8]) -> Result<Generation, SnpError> {
        let vek = parse_cert(vek_der, "VCEK/VLEK")?;
        if let Some(v) = ext(&vek, OID_PRODUCT_NAME) {
            // IA5String (16 len ...) or raw.
            let s = match v {
                [0x16, n, rest @ ..] if *n as usize == rest.len() => rest,
                other => other,
            };
            let name = String::from_utf8_lossy(s);
            return Generation::from_name(&name).ok_or_else(|| {
                SnpError::Generation(format!("the certificate's product {name:?} is not known"))
            });
        }
        for p in &self.products {
            for i in std::iter::once(&p.ask).chain(p.asvk.as_ref()) {
                let i = parse_cert(i, "ASK")?;
                if vek.issuer() == i.subject() {
                    return Ok(p.generation);
                }
            }
        }
        Err(SnpError::Generation(format!(
            "the certificate names no product and its issuer {} is none of AMD's",
            vek.issuer()
        )))
    }

    /// Verifies a VCEK or VLEK (DER) of `generation` for a report signed by `kind`: a VCEK
    /// must chain ARK → ASK → VCEK, a VLEK ARK → ASVK → VLEK (the other chain is refused,
    /// naming both); the intermediate must not be revoked by an imported CRL.
    pub fn verify_vek(
        &self,
        generation: Generation,
        kind: SigningKey,
        vek_der: &[u8],
    ) -> Result<Vek, SnpError> {
        let p = self.product(generation)?;
        let vek = parse_cert(vek_der, &format!("the {kind}"))?;
        let ask = parse_cert(&p.ask, "ASK")?;
        let asvk = p
            .asvk
            .as_deref()
            .map(|a| parse_cert(a, "ASVK"))
            .transpose()?;
        let (issuer, other) = match kind {
            SigningKey::Vcek => (Some(&ask), asvk.as_ref()),
            SigningKey::Vlek => (asvk.as_ref(), Some(&ask)),
        };
        let Some(issuer) = issuer else {
            return Err(SnpError::Chain(format!(
                "no ASVK is configured for {generation}: VLEK-signed reports cannot be verified"
            )));
        };
        if let Some(o) = other {
            if vek.issuer() == o.subject() {
                return Err(SnpError::ChainKind(format!(
                    "the report is signed by a {kind} (its SIGNING_KEY), the certificate given is issued by {} ({}), not by {}",
                    cn(o.subject()),
                    match kind {
                        SigningKey::Vcek => "a VLEK",
                        SigningKey::Vlek => "a VCEK",
                    },
                    cn(issuer.subject())
                )));
            }
        }
        check_rsa_pss(&vek, issuer, &format!("the {kind}"))?;
        if p.revoked.iter().any(|s| s == issuer.raw_serial()) {
            return Err(SnpError::Revoked(format!(
                "{} (serial {}) is revoked by the {generation} ARK's CRL",
                cn(issuer.subject()),
                hex::encode(issuer.raw_serial())
            )));
        }
        let expected_cn = match kind {
            SigningKey::Vcek => "SEV-VCEK",
            SigningKey::Vlek => "SEV-VLEK",
        };
        if cn(vek.subject()) != expected_cn {
            return Err(SnpError::ChainKind(format!(
                "the certificate is {:?}, a {kind} is {expected_cn:?}",
                cn(vek.subject())
            )));
        }
        let spki = vek.public_key();
        let point = spki.subject_public_key.data.to_vec();
        if point.len() != 97 || point[0] != 4 {
            return Err(SnpError::Vek(format!(
                "the {kind}'s key is not an uncompressed P-384 point"
            )));
        }
        let tcb = Tcb {
            fmc: match generation {
                Generation::Turin => ext_u8(&vek, OID_FMC_SPL)?.ok_or_else(|| {
                    SnpError::Vek(format!("the Turin {kind} has no fmcSPL extension"))
                })?,
                _ => 0,
            },
            bootloader: req(&vek, OID_BL_SPL, "blSPL", kind)?,
            tee: req(&vek, OID_TEE_SPL, "teeSPL", kind)?,
            snp: req(&vek, OID_SNP_SPL, "snpSPL", kind)?,
            microcode: req(&vek, OID_UCODE_SPL, "ucodeSPL", kind)?,
        };
        let hwid = match ext(&vek, OID_HWID) {
            // KDS certificates carry the chip id raw (64 bytes; Turin 8); accept it wrapped in
            // an OCTET STRING too.
            Some(id) if id.len() == 64 || id.len() == 8 => Some(id.to_vec()),
            Some([0x04, n, id @ ..]) if *n as usize == id.len() => Some(id.to_vec()),
            Some(_) => return Err(SnpError::Vek("malformed hwID extension".into())),
            None => None,
        };
        let csp_id = ext(&vek, OID_CSP_ID).map(|v| match v {
            [0x16, n, rest @ ..] if *n as usize == rest.len() => {
                String::from_utf8_lossy(rest).into_owned()
            }
            other => String::from_utf8_lossy(other).into_owned(),
        });
        if kind == SigningKey::Vcek && hwid.is_none() {
            return Err(SnpError::Vek("the VCEK has no hwID extension".into()));
        }
        Ok(Vek {
            kind,
            generation,
            tcb,
            hwid,
            csp_id,
            public_key: point,
        })
    }
}

fn req(
    cert: &X509Certificate<'_>,
    oid: &str,
    name: &str,
    kind: SigningKey,
) -> Result<u8, SnpError> {
    ext_u8(cert, oid)?.ok_or_else(|| SnpError::Vek(format!("the {kind} has no {name} extension")))
}

/// A CRL's DER from DER or PEM ("X509 CRL").
pub fn crl_der(b: &[u8]) -> Result<Vec<u8>, SnpError> {
    if b.starts_with(b"-----BEGIN") {
        use rustls::pki_types::{pem::PemObject, CertificateRevocationListDer};
        CertificateRevocationListDer::from_pem_slice(b)
            .map(|c| c.as_ref().to_vec())
            .map_err(|e| SnpError::Crl(format!("PEM: {e}")))
    } else {
        Ok(b.to_vec())
    }
}

/// A CRL (DER) past its nextUpdate at `now` (seconds since the epoch): `Some` naming it (issuer
/// and nextUpdate). Its revocations are still honoured (an old list revokes no less); the key
/// service warns at load so that the operator fetches AMD's current list.
pub fn stale_crl(der: &[u8], now: u64) -> Result<Option<String>, SnpError> {
    let (_, crl) = x509_parser::parse_x509_crl(der)
        .map_err(|e| SnpError::Crl(format!("does not parse: {e}")))?;
    let next = crl.next_update();
    if !past_next_update(next.map(|t| t.timestamp()), now) {
        return Ok(None);
    }
    Ok(Some(format!(
        "the AMD CRL issued by {} is past its nextUpdate {} (its revocations still apply; fetch AMD's current list)",
        crl.issuer(),
        next.map(|t| t.to_string()).unwrap_or_default()
    )))
}

/// `now` is past a CRL's nextUpdate (both seconds since the epoch); a CRL without one never is.
pub fn past_next_update(next_update: Option<i64>, now: u64) -> bool {
    next_update.is_some_and(|t| i64::try_from(now).map_or(true, |n| n > t))
}

/// The subject's common name of a certificate (DER), if it parses: "SEV-VCEK", "SEV-VLEK", ...
pub fn subject_cn(der: &[u8]) -> Option<String> {
    let (_, c) = parse_x509_certificate(der).ok()?;
    let cn = cn(c.subject());
    (!cn.is_empty()).then_some(cn)
}
