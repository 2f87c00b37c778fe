//! nacre's LUKS2 token for the TPM-sealed key source: the sealed object's public and private
//! parts and the PCR its signed policy covers (the policy itself, PolicyAuthorize with the
//! image's PCR-signing key, is in the object's public part). Parsed strictly (no unknown fields, fixed PCR
//! selection), so the header validator and the key source agree on one shape.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde::Deserialize;
use serde_json::{Map, Value};

/// Sealed under `PolicyAuthorize` with the image's PCR-signing key ([`crate::tpm`]).
pub const TPM_TOKEN_TYPE: &str = "nacre-tpm2-authorized";
/// The earlier literal-PCR 11 token: refused (no released users; such a disk is re-created).
pub const OLD_TPM_TOKEN_TYPE: &str = "nacre-tpm2-sealed";
/// The PCR the key is sealed to: systemd-stub's UKI measurements plus nacre's boot phases
/// (enter-initrd, leave-initrd, sysinit) at the moment the state disk is opened.
pub const SEALED_PCR: u32 = 11;
pub const SEALED_BANK: &str = "sha256";

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TpmToken {
    #[serde(rename = "type")]
    pub type_: String,
    pub keyslots: Vec<String>,
    pub pcr_bank: String,
    pub pcrs: Vec<u32>,
    /// The TPM2B_PUBLIC of the sealed object (marshalled), base64.
    pub public: String,
    /// The TPM2B_PRIVATE of the sealed object (the TPM's encrypted blob), base64.
    pub private: String,
}

impl TpmToken {
    pub fn new(public: &[u8], private: &[u8]) -> TpmToken {
        TpmToken {
            type_: TPM_TOKEN_TYPE.into(),
            keyslots: vec![],
            pcr_bank: SEALED_BANK.into(),
            pcrs: vec![SEALED_PCR],
            public: B64.encode(public),
            private: B64.encode(private),
        }
    }

    /// Parse and check a token object from a header.
    pub fn from_json(m: &Map<String, Value>) -> Result<TpmToken, String> {
        let t: TpmToken =
            serde_json::from_value(Value::Object(m.clone())).map_err(|e| e.to_string())?;
        if t.type_ == OLD_TPM_TOKEN_TYPE {
            return Err(format!(
                "type = {OLD_TPM_TOKEN_TYPE:?}: sealed under a literal PCR 11 policy, which this \
                 version no longer opens (it locks at every image update and accepts planted \
                 objects); re-create the state disk"
            ));
        }
        if t.type_ != TPM_TOKEN_TYPE {
            return Err(format!("type = {:?}, expected {TPM_TOKEN_TYPE:?}", t.type_));
        }
        if t.pcr_bank != SEALED_BANK {
            return Err(format!(
                "pcr_bank = {:?}, expected {SEALED_BANK:?}",
                t.pcr_bank
            ));
        }
        if t.pcrs != [SEALED_PCR] {
            return Err(format!("pcrs = {:?}, expected [{SEALED_PCR}]", t.pcrs));
        }
        for (name, v) in [("public", &t.public), ("private", &t.private)] {
            match B64.decode(v) {
                Ok(b) if !b.is_empty() && b.len() <= 1024 => {}
                Ok(b) => return Err(format!("{name}: {} bytes", b.len())),
                Err(e) => return Err(format!("{name}: not base64 ({e})")),
            }
        }
        Ok(t)
    }

    pub fn to_json(&self) -> Map<String, Value> {
        let mut m = Map::new();
        m.insert("type".into(), Value::String(self.type_.clone()));
        m.insert("keyslots".into(), Value::from(self.keyslots.clone()));
        m.insert("pcr_bank".into(), Value::String(self.pcr_bank.clone()));
        m.insert("pcrs".into(), Value::from(self.pcrs.clone()));
        m.insert("public".into(), Value::String(self.public.clone()));
        m.insert("private".into(), Value::String(self.private.clone()));
        m
    }

    pub fn public_bytes(&self) -> Vec<u8> {
        B64.decode(&self.public).unwrap_or_default()
    }

    pub fn private_bytes(&self) -> Vec<u8> {
        B64.decode(&self.private).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_strictness() {
        let mut t = TpmToken::new(b"pub", b"priv");
        t.keyslots = vec!["0".into()];
        let j = t.to_json();
        assert_eq!(TpmToken::from_json(&j).unwrap(), t);
        let mut extra = j.clone();
        extra.insert("unseal_with".into(), Value::String("anything".into()));
        assert!(TpmToken::from_json(&extra)
            .unwrap_err()
            .contains("unseal_with"));
        let mut pcrs = j.clone();
        pcrs.insert("pcrs".into(), serde_json::json!([7, 11]));
        assert!(TpmToken::from_json(&pcrs).unwrap_err().contains("pcrs"));
        let mut bank = j;
        bank.insert("pcr_bank".into(), Value::String("sha1".into()));
        assert!(TpmToken::from_json(&bank).unwrap_err().contains("sha1"));
    }
}
