//! Prediction of the measurements of a direct UKI boot: the ordered events each boot component
//! extends (edk2/OVMF firmware, systemd-stub, the Linux EFI stub, nacre-init) and the PCR values
//! they produce. Each stage is a function from the image's bytes to events, so a mismatch
//! against a real event log points at the stage and input that differ.

use crate::authenticode;
use crate::efivars::{self, SecureBootVars};
use crate::stub_cpio::{self, DropinKind};
use crate::uki::{StubProfile, Uki, UkiError};
use nacre_eventlog::alg::{AlgError, HashAlg};
use nacre_eventlog::runtime::{Phase, RuntimeEvent};
use nacre_eventlog::tcg::EventType;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The PCRs nacre predicts for a direct UKI boot.
pub const PREDICTED_PCRS: [u32; 7] = [4, 7, 9, 11, 12, 13, 15];

#[derive(Debug, thiserror::Error)]
pub enum PredictError {
    #[error(transparent)]
    Uki(#[from] UkiError),
    #[error("the UKI's .linux section: {0}")]
    Kernel(crate::pe::PeError),
    #[error("the UKI's certificate table: {0}")]
    Signature(crate::pe::PeError),
    #[error(transparent)]
    Alg(#[from] AlgError),
    #[error(transparent)]
    EfiVar(#[from] efivars::EfiVarError),
    #[error("Secure Boot is enabled and the UKI is signed by an enrolled key, but the signature is for other contents: the UKI was modified after signing, so the firmware would refuse it")]
    ModifiedAfterSigning,
    #[error("a hashing thread failed")]
    Worker,
    #[error("Secure Boot is enabled but no db entry verifies the UKI: it is unsigned or signed by a key that is not enrolled, so the firmware would refuse to boot it")]
    NotAuthorized,
}

/// Which boot component extends an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Origin {
    Firmware,
    SystemdStub,
    LinuxEfiStub,
    NacreInit,
}

/// One predicted event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub pcr: u32,
    #[serde(rename = "type", with = "event_type_name")]
    pub event_type: EventType,
    #[serde(with = "hex::serde")]
    pub digest: Vec<u8>,
    pub description: String,
    pub origin: Origin,
}

/// Serializes an [`EventType`] by its spec name ("EV_IPL") or as hex when it has none.
pub mod event_type_name {
    use nacre_eventlog::tcg::EventType;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &EventType, s: S) -> Result<S::Ok, S::Error> {
        match t.name() {
            Some(n) => s.serialize_str(n),
            None => s.serialize_str(&format!("{:#010x}", t.value())),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EventType, D::Error> {
        let s = String::deserialize(d)?;
        if let Some(t) = EventType::NAMED
            .iter()
            .find(|t| t.name() == Some(s.as_str()))
        {
            return Ok(*t);
        }
        let v = s
            .strip_prefix("0x")
            .and_then(|h| u32::from_str_radix(h, 16).ok())
            .ok_or_else(|| serde::de::Error::custom(format!("unknown event type {s:?}")))?;
        Ok(EventType::from_value(v))
    }
}

/// A file from the ESP: (file name, contents).
pub type EspFile = (String, Vec<u8>);

/// Files the stub picks up from the ESP.
#[derive(Debug, Clone, Default)]
pub struct EspDropins {
    /// `\EFI\BOOT\BOOTX64.EFI.extra.d\*` (credentials `*.cred`, system extensions `*.raw`).
    pub extra_d: Vec<EspFile>,
    /// `\loader\credentials\*.cred`.
    pub loader_credentials: Vec<EspFile>,
}

/// Everything a prediction depends on besides the UKI itself.
#[derive(Debug, Clone)]
pub struct BootConfig {
    pub alg: HashAlg,
    /// `None`: detect from the UKI's `.sdmagic`.
    pub stub: Option<StubProfile>,
    pub secure_boot: SecureBootVars,
    pub dropins: EspDropins,
    /// The last boot phase nacre-init has extended into PCR 11 when the values are read
    /// (attestation happens after `sysinit`); `None` for a boot without nacre-init.
    pub phase: Option<Phase>,
    /// Set for a node that has joined a cluster (PCR 15); `None` for a first boot.
    pub cluster_id: Option<[u8; 32]>,
}

impl Default for BootConfig {
    fn default() -> Self {
        BootConfig {
            alg: HashAlg::Sha256,
            stub: None,
            secure_boot: SecureBootVars::default(),
            dropins: EspDropins::default(),
            phase: None,
            cluster_id: None,
        }
    }
}

/// The predicted events in boot order and the PCR values they give.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prediction {
    pub alg: HashAlg,
    pub stub: StubProfile,
    pub secure_boot: bool,
    pub events: Vec<Event>,
    #[serde(with = "hex_map")]
    pub pcrs: BTreeMap<u32, Vec<u8>>,
}

/// `{"4": "<hex>", ...}` maps.
pub mod hex_map {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::collections::BTreeMap;

