//! Which disk is the state disk: one selector in `[state_disk]`, one stated rule per bus, never a
//! guess. Everything here reads sysfs (a directory given by the caller, so the host tests use a
//! fake `/sys/class/block` tree) and, for cloud device names, NVMe Identify data (through
//! [`NvmeIdentify`], an ioctl in the guest, a fake in the tests). Nothing is written: the disk is
//! positively identified before [`crate::disk::open`] reads or writes a byte of it.
//!
//! # Selectors (exactly one)
//!
//! | `[state_disk]` | matches the whole disk whose … |
//! |---|---|
//! | `serial = "S"` | virtio-blk (`vdX`): `/sys/class/block/vdX/serial` is `S` (exactly, as before); NVMe (`nvmeXnY`): the controller's serial `/sys/class/block/nvmeXnY/device/serial` is `S` (surrounding blanks trimmed; all namespaces of a controller share it, so two namespaces are ambiguous and refused), and the one match is confirmed by asking the controller (Identify Controller bytes 4..24); SCSI (`sdX`, also virtio-scsi and Hyper-V storvsc): the Unit Serial Number VPD page `device/vpd_pg80` (page code 0x80 checked, length from the page, blanks trimmed) is `S`; other disks: `serial` if the driver has one. |
//! | `device_name = "N"` | was attached under the cloud device name `N` (a leading `/dev/` on either side is ignored): **AWS EBS** on NVMe: model `Amazon Elastic Block Store`, and the block device name in the first 32 bytes of the vendor-specific area (offset 3072) of Identify Controller (blank/NUL padded; what `ebsnvme-id` reads); **GCE persistent disk** on NVMe: model `nvme_card-pd`, and `"device_name"` of the JSON object at offset 384 of Identify Namespace (what GCE's `google_nvme_id` reads for `/dev/disk/by-id/google-N`); **GCE persistent disk** on SCSI: vendor `Google`, model `PersistentDisk`, VPD page 0x80 serial `N` (GCE's `google-N` link). Any other disk has no device name. A disk whose Identify data cannot be read stops the search (it might be the one). |
//! | `rule = "only-data-disk"` | is the only whole disk that is not the boot disk. Whole disks: every `/sys/class/block` entry except partitions (a `partition` file), hidden disks (`hidden` = 1, e.g. NVMe multipath paths) and the kinds `loop* ram* zram* dm-* md* nbd* sr* fd*`. The boot disk: the disk(s) under the block device mounted on `/` (last `/` line of `/proc/self/mountinfo`), followed through device-mapper `slaves/` to partitions and from partitions to their disk — nacre's verified root, and the ESP on the same disk. If the boot disk cannot be found, nothing is selected. Zero candidates: wait, then refuse naming every whole disk; more than one: refuse naming them all; one: it must be the only candidate for [`SETTLE`] (asynchronous probes) and have no partitions and no holders (a disk nacre formats has neither). |
//!
//! Limits, stated: `only-data-disk` sees the disks present when stage 2 opens the state disk
//! (seconds after stage 1 loaded the drivers) plus [`SETTLE`]; a second data disk whose probe
//! finishes later than that, or one hot-plugged later, is not seen, so the rule is for disks
//! attached before boot. The NVMe Identify ioctl runs in the NVMe boot test (the serial
//! confirmation); the cloud layouts behind it (EBS, GCE) are host-tested only: QEMU 7.2's NVMe
//! device cannot present a cloud model number or vendor-specific data.
//!
//! # Which selector each variant should use
//!
//! The selector lives in `/etc/nacre/init.toml` on the measured root, so it must name the disk
//! the same way on every node of a variant: per-volume serials (EBS `vol…`, Azure's) cannot be
//! used, names chosen at attach time can.
//!
//! | Variant | Selector | Why |
//! |---|---|---|
//! | `qemu-vtpm`, `qemu-snp`, `qemu-tdx` | `serial = "nacre-state"` | the VMM sets the serial (`-device virtio-blk-pci,serial=nacre-state`; also works with `nvme,serial=` and `scsi-hd,serial=`) |
//! | `aws-sev-snp` | `device_name = "sdf"` (the name in the launch template's block device mapping, `/dev/sdf` or `sdf`) | EBS on NVMe carries the attach name in Identify Controller; `only-data-disk` also works on m6a/c6a/r6a (no instance store), but refuses when more volumes are attached |
//! | `gcp-sev-snp` | `device_name = "nacre-state"` (the `deviceName` of the attached disk) | N2D attaches persistent disks on SCSI (Google/PersistentDisk, serial = device name) or NVMe (Identify Namespace JSON): both rules are implemented |
//! | `gcp-tdx` | `device_name = "nacre-state"` | C3 attaches persistent disks on NVMe only (`nvme_card-pd`) |
//! | `azure-sev-snp` | `rule = "only-data-disk"` | the attach LUN is the only name Azure gives a data disk (storvsc: VMBus `device_id` `{f8b3781a…}`..`{f8b3781d…}`, HCTL's LUN), not implemented here; DCasv5/ECasv5 have no temporary resource disk, so the OS disk and the one data disk are the only disks; sizes with a resource disk (…dsv5) are refused by the rule (two candidates), never guessed |

use crate::StateDiskError as E;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Where the kernel lists block devices.
pub const SYS_BLOCK: &str = "/sys/class/block";
pub const MOUNTINFO: &str = "/proc/self/mountinfo";
/// How long the only data disk must stay the only candidate before it is used.
pub const SETTLE: Duration = Duration::from_secs(1);
/// Longest selector value accepted.
const MAX_VALUE: usize = 128;

/// NVMe model numbers of the cloud device-name rules.
pub const EBS_MODEL: &str = "Amazon Elastic Block Store";
pub const GCE_NVME_PD_MODEL: &str = "nvme_card-pd";
/// SCSI vendor/model of GCE persistent disks.
pub const GCE_SCSI_VENDOR: &str = "Google";
pub const GCE_SCSI_MODEL: &str = "PersistentDisk";

/// How `[state_disk]` names the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selector {
    Serial(String),
    DeviceName(String),
    OnlyDataDisk,
}

/// `rule = "…"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    OnlyDataDisk,
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Serial(s) => write!(f, "serial {s:?}"),
            Selector::DeviceName(n) => write!(f, "device name {n:?}"),
            Selector::OnlyDataDisk => write!(f, "rule only-data-disk"),
        }
    }
}

