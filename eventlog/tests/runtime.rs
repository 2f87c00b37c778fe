//! nacre's runtime events against systemd 252's `systemd-measure calculate`, and the runtime
//! CEL log replayed on top of a real firmware log.

mod common;

use std::process::Command;

use common::{log, log_bytes};
use nacre_eventlog::cel::{self, CelWriter};
use nacre_eventlog::{pcr11_after, replay, HashAlg, PcrBank, Phase, RuntimeEvent};

const BANKS: [HashAlg; 4] = [
    HashAlg::Sha1,
    HashAlg::Sha256,
    HashAlg::Sha384,
    HashAlg::Sha512,
];

/// What systemd-stub 252 extends into PCR 11 for a UKI with these sections, in this order:
/// `H(name NUL)` then `H(contents)` per section.
fn stub_pcr11(sections: &[(&str, &[u8])], alg: HashAlg) -> Vec<u8> {
    let mut bank = PcrBank::new(alg);
    for (name, contents) in sections {
        let name_nul = [name.as_bytes(), b"\0"].concat();
        bank.extend(11, &alg.hash(&name_nul).unwrap()).unwrap();
        bank.extend(11, &alg.hash(contents).unwrap()).unwrap();
    }
    bank.get(11).unwrap().to_vec()
}

/// Recorded from `/usr/lib/systemd/systemd-measure calculate --linux=linux --osrel=osrel
/// --cmdline=cmdline --initrd=initrd --phase=P --bank=sha1 --bank=sha256 --bank=sha384
/// --bank=sha512` (systemd 252.39-1~deb12u2), with files containing "k\n", "o\n", "c\n",
/// "i\n", for P = enter-initrd, enter-initrd:leave-initrd, ...:sysinit, ...:ready.
const SYSTEMD_252: [[&str; 4]; 4] = [
    [
        "7159ea9827723b08588797575de77094856675f4",
        "1fb544c89f4efe660cc516b980653dd35275affe2e2bee22e83f3ba4aa45739b",
        "7caf46d3e52868a25ea95fc4220a979ff5573e2354c0c6d06b438b32b84d3d1fb8da7afd816bcab21b47647b114c225d",
        "78246d34edcbfa3acd3eef783e595463ed6be4f1768a9a3f347773ac8135591b971e27dddf50ea716b8ec8293bbd4a91ff1fda3f98cfb944ecaa38226110b36a",
    ],
    [
        "5e16ba5fd149fc12b2bede4fa402ee621f1023d6",
        "c7a83be351b98d80e69b7f30fd47dc8ecb19c30c36205fdd4ef8e22152b6e94a",
        "64c97d96c8fb12caadf9ea5e498dc30fd5b9b56505639e5433e4ac207936f75948f6c2e027edac81237de72c2cf2595c",
        "b47dc0ce33826d1bc3e10b1a01749eb95ffa8b426540ebc453b84ed0c229d163c787a8b49c22228eda93a6ea4c0fdc858fd08ad8c74f2eb69d3fd371c39f407e",
    ],
    [
        "5c92d9f81a55cdd6b119afa6c237de8114fc7e56",
        "4a5c364e677ccdd76bcbb0c991bd46b94dc953652f40561049b3ac6141ec6e4e",
        "0ccbc9677a74325de73a1954392b21fe53a7c018206ecfe949ab3f1807e520c022d2cadc483de1a72734d3f5caf437c3",
        "6a5974fad6acc0314d82fbf92e339e29eb6c72b1dda3aabc965b7ed931beb6e440bca6a279b8d2c7456c37d2f5aa20ae931ea293d7b23dc1ced7f06ed56997a4",
    ],
    [
        "4a12b436dc6681930b29a2abb68504fc6f181b84",
        "a14534d174a72c09c6bc72a38faf2e4fb805877c46889f85c4adc282ea058455",
        "f4688c6b81e0fa7b29330b793222a9c3ef56c2e05e18bd09340007b620605ce44a4a8d122f677081b604809a79cfb71f",
        "af2f894cd3d711fdd89389cead9a902f6ddd882da413ff2231ec7e8d308b763fc89e428dc93329d4e994f345a62a33f1a76a71ae260b81e05ae6ce22e3b65ef1",
    ],
];

#[test]
fn phases_match_recorded_systemd_measure() {
    let sections: [(&str, &[u8]); 4] = [
        (".linux", b"k\n"),
        (".osrel", b"o\n"),
        (".cmdline", b"c\n"),
        (".initrd", b"i\n"),
    ];
    for (phase, want) in Phase::ALL.into_iter().zip(SYSTEMD_252) {
        for (alg, want) in BANKS.into_iter().zip(want) {
            let raw = stub_pcr11(&sections, alg);
            let got = pcr11_after(&raw, phase, alg).unwrap();
            assert_eq!(hex::encode(got), want, "{phase} {alg}");
        }
    }
}