    pub fn serialize<S: Serializer>(m: &BTreeMap<u32, Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        m.iter()
            .map(|(k, v)| (k.to_string(), hex::encode(v)))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<u32, Vec<u8>>, D::Error> {
        let raw = BTreeMap::<String, String>::deserialize(d)?;
        raw.into_iter()
            .map(|(k, v)| {
                let k = k
                    .parse()
                    .map_err(|_| serde::de::Error::custom(format!("PCR index {k:?}")))?;
                let v = hex::decode(&v).map_err(serde::de::Error::custom)?;
                Ok((k, v))
            })
            .collect()
    }
}

/// The string edk2's BDS measures before starting a boot option.
pub const CALLING_EFI_APPLICATION: &str = "Calling EFI Application from Boot Option";
/// PC Client separator: four zero bytes (a successful pre-OS phase).
pub const SEPARATOR: [u8; 4] = [0; 4];

struct Builder {
    alg: HashAlg,
    events: Vec<Event>,
}

impl Builder {
    fn measure(
        &mut self,
        pcr: u32,
        event_type: EventType,
        data: &[u8],
        description: impl Into<String>,
        origin: Origin,
    ) -> Result<(), AlgError> {
        let digest = self.alg.hash(data)?;
        self.push(pcr, event_type, digest, description, origin);
        Ok(())
    }

