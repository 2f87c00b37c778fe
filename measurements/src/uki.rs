//! Unified Kernel Images (UAPI.5): a systemd-stub PE with the kernel, initrd, command line and
//! os-release in named sections. What the stub measures depends on its version, so the stub is
//! identified from the `.sdmagic` section it carries ("#### LoaderInfo: systemd-stub 252.39 ####").

use crate::pe::{PeError, PeImage, Section};
use std::borrow::Cow;

#[derive(Debug, thiserror::Error)]
pub enum UkiError {
    #[error(transparent)]
    Pe(#[from] PeError),
    #[error("not a UKI: the image has no {0} section")]
    MissingSection(&'static str),
    #[error("the UKI's .sdmagic section {0:?} does not name a systemd-stub version; pass the stub version explicitly")]
    UnknownStub(String),
    #[error("systemd-stub {0} is not supported: nacre predicts the measurements of stub 252 and 257 (pass --stub-version to override)")]
    UnsupportedStub(String),
    #[error("the UKI's {section} section declares {virtual_size} bytes in memory but has only {raw_size} in the file: UKI sections carry their contents, refusing")]
    SectionTooLarge {
        section: String,
        virtual_size: u32,
        raw_size: u32,
    },
    #[error("the UKI's {section} section is not valid UTF-8")]
    NotUtf8 { section: &'static str },
}

/// The stub behaviours nacre knows. Each differs in what it measures into PCR 11 and how it
/// starts the kernel (252 uses LoadImage, so the firmware measures the kernel into PCR 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StubProfile {
    /// systemd 252 (Debian 12): verified against real boots under OVMF 2022.11.
    #[serde(rename = "systemd-stub-252")]
    V252,
    /// systemd 257 (Debian 13): checked against a real boot (Secure Boot off) and against
    /// systemd-measure 257.
    #[serde(rename = "systemd-stub-257")]
    V257,
}

impl StubProfile {
    /// Sections in the order the stub measures them into PCR 11 (its `unified_sections`
    /// table, minus `.pcrsig`, which signs the result and so cannot be part of it).
    pub fn measured_sections(self) -> &'static [&'static str] {
        match self {
            StubProfile::V252 => &[
                ".linux", ".osrel", ".cmdline", ".initrd", ".splash", ".dtb", ".pcrpkey",
            ],
            StubProfile::V257 => &[
                ".linux", ".osrel", ".cmdline", ".initrd", ".ucode", ".splash", ".dtb", ".uname",
                ".sbat", ".pcrpkey", ".profile", ".dtbauto", ".hwids",
            ],
        }
    }

    /// Does the stub start the kernel through the firmware's LoadImage (which measures it
    /// into PCR 4 when Secure Boot is off)? Both 252 and 257 do; real boots show the same
    /// PCR 4 event for both.
    pub fn kernel_via_load_image(self) -> bool {
        matches!(self, StubProfile::V252 | StubProfile::V257)
    }

    pub fn from_version(v: &str) -> Result<Self, UkiError> {
        let major: u32 = v
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|m| m.parse().ok())
            .ok_or_else(|| UkiError::UnknownStub(v.to_string()))?;
        match major {
            252 => Ok(StubProfile::V252),
            257 => Ok(StubProfile::V257),
            _ => Err(UkiError::UnsupportedStub(v.to_string())),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StubProfile::V252 => "systemd-stub-252",
            StubProfile::V257 => "systemd-stub-257",
        }
    }
}

/// Largest zero fill accepted past a section's raw data.
const MAX_ZERO_FILL: u64 = 1 << 20;

/// A parsed UKI borrowing the file's bytes.
#[derive(Debug, Clone)]
pub struct Uki<'a> {
    pub pe: PeImage<'a>,
    /// The version string from `.sdmagic`, e.g. "252.39-1~deb12u2", if present.
    pub stub_version: Option<String>,
}

impl<'a> Uki<'a> {
    pub fn parse(data: &'a [u8]) -> Result<Self, UkiError> {
        let pe = PeImage::parse(data)?;
        if pe.section(".linux").is_none() {
            return Err(UkiError::MissingSection(".linux"));
        }
        // The stub measures VirtualSize bytes of each section; the loader zero-fills past the
        // raw data. Tools that build UKIs never rely on that for more than alignment, and a
        // hostile header must not make us allocate gigabytes of zeros.
        if let Some(s) = pe
            .sections
            .iter()
            .find(|s| u64::from(s.virtual_size) > u64::from(s.size_of_raw_data) + MAX_ZERO_FILL)
        {
            return Err(UkiError::SectionTooLarge {
                section: s.name.clone(),
                virtual_size: s.virtual_size,
                raw_size: s.size_of_raw_data,
            });
        }
        let stub_version = pe.section(".sdmagic").map(|s| {
            let raw = s.mapped(data);
            let text = String::from_utf8_lossy(&raw);
            parse_sdmagic(&text).unwrap_or_else(|| text.trim_end_matches('\0').to_string())
        });
        Ok(Uki { pe, stub_version })
    }

