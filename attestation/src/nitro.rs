//! AWS Nitro attestation documents: the binding of the TPM half on `aws-sev-snp`.
//!
//! EC2's vTPM (NitroTPM) is run by the Nitro hypervisor, outside the SEV-SNP guest, and the
//! SNP launch measurement covers only AWS's firmware: a report binding an AK the guest chose
//! proves nothing about the image. What AWS signs about the TPM is the **NitroTPM attestation
//! document**: a COSE_Sign1 (RFC 9052, ES384, untagged) whose payload is a CBOR map
//!
//! | key | value |
//! |---|---|
//! | `module_id` | text, the issuing module (`i-…-tpm…` for a NitroTPM, `i-…-enc…` for an enclave) |
//! | `digest` | text, `"SHA384"` |
//! | `timestamp` | uint, milliseconds since the UNIX epoch |
//! | `nitrotpm_pcrs` (NitroTPM) or `pcrs` (Nitro Enclaves) | map uint → bstr (48 bytes: the TPM's **sha384 bank**, PCRs 0–23) |
//! | `certificate` | bstr, the signing certificate (DER) |
//! | `cabundle` | array of bstr: the AWS Nitro root first, then the intermediates |
//! | `public_key`, `user_data`, `nonce` | bstr or null, what the requester asked to be signed (≤ 1024 bytes each) |
//!
//! (AWS's EC2 user guide, "Validate a NitroTPM attestation document"; the real documents under
//! `tests/fixtures/nitro/`: the NitroTPM one uses an indefinite-length payload map.)
//!
//! [`verify_document`] decodes the envelope and the payload strictly (unknown header labels or
//! payload keys, a digest other than SHA384, PCR values of the wrong length, trailing bytes are
//! errors), checks the chain cabundle → certificate up to one of the pinned roots
//! ([`AWS_NITRO_ROOT_G1`]) with ring (ECDSA P-384/SHA-384 throughout), each certificate's
//! validity at the verification time, and the ES384 signature over the COSE Sig_structure.
//!
//! **Binding** (what nacre-init asks the NitroTPM to sign, [`binding_fields`], checked by
//! [`check_binding`]):
//! - `nonce` = SHA-256(verifier nonce ‖ TLS key SPKI): the TPM quote's qualifying data
//!   ([`crate::evidence::qualifying_data`]): the document answers this verifier's challenge
//!   for this channel;
//! - `user_data` = SHA-512(nonce ‖ AK ‖ TLS key) ([`crate::snp::report_data`]): the value the
//!   SEV-SNP report carries in REPORT_DATA, so the document and the report answer one
//!   challenge for one AK and one channel;
//! - `public_key` = the AK's SubjectPublicKeyInfo (DER).
//!
//! **PCRs.** The document carries the sha384 bank and nothing else; the quote's sha256 bank is
//! signed only by a key the guest chose. So the golden values the document is held to are a
//! sha384 manifest (`nacre-measure golden --bank sha384`, the same events hashed with
//! SHA-384), and [`check_pcrs`] matches the document's PCRs against it, with the same
//! first-join (PCR 15 zero) and lifetime rules as the quote. Replaying the sha384 bank of the
//! event logs against the document while the sha256 replay of the same events meets a sha256
//! manifest would NOT do: a forged log can carry, per event, the sha384 digest of what really
//! ran and the sha256 digest of what the manifest predicts, and both replays succeed.
//!
//! **The aws-sev-snp path** ([`crate::verify::SevSnpVerifier::with_nitro`], [`NitroTrust`]):
//! the SEV-SNP report (VLEK chain, [`crate::snp`]) for the CVM property and REPORT_DATA; the
//! document as the AK's binding ([`check_document`]); the runtime log's PCR 15 records must
//! replay (SHA-384 of their content) to the document's PCR 15 ([`check_runtime_pcr15`]); the
//! quote and logs against the sha256 manifest as elsewhere, which must be of the same release
//! as the sha384 manifest the document matched ([`same_release`]). Evidence of an `aws-*`
//! variant without a verified document is refused ([`crate::binding`]).
//!
//! What this gives against an attacker: root in a guest that booted another image gets a
//! genuine document, but with that image's PCRs (the hypervisor reads them from its TPM,
//! which the guest can only extend): refused. A genuine document of a good node cannot be
//! replayed (nonce) nor moved to another channel (the TLS key is in its nonce) or AK. Root in
//! a running good node can ask for documents for its own keys (as with any TPM: the phase in
//! PCR 11 and PCR 15's cluster records limit what such a node obtains). The host (AWS) is
//! trusted for the TPM half: NitroTPM and its PKI are AWS's, outside the SEV-SNP boundary.
//!
//! **Fetching** ([`fetch_document`], nacre-init on `aws-sev-snp`): AWS's NSM request through
//! the NitroTPM: the CBOR request `{"Attestation": {user_data, nonce, public_key}}` is written
//! to an owner NV index, the vendor command TPM2_CC 0x20000001 (AWS NSM request) with that
//! index as auth and target handle makes the Nitro hypervisor replace it with the CBOR
//! response `{"Attestation": {"document": bstr}}` (or `{"Error": …}`), which is read back and
//! the index undefined (aws/NitroTPM-Tools `nitro-tpm-attest`). **Nothing here has reached
//! AWS**: the request/response encoding and the command are as AWS's tool and lockboot/vaportpm
//! send them; a TPM that is not a NitroTPM answers the vendor command with an error, reported
//! as such.

use crate::evidence::qualifying_data;
use crate::verify::{Expectation, JoinKind, SignedManifest};
use nacre_eventlog::runtime::CLUSTER_ID_PCR;
use nacre_eventlog::HashAlg;
use nacre_measure::manifest::{Finding, ImageRef, Manifest};
use nacre_measure::sign::{verify_blob, PublicKey};
use ring::signature::{UnparsedPublicKey, ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_FIXED};
use std::collections::BTreeMap;
use x509_parser::prelude::*;

/// The AWS Nitro Enclaves root certificate G1 (DER; `CN=aws.nitro-enclaves`, P-384, valid
/// 2019-10-28 – 2049-10-28): AWS publishes it as `AWS_NitroEnclaves_Root-G1.zip`
/// (<https://aws-nitro-enclaves.amazonaws.com/AWS_NitroEnclaves_Root-G1.zip>); it roots the
/// Nitro Enclaves and the NitroTPM documents alike. SHA-256 of the DER:
/// [`AWS_NITRO_ROOT_G1_SHA256`], as AWS's Nitro Enclaves user guide states it. This copy is
/// the one in lockboot/vaportpm (`crates/vaportpm-attest/certs/aws-nitro-root.pem`) and equals
/// `cabundle[0]` of both real documents in `tests/fixtures/nitro/`.
pub const AWS_NITRO_ROOT_G1: &[u8] = include_bytes!("aws-nitro-root-g1.der");

/// SHA-256 of [`AWS_NITRO_ROOT_G1`] (hex).
pub const AWS_NITRO_ROOT_G1_SHA256: &str =
    "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b";

/// The TPM vendor command code of AWS's NSM request (aws/NitroTPM-Tools).
pub const TPM2_CC_AWS_NSM_REQUEST: u32 = 0x2000_0001;

/// Upper bound of `public_key`, `user_data` and `nonce` (AWS: 1024 bytes each).
pub const MAX_USER_FIELD: usize = 1024;