    fn push(
        &mut self,
        pcr: u32,
        event_type: EventType,
        digest: Vec<u8>,
        description: impl Into<String>,
        origin: Origin,
    ) {
        self.events.push(Event {
            pcr,
            event_type,
            digest,
            description: description.into(),
            origin,
        });
    }
}

/// Predict the measured boot of `uki_bytes` booted directly as `\EFI\BOOT\BOOTX64.EFI` by
/// edk2 firmware (OVMF and the clouds' edk2-based UEFI).
pub fn predict(uki_bytes: &[u8], cfg: &BootConfig) -> Result<Prediction, PredictError> {
    let uki = Uki::parse(uki_bytes)?;
    let stub = uki.stub_profile(cfg.stub)?;
    let mut b = Builder {
        alg: cfg.alg,
        events: Vec::new(),
    };
    let fw = Origin::Firmware;

    // Firmware, before any boot option: the Secure Boot configuration (PCR 7).
    for (name, data) in cfg.secure_boot.config_events() {
        b.measure(7, EventType::EfiVariableDriverConfig, &data, name, fw)?;
    }
    b.measure(7, EventType::Separator, &SEPARATOR, "separator", fw)?;
    // BDS starts the boot option (PCR 4); the separators of PCR 0-6 follow, only 4 is ours.
    b.measure(
        4,
        EventType::EfiAction,
        CALLING_EFI_APPLICATION.as_bytes(),
        CALLING_EFI_APPLICATION,
        fw,
    )?;
    b.measure(4, EventType::Separator, &SEPARATOR, "separator", fw)?;
    // The large digests (the UKI's Authenticode, its sections, the kernel's Authenticode) are
    // independent: compute them on two threads, so prediction runs near the hash limit of the
    // machine rather than at half of it.
    let kernel_measured = stub.kernel_via_load_image() && !cfg.secure_boot.enabled;
    let alg_ring = ring_alg(cfg.alg)?;
    let (uki_digests, (sections, kernel_digest)) = std::thread::scope(|scope| {
        let uki_pe = &uki.pe;
        let sb = cfg.secure_boot.enabled;
        let alg = cfg.alg;
        let worker = scope.spawn(move || {
            let main = authenticode::digest(uki_pe, alg_ring).as_ref().to_vec();
            // Secure Boot's db may approve the image by its SHA-256 Authenticode digest.
            let sha256 = if sb && alg != HashAlg::Sha256 {
                authenticode::digest(uki_pe, &ring::digest::SHA256)
                    .as_ref()
                    .to_vec()
            } else {
                main.clone()
            };
            (main, sha256)
        });
        // The kernel's digest on a third thread lets the scheduler even out the two big
        // streams (UKI Authenticode vs. sections) on two cores.
        let uki_ref = &uki;
        let kernel = scope.spawn(move || {
            if kernel_measured {
                kernel_digest(uki_ref, alg_ring).map(Some)
            } else {
                Ok(None)
            }
        });
        let sections = section_digests(&uki, stub, cfg.alg);
        let kernel = kernel
            .join()
            .map_err(|_| PredictError::Worker)
            .and_then(|k| k);
        let uki_digests = worker.join().map_err(|_| PredictError::Worker);
        (uki_digests, (sections, kernel))
    });
    let (uki_digest, uki_sha256) = uki_digests?;
    let sections = sections?;
    let kernel_digest = kernel_digest?;

    // The image verification (Secure Boot) logs the db entry that approved the UKI.
    if cfg.secure_boot.enabled {
        let db = efivars::parse_signature_lists("db", &cfg.secure_boot.db)?;
        let authority = efivars::find_db_authority(
            &db,
            &uki.pe.signatures().map_err(PredictError::Signature)?,
            &uki_sha256,
        )
        .map_err(|e| match e {
            efivars::AuthorityError::NotAuthorized => PredictError::NotAuthorized,
            efivars::AuthorityError::DigestNotSigned => PredictError::ModifiedAfterSigning,
        })?;
        let data = efivars::uefi_variable_data(
            &efivars::EFI_IMAGE_SECURITY_DATABASE,
            "db",
            &authority.to_bytes(),
        );
        b.measure(
            7,
            EventType::EfiVariableAuthority,
            &data,
            "db entry that verified the UKI",
            fw,
        )?;
    }
    b.push(
        4,
        EventType::EfiBootServicesApplication,
        uki_digest,
        "UKI \\EFI\\BOOT\\BOOTX64.EFI (Authenticode)",
        fw,
    );

    // systemd-stub: its sections into PCR 11, name then contents.
    let mut initrd_digest = None;
    for s in &sections {
        b.measure(
            11,
            EventType::Ipl,
            &[s.name.as_bytes(), &[0]].concat(),
            format!("{} (section name)", s.name),
            Origin::SystemdStub,
        )?;
        b.push(
            11,
            EventType::Ipl,
            s.digest.clone(),
            format!("{} ({} bytes)", s.name, s.len),
            Origin::SystemdStub,
        );
        if s.name == ".initrd" {
            initrd_digest = Some(s.digest.clone());
        }
    }
    // ... then the cpio archives it generates from ESP drop-ins (PCR 12, 13).
    let kinds: [(&DropinKind, &[EspFile]); 3] = [
        (&stub_cpio::CREDENTIALS, &cfg.dropins.extra_d),
        (
            &stub_cpio::GLOBAL_CREDENTIALS,
            &cfg.dropins.loader_credentials,
        ),
        (&stub_cpio::SYSEXTS, &cfg.dropins.extra_d),
    ];
    let mut generated = Vec::new();
    for (kind, files) in kinds {
        if let Some(archive) = stub_cpio::pack(kind, files) {
            b.measure(
                kind.pcr,
                EventType::Ipl,
                &archive,
                kind.description,
                Origin::SystemdStub,
            )?;
            generated.push(archive);
        }
    }
    // The stub 252 starts the kernel with LoadImage; without Secure Boot the firmware measures
    // it (with Secure Boot the stub's own security override skips the firmware's handler).
    if let Some(d) = kernel_digest {
        b.push(
            4,
            EventType::EfiBootServicesApplication,
            d,
            "kernel from .linux, started by the stub with LoadImage (Authenticode)",
            fw,
        );
    }

    // The Linux EFI stub: its load options (the command line the stub passes, UTF-16 with
    // its NUL) and the initrd it loads (PCR 9).
    if let Some(cmdline) = stub_cmdline(&uki)? {
        let mut utf16: Vec<u8> = cmdline.encode_utf16().flat_map(u16::to_le_bytes).collect();
        utf16.extend_from_slice(&[0, 0]);
        b.measure(
            9,
            EventType::EventTag,
            &utf16,
            format!("LOADED_IMAGE::LoadOptions \"{cmdline}\""),
            Origin::LinuxEfiStub,
        )?;
    }
    // The initrd the kernel loads: the stub's parts in its order (`combine_initrd`).
    let parts = initrd_parts(&uki, stub, &generated);
    let initrd_len: usize = parts.iter().map(|p| p.len()).sum();
    if initrd_len > 0 {
        // A single part is handed over as it is: when that is the .initrd section, its digest
        // was already computed for PCR 11 (same bytes: compare where they are, not what).
        let is_initrd_section = |p: &[u8]| {
            uki.section_data(".initrd")
                .is_some_and(|d| d.as_ptr() == p.as_ptr() && d.len() == p.len())
        };
        let digest = match (parts.as_slice(), &initrd_digest) {
            ([only], Some(d)) if is_initrd_section(only) => d.clone(),
            ([only], _) => cfg.alg.hash(only)?,
            _ => {
                let slices: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
                cfg.alg.hash(&stub_cpio::combined_initrd(&slices))?
            }
        };
        b.push(
            9,
            EventType::EventTag,
            digest,
            format!("Linux initrd ({} parts, {initrd_len} bytes)", parts.len()),
            Origin::LinuxEfiStub,
        );
    }

    // nacre-init's runtime events (the one definition shared with the init).
    let phases = Phase::ALL
        .into_iter()
        .filter(|p| cfg.phase.is_some_and(|upto| *p <= upto))
        .map(RuntimeEvent::Phase);
    for ev in phases.chain(cfg.cluster_id.map(RuntimeEvent::ClusterId)) {
        b.push(
            ev.pcr(),
            EventType::Ipl,
            ev.digest(cfg.alg)?,
            ev.content(),
            Origin::NacreInit,
        );
    }

    let pcrs = replay(cfg.alg, &b.events, &PREDICTED_PCRS)?;
    Ok(Prediction {
        alg: cfg.alg,
        stub,
        secure_boot: cfg.secure_boot.enabled,
        events: b.events,
        pcrs,
    })
}

/// The pieces of the initrd the stub passes to the kernel, in its order.
///
/// - 252: `.initrd`, then the credential, global-credential and sysext archives.
/// - 257: `.ucode`, `.initrd`, the drop-in archives, then archives it makes from its own
///   sections: `.extra/tpm2-pcr-signature.json` (`.pcrsig`), `.extra/tpm2-pcr-public-key.pem`
///   (`.pcrpkey`) and `.extra/os-release` (`.osrel`). The os-release part was checked against
///   a real 257 boot; `.ucode`, `.pcrsig` and `.pcrpkey` follow systemd's source and are not
///   yet checked by a boot.
fn initrd_parts<'a>(
    uki: &Uki<'a>,
    stub: StubProfile,
    generated: &'a [Vec<u8>],
) -> Vec<std::borrow::Cow<'a, [u8]>> {
    use std::borrow::Cow;
    let mut parts: Vec<Cow<'a, [u8]>> = Vec::new();
    let section = |name: &str, parts: &mut Vec<Cow<'a, [u8]>>| {
        if let Some(d) = uki.section_data(name).filter(|d| !d.is_empty()) {
            parts.push(d);
        }
    };
    if stub == StubProfile::V257 {
        section(".ucode", &mut parts);
    }
    section(".initrd", &mut parts);
    parts.extend(generated.iter().map(|g| Cow::Borrowed(g.as_slice())));
    if stub == StubProfile::V257 {
        for (sec, name) in [
            (".pcrsig", "tpm2-pcr-signature.json"),
            (".pcrpkey", "tpm2-pcr-public-key.pem"),
            (".osrel", "os-release"),
        ] {
            if let Some(d) = uki.section_data(sec).filter(|d| !d.is_empty()) {
                parts.push(Cow::Owned(stub_cpio::literal(name, &d)));
            }
        }
    }
    parts
}

