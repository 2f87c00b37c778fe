//! GPT reading checked against disks partitioned by util-linux (sfdisk for 512-byte sectors,
//! fdisk -b 4096 for 4096-byte ones), with a FAT ESP written in by dd, as image builds do.

mod common;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::{bytes, dd_into, mkfs, mtool, run, tool, write_at};
use nacre_diskimage::gpt::{types, BackupStatus, Gpt, GptError, HeaderProblem};
use nacre_diskimage::{open_esp, read_gpt, EspError, Guid};

const ESP: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
const ROOT: &str = "4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709";
const LINUX: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

fn with_stdin(mut cmd: Command, input: &str) {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {cmd:?}: {e}; run /work/main/scripts/install-deps.sh")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A sparse disk image of `size` bytes partitioned by `sfdisk` from `script`.
fn sfdisk_disk(dir: &Path, size: u64, script: &str) -> PathBuf {
    let img = dir.join("disk.img");
    File::create(&img).unwrap().set_len(size).unwrap();
    let mut c = Command::new(tool("sfdisk"));
    c.arg("-q").arg(&img);
    with_stdin(c, &format!("label: gpt\n{script}"));
    img
}

const LAYOUT: &str =
    "start=2048, size=40M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=\"ESP\"\n\
     size=8M, type=4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709, name=\"root-x86-64\", attrs=\"GUID:60\"\n\
     type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=\"data ünï\"\n";

fn disk512(dir: &Path) -> PathBuf {
    sfdisk_disk(dir, 64 << 20, LAYOUT)
}

fn gpt_of(img: &Path) -> Result<Gpt, GptError> {
    let mut f = File::open(img).unwrap();
    let len = f.metadata().unwrap().len();
    Gpt::read(&mut f, len)
}

/// Formats a file system of the partition's size, fills it and dd's it into place.
fn install_esp(dir: &Path, disk: &Path, offset: u64, len: u64, sector: u32) -> Vec<u8> {
    let fs = dir.join("esp.img");
    mkfs(&fs, 32, sector, len, &[]);
    mtool(
        "mmd",
        &fs,
        &["::/EFI", "::/EFI/BOOT", "::/EFI/BOOT/BOOTX64.EFI.extra.d"],
    );
    let uki = bytes(42, 1_500_000);
    let src = dir.join("uki");
    std::fs::write(&src, &uki).unwrap();
    mtool(
        "mcopy",
        &fs,
        &[src.to_str().unwrap(), "::/EFI/BOOT/BOOTX64.EFI"],
    );
    std::fs::write(&src, b"cred").unwrap();
    mtool(
        "mcopy",
        &fs,
        &[
            src.to_str().unwrap(),
            "::/EFI/BOOT/BOOTX64.EFI.extra.d/a.cred",
        ],
    );
    dd_into(&fs, disk, offset);
    uki
}

#[test]
fn sfdisk_512_matches_sfdisk_json_and_esp_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let img = disk512(tmp.path());
    let gpt = read_gpt(&img).unwrap();

    let out = run(Command::new(tool("sfdisk")).arg("--json").arg(&img));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let t = &json["partitiontable"];
    assert_eq!(gpt.sector_size, t["sectorsize"].as_u64().unwrap());
    assert_eq!(gpt.disk_guid.to_string(), t["id"].as_str().unwrap());
    assert_eq!(gpt.first_usable_lba, t["firstlba"].as_u64().unwrap());
    assert_eq!(gpt.last_usable_lba, t["lastlba"].as_u64().unwrap());
    let parts = t["partitions"].as_array().unwrap();
    assert_eq!(gpt.partitions.len(), parts.len());
    for (p, j) in gpt.partitions.iter().zip(parts) {
        assert_eq!(p.first_lba, j["start"].as_u64().unwrap());
        assert_eq!(p.last_lba - p.first_lba + 1, j["size"].as_u64().unwrap());
        assert_eq!(p.type_guid.to_string(), j["type"].as_str().unwrap());
        assert_eq!(p.unique_guid.to_string(), j["uuid"].as_str().unwrap());
        assert_eq!(p.name, j["name"].as_str().unwrap());
    }
    let names: Vec<_> = gpt.partitions.iter().map(|p| p.type_name()).collect();
    assert_eq!(
        names,
        [Some("esp"), Some("root-x86-64"), Some("linux-generic")]
    );
    assert_eq!(gpt.partitions[1].attributes, 1 << 60);
    assert_eq!(gpt.partitions[1].index, 2);
    assert_eq!(gpt.partitions[0].byte_offset(), 1 << 20);
    assert_eq!(gpt.partitions[0].byte_len(), 40 << 20);

    let esp = &gpt.partitions[0];
    let uki = install_esp(tmp.path(), &img, esp.byte_offset(), esp.byte_len(), 512);
    let (gpt2, mut fat) = open_esp(&img).unwrap();
    assert_eq!(gpt2, gpt);
    assert_eq!(
        fat.read_file("\\EFI\\BOOT\\BOOTX64.EFI", 16 << 20).unwrap(),
        uki
    );
    assert_eq!(
        fat.read_file("/efi/boot/bootx64.efi.extra.d/A.CRED", 100)
            .unwrap(),
        b"cred"
    );
}