/// Why a document was refused, or could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NitroError {
    #[error("Nitro attestation document: CBOR: {0}")]
    Cbor(String),
    #[error("Nitro attestation document: COSE_Sign1: {0}")]
    Cose(String),
    #[error("Nitro attestation document: payload: {0}")]
    Document(String),
    #[error("Nitro attestation document: certificate chain: {0}")]
    Chain(String),
    #[error("Nitro attestation document: signature: {0}")]
    Signature(String),
    #[error("Nitro attestation document: binding: {0}")]
    Binding(String),
    #[error("Nitro attestation document: PCRs: {0}")]
    Pcrs(String),
    #[error("Nitro attestation document: manifest: {0}")]
    Manifest(String),
    #[error("NitroTPM: {0}")]
    Device(String),
}

/// Which PCR map the document carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PcrSource {
    /// `nitrotpm_pcrs`: the NitroTPM's PCRs (EC2 instance attestation).
    NitroTpm,
    /// `pcrs`: a Nitro Enclave's PCRs (same format and PKI; never accepted as a TPM binding).
    Enclave,
}

/// A verified attestation document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NitroDocument {
    pub module_id: String,
    /// The bank of the PCR values (always SHA-384 today).
    pub digest: HashAlg,
    /// Milliseconds since the UNIX epoch.
    pub timestamp_ms: u64,
    pub source: PcrSource,
    pub pcrs: BTreeMap<u32, Vec<u8>>,
    /// The signing certificate (DER).
    pub certificate: Vec<u8>,
    /// Root first, then intermediates (DER).
    pub cabundle: Vec<Vec<u8>>,
    pub public_key: Option<Vec<u8>>,
    pub user_data: Option<Vec<u8>>,
    pub nonce: Option<Vec<u8>>,
}

// ---------------------------------------------------------------------------------------------
// CBOR (RFC 8949), the subset these documents use.
//
// Hand-written on purpose: the subset is small (integers, byte and text strings, arrays, maps,
// null/true/false; definite and indefinite-length arrays and maps, as the NitroTPM's payload
// map is indefinite), it is read before anything is authenticated, and ~200 lines with depth,
// length and duplicate-key limits are easier to audit and fuzz than a serde-based crate's
// generic deserializer. Floats, undefined, other simple values, indefinite-length strings and
// tags (except COSE_Sign1's optional tag 18 on the envelope) are refused.
// ---------------------------------------------------------------------------------------------

/// CBOR encoding and decoding of the subset above.
pub mod cbor {
    /// A decoded CBOR item.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Value {
        Uint(u64),
        /// A negative integer: the value is -1 - n.
        Nint(u64),
        Bytes(Vec<u8>),
        Text(String),
        Array(Vec<Value>),
        /// Key/value pairs in the order they appear.
        Map(Vec<(Value, Value)>),
        Tag(u64, Box<Value>),
        Bool(bool),
        Null,
    }

    const MAX_DEPTH: usize = 16;
    /// At most this many array/map entries reserved before they are decoded.
    const PREALLOC: usize = 64;

    /// Decodes exactly one item spanning all of `b`.
    pub fn decode(b: &[u8]) -> Result<Value, String> {
        let (v, used) = decode_prefix(b)?;
        if used != b.len() {
            return Err(format!(
                "{} trailing bytes after the item ({} bytes)",
                b.len() - used,
                used
            ));
        }
        Ok(v)
    }

    /// Decodes one item at the start of `b`; returns it and its length.
    pub fn decode_prefix(b: &[u8]) -> Result<(Value, usize), String> {
        let mut r = Reader { b, at: 0 };
        let v = r.item(0)?;
        Ok((v, r.at))
    }

    struct Reader<'a> {
        b: &'a [u8],
        at: usize,
    }

    enum Head {
        Item(u8, u64),
        Indefinite(u8),
        Break,
    }

    impl Reader<'_> {
        fn take(&mut self, n: usize) -> Result<&[u8], String> {
            let end = self
                .at
                .checked_add(n)
                .filter(|e| *e <= self.b.len())
                .ok_or_else(|| {
                    format!(
                        "truncated: {n} bytes needed at offset {}, {} left",
                        self.at,
                        self.b.len() - self.at
                    )
                })?;
            let s = &self.b[self.at..end];
            self.at = end;
            Ok(s)
        }

        fn head(&mut self) -> Result<Head, String> {
            let ib = self.take(1)?[0];
            let (major, ai) = (ib >> 5, ib & 0x1f);
            let arg = match ai {
                0..=23 => u64::from(ai),
                24 => u64::from(self.take(1)?[0]),
                25 => u64::from(u16::from_be_bytes([self.take(1)?[0], self.take(1)?[0]])),
                26 => {
                    let s = self.take(4)?;
                    u64::from(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
                }
                27 => {
                    let s = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(s);
                    u64::from_be_bytes(a)
                }
                31 if major == 7 => return Ok(Head::Break),
                31 if matches!(major, 4 | 5) => return Ok(Head::Indefinite(major)),
                31 => {
                    return Err(format!(
                        "indefinite-length item of major type {major} at offset {} (unsupported)",
                        self.at - 1
                    ))
                }
                _ => {
                    return Err(format!(
                        "reserved additional information {ai} at offset {}",
                        self.at - 1
                    ))
                }
            };
            Ok(Head::Item(major, arg))
        }

        fn len(&self, n: u64) -> Result<usize, String> {
            // Every element takes at least one byte: a count beyond what is left is a lie.
            usize::try_from(n)
                .ok()
                .filter(|n| *n <= self.b.len() - self.at)
                .ok_or_else(|| {
                    format!(
                        "length {n} at offset {} exceeds the {} bytes left",
                        self.at,
                        self.b.len() - self.at
                    )
                })
        }

        fn item(&mut self, depth: usize) -> Result<Value, String> {
            if depth > MAX_DEPTH {
                return Err(format!("nesting deeper than {MAX_DEPTH}"));
            }
            let start = self.at;
            match self.head()? {
                Head::Break => Err(format!("unexpected break at offset {start}")),
                Head::Indefinite(4) => {
                    let mut v = Vec::new();
                    loop {
                        if self.b.get(self.at) == Some(&0xff) {
                            self.at += 1;
                            return Ok(Value::Array(v));
                        }
                        v.push(self.item(depth + 1)?);
                    }
                }
                Head::Indefinite(_) => {
                    let mut m = Vec::new();
                    loop {
                        if self.b.get(self.at) == Some(&0xff) {
                            self.at += 1;
                            return Ok(Value::Map(m));
                        }
                        let k = self.item(depth + 1)?;
                        let v = self.item(depth + 1)?;
                        m.push((k, v));
                    }
                }
                Head::Item(major, arg) => match major {
                    0 => Ok(Value::Uint(arg)),
                    1 => Ok(Value::Nint(arg)),
                    2 => {
                        let n = self.len(arg)?;
                        Ok(Value::Bytes(self.take(n)?.to_vec()))
                    }
                    3 => {
                        let n = self.len(arg)?;
                        let s = self.take(n)?;
                        String::from_utf8(s.to_vec())
                            .map(Value::Text)
                            .map_err(|_| format!("text string at offset {start} is not UTF-8"))
                    }
                    4 => {
                        let n = self.len(arg)?;
                        // Grown as items actually decode: a count (checked only against the
                        // bytes left) would otherwise reserve n Values per nesting level.
                        let mut v = Vec::with_capacity(n.min(PREALLOC));
                        for _ in 0..n {
                            v.push(self.item(depth + 1)?);
                        }
                        Ok(Value::Array(v))
                    }
                    5 => {
                        let n = self.len(arg)?;
                        let mut m = Vec::with_capacity(n.min(PREALLOC));
                        for _ in 0..n {
                            let k = self.item(depth + 1)?;
                            let v = self.item(depth + 1)?;
                            m.push((k, v));
                        }
                        Ok(Value::Map(m))
                    }
                    6 => Ok(Value::Tag(arg, Box::new(self.item(depth + 1)?))),
                    _ => match arg {
                        20 => Ok(Value::Bool(false)),
                        21 => Ok(Value::Bool(true)),
                        22 => Ok(Value::Null),
                        other => Err(format!(
                            "simple value or float {other} at offset {start} (unsupported)"
                        )),
                    },
                },
            }
        }
    }

    fn head(out: &mut Vec<u8>, major: u8, n: u64) {
        let m = major << 5;
        if n < 24 {
            out.push(m | n as u8);
        } else if n <= 0xff {
            out.extend_from_slice(&[m | 24, n as u8]);
        } else if n <= 0xffff {
            out.push(m | 25);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        } else if n <= 0xffff_ffff {
            out.push(m | 26);
            out.extend_from_slice(&(n as u32).to_be_bytes());
        } else {
            out.push(m | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }

    /// Encodes `v` (definite lengths, shortest heads).
    pub fn encode(v: &Value, out: &mut Vec<u8>) {
        match v {
            Value::Uint(n) => head(out, 0, *n),
            Value::Nint(n) => head(out, 1, *n),
            Value::Bytes(b) => {
                head(out, 2, b.len() as u64);
                out.extend_from_slice(b);
            }
            Value::Text(s) => {
                head(out, 3, s.len() as u64);
                out.extend_from_slice(s.as_bytes());
            }
            Value::Array(a) => {
                head(out, 4, a.len() as u64);
                for x in a {
                    encode(x, out);
                }
            }
            Value::Map(m) => {
                head(out, 5, m.len() as u64);
                for (k, x) in m {
                    encode(k, out);
                    encode(x, out);
                }
            }
            Value::Tag(t, x) => {
                head(out, 6, *t);
                encode(x, out);
            }
            Value::Bool(b) => out.push(if *b { 0xf5 } else { 0xf4 }),
            Value::Null => out.push(0xf6),
        }
    }

    /// `v` encoded.
    pub fn to_vec(v: &Value) -> Vec<u8> {
        let mut out = Vec::new();
        encode(v, &mut out);
        out
    }
}

use cbor::Value;

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Uint(_) => "an unsigned integer",
        Value::Nint(_) => "a negative integer",
        Value::Bytes(_) => "a byte string",
        Value::Text(_) => "a text string",
        Value::Array(_) => "an array",
        Value::Map(_) => "a map",
        Value::Tag(..) => "a tagged item",
        Value::Bool(_) => "a boolean",
        Value::Null => "null",
    }
}