/// A selector value (serial or device name): printable ASCII without surrounding blanks.
pub fn check_value(key: &str, v: &str) -> Result<(), String> {
    if v.is_empty() {
        return Err(format!("{key} is empty"));
    }
    if v.len() > MAX_VALUE {
        return Err(format!("{key} is longer than {MAX_VALUE} bytes"));
    }
    if !v.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err(format!(
            "{key} {v:?} has characters other than printable ASCII"
        ));
    }
    if v.trim() != v {
        return Err(format!("{key} {v:?} has leading or trailing blanks"));
    }
    Ok(())
}

/// The bus a disk is on, from the name its driver gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bus {
    /// `vd[a-z]+` (virtio_blk).
    VirtioBlk,
    /// `nvme<N>n<M>` (an NVMe namespace).
    Nvme,
    /// `sd[a-z]+` (sd_mod: virtio-scsi, storvsc, ...).
    Scsi,
    Other,
}

impl fmt::Display for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Bus::VirtioBlk => "virtio-blk",
            Bus::Nvme => "NVMe",
            Bus::Scsi => "SCSI",
            Bus::Other => "other",
        })
    }
}

/// Names that are never whole disks for the state disk (virtual or optical devices).
const NOT_DISKS: &[&str] = &["loop", "ram", "zram", "dm-", "md", "nbd", "sr", "fd"];

/// `nvme<N>c<C>n<M>`: one controller's path to a multipath namespace (hidden; the namespace
/// itself is `nvme<N>n<M>`).
fn is_nvme_path(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let Some((a, rest)) = rest.split_once('c') else {
        return false;
    };
    let Some((b, c)) = rest.split_once('n') else {
        return false;
    };
    digits(a) && digits(b) && digits(c)
}

fn letters(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase())
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

impl Bus {
    pub fn of(name: &str) -> Bus {
        if name.strip_prefix("vd").is_some_and(letters) {
            Bus::VirtioBlk
        } else if name.strip_prefix("sd").is_some_and(letters) {
            Bus::Scsi
        } else if let Some((c, n)) = name.strip_prefix("nvme").and_then(|r| r.split_once('n')) {
            if digits(c) && digits(n) {
                Bus::Nvme
            } else {
                Bus::Other
            }
        } else {
            Bus::Other
        }
    }
}

/// A whole disk as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    pub name: String,
    pub bus: Bus,
    /// The serial by the bus's rule (see the module doc), if it has one.
    pub serial: Option<String>,
    pub vendor: Option<String>,
    pub model: Option<String>,
    /// NVMe namespace id.
    pub nsid: Option<u32>,
    pub partitions: Vec<String>,
    pub holders: Vec<String>,
}

impl fmt::Display for Disk {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({}", self.name, self.bus)?;
        if let Some(v) = &self.vendor {
            write!(f, " vendor {v:?}")?;
        }
        if let Some(m) = &self.model {
            write!(f, " model {m:?}")?;
        }
        match &self.serial {
            Some(s) => write!(f, " serial {s:?}")?,
            None => write!(f, " no serial")?,
        }
        if !self.partitions.is_empty() {
            write!(f, " partitions {}", self.partitions.join(","))?;
        }
        if !self.holders.is_empty() {
            write!(f, " held by {}", self.holders.join(","))?;
        }
        write!(f, ")")
    }
}

fn read_text(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// A sysfs string attribute with its blanks trimmed (NVMe and SCSI pad with spaces).
fn trimmed(p: &Path) -> Option<String> {
    let s = read_text(p)?;
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\0');
    (!t.is_empty()).then(|| t.to_string())
}

/// The serial in a SCSI Unit Serial Number VPD page (0x80), blanks trimmed.
pub fn vpd_pg80_serial(page: &[u8]) -> Option<String> {
    if page.len() < 4 || page[1] != 0x80 {
        return None;
    }
    let len = u16::from_be_bytes([page[2], page[3]]) as usize;
    let s = std::str::from_utf8(page.get(4..4 + len)?).ok()?;
    let t = s.trim_matches(|c: char| c == ' ' || c == '\0');
    (!t.is_empty()).then(|| t.to_string())
}

/// Sorted names of the entries of `dir` (empty if it does not exist).
fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn is_partition(sys_block: &Path, name: &str) -> bool {
    sys_block.join(name).join("partition").exists()
}

/// Read one whole disk's description.
pub fn describe(sys_block: &Path, name: &str) -> Disk {
    let d = sys_block.join(name);
    let bus = Bus::of(name);
    let dev = d.join("device");
    let (serial, vendor, model) = match bus {
        Bus::VirtioBlk | Bus::Other => (
            // Exact apart from the newline; a disk without a serial reads as empty (virtio_blk).
            read_text(&d.join("serial"))
                .map(|s| s.strip_suffix('\n').unwrap_or(&s).to_string())
                .filter(|s| !s.is_empty()),
            None,
            None,
        ),
        Bus::Nvme => (
            trimmed(&dev.join("serial")),
            None,
            trimmed(&dev.join("model")),
        ),
        Bus::Scsi => (
            std::fs::read(dev.join("vpd_pg80"))
                .ok()
                .and_then(|p| vpd_pg80_serial(&p)),
            trimmed(&dev.join("vendor")),
            trimmed(&dev.join("model")),
        ),
    };
    let nsid = (bus == Bus::Nvme)
        .then(|| trimmed(&d.join("nsid")).and_then(|s| s.parse().ok()))
        .flatten();
    let partitions = names(&d)
        .into_iter()
        .filter(|p| d.join(p).join("partition").exists())
        .collect();
    Disk {
        name: name.to_string(),
        bus,
        serial,
        vendor,
        model,
        nsid,
        partitions,
        holders: names(&d.join("holders")),
    }
}

/// The whole disks in `sys_block` (see the module doc), sorted by name.
pub fn whole_disks(sys_block: &Path) -> Result<Vec<Disk>, E> {
    let dir = std::fs::read_dir(sys_block).map_err(|e| E::io(sys_block, e))?;
    let mut out: Vec<Disk> = dir
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !NOT_DISKS.iter().any(|p| n.starts_with(p)))
        .filter(|n| !is_nvme_path(n))
        .filter(|n| !is_partition(sys_block, n))
        .filter(|n| trimmed(&sys_block.join(n).join("hidden")).as_deref() != Some("1"))
        .map(|n| describe(sys_block, &n))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// `major:minor` of the file system mounted on `/` (the last such line of a mountinfo text).
pub fn root_devnum(mountinfo: &str) -> Option<String> {
    mountinfo.lines().rev().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (f.len() > 4 && f[4] == "/").then(|| f[2].to_string())
    })
}

