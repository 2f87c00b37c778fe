//! The LUKS2 on-disk header, parsed and strictly validated against nacre's profile. Pure: it
//! works on bytes (the header area copied off the disk) so every rule is tested on the host
//! against headers made by `cryptsetup luksFormat` and edited copies of them.
//!
//! Layout (cryptsetup's `docs/on-disk-format-luks2.pdf`): the header area starts with two copies
//! of the header, each a 4096-byte binary header followed by the JSON area (together `hdr_size`
//! bytes; the secondary copy at offset `hdr_size`), then the keyslot areas, then the data segment.
//! Each binary header carries a SHA-256 over its whole copy (binary header + JSON area) with the
//! checksum field zeroed.
//!
//! nacre accepts exactly what it formats: both copies present, valid and identical (same seqid,
//! label, UUID and JSON), 16 KiB metadata, one `crypt` segment with aes-xts-plain64 and 4096-byte
//! sectors (and `hmac(sha256)` integrity only when the configuration asks for it), `luks2`
//! keyslots with PBKDF2-SHA256 (the keys are random: no memory-hard KDF is needed), one PBKDF2
//! digest covering every keyslot and the segment, no flags, no requirements, and no tokens but
//! nacre's own type when the key source stores one. Every refusal names the field and the value.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use std::fmt;

pub const MAGIC_PRIMARY: &[u8; 6] = b"LUKS\xba\xbe";
pub const MAGIC_SECONDARY: &[u8; 6] = b"SKUL\xba\xbe";
/// Size of one header copy (binary header + JSON area): cryptsetup's default, the only one nacre
/// formats and accepts.
pub const HDR_SIZE: u64 = 16384;
/// Size of the binary part of a header copy.
pub const BIN_SIZE: usize = 4096;
/// The LUKS2 label nacre writes as the very last step of the first format: a header without it
/// belongs to a format that never completed.
pub const INITIALIZED_LABEL: &str = "nacre-state";
/// The data segment must start within this many bytes (bounds the header copy kept in /run).
pub const MAX_DATA_OFFSET: u64 = 64 << 20;
/// The only cipher nacre formats with (segment and keyslot areas).
pub const CIPHER: &str = "aes-xts-plain64";
/// The XTS key: 512 bits.
pub const CIPHER_KEY_SIZE: u64 = 64;
pub const SECTOR_SIZE: u64 = 4096;
/// The integrity mode nacre may add (dm-integrity with HMAC-SHA256 tags, 256-bit key).
pub const INTEGRITY: &str = "hmac(sha256)";
pub const INTEGRITY_KEY_SIZE: u64 = 32;
/// Minimum PBKDF2 iterations (keys are 64 random bytes: iterations add nothing but time).
pub const MIN_ITERATIONS: u64 = 1000;
/// The AF splitter LUKS2 uses.
pub const AF_STRIPES: u64 = 4000;
/// At most this many keyslots (one for the disk key, room for a rotation).
pub const MAX_KEYSLOTS: usize = 4;

/// What nacre expects of a state disk's header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// `hmac(sha256)` integrity on the data segment.
    pub integrity: bool,
    /// The one token type the key source stores in the header (`None`: no tokens at all).
    pub token_type: Option<String>,
}

impl Profile {
    /// Size of the volume key: the XTS key, plus the HMAC key with integrity.
    pub fn volume_key_size(&self) -> u64 {
        CIPHER_KEY_SIZE
            + if self.integrity {
                INTEGRITY_KEY_SIZE
            } else {
                0
            }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    #[error("LUKS2 header area: {0} bytes, too short")]
    Short(usize),
    #[error("LUKS2 {copy} header: {field} = {value}, expected {expected}")]
    Binary {
        copy: &'static str,
        field: &'static str,
        value: String,
        expected: String,
    },
    #[error("LUKS2 {copy} header: checksum {found} does not match the header ({computed})")]
    Checksum {
        copy: &'static str,
        found: String,
        computed: String,
    },
    #[error("LUKS2 {copy} header: JSON area: {reason}")]
    Json { copy: &'static str, reason: String },
    #[error("LUKS2 header copies disagree: {field} is {primary} in the primary, {secondary} in the secondary")]
    Disagree {
        field: &'static str,
        primary: String,
        secondary: String,
    },
    #[error("LUKS2 metadata: {path} = {value}, expected {expected}")]
    Field {
        path: String,
        value: String,
        expected: String,
    },
    #[error("LUKS2 metadata: {path}: {reason}")]
    Invalid { path: String, reason: String },
}

fn field(
    path: impl Into<String>,
    value: impl fmt::Display,
    expected: impl Into<String>,
) -> HeaderError {
    HeaderError::Field {
        path: path.into(),
        value: value.to_string(),
        expected: expected.into(),
    }
}

fn invalid(path: impl Into<String>, reason: impl Into<String>) -> HeaderError {
    HeaderError::Invalid {
        path: path.into(),
        reason: reason.into(),
    }
}

/// One header copy, parsed and checked on its own (magic, version, size, offset, checksum,
/// padding, JSON text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderCopy {
    pub seqid: u64,
    pub label: String,
    pub subsystem: String,
    pub uuid: String,
    pub hdr_offset: u64,
    /// The JSON text (up to its terminating NUL).
    pub json: String,
}

fn copy_name(primary: bool) -> &'static str {
    if primary {
        "primary"
    } else {
        "secondary"
    }
}

