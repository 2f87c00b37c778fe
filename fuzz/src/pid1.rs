//! The entry functions of the fuzz targets for what PID 1 (nacre-init) parses off its disks and
//! its network before anything in them is authenticated: the state disk's LUKS2 header (binary
//! headers and JSON metadata), the dm-verity superblock of the root's hash partition, the ext4
//! superblock of the opened state disk, and DHCP replies. Same contract as `lib.rs`: any bytes,
//! never a panic, invariants asserted, `Ok(())` when the parser accepts the input.
//!
//! A module of its own (not in `lib.rs`): it needs nacre-statedisk, nacre-network and
//! nacre-init's verity parser, which the attestation corpus test (keyservice) does not build.
//! The fuzz targets include it by path, and so does `init/tests/fuzz_corpus.rs`, which runs
//! these targets' seeds in the normal `cargo test`.

// nacre-init is a binary: its parser is compiled in here from its source file, as the init
// compiles it (`Superblock::parse`, `data_sectors`, `table_params`; the ioctl part is unused).
#[path = "../../init/src/stage/verity.rs"]
#[allow(dead_code)]
mod verity;

use nacre_network::dhcp;
use nacre_statedisk::{ext4, luks2};

/// The size the state disk is judged with: 1 GiB (the segment must end 1 MiB before it).
const DEVICE_SIZE: u64 = 1 << 30;

/// The profiles nacre-init validates a header with: integrity off/on, no token (key service)
/// or the TPM key source's token.
fn profiles() -> [luks2::Profile; 4] {
    let p = |integrity, token: Option<&str>| luks2::Profile {
        integrity,
        token_type: token.map(str::to_string),
    };
    let tpm = Some(nacre_statedisk::token::TPM_TOKEN_TYPE);
    [p(false, None), p(false, tpm), p(true, None), p(true, tpm)]
}

/// One header area as nacre-init reads it (the disk's first `2 * HDR_SIZE` bytes): `classify`
/// (format or not), `Header::parse` (both copies, checksums, agreement) and `validate` under
/// every profile. Invariants: an accepted header is never classified uninitialized (which would
/// reformat a valid disk); its data segment lies after the keyslot area, within
/// `MAX_DATA_OFFSET` and 1 MiB before the device's end; its keyslots number 1 to `MAX_KEYSLOTS`;
/// its JSON parsed strictly is the JSON serde_json reads.
fn luks2_area(area: &[u8]) -> Result<(), String> {
    let state = luks2::classify(area);
    let h = luks2::Header::parse(area).map_err(|e| e.to_string())?;
    assert!(h.json.len() < (luks2::HDR_SIZE as usize - luks2::BIN_SIZE));
    if let Ok(strict) = luks2::parse_strict_json(&h.json) {
        let loose: serde_json::Value =
            serde_json::from_str(&h.json).expect("strict JSON must be JSON");
        assert_eq!(strict, loose, "strict and serde_json readings differ");
    }
    let mut refused = None;
    for profile in profiles() {
        match h.validate(&profile, DEVICE_SIZE) {
            Ok(v) => {
                assert_eq!(
                    state,
                    luks2::DiskState::Initialized,
                    "valid header classified"
                );
                assert_eq!(v.uuid, h.uuid);
                assert!(v.data_offset % 4096 == 0);
                assert!(v.data_offset >= 2 * luks2::HDR_SIZE);
                assert!(v.data_offset <= luks2::MAX_DATA_OFFSET);
                assert!(v.data_offset + (1 << 20) <= DEVICE_SIZE);
                assert!(!v.keyslots.is_empty() && v.keyslots.len() <= luks2::MAX_KEYSLOTS);
                assert_eq!(v.token.is_some(), profile.token_type.is_some());
                // The key source reads the token next (nacre-init's `use_token`).
                if let Some((_, t)) = &v.token {
                    let _ = nacre_statedisk::token::TpmToken::from_json(t);
                }
                return Ok(());
            }
            Err(e) => {
                refused.get_or_insert(e.to_string());
            }
        }
    }
    Err(refused.unwrap_or_default())
}

/// The LUKS2 header area: the input as it is, then (so that mutations reach the JSON walk past
/// the SHA-256 checksums) its primary copy made into both copies with the checksums recomputed,
/// as a writer of a planted header would. Accepted when the input as it is validates.
pub fn luks2_header(data: &[u8]) -> Result<(), String> {
    let result = luks2_area(data);
    let hdr = luks2::HDR_SIZE as usize;
    if let Some(primary) = data.get(..hdr) {
        let mut area = Vec::with_capacity(2 * hdr);
        area.extend_from_slice(primary);
        area.extend_from_slice(primary);
        area[hdr..hdr + 6].copy_from_slice(luks2::MAGIC_SECONDARY);
        area[hdr + 256..hdr + 264].copy_from_slice(&(hdr as u64).to_be_bytes());
        for at in [0, hdr] {
            let sum = luks2::copy_checksum(&area[at..at + hdr]);
            area[at + 448..at + 480].copy_from_slice(&sum);
        }
        let _ = luks2_area(&area);
    }
    result
}

