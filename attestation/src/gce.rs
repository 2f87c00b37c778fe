//! Google Compute Engine: the vTPM's attestation key certificate.
//!
//! GCE provisions each Shielded/Confidential VM's vTPM with an AK template and a certificate
//! for the AK created from it, issued by Google's EK/AK CA: NV 0x01c10002 (ECC AK certificate)
//! and 0x01c10003 (ECC AK template), 0x01c10000/0x01c10001 for the RSA AK. The node creates
//! its AK from the template (go-tpm-tools' `GceAttestationKeyECC`) and sends the certificate;
//! [`verify_ak_cert`] checks it chains to Google's pinned EK/AK CA root (through a pinned
//! intermediate), that its key is the quote's AK, and returns the instance identity extension
//! (1.3.6.1.4.1.11129.2.1.21: zone, project, instance id and name).
//!
//! What it proves: the AK is a GCE vTPM's, of the instance named. GCE's vTPM is implemented by
//! Google's host, not inside the TEE: the certificate shuts out a software AK made by root in
//! the guest, but trusts Google's host for the vTPM itself (`docs/cvm.md`).

use crate::x509util::{check_signed_by, der_tlv, public_key_of, Tlv};
use x509_parser::prelude::*;

/// NV index of GCE's ECC AK certificate (DER).
pub const AK_CERT_ECC_NV_INDEX: u32 = 0x01c1_0002;
/// NV index of GCE's ECC AK template (TPMT_PUBLIC).
pub const AK_TEMPLATE_ECC_NV_INDEX: u32 = 0x01c1_0003;
/// NV index of GCE's RSA AK certificate (DER).
pub const AK_CERT_RSA_NV_INDEX: u32 = 0x01c1_0000;
/// NV index of GCE's RSA AK template (TPMT_PUBLIC).
pub const AK_TEMPLATE_RSA_NV_INDEX: u32 = 0x01c1_0001;

/// Google's "EK/AK CA Root" (RSA 4096, valid 2022-07-08 to 2122-07-08), from go-tpm-tools
/// `server/ca-certs/gcp_ek_ak_ca_root.crt` (see `src/gce/README.md`).
pub const GCE_EK_AK_CA_ROOT: &[u8] = include_bytes!("gce/gcp_ek_ak_ca_root.der");
/// Google's "EK/AK CA Intermediate" (v3) under it, from go-tpm-tools
/// `server/ca-certs/gcp_ek_ak_ca_intermediate_v3.crt`.
pub const GCE_EK_AK_CA_INTERMEDIATE: &[u8] = include_bytes!("gce/gcp_ek_ak_ca_intermediate_v3.der");

/// The instance identity extension's OID (Google Cloud compute instance identifier).
const OID_INSTANCE_INFO: &str = "1.3.6.1.4.1.11129.2.1.21";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GceError {
    #[error("AK certificate: {0}")]
    Certificate(String),
    #[error("AK certificate chain: {0}")]
    Chain(String),
    #[error("the AK certificate is for key {cert}, the quote's AK is {ak}")]
    KeyMismatch { cert: String, ak: String },
    #[error("instance identity extension: {0}")]
    InstanceInfo(String),
}

/// Google's pinned CA certificates an AK certificate must chain to.
#[derive(Debug, Clone)]
pub struct GceRoots {
    /// Trust anchors (DER).
    pub roots: Vec<Vec<u8>>,
    /// Intermediates that may sit between a root and the AK certificate (DER).
    pub intermediates: Vec<Vec<u8>>,
}

impl Default for GceRoots {
    /// Google's EK/AK CA root and its v3 intermediate, pinned in this crate.
    fn default() -> Self {
        GceRoots {
            roots: vec![GCE_EK_AK_CA_ROOT.to_vec()],
            intermediates: vec![GCE_EK_AK_CA_INTERMEDIATE.to_vec()],
        }
    }
}

/// The instance identity extension of a GCE AK certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceInfo {
    pub zone: String,
    pub project_number: u64,
    pub project_id: String,
    pub instance_id: u64,
    pub instance_name: String,
    /// `security_properties.is_production` (absent: false).
    pub is_production: bool,
}