// ---------------------------------------------------------------------------------------------
// COSE_Sign1 and the payload.
// ---------------------------------------------------------------------------------------------

/// COSE algorithm ES384 (ECDSA P-384 with SHA-384).
const COSE_ES384: u64 = 34; // encoded as the negative integer -35: Nint(34)
/// COSE header label `alg`.
const COSE_ALG: u64 = 1;

struct Envelope {
    protected: Vec<u8>,
    payload: Vec<u8>,
    signature: Vec<u8>,
}

fn envelope(bytes: &[u8]) -> Result<Envelope, NitroError> {
    let v = cbor::decode(bytes).map_err(NitroError::Cbor)?;
    // COSE_Sign1_Tagged (tag 18) or untagged, as AWS sends it.
    let v = match v {
        Value::Tag(18, inner) => *inner,
        Value::Tag(t, _) => return Err(NitroError::Cose(format!("tag {t}, not 18 (COSE_Sign1)"))),
        v => v,
    };
    let Value::Array(items) = v else {
        return Err(NitroError::Cose(format!(
            "the envelope is {}, not an array of 4",
            describe(&v)
        )));
    };
    let [protected, unprotected, payload, signature]: [Value; 4] =
        items.try_into().map_err(|items: Vec<Value>| {
            NitroError::Cose(format!("the envelope has {} items, not 4", items.len()))
        })?;
    let Value::Bytes(protected) = protected else {
        return Err(NitroError::Cose(format!(
            "the protected header is {}, not a byte string",
            describe(&protected)
        )));
    };
    match cbor::decode(&protected)
        .map_err(|e| NitroError::Cose(format!("protected header: {e}")))?
    {
        Value::Map(m) => {
            let mut alg = None;
            for (k, v) in m {
                match (k, v) {
                    (Value::Uint(COSE_ALG), v) if alg.is_none() => alg = Some(v),
                    (k, _) => {
                        return Err(NitroError::Cose(format!(
                            "protected header label {k:?} is not understood (only alg; a critical or unknown header is refused)"
                        )))
                    }
                }
            }
            match alg {
                Some(Value::Nint(COSE_ES384)) => {}
                Some(other) => {
                    return Err(NitroError::Cose(format!(
                        "algorithm {other:?} is not ES384 (-35)"
                    )))
                }
                None => {
                    return Err(NitroError::Cose(
                        "the protected header names no algorithm".into(),
                    ))
                }
            }
        }
        other => {
            return Err(NitroError::Cose(format!(
                "the protected header is {}, not a map",
                describe(&other)
            )))
        }
    }
    match unprotected {
        Value::Map(m) if m.is_empty() => {}
        Value::Map(m) => {
            return Err(NitroError::Cose(format!(
                "the unprotected header has {} entries (AWS sends none; refused)",
                m.len()
            )))
        }
        other => {
            return Err(NitroError::Cose(format!(
                "the unprotected header is {}, not a map",
                describe(&other)
            )))
        }
    }
    let Value::Bytes(payload) = payload else {
        return Err(NitroError::Cose(format!(
            "the payload is {} (detached or missing), not a byte string",
            describe(&payload)
        )));
    };
    let Value::Bytes(signature) = signature else {
        return Err(NitroError::Cose(format!(
            "the signature is {}, not a byte string",
            describe(&signature)
        )));
    };
    if signature.len() != 96 {
        return Err(NitroError::Cose(format!(
            "the ES384 signature is {} bytes, not 96 (r ‖ s)",
            signature.len()
        )));
    }
    Ok(Envelope {
        protected,
        payload,
        signature,
    })
}

/// The COSE Sig_structure for COSE_Sign1 with empty external AAD (RFC 9052 §4.4).
fn sig_structure(protected: &[u8], payload: &[u8]) -> Vec<u8> {
    cbor::to_vec(&Value::Array(vec![
        Value::Text("Signature1".into()),
        Value::Bytes(protected.to_vec()),
        Value::Bytes(Vec::new()),
        Value::Bytes(payload.to_vec()),
    ]))
}

fn user_field(name: &str, v: Value) -> Result<Option<Vec<u8>>, NitroError> {
    match v {
        Value::Null => Ok(None),
        Value::Bytes(b) if b.len() <= MAX_USER_FIELD => Ok(Some(b)),
        Value::Bytes(b) => Err(NitroError::Document(format!(
            "{name} is {} bytes, more than {MAX_USER_FIELD}",
            b.len()
        ))),
        other => Err(NitroError::Document(format!(
            "{name} is {}, not a byte string or null",
            describe(&other)
        ))),
    }
}

