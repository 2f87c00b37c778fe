//! UEFI Secure Boot variables as the firmware measures them into PCR 7: `UEFI_VARIABLE_DATA`
//! records (TCG PC Client PFP), `EFI_SIGNATURE_LIST`s (UEFI 2.10, 32.4.1), and reading them from
//! an OVMF variable store (`OVMF_VARS.fd`: a firmware volume holding an authenticated variable
//! store, as edk2's `VariableFormat.h` lays it out).

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EfiVarError {
    #[error("OVMF variable store: {0}")]
    VarStore(String),
    #[error("EFI_SIGNATURE_LIST at offset {offset:#x} of {var}: {reason}")]
    SignatureList {
        var: String,
        offset: usize,
        reason: &'static str,
    },
}

pub use nacre_eventlog::decode::guid::{
    Guid, EFI_CERT_SHA256, EFI_CERT_X509, EFI_GLOBAL_VARIABLE, EFI_IMAGE_SECURITY_DATABASE,
};

/// edk2's gEfiAuthenticatedVariableGuid: the signature of an authenticated variable store.
const AUTH_VARIABLE_STORE: Guid = Guid::from_fields(
    0xaaf32c78,
    0x947b,
    0x439a,
    [0xa1, 0x80, 0x2e, 0x14, 0x4e, 0xc3, 0x77, 0x92],
);
/// edk2's gEfiSecureBootEnableDisableGuid, under which OVMF keeps `SecureBootEnable`.
const SECURE_BOOT_ENABLE_DISABLE: Guid = Guid::from_fields(
    0xf0a30bc7,
    0xaf08,
    0x4556,
    [0x99, 0xc4, 0x00, 0x10, 0x09, 0xc9, 0x3a, 0x44],
);

/// `UEFI_VARIABLE_DATA`: the event data of EV_EFI_VARIABLE_* events. edk2 hashes the whole
/// structure for EV_EFI_VARIABLE_DRIVER_CONFIG and EV_EFI_VARIABLE_AUTHORITY.
pub fn uefi_variable_data(guid: &Guid, name: &str, data: &[u8]) -> Vec<u8> {
    let name16: Vec<u16> = name.encode_utf16().collect();
    let mut out = Vec::with_capacity(32 + name16.len() * 2 + data.len());
    out.extend_from_slice(&guid.0);
    out.extend_from_slice(&(name16.len() as u64).to_le_bytes());
    out.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for c in name16 {
        out.extend_from_slice(&c.to_le_bytes());
    }
    out.extend_from_slice(data);
    out
}

/// One `EFI_SIGNATURE_DATA` of a signature list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureData {
    pub list_type: Guid,
    pub owner: Guid,
    /// The X.509 DER or the hash.
    pub data: Vec<u8>,
}

impl SignatureData {
    /// The bytes firmware logs for it as an authority: owner GUID followed by the data.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = self.owner.0.to_vec();
        v.extend_from_slice(&self.data);
        v
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parse a variable holding concatenated `EFI_SIGNATURE_LIST`s (db, dbx, KEK, PK).
pub fn parse_signature_lists(var: &str, data: &[u8]) -> Result<Vec<SignatureData>, EfiVarError> {
    let err = |offset, reason| EfiVarError::SignatureList {
        var: var.to_string(),
        offset,
        reason,
    };
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos < data.len() {
        let hdr = data
            .get(pos..pos + 28)
            .ok_or(err(pos, "truncated header (28 bytes)"))?;
        let mut t = [0u8; 16];
        t.copy_from_slice(&hdr[..16]);
        let list_type = Guid(t);
        let list_size = le32(hdr, 16).unwrap_or(0) as usize;
        let header_size = le32(hdr, 20).unwrap_or(0) as usize;
        let sig_size = le32(hdr, 24).unwrap_or(0) as usize;
        let end = pos
            .checked_add(list_size)
            .filter(|&e| e <= data.len() && list_size >= 28)
            .ok_or(err(pos, "SignatureListSize runs past the variable"))?;
        let first = pos + 28 + header_size;
        if sig_size <= 16 || first > end || !(end - first).is_multiple_of(sig_size) {
            return Err(err(
                pos,
                "SignatureSize does not divide the list (or is not larger than the owner GUID)",
            ));
        }
        for s in data[first..end].chunks_exact(sig_size) {
            let mut o = [0u8; 16];
            o.copy_from_slice(&s[..16]);
            out.push(SignatureData {
                list_type,
                owner: Guid(o),
                data: s[16..].to_vec(),
            });
        }
        pos = end;
    }
    Ok(out)
}

/// The Secure Boot configuration the firmware measures into PCR 7.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecureBootVars {
    /// The value of the volatile `SecureBoot` variable: whether the firmware enforces.
    pub enabled: bool,
    pub pk: Vec<u8>,
    pub kek: Vec<u8>,
    pub db: Vec<u8>,
    pub dbx: Vec<u8>,
    /// Measured only when present (edk2 `MeasureAllSecureVariables`).
    pub dbt: Option<Vec<u8>>,
}

