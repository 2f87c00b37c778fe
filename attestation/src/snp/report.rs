//! ATTESTATION_REPORT (SEV-SNP ABI specification 56860, table "ATTESTATION_REPORT Structure"),
//! versions 2 to 5, in the layout of the chip that signed it.
//!
//! What differs between generations and versions (checked against virtee/sev's
//! `src/firmware/guest/types/snp.rs` and `src/firmware/host/types/snp.rs`, commit
//! 9cf2adbffa209cc5becf7ff89ffdf624e7278ced, and real Milan, Genoa and Turin reports):
//! - TCB_VERSION (8 bytes, at 0x38, 0x180, 0x1E0, 0x1F0): Milan and Genoa `boot_loader, tee,
//!   reserved[4], snp, microcode`; Turin `fmc, boot_loader, tee, snp, reserved[3], microcode`.
//! - CHIP_ID (0x1A0, 64 bytes): Turin uses the first 8 bytes, the rest is zero.
//! - Version 3+ carries CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP at 0x188..0x18B: they name the
//!   generation. A version 2 report (or one whose CPUID is all zero) does not: its generation
//!   comes from the VCEK/VLEK certificate (its productName extension) or the chain it
//!   verifies against ([`Report::parse_as`]).
//! - Version 5 adds LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR (0x1F8, 0x200), not used here.

use super::SnpError;

/// Size of an ATTESTATION_REPORT.
pub const REPORT_LEN: usize = 0x4A0;
/// The signed part: bytes 0..0x2A0.
pub(crate) const SIGNED_LEN: usize = 0x2A0;

/// An SEV-SNP processor generation: it decides the TCB layout, the chip id's length and which
/// of AMD's roots sign its keys.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Generation {
    Milan,
    Genoa,
    Turin,
}

impl Generation {
    pub const ALL: [Generation; 3] = [Generation::Milan, Generation::Genoa, Generation::Turin];

    /// From CPUID family and model (extended family/model combined), as AMD assigns them
    /// (virtee/sev `Generation::identify_cpu`): family 19h models 00h-0Fh Milan, 10h-1Fh and
    /// A0h-AFh Genoa (Bergamo, Siena); family 1Ah models 00h-11h Turin.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Generation> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Generation::Milan),
            (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some(Generation::Genoa),
            (0x1A, 0x00..=0x11) => Some(Generation::Turin),
            _ => None,
        }
    }

    /// From a VCEK/VLEK productName extension ("Milan-B0", "Genoa", "Turin", ...) or a name
    /// given on a command line (case-insensitive).
    pub fn from_name(name: &str) -> Option<Generation> {
        let base = name.split('-').next().unwrap_or(name);
        Generation::ALL
            .into_iter()
            .find(|g| g.kds_name().eq_ignore_ascii_case(base))
    }

    /// The product name AMD's key distribution service uses in its URLs.
    pub fn kds_name(self) -> &'static str {
        match self {
            Generation::Milan => "Milan",
            Generation::Genoa => "Genoa",
            Generation::Turin => "Turin",
        }
    }

    /// How many leading bytes of CHIP_ID identify the chip (the VCEK's hwID).
    pub fn chip_id_len(self) -> usize {
        match self {
            Generation::Turin => 8,
            Generation::Milan | Generation::Genoa => 64,
        }
    }
}

impl std::fmt::Display for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.kds_name())
    }
}

impl std::str::FromStr for Generation {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Generation::from_name(s).ok_or_else(|| format!("{s:?} is not milan, genoa or turin"))
    }
}

/// A TCB version, decoded in its generation's layout (`fmc` is Turin's and 0 elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct Tcb {
    #[serde(default)]
    pub fmc: u8,
    pub bootloader: u8,
    pub tee: u8,
    pub snp: u8,
    pub microcode: u8,
}