fn parse_payload(payload: &[u8]) -> Result<NitroDocument, NitroError> {
    let v = cbor::decode(payload).map_err(|e| NitroError::Cbor(format!("payload: {e}")))?;
    let Value::Map(entries) = v else {
        return Err(NitroError::Document(format!(
            "the payload is {}, not a map",
            describe(&v)
        )));
    };
    let mut fields: BTreeMap<String, Value> = BTreeMap::new();
    for (k, v) in entries {
        let Value::Text(k) = k else {
            return Err(NitroError::Document(format!(
                "a key is {}, not text",
                describe(&k)
            )));
        };
        match k.as_str() {
            "module_id" | "digest" | "timestamp" | "pcrs" | "nitrotpm_pcrs" | "certificate"
            | "cabundle" | "public_key" | "user_data" | "nonce" => {}
            _ => {
                return Err(NitroError::Document(format!(
                    "unknown field {k:?} (refused: this verifier does not know what it means)"
                )))
            }
        }
        if fields.insert(k.clone(), v).is_some() {
            return Err(NitroError::Document(format!("field {k:?} appears twice")));
        }
    }
    let mut take = |k: &str| fields.remove(k);
    let missing = |k: &str| NitroError::Document(format!("field {k:?} is missing"));

    let module_id = match take("module_id").ok_or_else(|| missing("module_id"))? {
        Value::Text(s) if !s.is_empty() => s,
        Value::Text(_) => return Err(NitroError::Document("module_id is empty".into())),
        o => {
            return Err(NitroError::Document(format!(
                "module_id is {}, not text",
                describe(&o)
            )))
        }
    };
    let digest = match take("digest").ok_or_else(|| missing("digest"))? {
        Value::Text(s) if s == "SHA384" => HashAlg::Sha384,
        Value::Text(s) => {
            return Err(NitroError::Document(format!(
                "digest {s:?} is not \"SHA384\" (the only bank AWS signs)"
            )))
        }
        o => {
            return Err(NitroError::Document(format!(
                "digest is {}, not text",
                describe(&o)
            )))
        }
    };
    let timestamp_ms = match take("timestamp").ok_or_else(|| missing("timestamp"))? {
        Value::Uint(t) if t > 0 => t,
        o => {
            return Err(NitroError::Document(format!(
                "timestamp is {o:?}, not a positive integer"
            )))
        }
    };
    let (source, pcr_map) = match (take("nitrotpm_pcrs"), take("pcrs")) {
        (Some(m), None) => (PcrSource::NitroTpm, m),
        (None, Some(m)) => (PcrSource::Enclave, m),
        (Some(_), Some(_)) => {
            return Err(NitroError::Document(
                "both nitrotpm_pcrs and pcrs are present".into(),
            ))
        }
        (None, None) => {
            return Err(NitroError::Document(
                "neither nitrotpm_pcrs nor pcrs is present".into(),
            ))
        }
    };
    let Value::Map(pcr_entries) = pcr_map else {
        return Err(NitroError::Document(format!(
            "the PCRs are {}, not a map",
            describe(&pcr_map)
        )));
    };
    if pcr_entries.is_empty() || pcr_entries.len() > 32 {
        return Err(NitroError::Document(format!(
            "{} PCRs (1 to 32 expected)",
            pcr_entries.len()
        )));
    }
    let mut pcrs = BTreeMap::new();
    for (k, v) in pcr_entries {
        let idx = match k {
            Value::Uint(i) if i < 32 => i as u32,
            o => {
                return Err(NitroError::Document(format!(
                    "PCR index {o:?} is not 0..31"
                )))
            }
        };
        let Value::Bytes(val) = v else {
            return Err(NitroError::Document(format!(
                "PCR {idx} is {}, not a byte string",
                describe(&v)
            )));
        };
        if val.len() != digest.digest_size() {
            return Err(NitroError::Document(format!(
                "PCR {idx} is {} bytes, a {digest} value has {}",
                val.len(),
                digest.digest_size()
            )));
        }
        if pcrs.insert(idx, val).is_some() {
            return Err(NitroError::Document(format!("PCR {idx} appears twice")));
        }
    }
    let certificate = match take("certificate").ok_or_else(|| missing("certificate"))? {
        Value::Bytes(b) if !b.is_empty() => b,
        o => {
            return Err(NitroError::Document(format!(
                "certificate is {}, not a non-empty byte string",
                describe(&o)
            )))
        }
    };
    let cabundle = match take("cabundle").ok_or_else(|| missing("cabundle"))? {
        Value::Array(a) if !a.is_empty() => a
            .into_iter()
            .enumerate()
            .map(|(i, c)| match c {
                Value::Bytes(b) if !b.is_empty() => Ok(b),
                o => Err(NitroError::Document(format!(
                    "cabundle[{i}] is {}, not a non-empty byte string",
                    describe(&o)
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?,
        o => {
            return Err(NitroError::Document(format!(
                "cabundle is {}, not a non-empty array",
                describe(&o)
            )))
        }
    };
    let public_key = take("public_key").map_or(Ok(None), |v| user_field("public_key", v))?;
    let user_data = take("user_data").map_or(Ok(None), |v| user_field("user_data", v))?;
    let nonce = take("nonce").map_or(Ok(None), |v| user_field("nonce", v))?;
    Ok(NitroDocument {
        module_id,
        digest,
        timestamp_ms,
        source,
        pcrs,
        certificate,
        cabundle,
        public_key,
        user_data,
        nonce,
    })
}

// ---------------------------------------------------------------------------------------------
// The certificate chain.
// ---------------------------------------------------------------------------------------------

const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_SECP384R1: &str = "1.3.132.0.34";
const OID_ECDSA_SHA384: &str = "1.2.840.10045.4.3.3";

fn parse_cert<'a>(what: &str, der: &'a [u8]) -> Result<X509Certificate<'a>, NitroError> {
    let (rest, c) = parse_x509_certificate(der)
        .map_err(|e| NitroError::Chain(format!("{what}: not a DER certificate: {e}")))?;
    if !rest.is_empty() {
        return Err(NitroError::Chain(format!(
            "{what}: {} bytes after the certificate",
            rest.len()
        )));
    }
    Ok(c)
}

/// The uncompressed P-384 point of a certificate's key.
fn p384_key<'a>(what: &str, c: &'a X509Certificate<'_>) -> Result<&'a [u8], NitroError> {
    let spki = c.public_key();
    let curve = crate::x509util::spki_curve(spki);
    if spki.algorithm.algorithm.to_id_string() != OID_EC_PUBLIC_KEY
        || curve.as_deref() != Some(OID_SECP384R1)
    {
        return Err(NitroError::Chain(format!(
            "{what}: the key is not ECDSA P-384 (algorithm {}, curve {})",
            spki.algorithm.algorithm.to_id_string(),
            curve.unwrap_or_else(|| "-".into())
        )));
    }
    Ok(&spki.subject_public_key.data)
}

fn check_time(what: &str, c: &X509Certificate<'_>, now: u64) -> Result<(), NitroError> {
    let t = i64::try_from(now).unwrap_or(i64::MAX);
    if !crate::x509util::valid_at(c, t) {
        return Err(NitroError::Chain(format!(
            "{what} is valid from {} to {}, not at {} (UNIX {now})",
            c.validity().not_before,
            c.validity().not_after,
            ASN1Time::from_timestamp(t)
                .map(|x| x.to_string())
                .unwrap_or_else(|_| now.to_string())
        )));
    }
    Ok(())
}

/// Unknown critical extensions are refused; basic constraints and key usage are checked.
fn check_extensions(
    what: &str,
    c: &X509Certificate<'_>,
    ca: bool,
    cas_below: usize,
) -> Result<(), NitroError> {
    for ext in c.extensions() {
        let known = matches!(
            ext.parsed_extension(),
            ParsedExtension::BasicConstraints(_)
                | ParsedExtension::KeyUsage(_)
                | ParsedExtension::SubjectKeyIdentifier(_)
                | ParsedExtension::AuthorityKeyIdentifier(_)
        );
        if ext.critical && !known {
            return Err(NitroError::Chain(format!(
                "{what}: unknown critical extension {}",
                ext.oid.to_id_string()
            )));
        }
    }
    let bc = c
        .basic_constraints()
        .map_err(|e| NitroError::Chain(format!("{what}: basic constraints: {e}")))?
        .map(|b| b.value.clone());
    let ku = c
        .key_usage()
        .map_err(|e| NitroError::Chain(format!("{what}: key usage: {e}")))?
        .map(|k| k.value);
    if ca {
        let Some(bc) = bc.filter(|b| b.ca) else {
            return Err(NitroError::Chain(format!(
                "{what} issues a certificate but is not a CA (basic constraints)"
            )));
        };
        if let Some(max) = bc.path_len_constraint {
            if cas_below > max as usize {
                return Err(NitroError::Chain(format!(
                    "{what}: path length {cas_below} exceeds its constraint {max}"
                )));
            }
        }
        if let Some(ku) = ku {
            if !ku.key_cert_sign() {
                return Err(NitroError::Chain(format!(
                    "{what}: key usage lacks keyCertSign"
                )));
            }
        }
    } else {
        if bc.is_some_and(|b| b.ca) {
            return Err(NitroError::Chain(format!(
                "{what} is a CA certificate, not a signing certificate"
            )));
        }
        if let Some(ku) = ku {
            if !ku.digital_signature() {
                return Err(NitroError::Chain(format!(
                    "{what}: key usage lacks digitalSignature"
                )));
            }
        }
    }
    Ok(())
}

/// Checks `cabundle[0]` is one of `roots` (byte for byte), each following certificate and the
/// leaf is signed by the one before (ECDSA P-384/SHA-384), names chain, constraints hold, and
/// everything is valid at `now`. Returns the leaf's P-384 point.
fn verify_chain(doc: &NitroDocument, roots: &[&[u8]], now: u64) -> Result<Vec<u8>, NitroError> {
    if roots.is_empty() {
        return Err(NitroError::Chain("no root certificate configured".into()));
    }
    let root_der = &doc.cabundle[0];
    if !roots.contains(&root_der.as_slice()) {
        let fp = hex::encode(ring::digest::digest(&ring::digest::SHA256, root_der));
        return Err(NitroError::Chain(format!(
            "cabundle[0] (SHA-256 {fp}) is not a configured root (AWS Nitro root G1: {AWS_NITRO_ROOT_G1_SHA256})"
        )));
    }
    let mut ders: Vec<(&[u8], String)> = doc
        .cabundle
        .iter()
        .enumerate()
        .map(|(i, c)| {
            (
                c.as_slice(),
                if i == 0 {
                    "the root (cabundle[0])".to_string()
                } else {
                    format!("cabundle[{i}]")
                },
            )
        })
        .collect();
    ders.push((&doc.certificate, "the signing certificate".into()));
    let certs: Vec<X509Certificate<'_>> = ders
        .iter()
        .map(|(d, w)| parse_cert(w, d))
        .collect::<Result<_, _>>()?;
    let n = certs.len();
    for (i, c) in certs.iter().enumerate() {
        let what = &ders[i].1;
        check_time(what, c, now)?;
        let is_leaf = i == n - 1;
        // CAs below this one, leaf excluded.
        let cas_below = n.saturating_sub(i + 2);
        check_extensions(what, c, !is_leaf, cas_below)?;
        if i == 0 {
            continue;
        }
        let issuer = &certs[i - 1];
        if c.issuer().as_raw() != issuer.subject().as_raw() {
            return Err(NitroError::Chain(format!(
                "{what}'s issuer ({}) is not {}'s subject ({})",
                c.issuer(),
                ders[i - 1].1,
                issuer.subject()
            )));
        }
        let sig_alg = c.signature_algorithm.algorithm.to_id_string();
        if sig_alg != OID_ECDSA_SHA384 {
            return Err(NitroError::Chain(format!(
                "{what} is signed with {sig_alg}, not ecdsa-with-SHA384"
            )));
        }
        let key = p384_key(&ders[i - 1].1, issuer)?;
        UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, key)
            .verify(c.tbs_certificate.as_ref(), &c.signature_value.data)
            .map_err(|_| {
                NitroError::Chain(format!(
                    "{what}'s signature does not verify with {}'s key",
                    ders[i - 1].1
                ))
            })?;
    }
    let leaf = &certs[n - 1];
    let t = doc.timestamp_ms / 1000;
    if !crate::x509util::valid_at(leaf, i64::try_from(t).unwrap_or(i64::MAX)) {
        return Err(NitroError::Chain(format!(
            "the document's timestamp ({t}) lies outside its signing certificate's validity ({} – {})",
            leaf.validity().not_before,
            leaf.validity().not_after
        )));
    }
    Ok(p384_key("the signing certificate", leaf)?.to_vec())
}

/// Verifies a Nitro attestation document (the COSE_Sign1 bytes): envelope and payload, the
/// chain to one of `roots` (DER; [`AWS_NITRO_ROOT_G1`] in production), validity at `now`
/// (UNIX seconds) and the ES384 signature. Says nothing yet about what the document binds or
/// whether its PCRs are good: [`check_binding`], [`check_pcrs`].
pub fn verify_document(
    bytes: &[u8],
    roots: &[&[u8]],
    now: u64,
) -> Result<NitroDocument, NitroError> {
    let env = envelope(bytes)?;
    let doc = parse_payload(&env.payload)?;
    let leaf_key = verify_chain(&doc, roots, now)?;
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &leaf_key)
        .verify(&sig_structure(&env.protected, &env.payload), &env.signature)
        .map_err(|_| {
            NitroError::Signature(
                "the ES384 signature over the document does not verify with its signing certificate".into(),
            )
        })?;
    Ok(doc)
}

// ---------------------------------------------------------------------------------------------
// Binding and PCRs.
// ---------------------------------------------------------------------------------------------

/// What nacre-init asks the NitroTPM to sign, as (user_data, nonce, public_key): see the
/// module documentation.
pub fn binding_fields(
    nonce: &[u8],
    ak_spki: &[u8],
    tls_spki: &[u8],
) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (
        crate::snp::report_data(nonce, ak_spki, tls_spki).to_vec(),
        qualifying_data(nonce, tls_spki).to_vec(),
        ak_spki.to_vec(),
    )
}