/// A NUL-terminated string field, zero-padded after the NUL.
fn c_string(copy: &'static str, name: &'static str, raw: &[u8]) -> Result<String, HeaderError> {
    let end = raw
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| HeaderError::Binary {
            copy,
            field: name,
            value: format!("{:?}", String::from_utf8_lossy(raw)),
            expected: "a NUL-terminated string".into(),
        })?;
    if raw[end..].iter().any(|&b| b != 0) {
        return Err(HeaderError::Binary {
            copy,
            field: name,
            value: "bytes after the terminating NUL".into(),
            expected: "zero padding".into(),
        });
    }
    String::from_utf8(raw[..end].to_vec()).map_err(|_| HeaderError::Binary {
        copy,
        field: name,
        value: hex::encode(&raw[..end]),
        expected: "UTF-8".into(),
    })
}

fn be64(b: &[u8]) -> u64 {
    b.iter()
        .take(8)
        .fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

/// The SHA-256 checksum of a header copy (its `HDR_SIZE` bytes with the checksum field zeroed).
pub fn copy_checksum(copy: &[u8]) -> [u8; 32] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&copy[..448]);
    ctx.update(&[0u8; 64]);
    ctx.update(&copy[512..]);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

impl HeaderCopy {
    /// Parse the copy that starts at `area[offset..]` (primary at 0, secondary at `HDR_SIZE`).
    pub fn parse(area: &[u8], primary: bool) -> Result<HeaderCopy, HeaderError> {
        let copy = copy_name(primary);
        let offset = if primary { 0 } else { HDR_SIZE as usize };
        let bin = |field, value: String, expected: String| HeaderError::Binary {
            copy,
            field,
            value,
            expected,
        };
        let raw = area
            .get(offset..offset + HDR_SIZE as usize)
            .ok_or(HeaderError::Short(area.len()))?;
        let magic = if primary {
            MAGIC_PRIMARY
        } else {
            MAGIC_SECONDARY
        };
        if &raw[..6] != magic {
            return Err(bin("magic", hex::encode(&raw[..6]), hex::encode(magic)));
        }
        let version = u16::from_be_bytes([raw[6], raw[7]]);
        if version != 2 {
            return Err(bin("version", version.to_string(), "2".into()));
        }
        let hdr_size = be64(&raw[8..16]);
        if hdr_size != HDR_SIZE {
            return Err(bin("hdr_size", hdr_size.to_string(), HDR_SIZE.to_string()));
        }
        let seqid = be64(&raw[16..24]);
        let label = c_string(copy, "label", &raw[24..72])?;
        let alg = c_string(copy, "checksum_alg", &raw[72..104])?;
        if alg != "sha256" {
            return Err(bin("checksum_alg", format!("{alg:?}"), "\"sha256\"".into()));
        }
        let uuid = c_string(copy, "uuid", &raw[168..208])?;
        let subsystem = c_string(copy, "subsystem", &raw[208..256])?;
        let hdr_offset = be64(&raw[256..264]);
        if hdr_offset != offset as u64 {
            return Err(bin(
                "hdr_offset",
                hdr_offset.to_string(),
                offset.to_string(),
            ));
        }
        if raw[264..448].iter().any(|&b| b != 0) {
            return Err(bin(
                "padding (bytes 264-447)",
                "non-zero".into(),
                "zero".into(),
            ));
        }
        // SHA-256 fills the first 32 bytes of the 64-byte checksum field.
        if raw[480..512].iter().any(|&b| b != 0) {
            return Err(bin("csum (bytes 32-63)", "non-zero".into(), "zero".into()));
        }
        if raw[512..BIN_SIZE].iter().any(|&b| b != 0) {
            return Err(bin(
                "padding (bytes 512-4095)",
                "non-zero".into(),
                "zero".into(),
            ));
        }
        let computed = copy_checksum(raw);
        if raw[448..480] != computed {
            return Err(HeaderError::Checksum {
                copy,
                found: hex::encode(&raw[448..480]),
                computed: hex::encode(computed),
            });
        }
        let json_area = &raw[BIN_SIZE..];
        let end = json_area
            .iter()
            .position(|&b| b == 0)
            .ok_or_else(|| HeaderError::Json {
                copy,
                reason: "no terminating NUL".into(),
            })?;
        if json_area[end..].iter().any(|&b| b != 0) {
            return Err(HeaderError::Json {
                copy,
                reason: format!("non-zero bytes after the JSON text (which ends at {end})"),
            });
        }
        let json = String::from_utf8(json_area[..end].to_vec()).map_err(|e| HeaderError::Json {
            copy,
            reason: format!("not UTF-8: {e}"),
        })?;
        Ok(HeaderCopy {
            seqid,
            label,
            subsystem,
            uuid,
            hdr_offset,
            json,
        })
    }
}