impl Tcb {
    /// The 8 bytes of a TCB_VERSION in `generation`'s layout.
    pub fn decode(b: [u8; 8], generation: Generation) -> Tcb {
        match generation {
            Generation::Milan | Generation::Genoa => Tcb {
                fmc: 0,
                bootloader: b[0],
                tee: b[1],
                snp: b[6],
                microcode: b[7],
            },
            Generation::Turin => Tcb {
                fmc: b[0],
                bootloader: b[1],
                tee: b[2],
                snp: b[3],
                microcode: b[7],
            },
        }
    }

    /// Every component at least `min`'s.
    pub fn at_least(&self, min: &Tcb) -> bool {
        self.fmc >= min.fmc
            && self.bootloader >= min.bootloader
            && self.tee >= min.tee
            && self.snp >= min.snp
            && self.microcode >= min.microcode
    }

    /// `fmc,bootloader,tee,snp,microcode` (Turin) or `bootloader,tee,snp,microcode`.
    pub fn parse(s: &str, generation: Generation) -> Result<Tcb, String> {
        let v: Vec<u8> = s
            .split(',')
            .map(|x| x.trim().parse::<u8>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("{s:?}: {e}"))?;
        match (generation, &v[..]) {
            (Generation::Turin, [fmc, bootloader, tee, snp, microcode]) => Ok(Tcb {
                fmc: *fmc,
                bootloader: *bootloader,
                tee: *tee,
                snp: *snp,
                microcode: *microcode,
            }),
            (Generation::Milan | Generation::Genoa, [bootloader, tee, snp, microcode]) => Ok(Tcb {
                fmc: 0,
                bootloader: *bootloader,
                tee: *tee,
                snp: *snp,
                microcode: *microcode,
            }),
            (Generation::Turin, _) => Err(format!(
                "{s:?}: Turin's TCB has five numbers: fmc,bootloader,tee,snp,microcode"
            )),
            _ => Err(format!(
                "{s:?}: {generation}'s TCB has four numbers: bootloader,tee,snp,microcode"
            )),
        }
    }
}

impl std::fmt::Display for Tcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "fmc {} bootloader {} tee {} snp {} microcode {}",
            self.fmc, self.bootloader, self.tee, self.snp, self.microcode
        )
    }
}

/// Which key signed the report (report flags bits 4:2, SIGNING_KEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    /// The chip's versioned chip endorsement key: ARK → ASK → VCEK.
    Vcek,
    /// A versioned loaded endorsement key (a cloud provider's, e.g. AWS): ARK → ASVK → VLEK.
    Vlek,
}

impl std::fmt::Display for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningKey::Vcek => "VCEK",
            SigningKey::Vlek => "VLEK",
        })
    }
}

/// The fields nacre checks, parsed from a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub version: u32,
    pub guest_svn: u32,
    pub policy: u64,
    pub vmpl: u32,
    pub signature_algo: u32,
    /// The generation whose layout decoded the TCBs and chip id: from CPUID (version 3+), or
    /// given to [`Report::parse_as`]; `None` for a version 2 report parsed without one (its
    /// TCBs are then decoded in the Milan/Genoa layout until [`Report::parse_as`] says better).
    pub generation: Option<Generation>,
    /// CPUID_FAM_ID, CPUID_MOD_ID, CPUID_STEP (version 3+).
    pub cpuid: Option<[u8; 3]>,
    /// The report's flags (KEY_INFO at 0x48): AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY.
    pub flags: u32,
    pub current_tcb: Tcb,
    /// PLATFORM_INFO: bit 0 SMT enabled on the host, bit 1 TSME enabled.
    pub platform_info: u64,
    pub report_data: [u8; 64],
    pub measurement: [u8; 48],
    pub host_data: [u8; 32],
    pub id_key_digest: [u8; 48],
    pub reported_tcb: Tcb,
    /// The raw REPORTED_TCB (what AMD's KDS URLs and the certificate store are keyed by).
    pub reported_tcb_raw: [u8; 8],
    pub chip_id: [u8; 64],
    pub committed_tcb: Tcb,
    pub launch_tcb: Tcb,
    /// r || s, big-endian, 48 bytes each.
    pub signature: [u8; 96],
    raw: Vec<u8>,
}