/// Checks that a verified document is a NitroTPM document (not an enclave's) made for this
/// verifier's nonce, this channel's TLS key and this AK (`ak_spki`, DER).
pub fn check_binding(
    doc: &NitroDocument,
    expect: &Expectation<'_>,
    ak_spki: &[u8],
) -> Result<(), NitroError> {
    if doc.source != PcrSource::NitroTpm {
        return Err(NitroError::Binding(format!(
            "{} is a Nitro Enclaves document (pcrs), not a NitroTPM document (nitrotpm_pcrs)",
            doc.module_id
        )));
    }
    let (user_data, nonce, public_key) =
        binding_fields(expect.nonce, ak_spki, expect.tls_public_key);
    match &doc.nonce {
        None => {
            return Err(NitroError::Binding(
                "the document carries no nonce: it answers no challenge".into(),
            ))
        }
        Some(n) if *n != nonce => {
            return Err(NitroError::Binding(format!(
                "nonce {} is not SHA-256(nonce ‖ TLS key) = {}: a replayed document, or one made for another channel",
                hex::encode(n),
                hex::encode(&nonce)
            )))
        }
        Some(_) => {}
    }
    match &doc.user_data {
        Some(u) if *u == user_data => {}
        Some(u) => {
            return Err(NitroError::Binding(format!(
                "user_data {} is not SHA-512(nonce ‖ AK ‖ TLS key) = {}: made for another AK",
                hex::encode(u),
                hex::encode(&user_data)
            )))
        }
        None => {
            return Err(NitroError::Binding(
                "the document carries no user_data (SHA-512(nonce ‖ AK ‖ TLS key))".into(),
            ))
        }
    }
    match &doc.public_key {
        Some(k) if *k == public_key => Ok(()),
        Some(k) => Err(NitroError::Binding(format!(
            "public_key {} is not the evidence's AK",
            hex::encode(k)
        ))),
        None => Err(NitroError::Binding(
            "the document carries no public_key (the AK)".into(),
        )),
    }
}