/// Both header copies, checked and agreeing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub seqid: u64,
    pub label: String,
    pub subsystem: String,
    pub uuid: String,
    pub json: String,
}

impl Header {
    /// Parse and cross-check both copies of the header area (at least `2 * HDR_SIZE` bytes).
    pub fn parse(area: &[u8]) -> Result<Header, HeaderError> {
        let p = HeaderCopy::parse(area, true)?;
        let s = HeaderCopy::parse(area, false)?;
        let agree = |field, a: &dyn fmt::Debug, b: &dyn fmt::Debug, same: bool| {
            if same {
                Ok(())
            } else {
                Err(HeaderError::Disagree {
                    field,
                    primary: format!("{a:?}"),
                    secondary: format!("{b:?}"),
                })
            }
        };
        agree("seqid", &p.seqid, &s.seqid, p.seqid == s.seqid)?;
        agree("label", &p.label, &s.label, p.label == s.label)?;
        agree("uuid", &p.uuid, &s.uuid, p.uuid == s.uuid)?;
        agree(
            "subsystem",
            &p.subsystem,
            &s.subsystem,
            p.subsystem == s.subsystem,
        )?;
        if p.json != s.json {
            let at = p
                .json
                .bytes()
                .zip(s.json.bytes())
                .position(|(a, b)| a != b)
                .unwrap_or(p.json.len().min(s.json.len()));
            return Err(HeaderError::Disagree {
                field: "JSON metadata",
                primary: format!("{:?}", excerpt(&p.json, at)),
                secondary: format!("{:?} (first difference at byte {at})", excerpt(&s.json, at)),
            });
        }
        Ok(Header {
            seqid: p.seqid,
            label: p.label,
            subsystem: p.subsystem,
            uuid: p.uuid,
            json: p.json,
        })
    }

    /// Check the JSON metadata against nacre's profile; `device_size` is the data device's size.
    pub fn validate(&self, profile: &Profile, device_size: u64) -> Result<Validated, HeaderError> {
        if self.label != INITIALIZED_LABEL {
            return Err(field(
                "label",
                format!("{:?}", self.label),
                format!("{INITIALIZED_LABEL:?}"),
            ));
        }
        if !self.subsystem.is_empty() {
            return Err(field("subsystem", format!("{:?}", self.subsystem), "\"\""));
        }
        check_uuid(&self.uuid)?;
        let root = parse_strict_json(&self.json).map_err(|e| HeaderError::Json {
            copy: "primary",
            reason: e,
        })?;
        validate_metadata(&root, profile, device_size, &self.uuid)
    }
}

fn excerpt(s: &str, at: usize) -> String {
    let start = at.saturating_sub(20);
    let end = (at + 20).min(s.len());
    String::from_utf8_lossy(&s.as_bytes()[start..end]).into_owned()
}

fn check_uuid(u: &str) -> Result<(), HeaderError> {
    let ok = u.len() == 36
        && u.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
        });
    if ok {
        Ok(())
    } else {
        Err(field(
            "uuid",
            format!("{u:?}"),
            "a lower-case RFC 4122 UUID",
        ))
    }
}