pub(crate) fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

pub(crate) fn u32le(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(arr(b, at))
}

impl Report {
    /// Parses a report; its generation comes from CPUID (version 3+). A version 2 report is
    /// decoded in the Milan/Genoa layout with `generation: None` (see [`Report::parse_as`]).
    pub fn parse(b: &[u8]) -> Result<Report, SnpError> {
        Report::parse_with(b, None)
    }

    /// Parses a report in `generation`'s layout. For a version 3+ report, CPUID must name the
    /// same generation (a report from a Turin chip read as Milan is refused, not misread).
    pub fn parse_as(b: &[u8], generation: Generation) -> Result<Report, SnpError> {
        Report::parse_with(b, Some(generation))
    }

    /// Decodes in `generation`'s layout whatever CPUID says: only for showing what a misread
    /// would be (tests), never for verification.
    #[doc(hidden)]
    pub fn misread_as(b: &[u8], generation: Generation) -> Result<Report, SnpError> {
        let mut r = Report::parse_with(b, None)?;
        r.decode(generation);
        Ok(r)
    }

    fn parse_with(b: &[u8], given: Option<Generation>) -> Result<Report, SnpError> {
        if b.len() != REPORT_LEN {
            return Err(SnpError::Format(format!(
                "{} bytes, an ATTESTATION_REPORT has {REPORT_LEN}",
                b.len()
            )));
        }
        let version = u32le(b, 0);
        if !(2..=5).contains(&version) {
            return Err(SnpError::Format(format!(
                "version {version} is not supported (2 to 5)"
            )));
        }
        let signature_algo = u32le(b, 0x34);
        if signature_algo != 1 {
            return Err(SnpError::Format(format!(
                "signature algorithm {signature_algo} (only 1, ECDSA P-384 with SHA-384)"
            )));
        }
        // The signature: r and s, 72 bytes each, little-endian; P-384 uses the low 48.
        let mut signature = [0u8; 96];
        for (i, off) in [SIGNED_LEN, SIGNED_LEN + 72].into_iter().enumerate() {
            let c = &b[off..off + 72];
            if c[48..].iter().any(|x| *x != 0) {
                return Err(SnpError::Format(
                    "signature component wider than 48 bytes".into(),
                ));
            }
            for (j, byte) in c[..48].iter().rev().enumerate() {
                signature[i * 48 + j] = *byte;
            }
        }
        let cpuid = (version >= 3).then(|| arr::<3>(b, 0x188));
        let from_cpuid = match cpuid {
            // Firmware that fills in no CPUID (all zero): the product comes from the key, as
            // for version 2.
            Some([0, 0, 0]) => None,
            Some([family, model, _]) => Some(Generation::from_cpuid(family, model).ok_or_else(
                || {
                    SnpError::Format(format!(
                        "CPUID family {family:#x} model {model:#x} is not a known SEV-SNP generation (Milan, Genoa, Turin)"
                    ))
                },
            )?),
            None => None,
        };
        if let (Some(c), Some(g)) = (from_cpuid, given) {
            if c != g {
                return Err(SnpError::Generation(format!(
                    "the report's CPUID names a {c} chip, it was to be read as {g}"
                )));
            }
        }
        let generation = from_cpuid.or(given);
        let mut r = Report {
            version,
            guest_svn: u32le(b, 4),
            policy: u64::from_le_bytes(arr(b, 8)),
            vmpl: u32le(b, 0x30),
            signature_algo,
            generation,
            cpuid,
            flags: u32le(b, 0x48),
            current_tcb: Tcb::default(),
            platform_info: u64::from_le_bytes(arr(b, 0x40)),
            report_data: arr(b, 0x50),
            measurement: arr(b, 0x90),
            host_data: arr(b, 0xC0),
            id_key_digest: arr(b, 0xE0),
            reported_tcb: Tcb::default(),
            reported_tcb_raw: arr(b, 0x180),
            chip_id: arr(b, 0x1A0),
            committed_tcb: Tcb::default(),
            launch_tcb: Tcb::default(),
            signature,
            raw: b.to_vec(),
        };
        r.decode(generation.unwrap_or(Generation::Milan));
        Ok(r)
    }

