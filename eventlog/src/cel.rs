//! The runtime event log: TCG Canonical Event Log records in the JSON encoding, one per line.
//!
//! Firmware's log ends at ExitBootServices; what nacre's PID 1 extends afterwards needs its own
//! log so a verifier can replay it. The record shape follows CEL-JSON and systemd's
//! `/run/log/systemd/tpm2-measure.log`, so the same tools read both:
//!
//! ```json
//! {"recnum":0,"pcr":11,"digests":[{"hashAlg":"sha256","digest":"…"}],"content_type":"nacre","content":{"eventType":"phase","string":"enter-initrd"}}
//! ```
//!
//! Differences from systemd: records carry `recnum` (CEL requires it; nacre numbers from 0
//! and the reader checks the sequence, so a deleted or reordered line is an error), and
//! records are JSON lines rather than JSON-SEQ. Every record ends with `\n`, written in one
//! `write` to a file opened with O_APPEND and then synced: a crash can leave at most a last
//! line without its newline, which the reader rejects naming the line, and which the writer
//! refuses to append after. Nothing half-written is ever accepted silently.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::alg::HashAlg;
use crate::tcg::PCR_COUNT;

/// The `content_type` of records nacre writes.
pub const CONTENT_TYPE_NACRE: &str = "nacre";

/// One CEL-JSON record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CelRecord {
    /// Sequence number, 0 for the first record of a log.
    pub recnum: u64,
    /// The PCR extended.
    pub pcr: u32,
    /// One digest per bank extended.
    pub digests: Vec<CelDigest>,
    /// Who defines `content` ("nacre" for [`crate::runtime::RuntimeEvent`]).
    pub content_type: String,
    /// What was measured.
    pub content: CelContent,
}

/// A digest in a CEL record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CelDigest {
    /// The bank ("sha256").
    #[serde(rename = "hashAlg")]
    pub hash_alg: HashAlg,
    /// The digest extended, hex in JSON.
    #[serde(with = "hex_bytes")]
    pub digest: Vec<u8>,
}

/// The measured content, in systemd's shape: an event type and the measured string.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CelContent {
    /// What kind of event ("phase", "cluster-id").
    #[serde(rename = "eventType")]
    pub event_type: String,
    /// The string whose hash was extended.
    pub string: String,
}

/// Why a record is invalid even though it is well-formed JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// PCR index outside 0..=23.
    #[error("PCR index {0} is out of range 0..=23")]
    PcrIndex(u32),
    /// No digests at all.
    #[error("record has no digests")]
    NoDigests,
    /// Two digests for one bank.
    #[error("two {0} digests")]
    DuplicateAlg(HashAlg),
    /// A digest of the wrong length.
    #[error("{alg} digest is {found} bytes, expected {expected}")]
    DigestSize {
        /// The bank.
        alg: HashAlg,
        /// The digest's length.
        found: usize,
        /// The bank's digest size.
        expected: usize,
    },
}

/// Errors reading or writing a CEL-JSON log. Lines are numbered from 1.
#[derive(Debug, thiserror::Error)]
pub enum CelError {
    /// A line is not a valid record.
    #[error("line {line}: {source}")]
    Json {
        /// Line number.
        line: usize,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A record is well-formed but invalid.
    #[error("line {line}: {source}")]
    Record {
        /// Line number (for records being written: the line it would have been).
        line: usize,
        /// What is wrong.
        source: RecordError,
    },
    /// The last line has no newline: a write was interrupted.
    #[error("line {line}: no newline at the end: a truncated record from an interrupted write")]
    Truncated {
        /// Line number.
        line: usize,
    },
    /// An empty line (the writer never writes one).
    #[error("line {line}: empty line")]
    EmptyLine {
        /// Line number.
        line: usize,
    },
    /// recnum out of sequence.
    #[error("line {line}: recnum {found}, expected {expected}")]
    Recnum {
        /// Line number.
        line: usize,
        /// recnum in the record.
        found: u64,
        /// The next number in sequence.
        expected: u64,
    },
    /// Reading or writing the file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The log file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

impl CelRecord {
    /// The digest for one bank, if the record has one.
    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|d| d.hash_alg == alg)
            .map(|d| d.digest.as_slice())
    }

