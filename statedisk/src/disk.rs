//! The effects: find the state disk ([`crate::select`]), format it on first boot, open it from a validated detached
//! copy of its header, mount it. Runs in the guest (device-mapper, dm-crypt, ext4).
//!
//! Order of the first format, so a power cut at any point is safe: LUKS2 header without label →
//! keyslot for the disk key → key source token → file system (through the mapping, which is then
//! closed) → label "nacre-state", the very last write. Until the label is on both header copies
//! the disk holds no data and the next boot formats it again; once it is, the disk is opened like
//! on every later boot, through the validator, so nacre never uses a header it would refuse.

use crate::ext4;
use crate::keysource::KeySource;
use crate::luks2::{self, DiskState, Header, Profile, HDR_SIZE, INITIALIZED_LABEL};
use crate::select;
use crate::{Config, StateDiskError as E};
use libcryptsetup_rs::consts::flags::{
    CryptActivate, CryptDeactivate, CryptPbkdf, CryptVolumeKey, CryptWipe,
};
use libcryptsetup_rs::consts::vals::{
    CryptKdf, CryptWipePattern, EncryptionFormat, KeyslotsSize, MetadataSize,
};
use libcryptsetup_rs::{
    CryptInit, CryptParamsLuks2, CryptParamsLuks2Ref, CryptPbkdfType, Either, TokenInput,
};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The device-mapper name of the opened disk (`/dev/mapper/nacre-state`).
pub const MAPPING: &str = "nacre-state";
/// Where the validated header copy is kept (tmpfs).
pub const HEADER_COPY: &str = "/run/nacre/state-header.luks2";
pub const MOUNTPOINT: &str = "/var";
/// Created on the state file system after mounting.
pub const STATE_DIRS: &[&str] = &["lib/kubelet", "lib/containerd"];
pub const MKFS_EXT4: &str = "/usr/sbin/mkfs.ext4";
/// The keyslot area nacre formats with: the data segment starts at 1 MiB.
const KEYSLOTS_SIZE: u64 = (1 << 20) - 2 * HDR_SIZE;
/// PBKDF2 iterations for keyslots (the disk key is 64 random bytes).
const ITERATIONS: u32 = 1000;
/// How long to wait for the disk to appear.
const FIND_TIMEOUT: Duration = Duration::from_secs(10);

/// What `open` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub device: PathBuf,
    pub uuid: String,
    /// The disk was formatted during this boot.
    pub formatted: bool,
    pub mapping: PathBuf,
    pub mountpoint: PathBuf,
}

/// Find the state disk, format it if its first format never completed, open it from a validated
/// detached header copy, mount it on /var. `log` receives progress lines.
pub fn open(cfg: &Config, keys: &mut dyn KeySource, log: &dyn Fn(&str)) -> Result<Opened, E> {
    let profile = cfg.profile(keys.token_type());
    // Positively identified before anything is read from or written to it.
    let sys_block = Path::new(select::SYS_BLOCK);
    let found = select::find(
        sys_block,
        Path::new(select::MOUNTINFO),
        &cfg.disk,
        FIND_TIMEOUT,
        select::SETTLE,
        &select::IoctlIdentify,
    )?;
    let device = found.device;
    check_node(&device, &sys_block.join(&found.name).join("dev"))?;
    let size = device_size(&device)?;
    log(&format!(
        "state disk: {} ({}, {size} bytes)",
        device.display(),
        found.how
    ));
    let start = read_at(&device, 0, (2 * HDR_SIZE).min(size) as usize)?;
    let mut formatted = false;
    match luks2::classify(&start) {
        DiskState::Uninitialized(why) => {
            log(&format!(
                "state disk: formatting {} ({why})",
                device.display()
            ));
            format(&device, &profile, keys, log)?;
            formatted = true;
        }
        DiskState::Initialized => {}
    }
    let uuid = activate(&device, size, &profile, keys, log)?;
    let mapping = PathBuf::from(format!("/dev/mapper/{MAPPING}"));
    mount(&mapping, Path::new(MOUNTPOINT))?;
    for d in STATE_DIRS {
        let p = Path::new(MOUNTPOINT).join(d);
        std::fs::create_dir_all(&p).map_err(|e| E::io(&p, e))?;
    }
    Ok(Opened {
        device,
        uuid,
        formatted,
        mapping,
        mountpoint: MOUNTPOINT.into(),
    })
}

/// Unmount /var and close the mapping (for an orderly shutdown).
pub fn close() -> Result<(), E> {
    nix::mount::umount(MOUNTPOINT)
        .map_err(|e| E::Effect(format!("unmounting {MOUNTPOINT}: {e}")))?;
    let mut cd = CryptInit::init_by_name_and_header(MAPPING, None)
        .map_err(|e| E::Effect(format!("{MAPPING}: {e}")))?;
    cd.activate_handle()
        .deactivate(MAPPING, CryptDeactivate::empty())
        .map_err(|e| E::Effect(format!("closing {MAPPING}: {e}")))
}