/// The dm-verity superblock nacre-init reads from the start of the root's hash partition
/// (4096 bytes), and the table it builds from it. Invariants: accepted block sizes are powers
/// of two in 512..65536, the data area's size in sectors is exact (no overflow), the table has
/// the kernel's 12 positional words plus the one option and the salt in hex.
pub fn verity_superblock(data: &[u8]) -> Result<(), String> {
    let sb = verity::Superblock::parse(data).map_err(|e| e.to_string())?;
    for s in [sb.data_block_size, sb.hash_block_size] {
        assert!(s.is_power_of_two() && (512..=65536).contains(&s));
    }
    assert!(sb.salt.len() <= 256);
    assert!(sb.data_blocks > 0);
    let sectors = sb.data_sectors();
    assert_eq!(
        u128::from(sectors),
        u128::from(sb.data_blocks) * u128::from(sb.data_block_size) / 512,
        "data sectors"
    );
    let params = sb.table_params("254:1", "254:2", "ab", "panic_on_corruption");
    let words: Vec<&str> = params.split(' ').collect();
    assert_eq!(words.len(), 12, "{params}");
    assert_eq!(words[7], sb.algorithm);
    assert!(words[9] == "-" || hex::decode(words[9]).as_deref() == Ok(&sb.salt[..]));
    Ok(())
}

/// The ext4 superblock as nacre-init reads it from the opened state disk (its first 2048 bytes):
/// the UUID, and the check against the header's UUID. Invariants: a UUID read is a lower-case
/// RFC 4122 text that the check accepts for itself and refuses for another.
pub fn ext4_superblock(data: &[u8]) -> Result<(), String> {
    let Some(u) = ext4::superblock_uuid(data) else {
        ext4::check_uuid(data, "3f12551b-d978-47d1-a7b5-41cd387d027e")?;
        unreachable!("no superblock, yet the check passed");
    };
    assert_eq!(u.len(), 36);
    assert!(u.char_indices().all(|(i, c)| match i {
        8 | 13 | 18 | 23 => c == '-',
        _ => c.is_ascii_hexdigit() && !c.is_ascii_uppercase(),
    }));
    assert!(ext4::check_uuid(data, &u).is_ok());
    let other = if u.starts_with('0') { "1" } else { "0" }.to_string() + &u[1..];
    assert!(ext4::check_uuid(data, &other).is_err());
    Ok(())
}

/// A DHCP reply as the client reads it off UDP port 68 (up to 1500 bytes): `dhcp::parse` for
/// the xid and MAC the message itself carries (so mutations are "ours"), then for an ACK the
/// lease (`Lease::from_reply`), its description and resolv.conf. Invariants: another xid is not
/// ours; a lease has T1 <= T2 <= lease time, a prefix of 1..=32, on-link routes before routed
/// ones and none through its own address; resolv.conf carries only its own line kinds, with
/// names of letters, digits, '-', '_' and '.'. Accepted when a reply for this client parses
/// (and, for an ACK, gives a lease).
pub fn dhcp(data: &[u8]) -> Result<(), String> {
    let data = &data[..data.len().min(1500)];
    let (Some(xid), Some(mac)) = (data.get(4..8), data.get(28..34)) else {
        return Err("shorter than a BOOTP header".into());
    };
    let xid = u32::from_be_bytes(xid.try_into().expect("4 bytes"));
    let mac: [u8; 6] = mac.try_into().expect("6 bytes");
    assert!(matches!(
        dhcp::parse(data, xid.wrapping_add(1), mac),
        Ok(None)
    ));
    let r = dhcp::parse(data, xid, mac)
        .map_err(|e| e.to_string())?
        .ok_or("not a reply to this client")?;
    assert_eq!(r.xid, xid);
    if r.kind != dhcp::ACK {
        return Ok(());
    }
    let l = dhcp::Lease::from_reply(&r).map_err(|e| e.to_string())?;
    assert!((1..=32).contains(&l.prefix));
    if let (Some(t1), Some(t2), Some(ls)) = (l.t1_s, l.t2_s, l.lease_s) {
        assert!(t1 <= t2 && t2 <= ls);
    }
    assert!(l
        .routes
        .windows(2)
        .all(|w| w[0].gateway.is_none() || w[1].gateway.is_some()));
    assert!(l
        .routes
        .iter()
        .all(|r| r.gateway != Some(l.address) && r.prefix <= 32));
    let _ = l.timers();
    let _ = l.describe();
    let conf = dhcp::resolv_conf(&l, "eth0");
    let name_ok = |s: &str| {
        s.bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
    };
    for line in conf.lines().skip(1) {
        if let Some(ns) = line.strip_prefix("nameserver ") {
            assert!(ns.parse::<std::net::Ipv4Addr>().is_ok(), "{line:?}");
        } else if let Some(s) = line.strip_prefix("search ") {
            assert!(
                s.split(' ').all(|d| !d.is_empty() && name_ok(d)),
                "{line:?}"
            );
        } else {
            panic!("resolv.conf line {line:?}");
        }
    }
    Ok(())
}