    fn decode(&mut self, g: Generation) {
        let b = &self.raw;
        self.current_tcb = Tcb::decode(arr(b, 0x38), g);
        self.reported_tcb = Tcb::decode(arr(b, 0x180), g);
        self.committed_tcb = Tcb::decode(arr(b, 0x1E0), g);
        self.launch_tcb = Tcb::decode(arr(b, 0x1F0), g);
    }

    /// The bytes the VCEK/VLEK signed.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// The whole report as it was parsed.
    pub fn bytes(&self) -> &[u8] {
        &self.raw
    }

    /// The key that signed the report, from SIGNING_KEY (flags bits 4:2); 7 (none: the
    /// report is unsigned) and the reserved values are refused.
    pub fn signing_key(&self) -> Result<SigningKey, SnpError> {
        match (self.flags >> 2) & 7 {
            0 => Ok(SigningKey::Vcek),
            1 => Ok(SigningKey::Vlek),
            7 => Err(SnpError::Format(
                "SIGNING_KEY 7: the report is not signed (MASK_CHIP_KEY)".into(),
            )),
            v => Err(SnpError::Format(format!("SIGNING_KEY {v} is reserved"))),
        }
    }

    /// The significant bytes of CHIP_ID for this report's generation (Turin: 8), or `None`
    /// when the generation is not known yet.
    pub fn chip_id(&self) -> Option<&[u8]> {
        self.generation.map(|g| &self.chip_id[..g.chip_id_len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generations_from_cpuid_and_names() {
        // AMD's family/model assignments (virtee/sev Generation::identify_cpu).
        assert_eq!(Generation::from_cpuid(0x19, 0x01), Some(Generation::Milan));
        assert_eq!(Generation::from_cpuid(0x19, 0x11), Some(Generation::Genoa));
        assert_eq!(Generation::from_cpuid(0x19, 0xA0), Some(Generation::Genoa));
        assert_eq!(Generation::from_cpuid(0x1A, 0x02), Some(Generation::Turin));
        assert_eq!(Generation::from_cpuid(0x17, 0x31), None); // Rome: no SEV-SNP
        assert_eq!(Generation::from_name("Milan-B0"), Some(Generation::Milan));
        assert_eq!(Generation::from_name("turin"), Some(Generation::Turin));
        assert_eq!(Generation::from_name("Rome"), None);
    }

    #[test]
    fn tcb_layouts_and_command_line_form() {
        let raw = [1, 2, 3, 4, 5, 6, 7, 8];
        let milan = Tcb::decode(raw, Generation::Milan);
        assert_eq!(
            (
                milan.fmc,
                milan.bootloader,
                milan.tee,
                milan.snp,
                milan.microcode
            ),
            (0, 1, 2, 7, 8)
        );
        let turin = Tcb::decode(raw, Generation::Turin);
        assert_eq!(
            (
                turin.fmc,
                turin.bootloader,
                turin.tee,
                turin.snp,
                turin.microcode
            ),
            (1, 2, 3, 4, 8)
        );
        assert_eq!(
            Tcb::parse("0,1,0,2,71", Generation::Turin)
                .unwrap()
                .microcode,
            71
        );
        assert!(Tcb::parse("1,0,2,71", Generation::Turin)
            .unwrap_err()
            .contains("five numbers"));
        assert!(Tcb::parse("0,1,0,2,71", Generation::Genoa)
            .unwrap_err()
            .contains("four numbers"));
        assert!(Tcb::parse("4,0,24,300", Generation::Milan).is_err());
        let min = Tcb::parse("4,0,24,219", Generation::Milan).unwrap();
        assert!(min.at_least(&min));
        assert!(!Tcb {
            microcode: 218,
            ..min
        }
        .at_least(&min));
    }
}