/// What a valid header tells the opener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validated {
    pub uuid: String,
    /// Byte offset of the data segment: the header area to copy is everything before it.
    pub data_offset: u64,
    /// Keyslot ids (numbers).
    pub keyslots: Vec<u32>,
    /// The one token of the profile's type, if any: (token id, its JSON object).
    pub token: Option<(u32, Map<String, Value>)>,
}

// ---- strict JSON ---------------------------------------------------------------------------

/// A JSON value parsed with duplicate object keys refused (cryptsetup's json-c and serde would
/// each silently keep one of them: a parser differential is a way to hide metadata).
struct Strict(Value);

impl<'de> serde::Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Strict;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("JSON")
            }
            fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
                Ok(Strict(Value::Bool(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
                Ok(Strict(Value::from(v)))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
                Ok(Strict(Value::from(v)))
            }
            fn visit_f64<E: de::Error>(self, _v: f64) -> Result<Strict, E> {
                Err(E::custom("floating-point numbers are not LUKS2 metadata"))
            }
            fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
                Ok(Strict(Value::String(v.to_string())))
            }
            fn visit_string<E>(self, v: String) -> Result<Strict, E> {
                Ok(Strict(Value::String(v)))
            }
            fn visit_unit<E>(self) -> Result<Strict, E> {
                Ok(Strict(Value::Null))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
                let mut v = Vec::new();
                while let Some(Strict(x)) = a.next_element()? {
                    v.push(x);
                }
                Ok(Strict(Value::Array(v)))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
                let mut m = Map::new();
                while let Some(k) = a.next_key::<String>()? {
                    let Strict(v) = a.next_value()?;
                    if m.insert(k.clone(), v).is_some() {
                        return Err(de::Error::custom(format!("duplicate key {k:?}")));
                    }
                }
                Ok(Strict(Value::Object(m)))
            }
        }
        d.deserialize_any(V)
    }
}

/// Parse JSON metadata text, refusing duplicate keys and trailing data.
pub fn parse_strict_json(text: &str) -> Result<Value, String> {
    serde_json::from_str::<Strict>(text)
        .map(|s| s.0)
        .map_err(|e| e.to_string())
}

// ---- the metadata walk -------------------------------------------------------------------

/// The object `top.<table>."0"`, which must be the table's only entry.
fn only_entry<'a>(
    top: &'a Map<String, Value>,
    table: &str,
    expected: &'static str,
) -> Result<&'a Map<String, Value>, HeaderError> {
    let entries = obj(get(top, "", table)?, table)?;
    match entries.get("0") {
        Some(v) if entries.len() == 1 => obj(v, &format!("{table}.0")),
        _ => Err(field(
            table,
            format!("ids {:?}", entries.keys().collect::<Vec<_>>()),
            expected,
        )),
    }
}

fn obj<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, HeaderError> {
    v.as_object()
        .ok_or_else(|| field(path, short(v), "an object"))
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 80 {
        format!("{}...", s.chars().take(77).collect::<String>())
    } else {
        s
    }
}

/// The object's keys are exactly `required` plus any of `optional`.
fn keys(
    m: &Map<String, Value>,
    path: &str,
    required: &[&str],
    optional: &[&str],
) -> Result<(), HeaderError> {
    for k in m.keys() {
        if !required.contains(&k.as_str()) && !optional.contains(&k.as_str()) {
            return Err(invalid(
                format!("{path}.{k}"),
                format!("unexpected key (value {})", short(&m[k])),
            ));
        }
    }
    for r in required {
        if !m.contains_key(*r) {
            return Err(invalid(format!("{path}.{r}"), "missing"));
        }
    }
    Ok(())
}

fn get<'a>(m: &'a Map<String, Value>, path: &str, key: &str) -> Result<&'a Value, HeaderError> {
    m.get(key)
        .ok_or_else(|| invalid(format!("{path}.{key}"), "missing"))
}

fn string<'a>(m: &'a Map<String, Value>, path: &str, key: &str) -> Result<&'a str, HeaderError> {
    let v = get(m, path, key)?;
    v.as_str()
        .ok_or_else(|| field(format!("{path}.{key}"), short(v), "a string"))
}

