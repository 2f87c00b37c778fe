//! Extending PCRs through the kernel's TPM device with one raw TPM2_PCR_Extend command. The
//! init extends and nothing more (quotes and sealing belong to the attestation code), so stage 1
//! needs no TSS library in the initrd: the command and its response are a few fixed fields.

use nacre_eventlog::alg::HashAlg;
use std::io::{Read, Write};

#[derive(Debug, thiserror::Error)]
pub enum TpmError {
    #[error("{path}: {cause}")]
    Io { path: String, cause: std::io::Error },
    #[error("TPM2_PCR_Extend of PCR {pcr} failed with response code {code:#x}")]
    Response { pcr: u32, code: u32 },
    #[error("malformed TPM response ({0} bytes)")]
    Malformed(usize),
}

const TPM_ST_SESSIONS: u16 = 0x8002;
const TPM_CC_PCR_EXTEND: u32 = 0x0000_0182;
const TPM_RS_PW: u32 = 0x4000_0009;

/// The TPM2_PCR_Extend command for `pcr` with one digest per bank (password session, empty
/// auth: PCRs 0-15 have no auth value).
pub fn extend_command(pcr: u32, digests: &[(HashAlg, Vec<u8>)]) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&TPM_CC_PCR_EXTEND.to_be_bytes());
    body.extend_from_slice(&pcr.to_be_bytes());
    // Authorization area: TPM_RS_PW, empty nonce, no attributes, empty HMAC.
    body.extend_from_slice(&9u32.to_be_bytes());
    body.extend_from_slice(&TPM_RS_PW.to_be_bytes());
    body.extend_from_slice(&0u16.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&0u16.to_be_bytes());
    body.extend_from_slice(&(digests.len() as u32).to_be_bytes());
    for (alg, d) in digests {
        body.extend_from_slice(&alg.id().to_be_bytes());
        body.extend_from_slice(d);
    }
    let mut cmd = Vec::with_capacity(body.len() + 6);
    cmd.extend_from_slice(&TPM_ST_SESSIONS.to_be_bytes());
    cmd.extend_from_slice(&((body.len() + 6) as u32).to_be_bytes());
    cmd.extend_from_slice(&body);
    cmd
}

/// The response code of a TPM response (0 is success).
pub fn response_code(resp: &[u8]) -> Result<u32, TpmError> {
    let code = resp.get(6..10).ok_or(TpmError::Malformed(resp.len()))?;
    Ok(u32::from_be_bytes([code[0], code[1], code[2], code[3]]))
}

pub struct Tpm {
    path: String,
    dev: std::fs::File,
    pub banks: Vec<HashAlg>,
}

impl Tpm {
    /// The resource-managed TPM device if the kernel found a TPM 2.0, else `None`.
    pub fn open() -> Result<Option<Tpm>, TpmError> {
        for path in ["/dev/tpmrm0", "/dev/tpm0"] {
            if !std::path::Path::new(path).exists() {
                continue;
            }
            let dev = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(path)
                .map_err(|cause| TpmError::Io {
                    path: path.into(),
                    cause,
                })?;
            return Ok(Some(Tpm {
                path: path.into(),
                dev,
                banks: active_banks(),
            }));
        }
        Ok(None)
    }

    pub fn extend(&mut self, pcr: u32, digests: &[(HashAlg, Vec<u8>)]) -> Result<(), TpmError> {
        let io = |cause| TpmError::Io {
            path: self.path.clone(),
            cause,
        };
        self.dev
            .write_all(&extend_command(pcr, digests))
            .map_err(io)?;
        let mut resp = [0u8; 64];
        let n = self.dev.read(&mut resp).map_err(|cause| TpmError::Io {
            path: self.path.clone(),
            cause,
        })?;
        match response_code(&resp[..n])? {
            0 => Ok(()),
            code => Err(TpmError::Response { pcr, code }),
        }
    }
}

/// The PCR banks the kernel exposes (`/sys/class/tpm/tpm0/pcr-<alg>/`): the allocated ones.
pub fn active_banks() -> Vec<HashAlg> {
    HashAlg::ALL
        .into_iter()
        .filter(|a| a.is_supported())
        .filter(|a| std::path::Path::new(&format!("/sys/class/tpm/tpm0/pcr-{}", a.name())).is_dir())
        .collect()
}

/// A PCR's current value as the kernel reports it.
pub fn read_pcr(alg: HashAlg, pcr: u32) -> Option<Vec<u8>> {
    let text =
        std::fs::read_to_string(format!("/sys/class/tpm/tpm0/pcr-{}/{pcr}", alg.name())).ok()?;
    hex::decode(text.trim()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extend_command_layout() {
        let cmd = extend_command(11, &[(HashAlg::Sha256, vec![0xaa; 32])]);
        assert_eq!(cmd.len(), 10 + 4 + 4 + 9 + 4 + 2 + 32);
        assert_eq!(&cmd[..2], &[0x80, 0x02]);
        assert_eq!(
            u32::from_be_bytes(cmd[2..6].try_into().unwrap()) as usize,
            cmd.len()
        );
        assert_eq!(&cmd[6..10], &[0, 0, 1, 0x82]);
        assert_eq!(&cmd[10..14], &[0, 0, 0, 11]);
        assert_eq!(&cmd[27..31], &[0, 0, 0, 1]);
        assert_eq!(&cmd[31..33], &[0, 0x0b]);
    }

    #[test]
    fn response_codes() {
        assert_eq!(
            response_code(&[0x80, 1, 0, 0, 0, 10, 0, 0, 0, 0]).unwrap(),
            0
        );
        assert_eq!(
            response_code(&[0x80, 1, 0, 0, 0, 10, 0, 0, 1, 0x8b]).unwrap(),
            0x18b
        );
        assert!(response_code(&[0x80]).is_err());
    }
}