/// mkosi's offline systemd-repart writes 4096-byte sectors; util-linux's fdisk -b 4096 makes
/// the same kind of table on a plain file.
#[test]
fn fdisk_4096_sectors() {
    let tmp = tempfile::tempdir().unwrap();
    let img = tmp.path().join("disk4k.img");
    File::create(&img).unwrap().set_len(400 << 20).unwrap();
    let mut c = Command::new(tool("fdisk"));
    c.args(["-b", "4096"]).arg(&img);
    // g: new GPT; n 1 +300M; t 1 (EFI System); n 2 rest; x n 2: name; r; w
    with_stdin(
        c,
        "g\nn\n1\n\n+300M\nt\n1\nn\n2\n\n\nx\nn\n2\nroot part\nr\nw\n",
    );
    let gpt = read_gpt(&img).unwrap();
    assert_eq!(gpt.sector_size, 4096);

    let out = run(Command::new(tool("fdisk"))
        .args(["-b", "4096", "-l", "-o", "Start,End,Type-UUID,UUID,Name"])
        .arg(&img));
    let text = String::from_utf8(out.stdout).unwrap();
    let rows: Vec<Vec<&str>> = text
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("Start"))
        .skip(1)
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows.len(), 2, "{text}");
    for (p, row) in gpt.partitions.iter().zip(&rows) {
        assert_eq!(p.first_lba.to_string(), row[0]);
        assert_eq!(p.last_lba.to_string(), row[1]);
        assert_eq!(p.type_guid.to_string(), row[2]);
        assert_eq!(p.unique_guid.to_string(), row[3]);
        assert_eq!(p.name, row[4..].join(" "));
    }
    assert_eq!(gpt.partitions[0].type_guid, types::ESP);
    let esp = gpt.partitions[0].clone();
    let uki = install_esp(tmp.path(), &img, esp.byte_offset(), esp.byte_len(), 4096);
    let (_, mut fat) = open_esp(&img).unwrap();
    assert_eq!(fat.geometry().bytes_per_sector, 4096);
    assert_eq!(
        fat.read_file("/EFI/BOOT/BOOTX64.EFI", 16 << 20).unwrap(),
        uki
    );
}

#[test]
fn type_guids_match_util_linux() {
    let out = run(Command::new(tool("sfdisk")).args(["--label", "gpt", "--list-types"]));
    let text = String::from_utf8(out.stdout).unwrap();
    let listed = |g: &Guid| {
        text.lines().find_map(|l| {
            l.trim()
                .strip_prefix(&g.to_string())
                .map(|n| n.trim().to_string())
        })
    };
    let expect = [
        (types::ESP, "EFI System"),
        (types::XBOOTLDR, "Linux extended boot"),
        (types::ROOT_X86_64, "Linux root (x86-64)"),
        (types::ROOT_VERITY_X86_64, "Linux root verity (x86-64)"),
        (
            types::ROOT_VERITY_SIG_X86_64,
            "Linux root verity sign. (x86-64)",
        ),
        (types::USR_X86_64, "Linux /usr (x86-64)"),
        (types::USR_VERITY_X86_64, "Linux /usr verity (x86-64)"),
        (
            types::USR_VERITY_SIG_X86_64,
            "Linux /usr verity sign. (x86-64)",
        ),
        (types::VAR, "Linux variable data"),
        (types::TMP, "Linux temporary data"),
        (types::LINUX_GENERIC, "Linux filesystem"),
        (types::SWAP, "Linux swap"),
        (types::HOME, "Linux home"),
        (types::SRV, "Linux server data"),
        (types::BIOS_BOOT, "BIOS boot"),
    ];
    assert_eq!(expect.len(), types::KNOWN_TYPES.len());
    for (g, name) in expect {
        assert_eq!(listed(&g).as_deref(), Some(name), "{g}");
        assert!(types::type_name(&g).is_some());
    }
    assert_eq!(ESP.parse::<Guid>().unwrap(), types::ESP);
    assert_eq!(ROOT.parse::<Guid>().unwrap(), types::ROOT_X86_64);
    assert_eq!(LINUX.parse::<Guid>().unwrap(), types::LINUX_GENERIC);
}