/// `/dev/NAME` must be the block device sysfs names (major:minor), not something else.
fn check_node(dev: &Path, sys_dev: &Path) -> Result<(), E> {
    let want = std::fs::read_to_string(sys_dev).map_err(|e| E::io(sys_dev, e))?;
    let md = std::fs::metadata(dev).map_err(|e| E::io(dev, e))?;
    let rdev = md.rdev();
    let have = format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    if !md.file_type().is_block_device() || have != want.trim() {
        return Err(E::Effect(format!(
            "{} is not the block device {} (sysfs says {})",
            dev.display(),
            have,
            want.trim()
        )));
    }
    Ok(())
}

fn device_size(dev: &Path) -> Result<u64, E> {
    let mut f = std::fs::File::open(dev).map_err(|e| E::io(dev, e))?;
    f.seek(SeekFrom::End(0)).map_err(|e| E::io(dev, e))
}

fn read_at(dev: &Path, offset: u64, len: usize) -> Result<Vec<u8>, E> {
    let mut f = std::fs::File::open(dev).map_err(|e| E::io(dev, e))?;
    f.seek(SeekFrom::Start(offset)).map_err(|e| E::io(dev, e))?;
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).map_err(|e| E::io(dev, e))?;
    Ok(buf)
}

fn crypt_err(what: &str) -> impl Fn(libcryptsetup_rs::LibcryptErr) -> E + '_ {
    move |e| E::Effect(format!("{what}: {e}"))
}

/// The first format (see the module comment for the order).
fn format(
    dev: &Path,
    profile: &Profile,
    keys: &mut dyn KeySource,
    log: &dyn Fn(&str),
) -> Result<(), E> {
    let mut cd = CryptInit::init(dev).map_err(crypt_err("crypt_init"))?;
    let pbkdf = CryptPbkdfType {
        type_: CryptKdf::Pbkdf2,
        hash: Some("sha256".into()),
        time_ms: 0,
        iterations: ITERATIONS,
        max_memory_kb: 0,
        parallel_threads: 0,
        flags: CryptPbkdf::NO_BENCHMARK,
    };
    cd.settings_handle()
        .set_pbkdf_type(&pbkdf)
        .map_err(crypt_err("setting PBKDF2"))?;
    // 16 KiB metadata and a keyslot area that ends at 1 MiB (room for three 512-bit or two
    // 768-bit keyslots): the header copy kept in /run is 1 MiB, not cryptsetup's default 16.
    let keyslots = KeyslotsSize::try_from(KEYSLOTS_SIZE).map_err(crypt_err("keyslots size"))?;
    cd.settings_handle()
        .set_metadata_size(MetadataSize::Kb16, keyslots)
        .map_err(crypt_err("setting the metadata size"))?;
    let params = CryptParamsLuks2 {
        pbkdf: Some(CryptPbkdfType {
            type_: CryptKdf::Pbkdf2,
            hash: Some("sha256".into()),
            time_ms: 0,
            iterations: ITERATIONS,
            max_memory_kb: 0,
            parallel_threads: 0,
            flags: CryptPbkdf::NO_BENCHMARK,
        }),
        integrity: profile.integrity.then(|| luks2::INTEGRITY.to_string()),
        integrity_params: None,
        data_alignment: 0,
        data_device: None,
        sector_size: luks2::SECTOR_SIZE as u32,
        label: None,
        subsystem: None,
    };
    let mut params_ref: CryptParamsLuks2Ref<'_> = (&params)
        .try_into()
        .map_err(crypt_err("LUKS2 parameters"))?;
    cd.context_handle()
        .format(
            EncryptionFormat::Luks2,
            ("aes", "xts-plain64"),
            None,
            Either::Right(profile.volume_key_size() as usize),
            Some(&mut params_ref),
        )
        .map_err(crypt_err("crypt_format (LUKS2)"))?;
    let uuid = cd
        .status_handle()
        .get_uuid()
        .map_err(crypt_err("reading the new UUID"))?
        .to_string();
    let key = keys.disk_key(&uuid)?;
    let slot = cd
        .keyslot_handle()
        .add_by_key(None, None, &key, CryptVolumeKey::empty())
        .map_err(crypt_err("adding the keyslot for the disk key"))?;
    if let Some(mut token) = keys.new_token()? {
        token.insert("keyslots".into(), serde_json::json!([slot.to_string()]));
        cd.token_handle()
            .json_set(TokenInput::AddToken(&serde_json::Value::Object(token)))
            .map_err(crypt_err("storing the key source's token"))?;
    }
    log(&format!(
        "state disk: LUKS2 header written (UUID {uuid}), making the file system"
    ));
    // The file system, through the mapping of the header just written.
    let flags = if profile.integrity {
        CryptActivate::NO_JOURNAL
    } else {
        CryptActivate::empty()
    };
    cd.activate_handle()
        .activate_by_passphrase(Some(MAPPING), Some(slot), &key, flags)
        .map_err(crypt_err("activating the new disk"))?;
    drop(key);
    let mapping = PathBuf::from(format!("/dev/mapper/{MAPPING}"));
    let result = (|| {
        if profile.integrity {
            // dm-integrity tags must be written once before anything reads the device.
            cd.wipe_handle()
                .wipe::<()>(
                    &mapping,
                    CryptWipePattern::Zero,
                    0,
                    0,
                    1 << 20,
                    CryptWipe::empty(),
                    None,
                    None,
                )
                .map_err(crypt_err("initializing the integrity tags"))?;
        }
        ext4::mkfs(Path::new(MKFS_EXT4), &mapping, &uuid)
    })();
    let closed = cd
        .activate_handle()
        .deactivate(MAPPING, CryptDeactivate::empty())
        .map_err(crypt_err("closing the new disk"));
    result?;
    closed?;
    nix::unistd::sync();
    // The very last write: the label that says the format completed.
    cd.context_handle()
        .set_label(Some(INITIALIZED_LABEL), None)
        .map_err(crypt_err("writing the initialized label"))?;
    nix::unistd::sync();
    log("state disk: format complete");
    Ok(())
}