impl SecureBootVars {
    /// Read the variables from an OVMF variable store (`OVMF_VARS*.fd`). `SecureBoot` is
    /// derived as edk2 does at boot: enforced when a PK is enrolled and `SecureBootEnable` is
    /// not 0. Only the latest valid copy of each variable counts.
    pub fn from_ovmf_varstore(fd: &[u8]) -> Result<Self, EfiVarError> {
        let vars = read_varstore(fd)?;
        let get = |guid: &Guid, name: &str| {
            vars.iter()
                .find(|v| &v.guid == guid && v.name == name)
                .map(|v| v.data.clone())
        };
        let pk = get(&EFI_GLOBAL_VARIABLE, "PK").unwrap_or_default();
        let enable = get(&SECURE_BOOT_ENABLE_DISABLE, "SecureBootEnable");
        let enabled = !pk.is_empty() && enable.is_none_or(|e| e.first() != Some(&0));
        Ok(SecureBootVars {
            enabled,
            pk,
            kek: get(&EFI_GLOBAL_VARIABLE, "KEK").unwrap_or_default(),
            db: get(&EFI_IMAGE_SECURITY_DATABASE, "db").unwrap_or_default(),
            dbx: get(&EFI_IMAGE_SECURITY_DATABASE, "dbx").unwrap_or_default(),
            dbt: get(&EFI_IMAGE_SECURITY_DATABASE, "dbt"),
        })
    }

    /// Read the variables from files in `dir`: `PK`, `KEK`, `db`, `dbx` (and `dbt`), each
    /// holding the variable's EFI_SIGNATURE_LISTs, named `NAME`, `NAME.esl` (as efitools and
    /// `virt-fw-vars` write them) or `NAME-<guid>` (as efivarfs exposes them, with the 4-byte
    /// attribute prefix). Secure Boot counts as enabled when a PK is present. A missing file is
    /// an empty variable.
    pub fn from_dir(dir: &std::path::Path) -> Result<Self, EfiVarError> {
        let read = |name: &str, guid: &Guid| -> Result<Option<Vec<u8>>, EfiVarError> {
            let io = |p: &std::path::Path, e: std::io::Error| {
                EfiVarError::VarStore(format!("{}: {e}", p.display()))
            };
            for candidate in [name.to_string(), format!("{name}.esl")] {
                let p = dir.join(&candidate);
                if p.exists() {
                    return std::fs::read(&p).map(Some).map_err(|e| io(&p, e));
                }
            }
            let p = dir.join(format!("{name}-{guid}"));
            if p.exists() {
                let raw = std::fs::read(&p).map_err(|e| io(&p, e))?;
                let data = raw.get(4..).ok_or_else(|| {
                    EfiVarError::VarStore(format!(
                        "{}: shorter than the efivarfs attribute prefix",
                        p.display()
                    ))
                })?;
                return Ok(Some(data.to_vec()));
            }
            Ok(None)
        };
        let vars = SecureBootVars {
            enabled: false,
            pk: read("PK", &EFI_GLOBAL_VARIABLE)?.unwrap_or_default(),
            kek: read("KEK", &EFI_GLOBAL_VARIABLE)?.unwrap_or_default(),
            db: read("db", &EFI_IMAGE_SECURITY_DATABASE)?.unwrap_or_default(),
            dbx: read("dbx", &EFI_IMAGE_SECURITY_DATABASE)?.unwrap_or_default(),
            dbt: read("dbt", &EFI_IMAGE_SECURITY_DATABASE)?,
        };
        for (name, data) in [
            ("PK", &vars.pk),
            ("KEK", &vars.kek),
            ("db", &vars.db),
            ("dbx", &vars.dbx),
        ] {
            parse_signature_lists(name, data)?;
        }
        Ok(SecureBootVars {
            enabled: !vars.pk.is_empty(),
            ..vars
        })
    }