/// The whole disks under block device `devnum` (through device-mapper slaves and partitions).
pub fn boot_disks(sys_block: &Path, devnum: &str) -> Result<Vec<String>, E> {
    let all = names(sys_block);
    let start = all
        .iter()
        .find(|n| trimmed(&sys_block.join(n).join("dev")).as_deref() == Some(devnum))
        .ok_or_else(|| {
            E::BootDisk(format!(
                "no block device {devnum} (the root file system's) in {}",
                sys_block.display()
            ))
        })?;
    let mut out = Vec::new();
    let mut todo = vec![start.clone()];
    let mut seen = Vec::new();
    while let Some(n) = todo.pop() {
        if seen.contains(&n) || seen.len() > 64 {
            continue;
        }
        seen.push(n.clone());
        let slaves = names(&sys_block.join(&n).join("slaves"));
        if !slaves.is_empty() {
            todo.extend(slaves);
        } else if is_partition(sys_block, &n) {
            let parent = all
                .iter()
                .find(|d| sys_block.join(d).join(&n).join("partition").exists())
                .ok_or_else(|| E::BootDisk(format!("no disk holds the partition {n}")))?;
            todo.push(parent.clone());
        } else if !out.contains(&n) {
            out.push(n);
        }
    }
    if out.is_empty() {
        return Err(E::BootDisk(format!(
            "the root file system's device {start} is on no disk"
        )));
    }
    out.sort();
    Ok(out)
}

/// NVMe Identify (admin opcode 0x06): `cns` 0 = namespace `nsid`, 1 = controller.
pub trait NvmeIdentify {
    fn identify(&self, disk: &str, cns: u32, nsid: u32) -> Result<Vec<u8>, String>;
}

/// The EBS device name in Identify Controller data (vendor-specific bytes 3072..3104).
pub fn ebs_device_name(id_ctrl: &[u8]) -> Option<String> {
    let b = id_ctrl.get(3072..3104)?;
    let s = std::str::from_utf8(b).ok()?;
    let t = s.trim_matches(|c: char| c == ' ' || c == '\0');
    (!t.is_empty()).then(|| strip_dev(t).to_string())
}

/// GCE's device name in Identify Namespace data: the JSON object at byte 384 (NUL-terminated).
pub fn gce_device_name(id_ns: &[u8]) -> Option<String> {
    let b = id_ns.get(384..)?;
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let v: serde_json::Value = serde_json::from_slice(&b[..end]).ok()?;
    let n = v.get("device_name")?.as_str()?;
    (!n.is_empty()).then(|| n.to_string())
}

fn strip_dev(s: &str) -> &str {
    s.strip_prefix("/dev/").unwrap_or(s)
}

/// The cloud device name of a disk and the rule that gave it (`None`: no rule applies).
pub fn device_name(
    disk: &Disk,
    id: &dyn NvmeIdentify,
) -> Result<Option<(String, &'static str)>, E> {
    let failed = |what: &str, e: String| {
        E::Refused(format!(
            "cannot read {what} of {} ({}), which may be the state disk: {e}",
            disk.name,
            disk.model.as_deref().unwrap_or("")
        ))
    };
    match (disk.bus, disk.vendor.as_deref(), disk.model.as_deref()) {
        (Bus::Nvme, _, Some(EBS_MODEL)) => {
            let data = id
                .identify(&disk.name, 1, 0)
                .map_err(|e| failed("NVMe Identify Controller", e))?;
            Ok(ebs_device_name(&data).map(|n| (n, "EBS NVMe device name")))
        }
        (Bus::Nvme, _, Some(GCE_NVME_PD_MODEL)) => {
            let nsid = disk
                .nsid
                .ok_or_else(|| failed("the namespace id", "no nsid in sysfs".into()))?;
            let data = id
                .identify(&disk.name, 0, nsid)
                .map_err(|e| failed("NVMe Identify Namespace", e))?;
            Ok(gce_device_name(&data).map(|n| (n, "GCE NVMe device name")))
        }
        (Bus::Scsi, Some(GCE_SCSI_VENDOR), Some(GCE_SCSI_MODEL)) => Ok(disk
            .serial
            .clone()
            .map(|n| (n, "GCE SCSI persistent disk serial"))),
        _ => Ok(None),
    }
}

/// The serial number in Identify Controller data (bytes 4..24, blank padded).
pub fn nvme_ctrl_serial(id_ctrl: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(id_ctrl.get(4..24)?).ok()?;
    let t = s.trim_matches(|c: char| c == ' ' || c == '\0');
    (!t.is_empty()).then(|| t.to_string())
}

/// An NVMe disk selected by the serial sysfs shows: the controller must say the same when asked
/// directly (Identify Controller), or the disk is not used.
fn confirm_nvme_serial(disk: &Disk, want: &str, id: &dyn NvmeIdentify) -> Result<(), E> {
    let data = id.identify(&disk.name, 1, 0).map_err(|e| {
        E::Refused(format!(
            "{}: cannot confirm its serial with NVMe Identify Controller: {e}",
            disk.name
        ))
    })?;
    match nvme_ctrl_serial(&data) {
        Some(s) if s == want => Ok(()),
        other => Err(E::Refused(format!(
            "{}: sysfs shows serial {want:?}, its controller's Identify data {other:?}",
            disk.name
        ))),
    }
}

/// One selection attempt over the disks present now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// Exactly one match: its name and how it matched.
    One(String, String),
    None,
    /// More than one match (refused).
    Many(Vec<String>),
}

/// Apply `sel` to `disks` (`boot`: the boot disks, only used by `only-data-disk`).
pub fn attempt(
    sel: &Selector,
    disks: &[Disk],
    boot: &[String],
    id: &dyn NvmeIdentify,
) -> Result<Attempt, E> {
    let mut hits: Vec<(String, String)> = Vec::new();
    for d in disks {
        match sel {
            Selector::Serial(s) => {
                if d.serial.as_deref() == Some(s.as_str()) {
                    hits.push((d.name.clone(), format!("{} serial {s:?}", d.bus)));
                }
            }
            Selector::DeviceName(want) => {
                if let Some((n, rule)) = device_name(d, id)? {
                    if n == strip_dev(want) {
                        hits.push((d.name.clone(), format!("{rule} {n:?}")));
                    }
                }
            }
            Selector::OnlyDataDisk => {
                if !boot.contains(&d.name) {
                    hits.push((
                        d.name.clone(),
                        format!("the only disk besides the boot disk {}", boot.join(",")),
                    ));
                }
            }
        }
    }
    Ok(match hits.len() {
        0 => Attempt::None,
        1 => {
            let (n, how) = hits.remove(0);
            Attempt::One(n, how)
        }
        _ => Attempt::Many(hits.into_iter().map(|(n, _)| n).collect()),
    })
}