/// The same comparison against the systemd-measure on this machine, with other section
/// contents (slices of a real event log). Fails if the tool is missing.
#[test]
fn phases_match_live_systemd_measure() {
    let tool = "/usr/lib/systemd/systemd-measure";
    let dir = std::env::temp_dir().join(format!("nacre-measure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let data = log_bytes("extra");
    let sections: Vec<(&str, &[u8], &str)> = vec![
        (".linux", &data[..1000], "linux"),
        (".osrel", &data[1000..1100], "osrel"),
        (".cmdline", &data[1100..1101], "cmdline"),
        (".initrd", &data[1101..], "initrd"),
    ];
    let mut args = Vec::new();
    for (_, contents, file) in &sections {
        let p = dir.join(file);
        std::fs::write(&p, contents).unwrap();
        args.push(format!("--{file}={}", p.display()));
    }
    let pairs: Vec<(&str, &[u8])> = sections.iter().map(|(n, c, _)| (*n, *c)).collect();
    for (i, phase) in Phase::ALL.into_iter().enumerate() {
        let path: Vec<&str> = Phase::ALL[..=i].iter().map(|p| p.word()).collect();
        let out = Command::new(tool)
            .arg("calculate")
            .args(&args)
            .arg(format!("--phase={}", path.join(":")))
            .args(BANKS.map(|b| format!("--bank={b}")))
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run {tool} ({e}): run scripts/install-deps.sh (package systemd)")
            });
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let stdout = String::from_utf8(out.stdout).unwrap();
        for alg in BANKS {
            let want = stdout
                .lines()
                .find_map(|l| l.strip_prefix(&format!("11:{alg}=")))
                .unwrap_or_else(|| panic!("no {alg} line in {stdout}"));
            let got = pcr11_after(&stub_pcr11(&pairs, alg), phase, alg).unwrap();
            assert_eq!(hex::encode(got), want, "{phase} {alg}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The fuzz seed was written independently (Python's hashlib): nacre must accept it and agree
/// on every digest.
#[test]
fn independently_written_cel_log_verifies() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/cel/nacre.jsonl");
    let records = cel::read(&path).unwrap();
    let events: Vec<RuntimeEvent> = records
        .iter()
        .map(|r| RuntimeEvent::from_cel(r).unwrap())
        .collect();
    let mut want: Vec<RuntimeEvent> = Phase::ALL.map(RuntimeEvent::Phase).to_vec();
    want.push(RuntimeEvent::ClusterId([0xab; 32]));
    assert_eq!(events, want);
    // nacre writes the same bytes for the same records.
    let written: Vec<u8> = records.iter().flat_map(|r| r.to_line()).collect();
    assert_eq!(written, std::fs::read(&path).unwrap());
}

#[test]
fn runtime_log_replays_on_top_of_the_firmware_log() {
    let fw = log("plain");
    let fw_pcrs = replay(&fw, &[]).unwrap();
    let raw11 = fw_pcrs[0].get(11).unwrap().to_vec();
    assert_eq!(
        fw_pcrs[0].get(15).unwrap(),
        [0; 32],
        "a node that never joined: PCR 15 = 0"
    );

    let dir = std::env::temp_dir().join(format!("nacre-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tpm2-measure.log");
    let _ = std::fs::remove_file(&path);
    let id = [7u8; 32];
    let mut w = CelWriter::open(&path).unwrap();
    let events = Phase::ALL
        .map(RuntimeEvent::Phase)
        .into_iter()
        .chain([RuntimeEvent::ClusterId(id)]);
    for ev in events {
        let rec = ev.to_cel(w.next_recnum(), &[HashAlg::Sha256]).unwrap();
        w.append(&rec).unwrap();
    }
    let records = cel::read(&path).unwrap();
    assert_eq!(records.len(), 5);
    for r in &records {
        RuntimeEvent::from_cel(r).unwrap();
    }

    let banks = replay(&fw, &records).unwrap();
    let b = &banks[0];
    assert_eq!(
        b.get(11).unwrap(),
        pcr11_after(&raw11, Phase::Ready, HashAlg::Sha256).unwrap()
    );
    let content = format!("nacre.cluster-id={}", "07".repeat(32));
    let pcr15 = HashAlg::Sha256
        .extend(&[0; 32], &HashAlg::Sha256.hash(content.as_bytes()).unwrap())
        .unwrap();
    assert_eq!(b.get(15).unwrap(), pcr15);
    for pcr in (0..24).filter(|p| ![11, 15].contains(p)) {
        assert_eq!(b.get(pcr), fw_pcrs[0].get(pcr));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
