//! The kernel command line, as measured by the stub and the kernel (PCR 11 `.cmdline`, PCR 9
//! LoadOptions): every choice that weakens the node (running outside a CVM, what to do on a
//! failure) is read from here so it is visible in the measurements.

/// What to do when a stage fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFailure {
    /// Power off (the default: a node that cannot verify itself stops).
    Halt,
    Reboot,
}

/// What the init does with a dm-verity corruption found later, at read time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnCorruption {
    Panic,
    Restart,
}

impl OnCorruption {
    /// The dm-verity optional parameter.
    pub fn table_arg(self) -> &'static str {
        match self {
            OnCorruption::Panic => "panic_on_corruption",
            OnCorruption::Restart => "restart_on_corruption",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootParams {
    /// dm-verity root hash (hex), from `roothash=`.
    pub roothash: Option<String>,
    /// `nacre.insecure-platform=1`: allow running without SEV-SNP/TDX (QEMU vTPM, tests).
    pub insecure_platform: bool,
    pub on_failure: OnFailure,
    pub on_corruption: OnCorruption,
    /// `nacre.modules=a,b`: extra modules to load in stage 1 besides the initrd's list.
    pub extra_modules: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CmdlineError {
    #[error("{key}={value}: {reason}")]
    Bad {
        key: String,
        value: String,
        reason: &'static str,
    },
}

impl BootParams {
    pub fn parse(cmdline: &str) -> Result<Self, CmdlineError> {
        let mut p = BootParams {
            roothash: None,
            insecure_platform: false,
            on_failure: OnFailure::Halt,
            on_corruption: OnCorruption::Panic,
            extra_modules: Vec::new(),
        };
        let bad = |key: &str, value: &str, reason| CmdlineError::Bad {
            key: key.to_string(),
            value: value.to_string(),
            reason,
        };
        // Later words win, as in the kernel.
        for word in cmdline.split_whitespace() {
            let (key, value) = word.split_once('=').unwrap_or((word, ""));
            match key {
                "roothash" => {
                    let ok = value.len() >= 64
                        && value.len() % 2 == 0
                        && value.bytes().all(|b| b.is_ascii_hexdigit());
                    if !ok {
                        return Err(bad(key, value, "not a hex SHA-256 (or longer) root hash"));
                    }
                    p.roothash = Some(value.to_ascii_lowercase());
                }
                "nacre.insecure-platform" => {
                    p.insecure_platform = match value {
                        "1" | "yes" | "" => true,
                        "0" | "no" => false,
                        _ => return Err(bad(key, value, "expected 1 or 0")),
                    }
                }
                "nacre.on-failure" => {
                    p.on_failure = match value {
                        "halt" | "poweroff" => OnFailure::Halt,
                        "reboot" => OnFailure::Reboot,
                        _ => return Err(bad(key, value, "expected halt or reboot")),
                    }
                }
                "nacre.verity" => {
                    p.on_corruption = match value {
                        "panic" => OnCorruption::Panic,
                        "restart" => OnCorruption::Restart,
                        _ => return Err(bad(key, value, "expected panic or restart")),
                    }
                }
                "nacre.modules" => {
                    p.extra_modules = value
                        .split(',')
                        .filter(|m| !m.is_empty())
                        .map(String::from)
                        .collect();
                }
                _ => {}
            }
        }
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HASH: &str = "0340b163df2a09063bd03c32138dda1dc687639eea205a9d611cf87c33178398";

    #[test]
    fn defaults_fail_closed() {
        let p = BootParams::parse("console=ttyS0").unwrap();
        assert_eq!(p.roothash, None);
        assert!(!p.insecure_platform);
        assert_eq!(p.on_failure, OnFailure::Halt);
        assert_eq!(p.on_corruption, OnCorruption::Panic);
    }

    #[test]
    fn parses_nacre_options_later_words_win() {
        let p = BootParams::parse(&format!(
            "roothash={} roothash={HASH} nacre.insecure-platform=1 nacre.on-failure=reboot nacre.verity=restart nacre.modules=a,b",
            "ab".repeat(32)
        ))
        .unwrap();
        assert_eq!(p.roothash.as_deref(), Some(HASH));
        assert!(p.insecure_platform);
        assert_eq!(p.on_failure, OnFailure::Reboot);
        assert_eq!(p.on_corruption.table_arg(), "restart_on_corruption");
        assert_eq!(p.extra_modules, ["a", "b"]);
    }

    #[test]
    fn malformed_values_are_errors_not_defaults() {
        assert!(BootParams::parse("roothash=xyz").is_err());
        assert!(BootParams::parse("roothash=abcd").is_err());
        assert!(BootParams::parse("nacre.insecure-platform=maybe").is_err());
        assert!(BootParams::parse("nacre.on-failure=continue").is_err());
    }
}