/// The selected disk: its `/dev` path and how it matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub name: String,
    pub device: PathBuf,
    pub how: String,
}

fn list(disks: &[Disk], boot: &[String]) -> String {
    if disks.is_empty() {
        return "none".into();
    }
    disks
        .iter()
        .map(|d| {
            if boot.contains(&d.name) {
                format!("{d} [boot disk]")
            } else {
                d.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Find the disk `sel` names, waiting up to `timeout` for it to appear (and, for
/// `only-data-disk`, [`SETTLE`] for it to stay the only candidate). `mountinfo` is read for
/// `only-data-disk` only. Exactly one disk, or an error naming what was seen.
pub fn find(
    sys_block: &Path,
    mountinfo: &Path,
    sel: &Selector,
    timeout: Duration,
    settle: Duration,
    id: &dyn NvmeIdentify,
) -> Result<Found, E> {
    let boot = match sel {
        Selector::OnlyDataDisk => {
            let text = std::fs::read_to_string(mountinfo).map_err(|e| E::io(mountinfo, e))?;
            let devnum = root_devnum(&text).ok_or_else(|| {
                E::BootDisk(format!(
                    "nothing is mounted on / in {}",
                    mountinfo.display()
                ))
            })?;
            boot_disks(sys_block, &devnum)?
        }
        _ => Vec::new(),
    };
    let start = Instant::now();
    let mut candidate: Option<(String, Instant)> = None;
    loop {
        let disks = whole_disks(sys_block)?;
        let now = Instant::now();
        match attempt(sel, &disks, &boot, id)? {
            Attempt::Many(names) => {
                return Err(E::Ambiguous {
                    selector: sel.to_string(),
                    matches: names.join(", "),
                    seen: list(&disks, &boot),
                })
            }
            Attempt::One(name, how) => {
                let since = match &candidate {
                    Some((n, t)) if *n == name => *t,
                    _ => now,
                };
                candidate = Some((name.clone(), since));
                let settled = *sel != Selector::OnlyDataDisk || now - since >= settle;
                if settled {
                    let disk = disks.iter().find(|d| d.name == name);
                    if let (Selector::OnlyDataDisk, Some(d)) = (sel, disk) {
                        if !d.partitions.is_empty() || !d.holders.is_empty() {
                            return Err(E::Refused(format!(
                                "the only data disk {d} has partitions or holders: not a disk \
                                 nacre formats, and not one to guess about"
                            )));
                        }
                    }
                    let mut how = how;
                    if let (Selector::Serial(want), Some(d)) = (sel, disk) {
                        if d.bus == Bus::Nvme {
                            confirm_nvme_serial(d, want, id)?;
                            how.push_str(", confirmed by Identify Controller");
                        }
                    }
                    return Ok(Found {
                        device: PathBuf::from("/dev").join(&name),
                        name,
                        how,
                    });
                }
            }
            Attempt::None => {
                candidate = None;
                if now - start >= timeout {
                    return Err(E::NotFound {
                        selector: sel.to_string(),
                        secs: timeout.as_secs_f64(),
                        seen: list(&disks, &boot),
                    });
                }
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// NVMe Identify through the kernel's admin passthrough ioctl on `/dev/<disk>`.
pub struct IoctlIdentify;

/// `struct nvme_passthru_cmd` (linux/nvme_ioctl.h), 72 bytes.
#[repr(C)]
#[derive(Default)]
struct NvmeAdminCmd {
    opcode: u8,
    flags: u8,
    rsvd1: u16,
    nsid: u32,
    cdw2: u32,
    cdw3: u32,
    metadata: u64,
    addr: u64,
    metadata_len: u32,
    data_len: u32,
    cdw10: u32,
    cdw11: u32,
    cdw12: u32,
    cdw13: u32,
    cdw14: u32,
    cdw15: u32,
    timeout_ms: u32,
    result: u32,
}

// NVME_IOCTL_ADMIN_CMD = _IOWR('N', 0x41, struct nvme_admin_cmd) = 0xC0484E41.
nix::ioctl_readwrite!(nvme_admin_cmd, b'N', 0x41, NvmeAdminCmd);

impl NvmeIdentify for IoctlIdentify {
    fn identify(&self, disk: &str, cns: u32, nsid: u32) -> Result<Vec<u8>, String> {
        use std::os::fd::AsRawFd;
        let path = format!("/dev/{disk}");
        let f = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
        let mut buf = vec![0u8; 4096];
        let mut cmd = NvmeAdminCmd {
            opcode: 0x06,
            nsid,
            addr: buf.as_mut_ptr() as u64,
            data_len: buf.len() as u32,
            cdw10: cns,
            ..Default::default()
        };
        // SAFETY: `cmd` is a valid nvme_passthru_cmd whose `addr`/`data_len` describe `buf`, which
        // outlives the call; the kernel writes at most `data_len` bytes there.
        let status = unsafe { nvme_admin_cmd(f.as_raw_fd(), &mut cmd) }
            .map_err(|e| format!("{path}: NVME_IOCTL_ADMIN_CMD (identify cns {cns}): {e}"))?;
        if status != 0 {
            return Err(format!(
                "{path}: identify cns {cns}: NVMe status {status:#x}"
            ));
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::os::unix::fs::symlink;

    /// A fake `/sys/class/block` in a temporary directory, laid out as the kernel does: disks'
    /// directories hold their partitions' directories, `class/block` links to both.
    struct Sys {
        dir: PathBuf,
        minor: u32,
    }

    impl Drop for Sys {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    impl Sys {
        fn new(name: &str) -> Sys {
            let dir =
                std::env::temp_dir().join(format!("nacre-select-{}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(dir.join("class/block")).unwrap();
            std::fs::create_dir_all(dir.join("devices")).unwrap();
            Sys { dir, minor: 0 }
        }
        fn block(&self) -> PathBuf {
            self.dir.join("class/block")
        }
        fn put(&self, rel: &str, file: &str, content: &[u8]) {
            let p = self.dir.join("devices").join(rel).join(file);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, content).unwrap();
        }
        /// A whole disk with (file, content) attributes; returns its devices/ path.
        fn disk(&mut self, name: &str, attrs: &[(&str, &[u8])]) -> String {
            self.minor += 16;
            let rel = name.to_string();
            self.put(&rel, "dev", format!("8:{}\n", self.minor).as_bytes());
            std::fs::create_dir_all(self.dir.join("devices").join(&rel).join("holders")).unwrap();
            for (f, c) in attrs {
                self.put(&rel, f, c);
            }
            symlink(self.dir.join("devices").join(&rel), self.block().join(name)).unwrap();
            rel
        }
        fn partition(&mut self, disk: &str, part: &str) {
            let rel = format!("{disk}/{part}");
            self.minor += 1;
            self.put(&rel, "dev", format!("8:{}\n", self.minor).as_bytes());
            self.put(&rel, "partition", b"1\n");
            symlink(self.dir.join("devices").join(&rel), self.block().join(part)).unwrap();
        }
        /// A device-mapper device over `slaves`, with device number `dev`.
        fn dm(&self, name: &str, dev: &str, slaves: &[&str]) {
            self.put(name, "dev", format!("{dev}\n").as_bytes());
            std::fs::create_dir_all(self.dir.join("devices").join(name).join("slaves")).unwrap();
            for s in slaves {
                symlink(
                    self.block().join(s),
                    self.dir.join("devices").join(name).join("slaves").join(s),
                )
                .unwrap();
            }
            symlink(self.dir.join("devices").join(name), self.block().join(name)).unwrap();
        }
        fn hold(&self, disk: &str, holder: &str) {
            std::fs::create_dir_all(self.dir.join("devices").join(disk).join("holders")).unwrap();
            symlink(
                self.block().join(holder),
                self.dir
                    .join("devices")
                    .join(disk)
                    .join("holders")
                    .join(holder),
            )
            .unwrap();
        }
        fn mountinfo(&self, text: &str) -> PathBuf {
            let p = self.dir.join("mountinfo");
            std::fs::write(&p, text).unwrap();
            p
        }
    }

    /// A VPD page 0x80 with this serial (padded as devices often do).
    fn pg80(serial: &str) -> Vec<u8> {
        let body = format!("{serial}  ");
        let mut v = vec![0, 0x80, 0, body.len() as u8];
        v.extend_from_slice(body.as_bytes());
        v
    }

    /// Fake Identify data: (disk, cns) -> data or error.
    #[derive(Default)]
    struct FakeId(HashMap<(String, u32), Result<Vec<u8>, String>>);

    impl NvmeIdentify for FakeId {
        fn identify(&self, disk: &str, cns: u32, _nsid: u32) -> Result<Vec<u8>, String> {
            self.0
                .get(&(disk.to_string(), cns))
                .cloned()
                .unwrap_or_else(|| Err(format!("no identify data for {disk} cns {cns}")))
        }
    }

    fn id_ctrl_serial(sn: &str) -> Vec<u8> {
        let mut v = vec![0u8; 4096];
        let mut field = [b' '; 20];
        field[..sn.len()].copy_from_slice(sn.as_bytes());
        v[4..24].copy_from_slice(&field);
        v
    }

    #[test]
    fn nvme_serial_is_confirmed_by_the_controller() {
        let mut s = node("nvme-confirm");
        s.disk("nvme0n1", &[("device/serial", b"st\n")]);
        let mut id = FakeId::default();
        id.0.insert(("nvme0n1".into(), 1), Ok(id_ctrl_serial("st")));
        assert_eq!(find_in(&s, &serial("st"), &id).unwrap().name, "nvme0n1");
        id.0.insert(("nvme0n1".into(), 1), Ok(id_ctrl_serial("other")));
        let e = find_in(&s, &serial("st"), &id).unwrap_err().to_string();
        assert!(e.contains("Identify data Some(\"other\")"), "{e}");
        id.0.insert(("nvme0n1".into(), 1), Err("EPERM".into()));
        let e = find_in(&s, &serial("st"), &id).unwrap_err().to_string();
        assert!(e.contains("cannot confirm its serial"), "{e}");
        assert_eq!(
            nvme_ctrl_serial(&id_ctrl_serial("abc")).as_deref(),
            Some("abc")
        );
        assert_eq!(nvme_ctrl_serial(&[0u8; 4096]), None);
        assert_eq!(nvme_ctrl_serial(&[0u8; 10]), None);
    }

    fn id_ctrl_ebs(bdev: &str) -> Vec<u8> {
        let mut v = vec![0u8; 4096];
        let mut field = [b' '; 32];
        field[..bdev.len()].copy_from_slice(bdev.as_bytes());
        v[3072..3104].copy_from_slice(&field);
        v
    }

    fn id_ns_gce(json: &str) -> Vec<u8> {
        let mut v = vec![0u8; 4096];
        v[384..384 + json.len()].copy_from_slice(json.as_bytes());
        v
    }

    const ROOT_MOUNTINFO: &str = "1 0 0:2 / / rw - rootfs rootfs rw\n\
        22 1 254:0 / / ro,relatime - erofs /dev/mapper/root ro\n\
        23 22 0:5 / /proc rw - proc proc rw\n";

    /// The test node's layout: vda (root + verity, under dm-0) and the given extra disks.
    fn node(name: &str) -> Sys {
        let mut s = Sys::new(name);
        s.disk("vda", &[("serial", b"\n")]);
        s.partition("vda", "vda1");
        s.partition("vda", "vda2");
        s.dm("dm-0", "254:0", &["vda1", "vda2"]);
        s.hold("vda/vda1", "dm-0");
        s.disk("loop0", &[]);
        s.disk("ram0", &[]);
        s.disk("zram0", &[]);
        s.disk("sr0", &[]);
        s
    }

    fn find_in(s: &Sys, sel: &Selector, id: &dyn NvmeIdentify) -> Result<Found, E> {
        find(
            &s.block(),
            &s.mountinfo(ROOT_MOUNTINFO),
            sel,
            Duration::ZERO,
            Duration::ZERO,
            id,
        )
    }

    fn serial(s: &str) -> Selector {
        Selector::Serial(s.into())
    }

    #[test]
    fn bus_from_kernel_names() {
        assert_eq!(Bus::of("vda"), Bus::VirtioBlk);
        assert_eq!(Bus::of("vdaa"), Bus::VirtioBlk);
        assert_eq!(Bus::of("vda1"), Bus::Other);
        assert_eq!(Bus::of("sdb"), Bus::Scsi);
        assert_eq!(Bus::of("sdb2"), Bus::Other);
        assert_eq!(Bus::of("nvme0n1"), Bus::Nvme);
        assert_eq!(Bus::of("nvme12n3"), Bus::Nvme);
        assert_eq!(Bus::of("nvme0n1p1"), Bus::Other);
        assert_eq!(Bus::of("nvme0c0n1"), Bus::Other);
        assert_eq!(Bus::of("nvme0"), Bus::Other);
        assert_eq!(Bus::of("xvda"), Bus::Other);
    }

    #[test]
    fn serial_on_each_bus() {
        let mut s = node("serial-buses");
        s.disk("vdb", &[("serial", b"virt-1\n")]);
        s.disk(
            "nvme0n1",
            &[
                ("device/serial", b"nvme-1  \n"),
                ("device/model", b"QEMU NVMe Ctrl\n"),
                ("nsid", b"1\n"),
            ],
        );
        s.disk(
            "sda",
            &[
                ("device/vpd_pg80", &pg80("scsi-1")),
                ("device/vendor", b"QEMU    \n"),
                ("device/model", b"QEMU HARDDISK   \n"),
            ],
        );
        let mut id = FakeId::default();
        id.0.insert(("nvme0n1".into(), 1), Ok(id_ctrl_serial("nvme-1")));
        let f = find_in(&s, &serial("virt-1"), &id).unwrap();
        assert_eq!(f.device, Path::new("/dev/vdb"));
        assert_eq!(f.how, "virtio-blk serial \"virt-1\"");
        let f = find_in(&s, &serial("nvme-1"), &id).unwrap();
        assert_eq!(f.device, Path::new("/dev/nvme0n1"));
        assert_eq!(
            f.how,
            "NVMe serial \"nvme-1\", confirmed by Identify Controller"
        );
        let f = find_in(&s, &serial("scsi-1"), &id).unwrap();
        assert_eq!(f.device, Path::new("/dev/sda"));
        assert_eq!(f.how, "SCSI serial \"scsi-1\"");
        // The boot disk's empty virtio serial matches nothing, a prefix matches nothing.
        let e = find_in(&s, &serial("virt"), &id).unwrap_err().to_string();
        assert!(e.contains("no disk matches serial \"virt\""), "{e}");
        // The error names every whole disk and what it is, and none of the excluded kinds.
        assert!(
            e.contains("vda (virtio-blk no serial partitions vda1,vda2)"),
            "{e}"
        );
        assert!(
            e.contains("nvme0n1 (NVMe model \"QEMU NVMe Ctrl\" serial \"nvme-1\")"),
            "{e}"
        );
        assert!(
            e.contains("sda (SCSI vendor \"QEMU\" model \"QEMU HARDDISK\" serial \"scsi-1\")"),
            "{e}"
        );
        for n in ["loop0", "ram0", "zram0", "sr0", "dm-0", "vda1"] {
            assert!(!e.contains(&format!("{n} (")), "{n} listed: {e}");
        }
    }

    #[test]
    fn serial_is_exact_for_virtio_as_before() {
        let mut s = node("serial-exact");
        s.disk("vdb", &[("serial", b"nacre-state \n")]);
        let id = FakeId::default();
        assert!(matches!(
            find_in(&s, &serial("nacre-state"), &id),
            Err(E::NotFound { .. })
        ));
    }

    #[test]
    fn serial_ambiguous_across_buses_and_namespaces() {
        let mut s = node("serial-ambiguous");
        s.disk("vdb", &[("serial", b"same\n")]);
        s.disk("sda", &[("device/vpd_pg80", &pg80("same"))]);
        let id = FakeId::default();
        let e = find_in(&s, &serial("same"), &id).unwrap_err();
        match &e {
            E::Ambiguous { matches, .. } => assert_eq!(matches, "sda, vdb"),
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("refusing"), "{e}");
        // Two namespaces of one NVMe controller share its serial.
        let mut s = node("serial-namespaces");
        s.disk("nvme0n1", &[("device/serial", b"ctrl\n")]);
        s.disk("nvme0n2", &[("device/serial", b"ctrl\n")]);
        match find_in(&s, &serial("ctrl"), &id) {
            Err(E::Ambiguous { matches, .. }) => assert_eq!(matches, "nvme0n1, nvme0n2"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scsi_serial_needs_a_valid_page_80() {
        assert_eq!(vpd_pg80_serial(&pg80("abc")).as_deref(), Some("abc"));
        assert_eq!(vpd_pg80_serial(b"\0\x80\0\x05  x  ").as_deref(), Some("x"));
        // Wrong page code, short page, length beyond the data, blank serial.
        assert_eq!(vpd_pg80_serial(b"\0\x83\0\x03abc"), None);
        assert_eq!(vpd_pg80_serial(b"\0\x80\0"), None);
        assert_eq!(vpd_pg80_serial(b"\0\x80\0\x09abc"), None);
        assert_eq!(vpd_pg80_serial(b"\0\x80\0\x03   "), None);
        let mut s = node("scsi-no-pg80");
        s.disk("sda", &[("device/vpd_pg80", b"\0\x83\0\x03abc")]);
        s.disk("sdb", &[("device/model", b"x\n")]);
        let e = find_in(&s, &serial("abc"), &FakeId::default()).unwrap_err();
        assert!(e.to_string().contains("sda (SCSI no serial)"), "{e}");
    }

    #[test]
    fn hidden_and_partitions_are_not_disks() {
        let mut s = node("hidden");
        s.disk("nvme0n1", &[("device/serial", b"x\n")]);
        s.disk(
            "nvme0c0n1",
            &[("device/serial", b"x\n"), ("hidden", b"1\n")],
        );
        s.disk("nvme1n1", &[("device/serial", b"x\n"), ("hidden", b"1\n")]);
        let mut id = FakeId::default();
        id.0.insert(("nvme0n1".into(), 1), Ok(id_ctrl_serial("x")));
        let f = find_in(&s, &serial("x"), &id).unwrap();
        assert_eq!(f.name, "nvme0n1");
        let names: Vec<String> = whole_disks(&s.block())
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["nvme0n1", "vda"]);
    }

    #[test]
    fn device_names() {
        let mut s = node("device-names");
        // AWS: two EBS volumes (root and state) and an instance-store NVMe disk.
        s.disk(
            "nvme1n1",
            &[
                ("device/model", format!("{EBS_MODEL}   \n").as_bytes()),
                ("device/serial", b"vol0123456789abcdef0\n"),
                ("nsid", b"1\n"),
            ],
        );
        s.disk(
            "nvme2n1",
            &[
                ("device/model", format!("{EBS_MODEL}\n").as_bytes()),
                ("device/serial", b"vol0fedcba9876543210\n"),
                ("nsid", b"1\n"),
            ],
        );
        s.disk(
            "nvme3n1",
            &[
                ("device/model", b"Amazon EC2 NVMe Instance Storage\n"),
                ("nsid", b"1\n"),
            ],
        );
        // GCE: an NVMe persistent disk, a SCSI persistent disk, a local SSD on SCSI.
        s.disk(
            "nvme4n1",
            &[("device/model", b"nvme_card-pd\n"), ("nsid", b"2\n")],
        );
        s.disk(
            "sdb",
            &[
                ("device/vendor", b"Google  \n"),
                ("device/model", b"PersistentDisk  \n"),
                ("device/vpd_pg80", &pg80("gce-scsi")),
            ],
        );
        s.disk(
            "sdc",
            &[
                ("device/vendor", b"Google  \n"),
                ("device/model", b"EphemeralDisk   \n"),
                ("device/vpd_pg80", &pg80("local-ssd-0")),
            ],
        );
        let mut id = FakeId::default();
        id.0.insert(("nvme1n1".into(), 1), Ok(id_ctrl_ebs("/dev/xvda")));
        let mut ebs = id_ctrl_ebs("sdf");
        ebs[4..24].copy_from_slice(b"vol0fedcba9876543210");
        id.0.insert(("nvme2n1".into(), 1), Ok(ebs));
        id.0.insert(
            ("nvme4n1".into(), 0),
            Ok(id_ns_gce(
                r#"{"device_name":"gce-nvme","disk_type":"PERSISTENT"}"#,
            )),
        );
        let dn = |n: &str| Selector::DeviceName(n.into());
        let f = find_in(&s, &dn("sdf"), &id).unwrap();
        assert_eq!(
            (f.name.as_str(), f.how.as_str()),
            ("nvme2n1", "EBS NVMe device name \"sdf\"")
        );
        assert_eq!(find_in(&s, &dn("/dev/sdf"), &id).unwrap().name, "nvme2n1");
        assert_eq!(find_in(&s, &dn("xvda"), &id).unwrap().name, "nvme1n1");
        let f = find_in(&s, &dn("gce-nvme"), &id).unwrap();
        assert_eq!(
            (f.name.as_str(), f.how.as_str()),
            ("nvme4n1", "GCE NVMe device name \"gce-nvme\"")
        );
        let f = find_in(&s, &dn("gce-scsi"), &id).unwrap();
        assert_eq!(f.name, "sdb");
        assert_eq!(f.how, "GCE SCSI persistent disk serial \"gce-scsi\"");
        // Not a persistent disk: its serial is no device name.
        assert!(matches!(
            find_in(&s, &dn("local-ssd-0"), &id),
            Err(E::NotFound { .. })
        ));
        // A serial is no device name either, and a device name is no serial.
        assert!(matches!(
            find_in(&s, &dn("vol0fedcba9876543210"), &id),
            Err(E::NotFound { .. })
        ));
        assert!(matches!(
            find_in(&s, &serial("sdf"), &id),
            Err(E::NotFound { .. })
        ));
        // EBS serials do match `serial` (per-volume, so no use in an image's config).
        assert_eq!(
            find_in(&s, &serial("vol0fedcba9876543210"), &id)
                .unwrap()
                .name,
            "nvme2n1"
        );
        // Identify data that cannot be read stops the search: that disk may be the one.
        id.0.insert(("nvme1n1".into(), 1), Err("EIO".into()));
        let e = find_in(&s, &dn("sdf"), &id).unwrap_err().to_string();
        assert!(
            e.contains("cannot read NVMe Identify Controller of nvme1n1"),
            "{e}"
        );
        assert!(e.contains("EIO"), "{e}");
    }

    #[test]
    fn device_name_ambiguous() {
        let mut s = node("device-name-ambiguous");
        for n in ["nvme1n1", "nvme2n1"] {
            s.disk(n, &[("device/model", format!("{EBS_MODEL}\n").as_bytes())]);
        }
        let mut id = FakeId::default();
        id.0.insert(("nvme1n1".into(), 1), Ok(id_ctrl_ebs("sdf")));
        id.0.insert(("nvme2n1".into(), 1), Ok(id_ctrl_ebs("/dev/sdf")));
        match find_in(&s, &Selector::DeviceName("sdf".into()), &id) {
            Err(E::Ambiguous { matches, .. }) => assert_eq!(matches, "nvme1n1, nvme2n1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn identify_parsing() {
        assert_eq!(ebs_device_name(&id_ctrl_ebs("sdf")).as_deref(), Some("sdf"));
        assert_eq!(
            ebs_device_name(&id_ctrl_ebs("/dev/xvdb")).as_deref(),
            Some("xvdb")
        );
        assert_eq!(ebs_device_name(&vec![0u8; 4096]), None);
        assert_eq!(ebs_device_name(&[0u8; 100]), None);
        let g = |j: &str| gce_device_name(&id_ns_gce(j));
        assert_eq!(
            g(r#"{"device_name":"d-1","disk_type":"PERSISTENT"}"#).as_deref(),
            Some("d-1")
        );
        assert_eq!(g(r#"{"disk_type":"PERSISTENT"}"#), None);
        assert_eq!(g(r#"{"device_name":""}"#), None);
        assert_eq!(g(r#"{"device_name":7}"#), None);
        assert_eq!(g("not json"), None);
        assert_eq!(gce_device_name(&vec![0u8; 4096]), None);
    }

    #[test]
    fn boot_disk_through_device_mapper() {
        let mut s = node("boot");
        s.disk("vdb", &[]);
        assert_eq!(root_devnum(ROOT_MOUNTINFO).as_deref(), Some("254:0"));
        assert_eq!(root_devnum("23 22 0:5 / /proc rw - proc proc rw\n"), None);
        assert_eq!(boot_disks(&s.block(), "254:0").unwrap(), ["vda"]);
        // Root directly on a partition, or on a whole disk.
        let p = trimmed(&s.block().join("vda1/dev")).unwrap();
        assert_eq!(boot_disks(&s.block(), &p).unwrap(), ["vda"]);
        let d = trimmed(&s.block().join("vdb/dev")).unwrap();
        assert_eq!(boot_disks(&s.block(), &d).unwrap(), ["vdb"]);
        // A root on no block device of this tree: the boot disk is unknown.
        let e = boot_disks(&s.block(), "0:2").unwrap_err().to_string();
        assert!(e.contains("no block device 0:2"), "{e}");
    }

    #[test]
    fn only_data_disk() {
        let mut s = node("only-one");
        s.disk("sda", &[("device/vpd_pg80", &pg80("x"))]);
        let f = find_in(&s, &Selector::OnlyDataDisk, &FakeId::default()).unwrap();
        assert_eq!(f.device, Path::new("/dev/sda"));
        assert_eq!(f.how, "the only disk besides the boot disk vda");
        // On NVMe, the boot disk an NVMe disk too (AWS, GCE C3).
        let mut s = Sys::new("only-nvme");
        s.disk("nvme0n1", &[("device/serial", b"boot\n")]);
        s.partition("nvme0n1", "nvme0n1p1");
        s.partition("nvme0n1", "nvme0n1p2");
        s.partition("nvme0n1", "nvme0n1p3");
        s.dm("dm-0", "254:0", &["nvme0n1p2", "nvme0n1p3"]);
        s.disk("nvme1n1", &[("device/serial", b"data\n")]);
        let f = find_in(&s, &Selector::OnlyDataDisk, &FakeId::default()).unwrap();
        assert_eq!(f.name, "nvme1n1");
    }

    #[test]
    fn only_data_disk_refusals() {
        let id = FakeId::default();
        // None: every whole disk is named, the boot disk marked.
        let s = node("only-none");
        let e = find_in(&s, &Selector::OnlyDataDisk, &id).unwrap_err();
        assert!(matches!(e, E::NotFound { .. }), "{e}");
        let e = e.to_string();
        assert!(e.contains("no disk matches rule only-data-disk"), "{e}");
        assert!(
            e.contains("vda (virtio-blk no serial partitions vda1,vda2) [boot disk]"),
            "{e}"
        );
        // Two: both named.
        let mut s = node("only-two");
        s.disk("vdb", &[("serial", b"a\n")]);
        s.disk("nvme0n1", &[("device/serial", b"b\n")]);
        let e = find_in(&s, &Selector::OnlyDataDisk, &id).unwrap_err();
        match &e {
            E::Ambiguous { matches, .. } => assert_eq!(matches, "nvme0n1, vdb"),
            other => panic!("{other}"),
        }
        // One, but with partitions, or held by something: refused.
        let mut s = node("only-partitioned");
        s.disk("vdb", &[]);
        s.partition("vdb", "vdb1");
        let e = find_in(&s, &Selector::OnlyDataDisk, &id)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("only data disk vdb (virtio-blk no serial partitions vdb1)"),
            "{e}"
        );
        let mut s = node("only-held");
        s.disk("vdb", &[]);
        s.dm("dm-1", "254:1", &["vdb"]);
        s.hold("vdb", "dm-1");
        let e = find_in(&s, &Selector::OnlyDataDisk, &id)
            .unwrap_err()
            .to_string();
        assert!(e.contains("held by dm-1"), "{e}");
        // The boot disk cannot be told: nothing is selected, even with one other disk.
        let mut s = node("only-no-root");
        s.disk("vdb", &[]);
        let mi = s.mountinfo("1 0 0:2 / / rw - rootfs rootfs rw\n");
        let e = find(
            &s.block(),
            &mi,
            &Selector::OnlyDataDisk,
            Duration::ZERO,
            Duration::ZERO,
            &id,
        )
        .unwrap_err();
        assert!(matches!(e, E::BootDisk(_)), "{e}");
        let mi = s.mountinfo("23 22 0:5 / /proc rw - proc proc rw\n");
        let e = find(
            &s.block(),
            &mi,
            &Selector::OnlyDataDisk,
            Duration::ZERO,
            Duration::ZERO,
            &id,
        )
        .unwrap_err();
        assert!(e.to_string().contains("nothing is mounted on /"), "{e}");
    }

    #[test]
    fn waits_for_the_disk_and_settles() {
        let mut s = node("wait");
        let block = s.block();
        let mi = s.mountinfo(ROOT_MOUNTINFO);
        // The disk appears after 300 ms: found within the timeout.
        std::thread::scope(|sc| {
            sc.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                s.disk("vdb", &[("serial", b"late\n")]);
            });
            let t = Instant::now();
            let f = find(
                &block,
                &mi,
                &serial("late"),
                Duration::from_secs(5),
                Duration::ZERO,
                &FakeId::default(),
            )
            .unwrap();
            assert_eq!(f.name, "vdb");
            assert!(t.elapsed() < Duration::from_secs(3));
        });
        // only-data-disk: a second disk appearing during the settle time is seen, and refused.
        let mut s = node("settle");
        s.disk("vdb", &[]);
        let block = s.block();
        let mi = s.mountinfo(ROOT_MOUNTINFO);
        std::thread::scope(|sc| {
            sc.spawn(|| {
                std::thread::sleep(Duration::from_millis(300));
                s.disk("vdc", &[]);
            });
            let r = find(
                &block,
                &mi,
                &Selector::OnlyDataDisk,
                Duration::from_secs(5),
                Duration::from_secs(1),
                &FakeId::default(),
            );
            assert!(matches!(r, Err(E::Ambiguous { .. })), "{r:?}");
        });
        // Settled: the one candidate is used after the settle time.
        let mut s = node("settled");
        s.disk("vdb", &[]);
        let t = Instant::now();
        let f = find(
            &s.block(),
            &s.mountinfo(ROOT_MOUNTINFO),
            &Selector::OnlyDataDisk,
            Duration::from_secs(5),
            Duration::from_millis(300),
            &FakeId::default(),
        )
        .unwrap();
        assert_eq!(f.name, "vdb");
        assert!(t.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn admin_cmd_layout() {
        assert_eq!(std::mem::size_of::<NvmeAdminCmd>(), 72);
        assert_eq!(
            nix::request_code_readwrite!(b'N', 0x41, std::mem::size_of::<NvmeAdminCmd>()),
            0xC048_4E41
        );
    }

    #[test]
    fn values_are_checked() {
        assert!(check_value("serial", "nacre-state").is_ok());
        assert!(check_value("serial", "a b").is_ok());
        assert!(check_value("serial", "").is_err());
        assert!(check_value("serial", " a").is_err());
        assert!(check_value("serial", "a\n").is_err());
        assert!(check_value("serial", "é").is_err());
        assert!(check_value("serial", &"x".repeat(129)).is_err());
    }
}