    /// The PCR 7 configuration events in firmware order: (name, UEFI_VARIABLE_DATA).
    pub fn config_events(&self) -> Vec<(String, Vec<u8>)> {
        let mut ev = vec![
            (
                "SecureBoot",
                uefi_variable_data(
                    &EFI_GLOBAL_VARIABLE,
                    "SecureBoot",
                    &[u8::from(self.enabled)],
                ),
            ),
            (
                "PK",
                uefi_variable_data(&EFI_GLOBAL_VARIABLE, "PK", &self.pk),
            ),
            (
                "KEK",
                uefi_variable_data(&EFI_GLOBAL_VARIABLE, "KEK", &self.kek),
            ),
            (
                "db",
                uefi_variable_data(&EFI_IMAGE_SECURITY_DATABASE, "db", &self.db),
            ),
            (
                "dbx",
                uefi_variable_data(&EFI_IMAGE_SECURITY_DATABASE, "dbx", &self.dbx),
            ),
        ];
        if let Some(dbt) = &self.dbt {
            ev.push((
                "dbt",
                uefi_variable_data(&EFI_IMAGE_SECURITY_DATABASE, "dbt", dbt),
            ));
        }
        ev.into_iter().map(|(n, d)| (n.to_string(), d)).collect()
    }
}

/// A variable from a variable store.
#[derive(Debug, Clone)]
pub struct StoredVariable {
    pub guid: Guid,
    pub name: String,
    pub attributes: u32,
    pub data: Vec<u8>,
}

const VAR_ADDED: u8 = 0x3f;
const VAR_IN_DELETED_TRANSITION: u8 = 0xfe;
const AUTH_VAR_HEADER_LEN: usize = 60;

/// All live variables of an OVMF variable store.
pub fn read_varstore(fd: &[u8]) -> Result<Vec<StoredVariable>, EfiVarError> {
    let e = |m: String| EfiVarError::VarStore(m);
    if fd.get(40..44) != Some(b"_FVH") {
        return Err(e(
            "no firmware volume signature '_FVH' at offset 0x28".into()
        ));
    }
    let hlen = fd
        .get(48..50)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .ok_or_else(|| e("truncated firmware volume header".into()))?;
    let store = fd
        .get(hlen..hlen + 28)
        .ok_or_else(|| e(format!("truncated variable store header at {hlen:#x}")))?;
    if store[..16] != AUTH_VARIABLE_STORE.0 {
        return Err(e(format!(
            "the variable store at {hlen:#x} is not an authenticated variable store (signature {})",
            Guid(store[..16].try_into().unwrap_or([0; 16]))
        )));
    }
    let size = le32(store, 16).unwrap_or(0) as usize;
    let end = hlen.saturating_add(size).min(fd.len());
    let mut pos = hlen + 28;
    let mut vars: Vec<StoredVariable> = Vec::new();
    while pos + AUTH_VAR_HEADER_LEN <= end {
        let h = &fd[pos..pos + AUTH_VAR_HEADER_LEN];
        if h[0..2] != [0xaa, 0x55] {
            break; // end of the used area (erased flash reads 0xff)
        }
        let state = h[2];
        let attributes = le32(h, 4).unwrap_or(0);
        let name_size = le32(h, 36).unwrap_or(0) as usize;
        let data_size = le32(h, 40).unwrap_or(0) as usize;
        let mut g = [0u8; 16];
        g.copy_from_slice(&h[44..60]);
        let name_at = pos + AUTH_VAR_HEADER_LEN;
        let data_at = name_at
            .checked_add(name_size)
            .filter(|&a| a <= end)
            .ok_or_else(|| e(format!("variable name at {name_at:#x} runs past the store")))?;
        let data_end = data_at
            .checked_add(data_size)
            .filter(|&a| a <= end)
            .ok_or_else(|| e(format!("variable data at {data_at:#x} runs past the store")))?;
        if state == VAR_ADDED || state == VAR_ADDED & VAR_IN_DELETED_TRANSITION {
            let name: Vec<u16> = fd[name_at..data_at]
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|&c| c != 0)
                .collect();
            let v = StoredVariable {
                guid: Guid(g),
                name: String::from_utf16_lossy(&name),
                attributes,
                data: fd[data_at..data_end].to_vec(),
            };
            // A later valid copy replaces an earlier one in transition.
            vars.retain(|o| !(o.guid == v.guid && o.name == v.name));
            vars.push(v);
        }
        pos = data_end.next_multiple_of(4);
    }
    Ok(vars)
}

