//! The node's configuration, `/etc/nacre/init.toml` on the verified root (so it is covered by
//! the root hash, and by the measurements). Each part of the init reads its own table with
//! [`section`]; unknown keys are errors (`deny_unknown_fields` in each section's type), so a
//! typo never silently falls back to a default.

use serde::de::DeserializeOwned;

pub const CONFIG: &str = "/etc/nacre/init.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{CONFIG}: {0}")]
    Read(std::io::Error),
    #[error("{CONFIG}: {0}")]
    Parse(String),
    #[error("{CONFIG}: [{section}]: {reason}")]
    Section { section: String, reason: String },
}

/// The whole file as a TOML table (empty if the file does not exist).
pub fn load(text: Option<&str>) -> Result<toml::Table, ConfigError> {
    match text {
        None => Ok(toml::Table::new()),
        Some(t) => t
            .parse::<toml::Table>()
            .map_err(|e| ConfigError::Parse(e.to_string())),
    }
}

/// Read the file from the verified root.
pub fn read() -> Result<toml::Table, ConfigError> {
    match std::fs::read_to_string(CONFIG) {
        Ok(t) => load(Some(&t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => load(None),
        Err(e) => Err(ConfigError::Read(e)),
    }
}

/// One table (or array of tables) of the file, typed; `None` if absent.
pub fn section<T: DeserializeOwned>(
    cfg: &toml::Table,
    name: &str,
) -> Result<Option<T>, ConfigError> {
    match cfg.get(name) {
        None => Ok(None),
        Some(v) => v
            .clone()
            .try_into()
            .map(Some)
            .map_err(|e: toml::de::Error| ConfigError::Section {
                section: name.to_string(),
                reason: e.to_string(),
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Disk {
        serial: String,
    }

    #[test]
    fn sections_are_typed_and_strict() {
        let cfg = load(Some("[state_disk]\nserial = \"nacre-state\"\n")).unwrap();
        let d: Disk = section(&cfg, "state_disk").unwrap().unwrap();
        assert_eq!(d.serial, "nacre-state");
        assert!(section::<Disk>(&cfg, "network").unwrap().is_none());
        let typo = load(Some("[state_disk]\nserail = \"x\"\n")).unwrap();
        let err = section::<Disk>(&typo, "state_disk")
            .unwrap_err()
            .to_string();
        assert!(err.contains("serail"), "{err}");
        assert!(load(Some("[broken")).is_err());
    }
}
