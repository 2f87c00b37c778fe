//! The key service's store of SEV-SNP endorsement key certificates (VCEKs, VLEKs) and AMD's
//! revocation lists, for nodes whose host hands the guest no certificate table (upstream KVM
//! among them) and so that AMD's key distribution service (KDS, rate-limited) is asked once
//! per chip and TCB, by the operator (`nacre-keyservice certs urls` prints what to fetch,
//! `certs import` checks and stores it).
//!
//! Every file is checked against AMD's built-in roots when it is imported (a VCEK must chain
//! ARK → ASK → VCEK, a VLEK ARK → ASVK → VLEK, a CRL must be signed by a product's ARK), and
//! again by the verifier when it is used. Layout of the directory (one file each, DER):
//! - `vcek-PRODUCT-HWID-TCB.der`: a VCEK, by its chip (hwID, hex) and TCB;
//! - `vlek-PRODUCT-TCB-HASH.der`: a VLEK (not per chip: per cloud provider and TCB);
//! - `crl-PRODUCT-HASH.der`: an AMD CRL, honoured by `serve`.
//!
//! TCB is `f{fmc}b{bootloader}t{tee}s{snp}u{microcode}`, as the certificate's SPL extensions
//! say (for a report: its REPORTED_TCB in its product's layout).

use nacre_attestation::snp::{AmdRoots, Generation, Report, SigningKey, Tcb, VekSource};
use std::path::{Path, PathBuf};

/// AMD's key distribution service.
pub const KDS: &str = "https://kdsintf.amd.com";