    /// The stub profile: explicit if given, else from `.sdmagic`.
    pub fn stub_profile(&self, explicit: Option<StubProfile>) -> Result<StubProfile, UkiError> {
        if let Some(p) = explicit {
            return Ok(p);
        }
        match &self.stub_version {
            Some(v) => StubProfile::from_version(v),
            None => Err(UkiError::UnknownStub(String::new())),
        }
    }

    pub fn section(&self, name: &str) -> Option<&Section> {
        self.pe.section(name)
    }

    /// A section's bytes as mapped in memory (`VirtualSize` long).
    pub fn section_data(&self, name: &str) -> Option<Cow<'a, [u8]>> {
        self.pe.section(name).map(|s| s.mapped(self.pe.data))
    }

    /// The kernel command line from `.cmdline` (trailing NULs removed).
    pub fn cmdline(&self) -> Result<Option<String>, UkiError> {
        let Some(raw) = self.section_data(".cmdline") else {
            return Ok(None);
        };
        let s = std::str::from_utf8(&raw).map_err(|_| UkiError::NotUtf8 {
            section: ".cmdline",
        })?;
        Ok(Some(s.trim_end_matches('\0').to_string()))
    }

    /// The `roothash=` (dm-verity root hash) from the command line.
    pub fn roothash(&self) -> Result<Option<String>, UkiError> {
        Ok(self.cmdline()?.and_then(|c| cmdline_value(&c, "roothash")))
    }

    /// `KEY=value` pairs of the embedded os-release.
    pub fn os_release(&self) -> Vec<(String, String)> {
        let Some(raw) = self.section_data(".osrel") else {
            return Vec::new();
        };
        String::from_utf8_lossy(&raw)
            .lines()
            .filter_map(|l| {
                let (k, v) = l.split_once('=')?;
                Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            })
            .collect()
    }
}

/// "#### LoaderInfo: systemd-stub 252.39-1~deb12u2 ####" -> "252.39-1~deb12u2".
fn parse_sdmagic(text: &str) -> Option<String> {
    let rest = text.split("systemd-stub ").nth(1)?;
    let v = rest.split_whitespace().next()?;
    Some(v.to_string())
}

/// The value of the last `key=value` word on a kernel command line (the kernel's own rule:
/// later words win). Quoted values are not used by nacre and are returned verbatim.
pub fn cmdline_value(cmdline: &str, key: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .rev()
        .filter_map(|w| w.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pe::tests::build_pe;

    #[test]
    fn reads_stub_version_and_cmdline() {
        let pe = build_pe(
            &[
                (
                    ".sdmagic",
                    b"#### LoaderInfo: systemd-stub 252.39-1~deb12u2 ####\0",
                    53,
                ),
                (
                    ".cmdline",
                    b"console=ttyS0 roothash=ab12 roothash=cd34\0",
                    43,
                ),
                (".linux", b"kernel", 6),
            ],
            None,
        );
        let uki = Uki::parse(&pe).unwrap();
        assert_eq!(uki.stub_version.as_deref(), Some("252.39-1~deb12u2"));
        assert_eq!(uki.stub_profile(None).unwrap(), StubProfile::V252);
        assert_eq!(uki.roothash().unwrap().as_deref(), Some("cd34"));
    }

    #[test]
    fn unknown_stubs_are_refused_not_guessed() {
        assert!(matches!(
            StubProfile::from_version("249.11"),
            Err(UkiError::UnsupportedStub(_))
        ));
        let pe = build_pe(&[(".linux", b"kernel", 6)], None);
        let uki = Uki::parse(&pe).unwrap();
        assert!(uki.stub_profile(None).is_err());
        assert_eq!(
            uki.stub_profile(Some(StubProfile::V257)).unwrap(),
            StubProfile::V257
        );
    }

    #[test]
    fn huge_virtual_sizes_are_refused() {
        let pe = build_pe(&[(".linux", b"kernel", 0xffff_fff1)], None);
        assert!(matches!(
            Uki::parse(&pe),
            Err(UkiError::SectionTooLarge { .. })
        ));
    }

    #[test]
    fn a_pe_without_linux_is_not_a_uki() {
        let pe = build_pe(&[(".text", b"x", 1)], None);
        assert!(matches!(
            Uki::parse(&pe),
            Err(UkiError::MissingSection(".linux"))
        ));
    }
}