/// The manifest the document's PCRs matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PcrMatch {
    pub image: ImageRef,
    pub phase: Option<String>,
    /// Manifest PCRs that matched.
    pub matched: Vec<u32>,
    /// Warn-only PCRs that did not match: the caller logs them.
    pub warnings: Vec<Finding>,
    /// The document's PCR 15 (the cluster id nacre-init extended), for a caller that judges
    /// membership itself ([`JoinKind::Either`]).
    pub pcr15: Option<Vec<u8>>,
}

/// Matches a verified document's PCRs against golden manifests of the document's bank
/// (sha384: `nacre-measure golden --bank sha384`; manifests of other banks are skipped), for a
/// first join with PCR 15 zero, at `now` (expired manifests admit nothing). The first manifest
/// that matches is returned; otherwise every manifest's mismatches are named.
pub fn check_pcrs(
    doc: &NitroDocument,
    manifests: &[Manifest],
    join: JoinKind,
    now: u64,
) -> Result<PcrMatch, NitroError> {
    let banked: Vec<&Manifest> = manifests.iter().filter(|m| m.alg == doc.digest).collect();
    if banked.is_empty() {
        return Err(NitroError::Manifest(format!(
            "no {} manifest among {} (the document carries the {} bank only; predict it with `nacre-measure golden --bank {}`)",
            doc.digest,
            manifests.len(),
            doc.digest,
            doc.digest
        )));
    }
    let pcr15 = doc.pcrs.get(&CLUSTER_ID_PCR).cloned();
    if join == JoinKind::First {
        match &pcr15 {
            Some(v) if v.iter().all(|b| *b == 0) => {}
            Some(v) => {
                return Err(NitroError::Pcrs(format!(
                    "PCR 15 is {}, not zero: the node is already initialized for a cluster",
                    hex::encode(v)
                )))
            }
            None => return Err(NitroError::Pcrs("the document has no PCR 15".into())),
        }
    }
    let mut refusals = Vec::new();
    for m in banked {
        let verdict = if join == JoinKind::Either {
            let mut m = m.clone();
            m.measurements.remove(&CLUSTER_ID_PCR);
            m.check_pcrs(&doc.pcrs)
        } else {
            m.check_pcrs(&doc.pcrs)
        };
        let name = format!(
            "manifest {} (variant {}, phase {})",
            m.image.version,
            m.image.variant,
            m.phase.as_deref().unwrap_or("-")
        );
        if verdict.ok() {
            if m.expired_at(now) {
                refusals.push(format!(
                    "{name} matches, but is valid until {}",
                    m.not_after.as_deref().unwrap_or("-")
                ));
                continue;
            }
            return Ok(PcrMatch {
                image: m.image.clone(),
                phase: m.phase.clone(),
                matched: verdict.matched,
                warnings: verdict.warnings,
                pcr15,
            });
        }
        let list = crate::verify::pcr_mismatches(&verdict.errors);
        refusals.push(format!("{name}: {}", list.join("; ")));
    }
    Err(NitroError::Pcrs(refusals.join(" | ")))
}

/// Golden manifests as published (signature checked with `key`, parsed), keeping those of
/// `bank`: the operator's sha384 manifests for the document.
pub fn manifests_of_bank(
    signed: &[SignedManifest],
    key: &PublicKey,
    bank: HashAlg,
) -> Result<Vec<Manifest>, NitroError> {
    let mut out = Vec::new();
    for s in signed {
        verify_blob(key, &s.json, &s.signature_b64)
            .map_err(|e| NitroError::Manifest(format!("signature: {e}")))?;
        let m = Manifest::from_json(&s.json).map_err(|e| NitroError::Manifest(e.to_string()))?;
        if m.alg == bank {
            out.push(m);
        }
    }
    Ok(out)
}

/// What [`check_document`] accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NitroAccepted {
    pub document: NitroDocument,
    pub pcrs: PcrMatch,
}

/// The TPM half on `aws-sev-snp`: [`verify_document`], [`check_binding`] (nonce, TLS key,
/// `ak_spki`) and [`check_pcrs`] against `manifests` (the sha384 ones take part), at `now`.
pub fn check_document(
    bytes: &[u8],
    roots: &[&[u8]],
    now: u64,
    expect: &Expectation<'_>,
    ak_spki: &[u8],
    manifests: &[Manifest],
) -> Result<NitroAccepted, NitroError> {
    let document = verify_document(bytes, roots, now)?;
    check_binding(&document, expect, ak_spki)?;
    let pcrs = check_pcrs(&document, manifests, expect.join, now)?;
    Ok(NitroAccepted { document, pcrs })
}

// ---------------------------------------------------------------------------------------------
// Fetching a document through the NitroTPM (nacre-init).
// ---------------------------------------------------------------------------------------------

/// The CBOR NSM request `{"Attestation": {"user_data", "nonce", "public_key"}}` (serde's
/// externally tagged form of aws-nitro-enclaves-nsm-api's `Request::Attestation`, byte strings).
pub fn nsm_request(
    user_data: Option<&[u8]>,
    nonce: Option<&[u8]>,
    public_key: Option<&[u8]>,
) -> Vec<u8> {
    let field = |v: Option<&[u8]>| v.map_or(Value::Null, |b| Value::Bytes(b.to_vec()));
    cbor::to_vec(&Value::Map(vec![(
        Value::Text("Attestation".into()),
        Value::Map(vec![
            (Value::Text("user_data".into()), field(user_data)),
            (Value::Text("nonce".into()), field(nonce)),
            (Value::Text("public_key".into()), field(public_key)),
        ]),
    )]))
}

/// The document from a CBOR NSM response (trailing bytes of the NV buffer ignored).
pub fn nsm_response(buf: &[u8]) -> Result<Vec<u8>, NitroError> {
    let (v, _) =
        cbor::decode_prefix(buf).map_err(|e| NitroError::Device(format!("NSM response: {e}")))?;
    let Value::Map(m) = v else {
        return Err(NitroError::Device(format!(
            "NSM response is {}, not a map",
            describe(&v)
        )));
    };
    match m.as_slice() {
        [(Value::Text(k), Value::Map(inner))] if k == "Attestation" => {
            for (k, v) in inner {
                if let (Value::Text(k), Value::Bytes(d)) = (k, v) {
                    if k == "document" {
                        return Ok(d.clone());
                    }
                }
            }
            Err(NitroError::Device(
                "NSM Attestation response without a document".into(),
            ))
        }
        [(Value::Text(k), e)] if k == "Error" => Err(NitroError::Device(format!(
            "the NSM answered an error: {e:?}"
        ))),
        _ => Err(NitroError::Device(format!(
            "unexpected NSM response {:?}",
            m.iter().map(|(k, _)| k).collect::<Vec<_>>()
        ))),
    }
}