#[derive(Debug, thiserror::Error)]
pub enum CertStoreError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Snp(#[from] nacre_attestation::snp::SnpError),
    #[error("{0}")]
    Invalid(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CertStoreError + '_ {
    move |source| CertStoreError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What one imported file was.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Imported {
    Vcek {
        product: Generation,
        hwid: String,
        tcb: Tcb,
        file: PathBuf,
    },
    Vlek {
        product: Generation,
        csp_id: Option<String>,
        tcb: Tcb,
        file: PathBuf,
    },
    Crl {
        product: Generation,
        revoked: usize,
        file: PathBuf,
    },
}

/// `f0b1t0s2u71`.
pub fn tcb_key(t: &Tcb) -> String {
    format!(
        "f{}b{}t{}s{}u{}",
        t.fmc, t.bootloader, t.tee, t.snp, t.microcode
    )
}

fn short_hash(b: &[u8]) -> String {
    hex::encode(&ring::digest::digest(&ring::digest::SHA256, b).as_ref()[..8])
}

fn product_key(g: Generation) -> String {
    g.kds_name().to_ascii_lowercase()
}

/// A directory of VCEKs, VLEKs and CRLs.
pub struct CertStore {
    dir: PathBuf,
    roots: AmdRoots,
}

impl CertStore {
    /// The store at `dir` (created if missing), checked against AMD's built-in roots.
    pub fn open(dir: &Path) -> Result<CertStore, CertStoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(CertStore {
            dir: dir.to_path_buf(),
            roots: AmdRoots::bundled()?,
        })
    }

    /// The same with other roots (tests: a chain made in the test).
    pub fn with_roots(dir: &Path, roots: AmdRoots) -> Result<CertStore, CertStoreError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        Ok(CertStore {
            dir: dir.to_path_buf(),
            roots,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Checks a VCEK, VLEK or CRL (DER or PEM) against AMD's roots and stores it.
    pub fn import(&mut self, bytes: &[u8]) -> Result<Imported, CertStoreError> {
        let is_crl_pem = bytes.starts_with(b"-----BEGIN X509 CRL");
        let cert = if is_crl_pem {
            None
        } else {
            nacre_attestation::snp::certs::der_of_pem_or_der(bytes)
                .ok()
                .filter(|d| nacre_attestation::snp::certs::subject_cn(d).is_some())
        };
        match cert {
            Some(der) => self.import_vek(&der),
            None => self.import_crl(bytes),
        }
    }

    fn import_vek(&self, der: &[u8]) -> Result<Imported, CertStoreError> {
        let g = self.roots.generation_of(der)?;
        // VCEK or VLEK: try the VCEK chain, and the VLEK chain when the certificate says so.
        let kind = if nacre_attestation::snp::certs::subject_cn(der).as_deref() == Some("SEV-VLEK")
        {
            SigningKey::Vlek
        } else {
            SigningKey::Vcek
        };
        let vek = self.roots.verify_vek(g, kind, der)?;
        let (imported, name) = match kind {
            SigningKey::Vcek => {
                let hwid = hex::encode(vek.hwid.as_deref().unwrap_or_default());
                let name = format!("vcek-{}-{hwid}-{}.der", product_key(g), tcb_key(&vek.tcb));
                (
                    Imported::Vcek {
                        product: g,
                        hwid,
                        tcb: vek.tcb,
                        file: self.dir.join(&name),
                    },
                    name,
                )
            }
            SigningKey::Vlek => {
                let name = format!(
                    "vlek-{}-{}-{}.der",
                    product_key(g),
                    tcb_key(&vek.tcb),
                    short_hash(der)
                );
                (
                    Imported::Vlek {
                        product: g,
                        csp_id: vek.csp_id.clone(),
                        tcb: vek.tcb,
                        file: self.dir.join(&name),
                    },
                    name,
                )
            }
        };
        write_atomic(&self.dir.join(name), der)?;
        Ok(imported)
    }

    fn import_crl(&mut self, bytes: &[u8]) -> Result<Imported, CertStoreError> {
        let der = nacre_attestation::snp::certs::crl_der(bytes)?;
        let (g, serials) = self.roots.check_crl(&der).map_err(|e| {
            CertStoreError::Invalid(format!(
                "neither a VCEK/VLEK certificate nor an AMD CRL: {e}"
            ))
        })?;
        self.roots.add_crl(&der)?;
        let name = format!("crl-{}-{}.der", product_key(g), short_hash(&der));
        let file = self.dir.join(&name);
        write_atomic(&file, &der)?;
        Ok(Imported::Crl {
            product: g,
            revoked: serials.len(),
            file,
        })
    }

    /// The stored CRLs (DER), for the verifier's roots.
    pub fn crls(&self) -> Result<Vec<Vec<u8>>, CertStoreError> {
        let mut out = Vec::new();
        for (name, path) in self.files()? {
            if name.starts_with("crl-") {
                out.push(std::fs::read(&path).map_err(io(&path))?);
            }
        }
        Ok(out)
    }

    fn files(&self) -> Result<Vec<(String, PathBuf)>, CertStoreError> {
        let mut v = Vec::new();
        for e in std::fs::read_dir(&self.dir).map_err(io(&self.dir))? {
            let e = e.map_err(io(&self.dir))?;
            if let Some(name) = e.file_name().to_str() {
                if name.ends_with(".der") {
                    v.push((name.to_string(), e.path()));
                }
            }
        }
        v.sort();
        Ok(v)
    }

    /// The stored VCEK for this chip and TCB, or the VLEKs for this TCB (DER), of `report`'s
    /// product (a version 2 report: each product whose layout its TCB is read in).
    pub fn lookup(
        &self,
        report: &Report,
        kind: SigningKey,
    ) -> Result<Vec<Vec<u8>>, CertStoreError> {
        let products: Vec<Generation> = match report.generation {
            Some(g) => vec![g],
            None => Generation::ALL.to_vec(),
        };
        let mut found = Vec::new();
        for g in products {
            let tcb = tcb_key(&Tcb::decode(report.reported_tcb_raw, g));
            let prefix = match kind {
                SigningKey::Vcek => format!(
                    "vcek-{}-{}-{tcb}.der",
                    product_key(g),
                    hex::encode(&report.chip_id[..g.chip_id_len()])
                ),
                SigningKey::Vlek => format!("vlek-{}-{tcb}-", product_key(g)),
            };
            for (name, path) in self.files()? {
                if name.starts_with(&prefix) {
                    found.push(std::fs::read(&path).map_err(io(&path))?);
                }
            }
        }
        Ok(found)
    }
}

impl VekSource for CertStore {
    fn find_vek(&self, report: &Report, kind: SigningKey) -> Result<Vec<Vec<u8>>, String> {
        let found = self.lookup(report, kind).map_err(|e| e.to_string())?;
        let chip = match report.generation {
            Some(g) => hex::encode(&report.chip_id[..g.chip_id_len()]),
            None => hex::encode(report.chip_id),
        };
        let what = match kind {
            SigningKey::Vcek => format!("chip {chip}"),
            SigningKey::Vlek => "this cloud's VLEK".to_string(),
        };
        // Several VLEKs may share a TCB (one per cloud provider): all are returned and the
        // one that verifies wins (nacre_attestation::snp::verify_report_with_store).
        if found.is_empty() {
            return Err(format!(
                "the certificate store {} has no {kind} for {what} at REPORTED_TCB {} (fetch it: nacre-keyservice certs urls --report FILE, then certs import)",
                self.dir.display(),
                hex::encode(report.reported_tcb_raw)
            ));
        }
        Ok(found)
    }
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CertStoreError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// What to fetch from AMD's KDS for one chip at one TCB.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KdsUrls {
    pub product: Generation,
    pub chip_id: String,
    pub tcb: Tcb,
    /// The VCEK for this chip and TCB.
    pub vcek: String,
    /// ASK + ARK, and ASVK + ARK (built in; for comparison).
    pub vcek_cert_chain: String,
    pub vlek_cert_chain: String,
    /// The revocation lists (signed by the ARK): import them.
    pub vcek_crl: String,
    pub vlek_crl: String,
}

/// KDS URLs for `product`'s chip `chip_id` (64 bytes, Turin 8; more is cut to the product's
/// length) at `tcb` (AMD's VCEK specification 57230: `/vcek/v1/{product}/{hwid}?blSPL=..`).
pub fn kds_urls(product: Generation, chip_id: &[u8], tcb: &Tcb) -> Result<KdsUrls, String> {
    let len = product.chip_id_len();
    if chip_id.len() < len {
        return Err(format!(
            "a {product} chip id has {len} bytes, {} given",
            chip_id.len()
        ));
    }
    if chip_id[len..].iter().any(|b| *b != 0) {
        return Err(format!(
            "a {product} chip id has {len} bytes; the bytes after them must be zero"
        ));
    }
    let hwid = hex::encode(&chip_id[..len]);
    let p = product.kds_name();
    let mut query = String::new();
    if product == Generation::Turin {
        query.push_str(&format!("fmcSPL={}&", tcb.fmc));
    }
    query.push_str(&format!(
        "blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
        tcb.bootloader, tcb.tee, tcb.snp, tcb.microcode
    ));
    Ok(KdsUrls {
        product,
        chip_id: hwid.clone(),
        tcb: *tcb,
        vcek: format!("{KDS}/vcek/v1/{p}/{hwid}?{query}"),
        vcek_cert_chain: format!("{KDS}/vcek/v1/{p}/cert_chain"),
        vlek_cert_chain: format!("{KDS}/vlek/v1/{p}/cert_chain"),
        vcek_crl: format!("{KDS}/vcek/v1/{p}/crl"),
        vlek_crl: format!("{KDS}/vlek/v1/{p}/crl"),
    })
}

/// KDS URLs for the chip and REPORTED_TCB of a report (raw bytes); `product` is needed for a
/// version 2 report (no CPUID) and must agree with a version 3+ report's CPUID.
pub fn kds_urls_for_report(
    report: &[u8],
    product: Option<Generation>,
) -> Result<KdsUrls, CertStoreError> {
    let r = match product {
        Some(g) => Report::parse_as(report, g)?,
        None => Report::parse(report)?,
    };
    let g = r.generation.ok_or_else(|| {
        CertStoreError::Invalid(format!(
            "a version {} report does not name its product (no CPUID): give --product",
            r.version
        ))
    })?;
    if r.chip_id.iter().all(|b| *b == 0) {
        return Err(CertStoreError::Invalid(
            "the report's CHIP_ID is masked: its VCEK cannot be looked up".into(),
        ));
    }
    kds_urls(g, &r.chip_id, &r.reported_tcb).map_err(CertStoreError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use nacre_attestation::snp::{verify_report_with_store, SnpPolicy};

    fn fixture(name: &str) -> Vec<u8> {
        let p = format!(
            "{}/../attestation/tests/fixtures/snp/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
    }

    fn policy() -> SnpPolicy {
        SnpPolicy::new(0, Generation::ALL.into_iter().map(|g| (g, Tcb::default())))
    }

    /// The URL Project Oak fetched the real Turin VCEK from (turin_oc_endorsements.textproto):
    /// the same path and parameters.
    #[test]
    fn kds_urls_of_the_turin_report() {
        let u = kds_urls_for_report(&fixture("turin-report.bin"), None).unwrap();
        let (path, query) = u.vcek.split_once('?').unwrap();
        assert_eq!(
            path,
            "https://kdsintf.amd.com/vcek/v1/Turin/3b42092f69c656d3"
        );
        let mut got: Vec<&str> = query.split('&').collect();
        got.sort();
        let mut oak: Vec<&str> = "ucodeSPL=71&snpSPL=2&teeSPL=0&blSPL=1&fmcSPL=0"
            .split('&')
            .collect();
        oak.sort();
        assert_eq!(got, oak);
        assert_eq!(u.vcek_crl, "https://kdsintf.amd.com/vcek/v1/Turin/crl");
        // Milan: 64-byte hwID, no fmcSPL; a version 2 report needs the product.
        let e = kds_urls_for_report(&fixture("milan-report.bin"), None).unwrap_err();
        assert!(e.to_string().contains("--product"), "{e}");
        let u = kds_urls_for_report(&fixture("milan-report.bin"), Some(Generation::Milan)).unwrap();
        assert!(
            u.vcek.contains("blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115"),
            "{}",
            u.vcek
        );
        assert_eq!(u.chip_id.len(), 128);
        // The report's CPUID and the product given must agree.
        assert!(
            kds_urls_for_report(&fixture("turin-report.bin"), Some(Generation::Genoa)).is_err()
        );
    }

    #[test]
    fn store_import_lookup_and_refusals() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = CertStore::open(dir.path()).unwrap();
        let turin = fixture("turin-report.bin");
        let r = Report::parse(&turin).unwrap();
        // Empty store: a clear refusal, naming the chip, the TCB and what to do.
        let e = verify_report_with_store(
            &turin,
            &[],
            Some(&store),
            &AmdRoots::bundled().unwrap(),
            &policy(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("no VCEK for chip 3b42092f69c656d3") && e.contains("certs urls"),
            "{e}"
        );
        // Import the real Turin VCEK, then the report verifies without one in the evidence.
        let imported = store.import(&fixture("turin-vcek.der")).unwrap();
        let Imported::Vcek {
            product,
            hwid,
            tcb,
            file,
        } = imported
        else {
            panic!("{imported:?}")
        };
        assert_eq!(
            (product, hwid.as_str()),
            (Generation::Turin, "3b42092f69c656d3")
        );
        assert_eq!(tcb, r.reported_tcb);
        assert!(file.exists());
        verify_report_with_store(
            &turin,
            &[],
            Some(&store),
            &AmdRoots::bundled().unwrap(),
            &policy(),
        )
        .unwrap();
        // Another chip's report (Genoa) still finds nothing.
        assert!(store
            .lookup(
                &Report::parse(&fixture("genoa-report.bin")).unwrap(),
                SigningKey::Vcek
            )
            .unwrap()
            .is_empty());
        // A VLEK is stored by product and TCB and found for a report at that TCB.
        assert!(matches!(
            store.import(&fixture("aws-vlek.der")).unwrap(),
            Imported::Vlek {
                product: Generation::Milan,
                ..
            }
        ));
        let aws = fixture("aws-vlek-report.bin");
        verify_report_with_store(
            &aws,
            &[],
            Some(&store),
            &AmdRoots::bundled().unwrap(),
            &policy(),
        )
        .unwrap();
        // A certificate AMD did not sign, and a file that is neither certificate nor CRL.
        let mut bad = fixture("genoa-vcek.der");
        bad[300] ^= 1;
        assert!(store.import(&bad).is_err());
        let e = store.import(b"not a certificate").unwrap_err().to_string();
        assert!(
            e.contains("neither a VCEK/VLEK certificate nor an AMD CRL"),
            "{e}"
        );
        // A CRL signed by a test-made ARK (not AMD's) is refused by the bundled roots; with
        // those roots it is stored and listed for the verifier.
        let crl = fixture("test-made/test-made-crl-revokes-ask.der");
        assert!(store.import(&crl).is_err());
        let mut roots = AmdRoots::empty();
        roots
            .set(
                Generation::Milan,
                &fixture("test-made/test-made-ark.pem"),
                &fixture("test-made/test-made-ask.pem"),
                None,
            )
            .unwrap();
        let mut test_store = CertStore::with_roots(dir.path(), roots).unwrap();
        assert!(matches!(
            test_store.import(&crl).unwrap(),
            Imported::Crl {
                product: Generation::Milan,
                revoked: 1,
                ..
            }
        ));
        assert_eq!(test_store.crls().unwrap(), vec![crl]);
    }
}