/// Why no db entry approves an image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorityError {
    /// Unsigned, or signed by a key that is not in db (and its hash is not in db either).
    NotAuthorized,
    /// A db certificate signed it, but the signature is for other contents: the image was
    /// changed after signing.
    DigestNotSigned,
}

/// Which `db` entry the firmware logs as the authority that verified an image signed with
/// `signatures` (PKCS#7 SignedData blobs from its certificate table), or whose SHA-256
/// Authenticode digest `image_sha256` is listed in `db`.
///
/// As edk2 (DxeImageVerificationLib): a digest listed in db approves the image; otherwise each
/// signature in turn is read from its structure ([`crate::pkcs7`]: the signer its SignerInfo
/// names, whose signature over the signed attributes must verify) and must carry the image's
/// digest; then each db certificate, in db order, is tried as the only trust anchor, and the
/// first the signer chains to (the signer itself, or an issuer up the embedded certificates)
/// is the authority. dbx is not consulted. The Secure Boot boot tests confirm the result
/// against OVMF.
pub fn find_db_authority(
    db: &[SignatureData],
    signatures: &[&[u8]],
    image_sha256: &[u8],
) -> Result<SignatureData, AuthorityError> {
    if let Some(e) = db
        .iter()
        .find(|e| e.list_type == EFI_CERT_SHA256 && e.data == image_sha256)
    {
        return Ok(e.clone());
    }
    let anchors: Vec<(&SignatureData, x509_cert::Certificate)> = db
        .iter()
        .filter(|e| e.list_type == EFI_CERT_X509)
        .filter_map(|e| crate::pkcs7::certificate(&e.data).map(|c| (e, c)))
        .collect();
    let mut signed_other_contents = false;
    for sig in signatures {
        let Ok(a) = crate::pkcs7::parse_authenticode(sig) else {
            continue;
        };
        let Some((e, _)) = anchors
            .iter()
            .find(|(_, anchor)| crate::pkcs7::chains_to(&a, anchor))
        else {
            continue;
        };
        if a.image_digest == image_sha256 {
            return Ok((*e).clone());
        }
        signed_other_contents = true;
    }
    Err(if signed_other_contents {
        AuthorityError::DigestNotSigned
    } else {
        AuthorityError::NotAuthorized
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_form() {
        assert_eq!(
            EFI_IMAGE_SECURITY_DATABASE.to_string(),
            "d719b2cb-3d3a-4596-a3bc-dad00e67656f"
        );
    }

    #[test]
    fn empty_variable_digest_matches_real_ovmf_log() {
        // From the plain fixture boot (OVMF 2022.11, stock varstore): PK is measured empty.
        let d = ring::digest::digest(
            &ring::digest::SHA256,
            &uefi_variable_data(&EFI_GLOBAL_VARIABLE, "PK", &[]),
        );
        assert_eq!(
            hex::encode(d),
            "dea7b80ab53a3daaa24d5cc46c64e1fa9ffd03739f90aadbd8c0867c4a5b4890"
        );
        let sb = ring::digest::digest(
            &ring::digest::SHA256,
            &uefi_variable_data(&EFI_GLOBAL_VARIABLE, "SecureBoot", &[0]),
        );
        assert_eq!(
            hex::encode(sb),
            "115aa827dbccfb44d216ad9ecfda56bdea620b860a94bed5b7a27bba1c4d02d8"
        );
    }

    #[test]
    fn signature_lists_round_trip_and_reject_garbage() {
        let mut list = EFI_CERT_SHA256.0.to_vec();
        list.extend_from_slice(&(28u32 + 2 * 48).to_le_bytes());
        list.extend_from_slice(&0u32.to_le_bytes());
        list.extend_from_slice(&48u32.to_le_bytes());
        for i in 0..2u8 {
            list.extend_from_slice(&[i; 16]);
            list.extend_from_slice(&[0xa0 + i; 32]);
        }
        let entries = parse_signature_lists("db", &list).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].data, vec![0xa1; 32]);
        assert_eq!(
            find_db_authority(&entries, &[], &[0xa1; 32]),
            Ok(entries[1].clone())
        );
        assert_eq!(
            find_db_authority(&entries, &[], &[0xa2; 32]),
            Err(AuthorityError::NotAuthorized)
        );
        for cut in 1..list.len() {
            assert!(
                parse_signature_lists("db", &list[..cut]).is_err(),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn real_dbx_from_a_secure_boot_log_is_a_sha256_list() {
        // The sb-custom fixture (a real OVMF boot) measured a dbx holding one EFI_CERT_SHA256
        // entry; its PCR 7 events carry the variables' contents.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../eventlog/tests/fixtures/sb-custom.eventlog.bin"
        );
        let log = nacre_eventlog::EventLog::parse(&std::fs::read(path).unwrap()).unwrap();
        let vars: Vec<_> = log
            .events
            .iter()
            .filter(|e| {
                e.pcr == 7 && e.event_type == nacre_eventlog::EventType::EfiVariableDriverConfig
            })
            .collect();
        let dbx = vars.iter().find(|e| {
            let d = &e.data;
            let name_len = u64::from_le_bytes(d[16..24].try_into().unwrap()) as usize;
            String::from_utf16_lossy(
                &d[32..32 + 2 * name_len]
                    .chunks(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect::<Vec<_>>(),
            ) == "dbx"
        });
        let d = &dbx.unwrap().data;
        let list = parse_signature_lists("dbx", &d[32 + 6..]).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].list_type, EFI_CERT_SHA256);
        // The whole event re-encodes from (name, data) to the logged bytes.
        assert_eq!(
            uefi_variable_data(&EFI_IMAGE_SECURITY_DATABASE, "dbx", &d[32 + 6..]),
            *d
        );
    }

    #[test]
    fn stock_ovmf_varstore_has_no_keys() {
        let path = "/usr/share/OVMF/OVMF_VARS_4M.fd";
        let fd = std::fs::read(path).expect("OVMF is installed by scripts/install-deps.sh");
        let vars = SecureBootVars::from_ovmf_varstore(&fd).unwrap();
        assert!(!vars.enabled);
        assert!(vars.pk.is_empty() && vars.db.is_empty());
        let snakeoil = std::fs::read("/usr/share/OVMF/OVMF_VARS_4M.snakeoil.fd").unwrap();
        let sb = SecureBootVars::from_ovmf_varstore(&snakeoil).unwrap();
        assert!(sb.enabled);
        let db = parse_signature_lists("db", &sb.db).unwrap();
        assert!(db.iter().any(|e| e.list_type == EFI_CERT_X509));
    }
}