/// The owner NV index the request and response pass through (undefined afterwards).
pub const NSM_NV_INDEX: u32 = 0x0180_4E53;
/// Its size: AWS's tool uses 8 KiB (a document is ~5 KiB).
const NSM_NV_SIZE: usize = 8192;

/// The raw TPM2_CC_AWS_NSM_REQUEST command: handles (NV auth, NV index) = the message buffer,
/// one password session with the index's empty auth value.
pub fn nsm_command(nv_index: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(31);
    c.extend_from_slice(&0x8002u16.to_be_bytes()); // TPM_ST_SESSIONS
    c.extend_from_slice(&0u32.to_be_bytes()); // size, set below
    c.extend_from_slice(&TPM2_CC_AWS_NSM_REQUEST.to_be_bytes());
    c.extend_from_slice(&nv_index.to_be_bytes()); // @authHandle
    c.extend_from_slice(&nv_index.to_be_bytes()); // nvIndex
    c.extend_from_slice(&9u32.to_be_bytes()); // authorizationSize
    c.extend_from_slice(&0x4000_0009u32.to_be_bytes()); // TPM_RS_PW
    c.extend_from_slice(&0u16.to_be_bytes()); // nonceCaller (empty)
    c.push(0); // sessionAttributes
    c.extend_from_slice(&0u16.to_be_bytes()); // hmac = the (empty) password
    let len = c.len() as u32;
    c[2..6].copy_from_slice(&len.to_be_bytes());
    c
}

/// Fetches a NitroTPM attestation document signing `user_data`, `nonce`, `public_key`
/// ([`binding_fields`]): NV index through the TSS (`tcti`, e.g. `device:/dev/tpmrm0`), the
/// vendor command written to the raw character device `raw_device` (`/dev/tpmrm0`). Works only
/// on an EC2 instance with NitroTPM; elsewhere the vendor command fails and the error says so.
/// Not run against AWS by this project.
pub fn fetch_document(
    tcti: &str,
    raw_device: &std::path::Path,
    user_data: &[u8],
    nonce: &[u8],
    public_key: &[u8],
) -> Result<Vec<u8>, NitroError> {
    use std::str::FromStr;
    let conf = tss_esapi::tcti_ldr::TctiNameConf::from_str(tcti)
        .map_err(|e| NitroError::Device(format!("TCTI {tcti}: {e}")))?;
    let mut ctx = tss_esapi::Context::new(conf)
        .map_err(|e| NitroError::Device(format!("opening the TPM: {e}")))?;
    // AWS's 8 KiB, or less where the TPM's largest NV index is smaller (not a NitroTPM).
    let size = ctx
        .get_tpm_property(tss_esapi::constants::PropertyTag::NvIndexMax)
        .ok()
        .flatten()
        .map_or(NSM_NV_SIZE, |m| NSM_NV_SIZE.min(m as usize));
    fetch_document_with(&mut ctx, size, user_data, nonce, public_key, &mut |_| {
        raw_command(raw_device, &nsm_command(NSM_NV_INDEX))
    })
}

/// [`fetch_document`] with an open TSS context, a message buffer of `nv_size` bytes, and
/// `nsm` standing for the vendor command (called once the request is in NV index
/// [`NSM_NV_INDEX`]; it must leave the response there). The index is undefined afterwards,
/// whatever happened.
pub fn fetch_document_with(
    ctx: &mut tss_esapi::Context,
    nv_size: usize,
    user_data: &[u8],
    nonce: &[u8],
    public_key: &[u8],
    nsm: &mut dyn FnMut(&mut tss_esapi::Context) -> Result<(), NitroError>,
) -> Result<Vec<u8>, NitroError> {
    use tss_esapi::attributes::NvIndexAttributesBuilder;
    use tss_esapi::constants::PropertyTag;
    use tss_esapi::handles::{NvIndexHandle, NvIndexTpmHandle};
    use tss_esapi::interface_types::algorithm::HashingAlgorithm;
    use tss_esapi::interface_types::resource_handles::{NvAuth, Provision};
    use tss_esapi::structures::{MaxNvBuffer, NvPublicBuilder};

    let dev = |what: &str, e: &dyn std::fmt::Display| NitroError::Device(format!("{what}: {e}"));
    let request = nsm_request(Some(user_data), Some(nonce), Some(public_key));
    if request.len() > nv_size {
        return Err(NitroError::Device(format!(
            "the request is {} bytes, more than the {nv_size}-byte buffer",
            request.len()
        )));
    }
    let chunk = ctx
        .get_tpm_property(PropertyTag::NvBufferMax)
        .map_err(|e| dev("TPM2_PT_NV_BUFFER_MAX", &e))?
        .unwrap_or(512)
        .clamp(64, 1024) as usize;
    let tpm_index = NvIndexTpmHandle::new(NSM_NV_INDEX).map_err(|e| dev("NV index", &e))?;
    let public = NvPublicBuilder::new()
        .with_nv_index(tpm_index)
        .with_index_name_algorithm(HashingAlgorithm::Sha256)
        .with_index_attributes(
            NvIndexAttributesBuilder::new()
                .with_auth_read(true)
                .with_auth_write(true)
                .build()
                .map_err(|e| dev("NV attributes", &e))?,
        )
        .with_data_area_size(nv_size)
        .build()
        .map_err(|e| dev("NV public area", &e))?;

    // A leftover of an interrupted attempt of ours is removed first.
    if let Ok(old) = ctx.execute_without_session(|c| c.tr_from_tpm_public(tpm_index.into())) {
        let _ = ctx.execute_with_nullauth_session(|c| {
            c.nv_undefine_space(Provision::Owner, NvIndexHandle::from(old))
        });
    }
    let index = ctx
        .execute_with_nullauth_session(|c| c.nv_define_space(Provision::Owner, None, public))
        .map_err(|e| dev(&format!("defining NV index {NSM_NV_INDEX:#010x}"), &e))?;

    let mut run = |ctx: &mut tss_esapi::Context| -> Result<Vec<u8>, NitroError> {
        for (i, part) in request.chunks(chunk).enumerate() {
            let data = MaxNvBuffer::try_from(part.to_vec()).map_err(|e| dev("NV buffer", &e))?;
            ctx.execute_with_nullauth_session(|c| {
                c.nv_write(NvAuth::NvIndex(index), index, data, (i * chunk) as u16)
            })
            .map_err(|e| dev("writing the NSM request", &e))?;
        }
        nsm(ctx)?;
        let mut buf = Vec::with_capacity(nv_size);
        while buf.len() < nv_size {
            let n = chunk.min(nv_size - buf.len());
            let part = ctx
                .execute_with_nullauth_session(|c| {
                    c.nv_read(NvAuth::NvIndex(index), index, n as u16, buf.len() as u16)
                })
                .map_err(|e| dev("reading the NSM response", &e))?;
            buf.extend_from_slice(part.value());
            // Stop as soon as one complete CBOR item is there.
            if cbor::decode_prefix(&buf).is_ok() {
                break;
            }
        }
        nsm_response(&buf)
    };
    let result = run(ctx);
    let _ = ctx.execute_with_nullauth_session(|c| c.nv_undefine_space(Provision::Owner, index));
    result
}