/// The digest of one section the stub measures.
struct SectionDigest {
    name: &'static str,
    len: usize,
    digest: Vec<u8>,
}

fn section_digests(
    uki: &Uki<'_>,
    stub: StubProfile,
    alg: HashAlg,
) -> Result<Vec<SectionDigest>, PredictError> {
    let mut out = Vec::new();
    for name in stub.measured_sections() {
        if let Some(data) = uki.section_data(name) {
            out.push(SectionDigest {
                name,
                len: data.len(),
                digest: alg.hash(&data)?,
            });
        }
    }
    Ok(out)
}

fn kernel_digest(
    uki: &Uki<'_>,
    alg: &'static ring::digest::Algorithm,
) -> Result<Vec<u8>, PredictError> {
    let kernel = uki
        .section_data(".linux")
        .ok_or(UkiError::MissingSection(".linux"))?;
    let pe = crate::pe::PeImage::parse(&kernel).map_err(PredictError::Kernel)?;
    Ok(authenticode::digest(&pe, alg).as_ref().to_vec())
}

/// The command line systemd-stub 252 hands to the kernel when no load options override it:
/// `.cmdline` up to its first NUL, control characters turned into spaces, trailing spaces
/// removed (`mangle_stub_cmdline`).
pub fn stub_cmdline(uki: &Uki<'_>) -> Result<Option<String>, UkiError> {
    let Some(raw) = uki.section_data(".cmdline") else {
        return Ok(None);
    };
    let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
    let text = std::str::from_utf8(&raw[..end]).map_err(|_| UkiError::NotUtf8 {
        section: ".cmdline",
    })?;
    let mangled: String = text
        .chars()
        .map(|c| if (c as u32) <= 0x1f { ' ' } else { c })
        .collect();
    Ok(Some(mangled.trim_end_matches(' ').to_string()))
}

/// Replay events into the given PCRs, all starting at zero.
pub fn replay(
    alg: HashAlg,
    events: &[Event],
    pcrs: &[u32],
) -> Result<BTreeMap<u32, Vec<u8>>, AlgError> {
    let mut out: BTreeMap<u32, Vec<u8>> = pcrs
        .iter()
        .map(|&p| (p, vec![0u8; alg.digest_size()]))
        .collect();
    for e in events {
        if let Some(v) = out.get_mut(&e.pcr) {
            *v = alg.extend(v, &e.digest)?;
        }
    }
    Ok(out)
}

pub(crate) fn ring_alg(alg: HashAlg) -> Result<&'static ring::digest::Algorithm, AlgError> {
    Ok(match alg {
        HashAlg::Sha1 => &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        HashAlg::Sha256 => &ring::digest::SHA256,
        HashAlg::Sha384 => &ring::digest::SHA384,
        HashAlg::Sha512 => &ring::digest::SHA512,
        other => return Err(AlgError::Unsupported(other)),
    })
}