impl std::fmt::Display for InstanceInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "GCE instance {} ({}) in project {} ({}), zone {}{}",
            self.instance_name,
            self.instance_id,
            self.project_id,
            self.project_number,
            self.zone,
            if self.is_production {
                ""
            } else {
                ", not production"
            }
        )
    }
}

/// Verify a GCE AK certificate (DER) for the AK `ak_spki` at `now` (UNIX seconds): its chain
/// to one of `roots` (leaf ← intermediate ← root, each signature, each validity period, CA
/// basic constraints), and its key equals the AK. Returns the instance identity, if present.
pub fn verify_ak_cert(
    cert_der: &[u8],
    ak_spki: &[u8],
    roots: &GceRoots,
    now: u64,
) -> Result<Option<InstanceInfo>, GceError> {
    let (rest, leaf) =
        X509Certificate::from_der(cert_der).map_err(|e| GceError::Certificate(e.to_string()))?;
    if !rest.is_empty() {
        return Err(GceError::Certificate(format!(
            "{} trailing bytes",
            rest.len()
        )));
    }
    // The key first: a certificate for another key is refused whatever signed it.
    let cert_key = public_key_of(leaf.public_key());
    let ak_key = match SubjectPublicKeyInfo::from_der(ak_spki) {
        Ok((_, spki)) => public_key_of(&spki),
        Err(e) => return Err(GceError::Certificate(format!("the AK's SPKI: {e}"))),
    };
    if cert_key.is_none() || cert_key != ak_key {
        return Err(GceError::KeyMismatch {
            cert: fingerprint(leaf.public_key().raw),
            ak: fingerprint(ak_spki),
        });
    }
    valid_at(&leaf, now, "the AK certificate")?;
    if leaf.is_ca() {
        return Err(GceError::Certificate(
            "it is a CA certificate, not an AK certificate".into(),
        ));
    }
    let chain_err = |e: String| GceError::Chain(e);
    let mut why = Vec::new();
    for int_der in &roots.intermediates {
        let Ok((_, int)) = X509Certificate::from_der(int_der) else {
            why.push("a pinned intermediate does not parse".to_string());
            continue;
        };
        if int.subject() != leaf.issuer() {
            continue;
        }
        if let Err(e) = check_signed_by(&leaf, &int) {
            why.push(format!("not signed by {}: {e}", int.subject()));
            continue;
        }
        if !int.is_ca() {
            why.push(format!("{} is not a CA", int.subject()));
            continue;
        }
        valid_at(&int, now, "the intermediate")?;
        for root_der in &roots.roots {
            let Ok((_, root)) = X509Certificate::from_der(root_der) else {
                why.push("a pinned root does not parse".to_string());
                continue;
            };
            if root.subject() != int.issuer() {
                continue;
            }
            if let Err(e) = check_signed_by(&int, &root) {
                why.push(format!(
                    "{} not signed by {}: {e}",
                    int.subject(),
                    root.subject()
                ));
                continue;
            }
            valid_at(&root, now, "the root")?;
            return instance_info(&leaf);
        }
        why.push(format!(
            "{} is issued by {}, which is not a pinned root",
            int.subject(),
            int.issuer()
        ));
    }
    if why.is_empty() {
        why.push(format!(
            "issuer {} is not a pinned GCE EK/AK CA intermediate",
            leaf.issuer()
        ));
    }
    Err(chain_err(why.join("; ")))
}