fn expect_str(
    m: &Map<String, Value>,
    path: &str,
    key: &str,
    want: &str,
) -> Result<(), HeaderError> {
    let s = string(m, path, key)?;
    if s == want {
        Ok(())
    } else {
        Err(field(
            format!("{path}.{key}"),
            format!("{s:?}"),
            format!("{want:?}"),
        ))
    }
}

fn number(m: &Map<String, Value>, path: &str, key: &str) -> Result<u64, HeaderError> {
    let v = get(m, path, key)?;
    v.as_u64()
        .ok_or_else(|| field(format!("{path}.{key}"), short(v), "a non-negative integer"))
}

/// LUKS2 writes 64-bit sizes and offsets as decimal strings.
fn u64_string(m: &Map<String, Value>, path: &str, key: &str) -> Result<u64, HeaderError> {
    let s = string(m, path, key)?;
    let ok = !s.is_empty()
        && s.len() <= 20
        && s.bytes().all(|b| b.is_ascii_digit())
        && (s == "0" || !s.starts_with('0'));
    ok.then(|| s.parse::<u64>().ok()).flatten().ok_or_else(|| {
        field(
            format!("{path}.{key}"),
            format!("{s:?}"),
            "a decimal 64-bit number",
        )
    })
}

fn b64_len(m: &Map<String, Value>, path: &str, key: &str, len: usize) -> Result<(), HeaderError> {
    use base64::Engine;
    let s = string(m, path, key)?;
    match base64::engine::general_purpose::STANDARD.decode(s) {
        Ok(b) if b.len() == len => Ok(()),
        Ok(b) => Err(field(
            format!("{path}.{key}"),
            format!("{} bytes", b.len()),
            format!("{len} bytes"),
        )),
        Err(e) => Err(field(
            format!("{path}.{key}"),
            format!("{s:?}"),
            format!("base64 ({e})"),
        )),
    }
}

/// Object ids ("0", "1", ...) as numbers below `max`.
fn id(path: &str, k: &str, max: u32) -> Result<u32, HeaderError> {
    let ok = !k.is_empty()
        && k.len() <= 3
        && k.bytes().all(|b| b.is_ascii_digit())
        && (k == "0" || !k.starts_with('0'));
    match ok.then(|| k.parse::<u32>().ok()).flatten() {
        Some(n) if n < max => Ok(n),
        _ => Err(invalid(
            format!("{path}.{k}"),
            format!("id must be a number below {max}"),
        )),
    }
}

fn id_list(m: &Map<String, Value>, path: &str, key: &str) -> Result<BTreeSet<u32>, HeaderError> {
    let v = get(m, path, key)?;
    let arr = v
        .as_array()
        .ok_or_else(|| field(format!("{path}.{key}"), short(v), "an array of ids"))?;
    let mut out = BTreeSet::new();
    for x in arr {
        let s = x
            .as_str()
            .ok_or_else(|| field(format!("{path}.{key}"), short(v), "an array of id strings"))?;
        if !out.insert(id(&format!("{path}.{key}"), s, 32)?) {
            return Err(invalid(
                format!("{path}.{key}"),
                format!("id {s} listed twice"),
            ));
        }
    }
    Ok(out)
}