/// Copy the header area, validate the copy, activate with it (never with the disk's header).
fn activate(
    dev: &Path,
    size: u64,
    profile: &Profile,
    keys: &mut dyn KeySource,
    log: &dyn Fn(&str),
) -> Result<String, E> {
    // The binary headers and JSON first, to learn where the data segment starts...
    let start = read_at(dev, 0, (2 * HDR_SIZE).min(size) as usize)?;
    let offset = Header::parse(&start)?.validate(profile, size)?.data_offset;
    // ...then the whole area once; only these bytes are validated and used from here on.
    let area = read_at(dev, 0, offset as usize)?;
    let valid = Header::parse(&area)?.validate(profile, size)?;
    if valid.data_offset != offset {
        return Err(E::Effect(
            "the header changed while it was being read".into(),
        ));
    }
    log(&format!(
        "state disk: header valid (UUID {}, data at {}, keyslots {:?})",
        valid.uuid, valid.data_offset, valid.keyslots
    ));
    if let Some((_, token)) = &valid.token {
        keys.use_token(token)?;
    }
    let copy = Path::new(HEADER_COPY);
    if let Some(dir) = copy.parent() {
        std::fs::create_dir_all(dir).map_err(|e| E::io(dir, e))?;
    }
    let _ = std::fs::remove_file(copy);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(copy)
        .map_err(|e| E::io(copy, e))?;
    f.write_all(&area).map_err(|e| E::io(copy, e))?;
    drop(f);
    let key = keys.disk_key(&valid.uuid)?;
    let mut cd = CryptInit::init_with_data_device(Either::Right((copy, dev)))
        .map_err(crypt_err("crypt_init with the detached header"))?;
    cd.context_handle()
        .load::<()>(Some(EncryptionFormat::Luks2), None)
        .map_err(crypt_err("loading the validated header copy"))?;
    cd.activate_handle()
        .activate_by_passphrase(Some(MAPPING), None, &key, CryptActivate::empty())
        .map_err(|e| {
            E::Refused(format!(
                "no keyslot of the validated header opens with the disk key from {}: {e}",
                keys.name()
            ))
        })?;
    drop(key);
    // The plaintext must name the header: mkfs wrote the LUKS2 UUID into the ext4 superblock. A
    // header taken from another disk opened with its own key yields noise here.
    let mapping = PathBuf::from(format!("/dev/mapper/{MAPPING}"));
    let sb = read_at(&mapping, 0, 2048);
    let check = sb.and_then(|sb| ext4::check_uuid(&sb, &valid.uuid).map_err(E::Refused));
    if let Err(e) = check {
        let _ = cd
            .activate_handle()
            .deactivate(MAPPING, CryptDeactivate::empty());
        return Err(e);
    }
    Ok(valid.uuid)
}

fn mount(dev: &Path, at: &Path) -> Result<(), E> {
    use nix::mount::MsFlags;
    nix::mount::mount(Some(dev), at, Some("ext4"), MsFlags::empty(), None::<&str>).map_err(|e| {
        E::Effect(format!(
            "mounting {} on {} (ext4): {e}",
            dev.display(),
            at.display()
        ))
    })
}
