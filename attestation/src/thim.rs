//! Azure's VCEK from IMDS's THIM endpoint (Trusted Hardware Identity Management).
//!
//! Azure's hosts give an SEV-SNP guest no certificate table; Azure serves the VCEK of the
//! host's chip instead through the instance metadata service:
//! `GET http://169.254.169.254/metadata/THIM/amd/certification` with `Metadata: true` answers
//! JSON `{"vcekCert": PEM, "tcbm": hex, "certificateChain": PEM (ASK, ARK), "cacheControl":
//! seconds}` (the shape Microsoft's azure-cvm-tooling, Constellation's Azure SNP attester and
//! ACI's `host-amd-cert-base64`, a copy of it, all use; a real one is
//! `attestation/tests/fixtures/azure/thim-aci.json`).
//!
//! Only `vcekCert` is used: exactly one PEM certificate whose subject is `SEV-VCEK`. The
//! `certificateChain` is not trusted (nor read): before the VCEK goes into the evidence,
//! [`vcek_for`] checks it with AMD's roots bundled in this crate, for this report (chain ARK →
//! ASK → VCEK, the report's TCB and chip id, the report's signature), so a VCEK that would
//! make the key service refuse a report its certificate store could verify is not sent.
//! The key service verifies it again, against its own roots, CRLs and policy.
//!
//! The request goes through nacre-cluster's strict HTTP/1.1 client ([`nacre_cluster::http`]):
//! plain HTTP to the link-local address, one attempt, bounded by [`TIMEOUT`] and
//! [`MAX_BODY`]. Any failure is an error for the caller to log; it then sends no VCEK.

use crate::snp::{verify_signature, AmdRoots, SnpError};
use nacre_cluster::http::{self, HttpError, Request};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// The THIM certification path on Azure IMDS ([`nacre_cluster::METADATA_ADDR`]).
pub const THIM_PATH: &str = "/metadata/THIM/amd/certification";
/// Largest response accepted (a real one is about 7 KB: three certificates in PEM).
pub const MAX_BODY: usize = 64 * 1024;
/// The whole exchange (connect, request, response).
pub const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ThimError {
    #[error("THIM {url}: {err}")]
    Http { url: String, err: HttpError },
    #[error("THIM {url}: HTTP {status} {reason}")]
    Status {
        url: String,
        status: u16,
        reason: String,
    },
    #[error("THIM response: not the expected JSON: {0}")]
    Json(String),
    #[error("THIM response: vcekCert: {0}")]
    Pem(String),
    #[error("THIM's VCEK does not verify this report with AMD's bundled roots: {0}")]
    Mismatch(SnpError),
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Certification {
    vcek_cert: String,
}

/// The VCEK (DER) in a THIM response body: JSON with a string `vcekCert` holding exactly one
/// PEM certificate, `SEV-VCEK`. Other fields are not read.
pub fn parse(body: &[u8]) -> Result<Vec<u8>, ThimError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let c: Certification =
        serde_json::from_slice(body).map_err(|e| ThimError::Json(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(c.vcek_cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ThimError::Pem(format!("PEM: {e}")))?;
    let der = match certs.as_slice() {
        [one] => one.as_ref().to_vec(),
        [] => return Err(ThimError::Pem("no PEM CERTIFICATE".into())),
        many => {
            return Err(ThimError::Pem(format!(
                "{} certificates, expected the VCEK alone",
                many.len()
            )))
        }
    };
    match crate::snp::certs::subject_cn(&der) {
        Some(cn) if cn == "SEV-VCEK" => Ok(der),
        Some(cn) => Err(ThimError::Pem(format!(
            "the certificate is {cn:?}, not a VCEK (\"SEV-VCEK\")"
        ))),
        None => Err(ThimError::Pem(
            "not an X.509 certificate with a subject CN".into(),
        )),
    }
}

/// Ask THIM at `addr` (Azure: [`nacre_cluster::METADATA_ADDR`]) for the VCEK: one request,
/// finished by `deadline`; the VCEK as [`parse`] takes it.
pub fn fetch(addr: SocketAddr, deadline: Instant) -> Result<Vec<u8>, ThimError> {
    let url = match addr {
        nacre_cluster::METADATA_ADDR => format!("http://169.254.169.254{THIM_PATH}"),
        a => format!("http://{a}{THIM_PATH}"),
    };
    let req = Request {
        method: "GET",
        path: THIM_PATH,
        headers: &[("Metadata", "true")],
    };
    let r = http::send(addr, &req, deadline, MAX_BODY).map_err(|err| ThimError::Http {
        url: url.clone(),
        err,
    })?;
    if r.status != 200 {
        return Err(ThimError::Status {
            url,
            status: r.status,
            reason: r.reason,
        });
    }
    parse(&r.body)
}

/// The VCEK for `report` (the SEV-SNP report in the HCL report) from THIM at `addr`, within
/// [`TIMEOUT`], checked against `report` with AMD's bundled roots ([`verify_signature`]).
pub fn vcek_for(addr: SocketAddr, report: &[u8]) -> Result<Vec<u8>, ThimError> {
    let vcek = fetch(addr, Instant::now() + TIMEOUT)?;
    check(report, &vcek)?;
    Ok(vcek)
}

/// `vcek` signed `report` and chains to AMD's bundled roots, for the report's TCB and chip.
pub fn check(report: &[u8], vcek: &[u8]) -> Result<(), ThimError> {
    let roots = AmdRoots::bundled().map_err(ThimError::Mismatch)?;
    verify_signature(report, vcek, &roots).map_err(ThimError::Mismatch)?;
    Ok(())
}