    /// Checks what JSON cannot: PCR range, digest sizes, one digest per bank.
    pub fn validate(&self) -> Result<(), RecordError> {
        if self.pcr as usize >= PCR_COUNT {
            return Err(RecordError::PcrIndex(self.pcr));
        }
        if self.digests.is_empty() {
            return Err(RecordError::NoDigests);
        }
        for (i, d) in self.digests.iter().enumerate() {
            let expected = d.hash_alg.digest_size();
            if d.digest.len() != expected {
                return Err(RecordError::DigestSize {
                    alg: d.hash_alg,
                    found: d.digest.len(),
                    expected,
                });
            }
            let earlier = self.digests.get(..i).unwrap_or(&[]);
            if earlier.iter().any(|e| e.hash_alg == d.hash_alg) {
                return Err(RecordError::DuplicateAlg(d.hash_alg));
            }
        }
        Ok(())
    }

    /// The record as one JSON line, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // Serializing these plain structs cannot fail; an empty line would be caught by the
        // reader anyway.
        let mut line = serde_json::to_vec(self).unwrap_or_default();
        line.push(b'\n');
        line
    }
}

/// Parses a whole CEL-JSON-lines log. Empty input is an empty log.
pub fn parse(data: &[u8]) -> Result<Vec<CelRecord>, CelError> {
    let mut records = Vec::new();
    for (i, chunk) in data.split_inclusive(|&b| b == b'\n').enumerate() {
        let line = i.saturating_add(1);
        let Some(body) = chunk.strip_suffix(b"\n") else {
            return Err(CelError::Truncated { line });
        };
        if body.is_empty() {
            return Err(CelError::EmptyLine { line });
        }
        let rec: CelRecord =
            serde_json::from_slice(body).map_err(|source| CelError::Json { line, source })?;
        rec.validate()
            .map_err(|source| CelError::Record { line, source })?;
        let expected = i as u64;
        if rec.recnum != expected {
            return Err(CelError::Recnum {
                line,
                found: rec.recnum,
                expected,
            });
        }
        records.push(rec);
    }
    Ok(records)
}

/// Reads and parses a log file.
pub fn read(path: &Path) -> Result<Vec<CelRecord>, CelError> {
    let data = std::fs::read(path).map_err(|source| CelError::Io {
        path: path.to_owned(),
        source,
    })?;
    parse(&data)
}

/// The systemd-pcrlock shape of a set of records: `{"records":[{"pcr":…,"digests":[…]}]}`.
pub fn pcrlock_json(records: &[CelRecord]) -> serde_json::Value {
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::json!({ "pcr": r.pcr, "digests": r.digests }))
        .collect();
    serde_json::json!({ "records": records })
}

/// Appends records to a log file, one synced line each.
///
/// There must be a single writer (nacre's PID 1); the file is validated when opened.
#[derive(Debug)]
pub struct CelWriter {
    file: File,
    path: PathBuf,
    next_recnum: u64,
}

impl CelWriter {
    /// Opens (creating if needed) a log for appending. Fails if the existing contents do not
    /// parse, including a truncated last line: appending after it would bury the damage.
    pub fn open(path: &Path) -> Result<Self, CelError> {
        let io = |source| CelError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(io)?;
        let mut data = Vec::new();
        file.read_to_end(&mut data).map_err(io)?;
        let existing = parse(&data)?;
        Ok(CelWriter {
            file,
            path: path.to_owned(),
            next_recnum: existing.len() as u64,
        })
    }

    /// The recnum the next appended record must have.
    pub fn next_recnum(&self) -> u64 {
        self.next_recnum
    }