/// Sends one command to a TPM character device and checks its response code.
fn raw_command(device: &std::path::Path, cmd: &[u8]) -> Result<(), NitroError> {
    use std::io::{Read, Write};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
        .map_err(|e| NitroError::Device(format!("{}: {e}", device.display())))?;
    f.write_all(cmd)
        .map_err(|e| NitroError::Device(format!("sending the NSM request: {e}")))?;
    let mut resp = [0u8; 4096];
    let n = f
        .read(&mut resp)
        .map_err(|e| NitroError::Device(format!("reading the NSM request's answer: {e}")))?;
    if n < 10 {
        return Err(NitroError::Device(format!(
            "the TPM answered {n} bytes to the NSM request"
        )));
    }
    let rc = u32::from_be_bytes([resp[6], resp[7], resp[8], resp[9]]);
    if rc != 0 {
        return Err(NitroError::Device(format!(
            "the TPM refused the AWS NSM vendor command (response code {rc:#x}): not a NitroTPM?"
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The hook of the SEV-SNP verifier (aws-sev-snp).
// ---------------------------------------------------------------------------------------------

/// What the SEV-SNP verifier needs to check NitroTPM documents: the pinned roots and the
/// operator's signed sha384 manifests ([`crate::verify::SevSnpVerifier::with_nitro`]).
#[derive(Debug, Clone)]
pub struct NitroTrust {
    /// Root certificates (DER); [`AWS_NITRO_ROOT_G1`] in production.
    pub roots: Vec<Vec<u8>>,
    /// Golden manifests predicted with `--bank sha384` (others are ignored).
    pub manifests: Vec<SignedManifest>,
}

impl NitroTrust {
    /// AWS's root and these manifests.
    pub fn aws(manifests: Vec<SignedManifest>) -> Self {
        NitroTrust {
            roots: vec![AWS_NITRO_ROOT_G1.to_vec()],
            manifests,
        }
    }

    /// The TPM half of AWS evidence: the document in `ev.binding`, verified at `now`, bound
    /// to `expect` and the evidence's AK, its PCRs matched against the sha384 manifests of
    /// SEV-SNP variants signed with `key`. `Ok(None)`: the evidence carries no document.
    pub fn check_evidence(
        &self,
        ev: &crate::evidence::Evidence,
        expect: &Expectation<'_>,
        key: &PublicKey,
        now: u64,
    ) -> Result<Option<NitroAccepted>, NitroError> {
        let Some(crate::binding::AkBinding::NitroDocument { document }) = &ev.binding else {
            return Ok(None);
        };
        let manifests: Vec<Manifest> = manifests_of_bank(&self.manifests, key, HashAlg::Sha384)?
            .into_iter()
            .filter(|m| {
                nacre_measure::manifest::variant_platform(&m.image.variant)
                    == Some(nacre_measure::manifest::VariantPlatform::SevSnp)
            })
            .collect();
        let roots: Vec<&[u8]> = self.roots.iter().map(Vec::as_slice).collect();
        let accepted = check_document(document, &roots, now, expect, &ev.ak_public, &manifests)?;
        check_runtime_pcr15(&accepted.document, &ev.runtime_log)?;
        Ok(Some(accepted))
    }
}

/// PCR 15 holds nacre-init's runtime events only (cluster configuration, cluster id): the
/// sha384 replay of the runtime log's PCR 15 records, each digest recomputed from its content,
/// must be the document's PCR 15. The quote's sha256 PCR 15 is the replay of the same records
/// (the quote's PCR digest check), so a membership decision taken on it rests on records the
/// document proves, not on the guest's AK alone.
pub fn check_runtime_pcr15(
    doc: &NitroDocument,
    runtime_log: &[nacre_eventlog::CelRecord],
) -> Result<(), NitroError> {
    let Some(signed) = doc.pcrs.get(&CLUSTER_ID_PCR) else {
        return Err(NitroError::Pcrs("the document has no PCR 15".into()));
    };
    let mut v = vec![0u8; doc.digest.digest_size()];
    for rec in runtime_log.iter().filter(|r| r.pcr == CLUSTER_ID_PCR) {
        let ev = nacre_eventlog::RuntimeEvent::from_cel(rec)
            .map_err(|e| NitroError::Pcrs(format!("runtime record {}: {e}", rec.recnum)))?;
        let d = ev
            .digest(doc.digest)
            .map_err(|e| NitroError::Pcrs(format!("runtime record {}: {e}", rec.recnum)))?;
        v = doc
            .digest
            .extend(&v, &d)
            .map_err(|e| NitroError::Pcrs(format!("replaying PCR 15: {e}")))?;
    }
    if v != *signed {
        return Err(NitroError::Pcrs(format!(
            "the runtime log's PCR 15 records replay to {} in {}, the document says {}: the log is not the one this node extended",
            hex::encode(&v),
            doc.digest,
            hex::encode(signed)
        )));
    }
    Ok(())
}

/// `Err(why)` unless the sha256 manifest the quote matched (`image`, `phase`) and the sha384
/// manifest the document matched describe one release: same version, variant, UKI and phase.
pub fn same_release(sha256: (&ImageRef, Option<&str>), doc: &PcrMatch) -> Result<(), String> {
    let (a, pa) = sha256;
    let b = &doc.image;
    if a.version == b.version
        && a.variant == b.variant
        && a.uki_sha256.eq_ignore_ascii_case(&b.uki_sha256)
        && pa == doc.phase.as_deref()
    {
        Ok(())
    } else {
        Err(format!(
            "the quote matched manifest {} ({}, uki {}, phase {}) but the NitroTPM document matched {} ({}, uki {}, phase {}): one release must explain both",
            a.version,
            a.variant,
            a.uki_sha256,
            pa.unwrap_or("-"),
            b.version,
            b.variant,
            b.uki_sha256,
            doc.phase.as_deref().unwrap_or("-")
        ))
    }
}

/// Whether the TPM behind `tcti` is a NitroTPM: its TPM_PT_VENDOR_STRING_1/2 read "Nitr",
/// "oTPM" (as on EC2, per lockboot/vaportpm's `is_nitro_tpm`).
pub fn is_nitro_tpm(tcti: &str) -> Result<bool, NitroError> {
    use std::str::FromStr;
    use tss_esapi::constants::PropertyTag;
    let conf = tss_esapi::tcti_ldr::TctiNameConf::from_str(tcti)
        .map_err(|e| NitroError::Device(format!("TCTI {tcti}: {e}")))?;
    let mut ctx = tss_esapi::Context::new(conf)
        .map_err(|e| NitroError::Device(format!("opening the TPM: {e}")))?;
    let mut vendor = Vec::new();
    for tag in [PropertyTag::VendorString1, PropertyTag::VendorString2] {
        let v = ctx
            .get_tpm_property(tag)
            .map_err(|e| NitroError::Device(format!("TPM vendor string: {e}")))?
            .unwrap_or(0);
        vendor.extend_from_slice(&v.to_be_bytes());
    }
    Ok(vendor == b"NitroTPM")
}

/// nacre-init on SEV-SNP: on a NitroTPM, the attestation document for this challenge
/// ([`binding_fields`]: nonce, AK, TLS key) as the evidence's binding; `None` on any other
/// TPM. A NitroTPM that gives no document is an error (the service would refuse the node).
pub fn node_binding(
    tcti: &str,
    raw_device: &std::path::Path,
    nonce: &[u8],
    ak_spki: &[u8],
    tls_spki: &[u8],
) -> Result<Option<crate::binding::AkBinding>, NitroError> {
    if !is_nitro_tpm(tcti)? {
        return Ok(None);
    }
    let (user_data, nonce, public_key) = binding_fields(nonce, ak_spki, tls_spki);
    let document = fetch_document(tcti, raw_device, &user_data, &nonce, &public_key)?;
    Ok(Some(crate::binding::AkBinding::NitroDocument { document }))
}