fn fingerprint(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

fn valid_at(c: &X509Certificate<'_>, now: u64, what: &str) -> Result<(), GceError> {
    if !crate::x509util::valid_at(c, i64::try_from(now).unwrap_or(i64::MAX)) {
        return Err(GceError::Chain(format!(
            "{what} ({}) is valid from {} to {}, not at {now}",
            c.subject(),
            c.validity().not_before,
            c.validity().not_after
        )));
    }
    Ok(())
}

/// The instance identity extension, parsed as go-tpm-tools' `gceInstanceInfo`:
/// SEQUENCE { zone UTF8String, projectNumber INTEGER, projectId UTF8String, instanceId
/// INTEGER, instanceName UTF8String, securityProperties [0..] OPTIONAL }.
pub fn instance_info(cert: &X509Certificate<'_>) -> Result<Option<InstanceInfo>, GceError> {
    let Some(ext) = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == OID_INSTANCE_INFO)
    else {
        return Ok(None);
    };
    parse_instance_info(ext.value).map(Some)
}

fn parse_instance_info(der: &[u8]) -> Result<InstanceInfo, GceError> {
    let bad = |s: &str| GceError::InstanceInfo(s.to_string());
    let (seq, _) = der_tlv(der).ok_or_else(|| bad("not DER"))?;
    if seq.tag != 0x30 {
        return Err(bad("not a SEQUENCE"));
    }
    let mut fields = Vec::new();
    let mut rest = seq.value;
    while !rest.is_empty() {
        let (t, r) = der_tlv(rest).ok_or_else(|| bad("a field is not DER"))?;
        fields.push(t);
        rest = r;
    }
    let text = |t: Option<&Tlv<'_>>, name: &str| -> Result<String, GceError> {
        match t {
            Some(t) if t.tag == 0x0c => String::from_utf8(t.value.to_vec())
                .map_err(|_| bad(&format!("{name} is not UTF-8"))),
            _ => Err(bad(&format!("{name} is not a UTF8String"))),
        }
    };
    let int = |t: Option<&Tlv<'_>>, name: &str| -> Result<u64, GceError> {
        match t {
            Some(t) if t.tag == 0x02 && !t.value.is_empty() && t.value[0] & 0x80 == 0 => {
                let v = t.value;
                let v = if v.len() > 1 && v[0] == 0 { &v[1..] } else { v };
                if v.len() > 8 {
                    return Err(bad(&format!("{name} is longer than 64 bits")));
                }
                Ok(v.iter().fold(0u64, |a, b| (a << 8) | u64::from(*b)))
            }
            _ => Err(bad(&format!("{name} is not a non-negative INTEGER"))),
        }
    };
    // securityProperties: [0] EXPLICIT SEQUENCE { [1] EXPLICIT BOOLEAN isProduction .. }.
    let mut is_production = false;
    if let Some(sp) = fields.get(5) {
        if let Some((inner, _)) = der_tlv(sp.value).filter(|_| sp.tag == 0xa0) {
            let mut r = inner.value;
            while let Some((t, next)) = der_tlv(r) {
                if t.tag == 0xa1 {
                    if let Some((b, _)) = der_tlv(t.value) {
                        is_production = b.tag == 0x01 && b.value.first().is_some_and(|v| *v != 0);
                    }
                }
                r = next;
            }
        }
    }
    Ok(InstanceInfo {
        zone: text(fields.first(), "zone")?,
        project_number: int(fields.get(1), "projectNumber")?,
        project_id: text(fields.get(2), "projectId")?,
        instance_id: int(fields.get(3), "instanceId")?,
        instance_name: text(fields.get(4), "instanceName")?,
        is_production,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_roots_parse_and_chain() {
        let (_, root) = X509Certificate::from_der(GCE_EK_AK_CA_ROOT).unwrap();
        let (_, int) = X509Certificate::from_der(GCE_EK_AK_CA_INTERMEDIATE).unwrap();
        assert_eq!(root.subject(), root.issuer());
        assert_eq!(int.issuer(), root.subject());
        check_signed_by(&int, &root).unwrap();
        check_signed_by(&root, &root).unwrap();
        // The intermediate does not sign the root.
        assert!(check_signed_by(&root, &int).is_err());
    }

    #[test]
    fn instance_info_rejects_garbage() {
        assert!(parse_instance_info(&[0x30, 0x00]).is_err());
        assert!(parse_instance_info(&[0x04, 0x00]).is_err());
        assert!(parse_instance_info(&[]).is_err());
    }
}