fn validate_metadata(
    root: &Value,
    profile: &Profile,
    device_size: u64,
    uuid: &str,
) -> Result<Validated, HeaderError> {
    let _ = uuid;
    let top = obj(root, "(top level)")?;
    for k in top.keys() {
        if !["keyslots", "tokens", "segments", "digests", "config"].contains(&k.as_str()) {
            return Err(invalid(
                k.as_str(),
                format!("unexpected top-level key (value {})", short(&top[k])),
            ));
        }
    }

    // config
    let config = obj(get(top, "", "config")?, "config")?;
    keys(
        config,
        "config",
        &["json_size", "keyslots_size"],
        &["flags", "requirements"],
    )?;
    let json_size = u64_string(config, "config", "json_size")?;
    if json_size != HDR_SIZE - BIN_SIZE as u64 {
        return Err(field(
            "config.json_size",
            json_size,
            (HDR_SIZE - BIN_SIZE as u64).to_string(),
        ));
    }
    let keyslots_size = u64_string(config, "config", "keyslots_size")?;
    if keyslots_size % 4096 != 0 || keyslots_size > MAX_DATA_OFFSET {
        return Err(field(
            "config.keyslots_size",
            keyslots_size,
            format!("a multiple of 4096 up to {MAX_DATA_OFFSET}"),
        ));
    }
    if let Some(flags) = config.get("flags") {
        if flags.as_array().map(|a| !a.is_empty()).unwrap_or(true) {
            return Err(field("config.flags", short(flags), "no flags"));
        }
    }
    if let Some(req) = config.get("requirements") {
        return Err(field("config.requirements", short(req), "no requirements"));
    }
    let keyslots_end = 2 * HDR_SIZE + keyslots_size;

    // segments: exactly one, "0", the crypt segment.
    let seg = only_entry(top, "segments", "exactly one segment, \"0\"")?;
    let p = "segments.0";
    let seg_keys: &[&str] = if profile.integrity {
        &[
            "type",
            "offset",
            "size",
            "iv_tweak",
            "encryption",
            "sector_size",
            "integrity",
        ]
    } else {
        &[
            "type",
            "offset",
            "size",
            "iv_tweak",
            "encryption",
            "sector_size",
        ]
    };
    // The type first: a segment of another type is named as such, not by its odd keys.
    expect_str(seg, p, "type", "crypt")?;
    if !profile.integrity {
        if let Some(i) = seg.get("integrity") {
            return Err(field(
                "segments.0.integrity",
                short(i),
                "none (the configuration does not ask for integrity)",
            ));
        }
    }
    keys(seg, p, seg_keys, &[])?;
    expect_str(seg, p, "encryption", CIPHER)?;
    let sector = number(seg, p, "sector_size")?;
    if sector != SECTOR_SIZE {
        return Err(field(
            "segments.0.sector_size",
            sector,
            SECTOR_SIZE.to_string(),
        ));
    }
    expect_str(seg, p, "size", "dynamic")?;
    expect_str(seg, p, "iv_tweak", "0")?;
    let data_offset = u64_string(seg, p, "offset")?;
    if data_offset % 4096 != 0 || data_offset < keyslots_end || data_offset > MAX_DATA_OFFSET {
        return Err(field(
            "segments.0.offset",
            data_offset,
            format!("a multiple of 4096 from {keyslots_end} (end of the keyslot area) to {MAX_DATA_OFFSET}"),
        ));
    }
    if data_offset
        .checked_add(1 << 20)
        .map(|e| e > device_size)
        .unwrap_or(true)
    {
        return Err(field(
            "segments.0.offset",
            data_offset,
            format!("at least 1 MiB before the end of the {device_size}-byte device"),
        ));
    }
    if profile.integrity {
        let i = obj(get(seg, p, "integrity")?, "segments.0.integrity")?;
        keys(
            i,
            "segments.0.integrity",
            &["type", "journal_encryption", "journal_integrity"],
            &[],
        )?;
        expect_str(i, "segments.0.integrity", "type", INTEGRITY)?;
        expect_str(i, "segments.0.integrity", "journal_encryption", "none")?;
        expect_str(i, "segments.0.integrity", "journal_integrity", "none")?;
    }

    // keyslots
    let keyslots = obj(get(top, "", "keyslots")?, "keyslots")?;
    if keyslots.is_empty() || keyslots.len() > MAX_KEYSLOTS {
        return Err(field(
            "keyslots",
            format!("{} keyslots", keyslots.len()),
            format!("1 to {MAX_KEYSLOTS}"),
        ));
    }
    let vk = profile.volume_key_size();
    let mut slot_ids = BTreeSet::new();
    let mut areas: Vec<(u64, u64, String)> = Vec::new();
    for (k, v) in keyslots {
        let p = format!("keyslots.{k}");
        slot_ids.insert(id("keyslots", k, 32)?);
        let ks = obj(v, &p)?;
        expect_str(ks, &p, "type", "luks2")?;
        // The KDF before the other keys, so an argon2 keyslot is named as such.
        let kdf = obj(get(ks, &p, "kdf")?, &format!("{p}.kdf"))?;
        let pk = format!("{p}.kdf");
        expect_str(kdf, &pk, "type", "pbkdf2")?;
        keys(kdf, &pk, &["type", "hash", "iterations", "salt"], &[])?;
        expect_str(kdf, &pk, "hash", "sha256")?;
        let it = number(kdf, &pk, "iterations")?;
        if it < MIN_ITERATIONS {
            return Err(field(
                format!("{pk}.iterations"),
                it,
                format!("at least {MIN_ITERATIONS}"),
            ));
        }
        b64_len(kdf, &pk, "salt", 32)?;
        keys(ks, &p, &["type", "key_size", "af", "area", "kdf"], &[])?;
        let key_size = number(ks, &p, "key_size")?;
        if key_size != vk {
            return Err(field(format!("{p}.key_size"), key_size, vk.to_string()));
        }
        let af = obj(get(ks, &p, "af")?, &format!("{p}.af"))?;
        let pa = format!("{p}.af");
        keys(af, &pa, &["type", "stripes", "hash"], &[])?;
        expect_str(af, &pa, "type", "luks1")?;
        let stripes = number(af, &pa, "stripes")?;
        if stripes != AF_STRIPES {
            return Err(field(
                format!("{pa}.stripes"),
                stripes,
                AF_STRIPES.to_string(),
            ));
        }
        expect_str(af, &pa, "hash", "sha256")?;
        let area = obj(get(ks, &p, "area")?, &format!("{p}.area"))?;
        let pr = format!("{p}.area");
        keys(
            area,
            &pr,
            &["type", "offset", "size", "encryption", "key_size"],
            &[],
        )?;
        expect_str(area, &pr, "type", "raw")?;
        expect_str(area, &pr, "encryption", CIPHER)?;
        let aks = number(area, &pr, "key_size")?;
        if aks != CIPHER_KEY_SIZE {
            return Err(field(
                format!("{pr}.key_size"),
                aks,
                CIPHER_KEY_SIZE.to_string(),
            ));
        }
        let off = u64_string(area, &pr, "offset")?;
        let size = u64_string(area, &pr, "size")?;
        let need = (vk * AF_STRIPES).div_ceil(4096) * 4096;
        if size < need || size % 4096 != 0 {
            return Err(field(
                format!("{pr}.size"),
                size,
                format!("a multiple of 4096, at least {need}"),
            ));
        }
        if off % 4096 != 0
            || off < 2 * HDR_SIZE
            || off
                .checked_add(size)
                .map(|e| e > keyslots_end)
                .unwrap_or(true)
        {
            return Err(field(
                format!("{pr}.offset"),
                off,
                format!(
                    "inside the keyslot area [{}, {keyslots_end}) with its {size} bytes",
                    2 * HDR_SIZE
                ),
            ));
        }
        for (o, s, other) in &areas {
            if off < o + s && *o < off + size {
                return Err(invalid(pr.clone(), format!("overlaps the area of {other}")));
            }
        }
        areas.push((off, size, p.clone()));
    }

    // digests: one PBKDF2 digest of the volume key, for every keyslot and the segment.
    let d = only_entry(top, "digests", "exactly one digest, \"0\"")?;
    let pd = "digests.0";
    expect_str(d, pd, "type", "pbkdf2")?;
    keys(
        d,
        pd,
        &[
            "type",
            "keyslots",
            "segments",
            "hash",
            "iterations",
            "salt",
            "digest",
        ],
        &[],
    )?;
    expect_str(d, pd, "hash", "sha256")?;
    let it = number(d, pd, "iterations")?;
    if it < MIN_ITERATIONS {
        return Err(field(
            "digests.0.iterations",
            it,
            format!("at least {MIN_ITERATIONS}"),
        ));
    }
    b64_len(d, pd, "salt", 32)?;
    b64_len(d, pd, "digest", 32)?;
    let dk = id_list(d, pd, "keyslots")?;
    if dk != slot_ids {
        return Err(field(
            "digests.0.keyslots",
            format!("{dk:?}"),
            format!("every keyslot, {slot_ids:?}"),
        ));
    }
    let ds = id_list(d, pd, "segments")?;
    if ds.len() != 1 || !ds.contains(&0) {
        return Err(field("digests.0.segments", format!("{ds:?}"), "[0]"));
    }

    // tokens: none, or the key source's own type only (at most one).
    let tokens = obj(get(top, "", "tokens")?, "tokens")?;
    let mut token = None;
    for (k, v) in tokens {
        let p = format!("tokens.{k}");
        let n = id("tokens", k, 32)?;
        let t = obj(v, &p)?;
        let ty = string(t, &p, "type")?;
        match &profile.token_type {
            Some(want) if ty == want => {}
            Some(want) => {
                return Err(field(
                    format!("{p}.type"),
                    format!("{ty:?}"),
                    format!("{want:?} (nacre's only token type)"),
                ))
            }
            None => {
                return Err(field(
                    format!("{p}.type"),
                    format!("{ty:?}"),
                    "no tokens (the key source stores none)",
                ))
            }
        }
        if token.is_some() {
            return Err(invalid(p, format!("a second {ty:?} token")));
        }
        let tk = id_list(t, &p, "keyslots")?;
        if tk.is_empty() || !tk.is_subset(&slot_ids) {
            return Err(field(
                format!("{p}.keyslots"),
                format!("{tk:?}"),
                format!("existing keyslots ({slot_ids:?})"),
            ));
        }
        token = Some((n, t.clone()));
    }
    if let (Some(want), None) = (&profile.token_type, &token) {
        return Err(invalid(
            "tokens",
            format!("no {want:?} token (the key source needs it)"),
        ));
    }

    Ok(Validated {
        uuid: uuid.to_string(),
        data_offset,
        keyslots: slot_ids.into_iter().collect(),
        token,
    })
}