    /// Appends one record (whose recnum must be [`CelWriter::next_recnum`]) and syncs it.
    pub fn append(&mut self, record: &CelRecord) -> Result<(), CelError> {
        let line = usize::try_from(self.next_recnum)
            .unwrap_or(usize::MAX)
            .saturating_add(1);
        record
            .validate()
            .map_err(|source| CelError::Record { line, source })?;
        if record.recnum != self.next_recnum {
            return Err(CelError::Recnum {
                line,
                found: record.recnum,
                expected: self.next_recnum,
            });
        }
        let io = |source| CelError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&record.to_line()).map_err(io)?;
        self.file.sync_data().map_err(io)?;
        self.next_recnum = self.next_recnum.saturating_add(1);
        Ok(())
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        hex::decode(s.as_ref()).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(recnum: u64) -> CelRecord {
        CelRecord {
            recnum,
            pcr: 11,
            digests: vec![CelDigest {
                hash_alg: HashAlg::Sha256,
                digest: vec![0xab; 32],
            }],
            content_type: CONTENT_TYPE_NACRE.into(),
            content: CelContent {
                event_type: "phase".into(),
                string: "enter-initrd".into(),
            },
        }
    }

    #[test]
    fn line_format() {
        let line = String::from_utf8(rec(0).to_line()).unwrap();
        assert_eq!(
            line,
            format!(
                "{{\"recnum\":0,\"pcr\":11,\"digests\":[{{\"hashAlg\":\"sha256\",\"digest\":\"{}\"}}],\
                 \"content_type\":\"nacre\",\"content\":{{\"eventType\":\"phase\",\"string\":\"enter-initrd\"}}}}\n",
                "ab".repeat(32)
            )
        );
        assert_eq!(
            pcrlock_json(&[rec(0)])["records"][0]["digests"][0]["hashAlg"],
            "sha256"
        );
    }

    #[test]
    fn reader_rejects_damage() {
        let mut log = [rec(0).to_line(), rec(1).to_line()].concat();
        assert_eq!(parse(&log).unwrap(), vec![rec(0), rec(1)]);
        assert!(parse(b"").unwrap().is_empty());

        // Every cut that is not at a line end is an error naming line 1 or 2.
        let first_len = rec(0).to_line().len();
        for cut in 1..log.len() {
            match parse(&log[..cut]) {
                Ok(r) => assert_eq!((cut, r.len()), (first_len, 1)),
                Err(CelError::Truncated { line }) => {
                    assert_eq!(line, if cut < first_len { 1 } else { 2 })
                }
                Err(e) => panic!("cut {cut}: {e}"),
            }
        }
        let swapped = [rec(1).to_line(), rec(0).to_line()].concat();
        assert!(matches!(
            parse(&swapped),
            Err(CelError::Recnum {
                line: 1,
                found: 1,
                expected: 0
            })
        ));
        log.extend(b"\n");
        assert!(matches!(parse(&log), Err(CelError::EmptyLine { line: 3 })));
        let mut bad = rec(0);
        bad.digests[0].digest.pop();
        assert!(matches!(
            parse(&bad.to_line()),
            Err(CelError::Record {
                line: 1,
                source: RecordError::DigestSize { found: 31, .. }
            })
        ));
        let extra = b"{\"recnum\":0,\"pcr\":1,\"digests\":[],\"content_type\":\"x\",\"content\":{\"eventType\":\"a\",\"string\":\"b\"},\"x\":1}\n";
        assert!(matches!(parse(extra), Err(CelError::Json { line: 1, .. })));
    }

    #[test]
    fn writer_appends_and_refuses_after_damage() {
        let dir = std::env::temp_dir().join(format!("nacre-cel-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("measure.log");
        let _ = std::fs::remove_file(&path);

        let mut w = CelWriter::open(&path).unwrap();
        assert_eq!(w.next_recnum(), 0);
        w.append(&rec(0)).unwrap();
        assert!(matches!(w.append(&rec(5)), Err(CelError::Recnum { .. })));
        drop(w);
        let mut w = CelWriter::open(&path).unwrap();
        assert_eq!(w.next_recnum(), 1);
        w.append(&rec(1)).unwrap();
        assert_eq!(read(&path).unwrap(), vec![rec(0), rec(1)]);

        // Simulate a crash in the middle of a third write.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&rec(2).to_line()[..20]).unwrap();
        assert!(matches!(read(&path), Err(CelError::Truncated { line: 3 })));
        assert!(matches!(
            CelWriter::open(&path),
            Err(CelError::Truncated { line: 3 })
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