fn flip(img: &Path, offset: u64) {
    let b = common::read_at(img, offset, 1);
    write_at(img, offset, &[b[0] ^ 0x01]);
}

#[test]
fn corrupt_primary_header_names_it_and_reports_backup() {
    let tmp = tempfile::tempdir().unwrap();
    let img = disk512(tmp.path());
    flip(&img, 512 + 40); // first usable LBA
    let e = gpt_of(&img).unwrap_err();
    assert!(
        matches!(
            &e,
            GptError::PrimaryCorrupt {
                problem: HeaderProblem::HeaderCrc { .. },
                backup: BackupStatus::Valid,
                backup_lba: 131071,
                ..
            }
        ),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("primary GPT header at LBA 1") && msg.contains("header CRC32"),
        "{msg}"
    );
    assert!(msg.contains("LBA 131071 is valid"), "{msg}");
    // Through the file-level API the image path is named as well.
    let e = read_gpt(&img).unwrap_err();
    assert!(e.to_string().starts_with(&img.display().to_string()), "{e}");

    // Backup broken too.
    flip(&img, (64 << 20) - 512 + 40);
    let e = gpt_of(&img).unwrap_err();
    assert!(
        matches!(
            &e,
            GptError::PrimaryCorrupt {
                backup: BackupStatus::Corrupt(HeaderProblem::HeaderCrc { .. }),
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn corrupt_entry_array() {
    let tmp = tempfile::tempdir().unwrap();
    let img = disk512(tmp.path());
    flip(&img, 1024 + 56); // name of partition 1
    let e = gpt_of(&img).unwrap_err();
    assert!(
        matches!(
            &e,
            GptError::PrimaryCorrupt {
                problem: HeaderProblem::EntriesCrc { .. },
                backup: BackupStatus::Valid,
                ..
            }
        ),
        "{e}"
    );
    assert!(
        e.to_string()
            .contains("partition entry array CRC32 mismatch"),
        "{e}"
    );
}

#[test]
fn truncated_image() {
    let tmp = tempfile::tempdir().unwrap();
    let img = disk512(tmp.path());
    File::options()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(32 << 20)
        .unwrap();
    let e = gpt_of(&img).unwrap_err();
    assert!(
        matches!(
            e,
            GptError::Truncated {
                disk_len: 0x200_0000,
                needed: 0x400_0000,
                ..
            }
        ),
        "{e}"
    );
    // Cut inside the entry array: still an error, not a panic.
    File::options()
        .write(true)
        .open(&img)
        .unwrap()
        .set_len(4096)
        .unwrap();
    let e = gpt_of(&img).unwrap_err();
    assert!(
        matches!(
            e,
            GptError::PrimaryCorrupt {
                problem: HeaderProblem::EntryArrayTooLarge { .. },
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn missing_mbr_or_signature() {
    let tmp = tempfile::tempdir().unwrap();
    let img = disk512(tmp.path());
    write_at(&img, 512, b"NOT PART");
    let e = gpt_of(&img).unwrap_err();
    assert!(
        matches!(
            e,
            GptError::NoHeader {
                backup: Some((512, 131071))
            }
        ),
        "{e}"
    );
    write_at(&img, 510, &[0, 0]);
    let e = gpt_of(&img).unwrap_err();
    assert!(matches!(e, GptError::NoProtectiveMbr { .. }), "{e}");
}

#[test]
fn esp_must_exist_once_and_hold_a_fat() {
    let tmp = tempfile::tempdir().unwrap();
    let none = sfdisk_disk(tmp.path(), 16 << 20, "type=L\n");
    assert!(matches!(open_esp(&none), Err(EspError::NoEsp { .. })));
    let two = sfdisk_disk(tmp.path(), 16 << 20, "size=4M, type=U\nsize=4M, type=U\n");
    let e = open_esp(&two).err().unwrap();
    assert!(
        matches!(&e, EspError::MultipleEsp { indices, .. } if indices == &[1, 2]),
        "{e}"
    );
    let unformatted = disk512(tmp.path());
    let e = open_esp(&unformatted).err().unwrap();
    assert!(matches!(&e, EspError::Fat { index: 1, .. }), "{e}");
    assert!(e.to_string().contains("ESP (partition 1)"), "{e}");
}