// ---- was the first format completed? ------------------------------------------------------

/// What the start of a disk says about nacre's first format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskState {
    /// No header copy carries the initialized label: the disk was never (completely) formatted
    /// and holds no data. Format it.
    Uninitialized(&'static str),
    /// A copy carries the label: the disk is (or claims to be) nacre's, so it must validate
    /// strictly and is never written otherwise.
    Initialized,
}

/// Classify the start of a disk (at least `2 * HDR_SIZE` bytes; a shorter or blank device is
/// uninitialized). The label is looked for in any copy with the right magic, whatever its
/// checksum: a damaged initialized disk is refused, never reformatted. One exception: the last
/// step of the first format (writing the label: primary copy, then secondary) interrupted between
/// the two copies leaves a labeled primary whose secondary is the same header one seqid earlier
/// without the label. The file system had not been mounted yet, so that disk holds no data and is
/// formatted again.
pub fn classify(area: &[u8]) -> DiskState {
    let label_of = |offset: usize, magic: &[u8; 6]| -> Option<String> {
        let raw = area.get(offset..offset + 72)?;
        if &raw[..6] != magic {
            return None;
        }
        let l = &raw[24..72];
        let end = l.iter().position(|&b| b == 0).unwrap_or(l.len());
        Some(String::from_utf8_lossy(&l[..end]).into_owned())
    };
    let p = label_of(0, MAGIC_PRIMARY);
    let s = label_of(HDR_SIZE as usize, MAGIC_SECONDARY);
    let init = |l: &Option<String>| l.as_deref() == Some(INITIALIZED_LABEL);
    if !init(&p) && !init(&s) {
        return DiskState::Uninitialized(match (&p, &s) {
            (None, None) => "no LUKS2 header",
            _ => "LUKS2 header without the initialized label: the first format did not complete",
        });
    }
    if init(&p) && !init(&s) {
        if let (Ok(pc), Ok(sc)) = (
            HeaderCopy::parse(area, true),
            HeaderCopy::parse(area, false),
        ) {
            if sc.label.is_empty()
                && sc.seqid.checked_add(1) == Some(pc.seqid)
                && sc.json == pc.json
                && sc.uuid == pc.uuid
                && sc.subsystem == pc.subsystem
            {
                return DiskState::Uninitialized(
                    "the initialized label reached only the primary header: the first format was cut before it completed",
                );
            }
        }
    }
    DiskState::Initialized
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strict_json_refuses_duplicates_and_floats() {
        assert!(parse_strict_json(r#"{"a":1,"b":{"c":"d"}}"#).is_ok());
        let e = parse_strict_json(r#"{"a":1,"a":2}"#).unwrap_err();
        assert!(e.contains("duplicate key \"a\""), "{e}");
        assert!(parse_strict_json(r#"{"a":1.5}"#).is_err());
        assert!(parse_strict_json(r#"{"a":1} x"#).is_err());
    }

    #[test]
    fn blank_disks_are_uninitialized() {
        assert!(matches!(classify(&[]), DiskState::Uninitialized(_)));
        assert!(matches!(
            classify(&vec![0u8; 40000]),
            DiskState::Uninitialized(_)
        ));
    }

    #[test]
    fn uuids() {
        assert!(check_uuid("3f12551b-d978-47d1-a7b5-41cd387d027e").is_ok());
        assert!(check_uuid("3F12551B-d978-47d1-a7b5-41cd387d027e").is_err());
        assert!(check_uuid("3f12551b-d978-47d1-a7b5-41cd387d027").is_err());
        assert!(check_uuid("../../etc/passwd").is_err());
    }
}
