//! Replay and decoding of real firmware logs (OVMF 2022.11 + systemd-stub 252 + Linux 6.1).

mod common;

use common::{log, log_bytes, pcrs, FIXTURES};
use nacre_eventlog::decode::variable::VariableContents;
use nacre_eventlog::decode::{guid, EventData};
use nacre_eventlog::{replay, Event, EventLog, EventType, HashAlg};

fn on_pcr(log: &EventLog, pcr: u32) -> Vec<&Event> {
    log.events.iter().filter(|e| e.pcr == pcr).collect()
}

fn text(e: &Event) -> String {
    match e.decode() {
        EventData::Text { text, .. } => text,
        other => panic!("expected text, got {other:?}"),
    }
}

fn sha256(data: &[u8]) -> Vec<u8> {
    HashAlg::Sha256.hash(data).unwrap()
}

#[test]
fn replay_reproduces_the_guest_pcrs() {
    for name in FIXTURES {
        let log = log(name);
        assert_eq!(log.banks(), &[HashAlg::Sha256], "{name}");
        let banks = replay(&log, &[]).unwrap();
        let bank = &banks[0];
        for (pcr, want) in pcrs(name) {
            // PCR 10 holds IMA's boot aggregate, which is not in the firmware log. Every other
            // PCR must match, including the untouched ones (zeros, and all ones for 17-22).
            if pcr == 10 {
                continue;
            }
            assert_eq!(
                hex::encode(bank.get(pcr).unwrap()),
                hex::encode(&want),
                "{name}: PCR {pcr}"
            );
        }
    }
}

#[test]
fn serializer_reproduces_the_files_byte_for_byte() {
    for name in FIXTURES {
        let bytes = log_bytes(name);
        let log = log(name);
        assert_eq!(log.padding, 0);
        assert_eq!(log.to_bytes().unwrap(), bytes, "{name}");
        let last = log.events.last().unwrap();
        assert_eq!(last.offset + last.encoded_len(), bytes.len());
    }
}

#[test]
fn every_fixture_event_decodes() {
    for name in FIXTURES {
        let log = log(name);
        assert!(matches!(log.header_event().decode(), EventData::SpecId(_)));
        for e in &log.events {
            let d = e.decode();
            assert!(
                !matches!(d, EventData::Raw { .. }),
                "{name}: {} at {} did not decode: {d}",
                e.event_type,
                e.offset
            );
        }
    }
}

#[test]
fn pcr0_pcr5_and_separators() {
    for name in FIXTURES {
        let log = log(name);
        let p0 = on_pcr(&log, 0);
        assert_eq!(p0[0].event_type, EventType::SCrtmVersion);
        assert_eq!(
            text(p0[0]),
            "",
            "OVMF's S-CRTM version is an empty UTF-16 string"
        );
        assert_eq!(p0[1].event_type, EventType::EfiPlatformFirmwareBlob);
        assert_eq!(p0[1].decode().to_string(), "base 0x820000 length 0xe0000");
        for pcr in 0..=7 {
            let seps: Vec<_> = on_pcr(&log, pcr)
                .into_iter()
                .filter(|e| e.event_type == EventType::Separator)
                .collect();
            assert_eq!(seps.len(), 1, "{name}: PCR {pcr}");
            assert_eq!(seps[0].decode(), EventData::Separator(0));
            assert_eq!(seps[0].digest(HashAlg::Sha256).unwrap(), sha256(&[0; 4]));
        }
        let p5: Vec<String> = on_pcr(&log, 5)
            .into_iter()
            .filter(|e| e.event_type == EventType::EfiAction)
            .map(text)
            .collect();
        assert_eq!(
            p5,
            [
                "Exit Boot Services Invocation",
                "Exit Boot Services Returned with Success"
            ]
        );
        assert!(log
            .events
            .iter()
            .all(|e| e.event_type != EventType::EfiGptEvent));
    }
}

#[test]
fn pcr7_secure_boot_policy() {
    for name in FIXTURES {
        let log = log(name);
        let secure = name == "sb-custom";
        let p7 = on_pcr(&log, 7);
        let vars: Vec<_> = p7
            .iter()
            .filter(|e| e.event_type == EventType::EfiVariableDriverConfig)
            .map(|e| match e.decode() {
                EventData::Variable(v) => v,
                other => panic!("{other:?}"),
            })
            .collect();
        let names: Vec<&str> = vars.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(names, ["SecureBoot", "PK", "KEK", "db", "dbx"], "{name}");
        assert_eq!(vars[0].guid, guid::EFI_GLOBAL_VARIABLE);
        assert_eq!(vars[3].guid, guid::EFI_IMAGE_SECURITY_DATABASE);
        assert_eq!(
            vars[0].contents,
            VariableContents::Bytes(vec![u8::from(secure)])
        );
        // The driver-config events come first, then the separator, then (Secure Boot only)
        // the authority that verified the UKI.
        let types: Vec<EventType> = p7.iter().map(|e| e.event_type).collect();
        let mut want = vec![EventType::EfiVariableDriverConfig; 5];
        want.push(EventType::Separator);
        if secure {
            want.push(EventType::EfiVariableAuthority);
        }
        assert_eq!(types, want, "{name}");

        if !secure {
            for v in &vars[1..] {
                assert_eq!(
                    v.contents,
                    VariableContents::SignatureLists(vec![]),
                    "{}",
                    v.name
                );
            }
            continue;
        }
        for v in &vars[1..4] {
            let VariableContents::SignatureLists(lists) = &v.contents else {
                panic!("{v}")
            };
            assert_eq!(lists.len(), 1);
            assert_eq!(
                (lists[0].sig_type, lists[0].count),
                (guid::EFI_CERT_X509, 1)
            );
        }
        let VariableContents::SignatureLists(dbx) = &vars[4].contents else {
            panic!()
        };
        assert_eq!((dbx[0].sig_type, dbx[0].count), (guid::EFI_CERT_SHA256, 1));

        // The authority event carries exactly the db entry (owner + certificate).
        let auth = p7.last().unwrap();
        let EventData::Variable(a) = auth.decode() else {
            panic!()
        };
        assert_eq!(
            (a.name.as_str(), a.guid),
            ("db", guid::EFI_IMAGE_SECURITY_DATABASE)
        );
        let VariableContents::SignatureData { owner, data } = &a.contents else {
            panic!("{a}")
        };
        let db_event = p7[3];
        let entry = [owner.0.as_slice(), data].concat();
        assert!(
            db_event.data.ends_with(&entry),
            "db's only entry is the authority"
        );
    }
}

#[test]
fn pcr4_boot_applications() {
    for name in FIXTURES {
        let log = log(name);
        let p4 = on_pcr(&log, 4);
        assert_eq!(p4[0].event_type, EventType::EfiAction);
        assert_eq!(text(p4[0]), "Calling EFI Application from Boot Option");
        assert_eq!(p4[1].event_type, EventType::Separator);
        let apps: Vec<String> = p4[2..]
            .iter()
            .map(|e| match e.decode() {
                EventData::ImageLoad(i) => i.device_path,
                other => panic!("{other:?}"),
            })
            .collect();
        let uki = r"PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x0,0xFFFF,0x0)/\EFI\BOOT\BOOTX64.EFI";
        if name == "sb-custom" {
            // With Secure Boot the 252 stub's kernel load is not measured again.
            assert_eq!(apps, [uki]);
        } else {
            assert_eq!(
                apps,
                [uki, "VenMedia(55c5d1f8-04cd-46b5-8a20-e56cbb3052d0)"]
            );
        }
    }
    // The same kernel is inside both UKIs (unsigned in plain/extra).
    assert_eq!(
        on_pcr(&log("plain"), 4)[3].digests,
        on_pcr(&log("extra"), 4)[3].digests
    );
}

#[test]
fn pcr9_linux_efi_stub_tags() {
    for name in FIXTURES {
        let log = log(name);
        let tags: Vec<(u32, Vec<u8>)> = on_pcr(&log, 9)
            .into_iter()
            .map(|e| match e.decode() {
                EventData::Tagged { id, data } => (id, data),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(
            tags,
            [
                (0x8F3B_22ED, b"LOADED_IMAGE::LoadOptions\0".to_vec()),
                (0x8F3B_22EC, b"Linux initrd\0".to_vec())
            ],
            "{name}"
        );
    }
}

#[test]
fn pcr11_to_13_systemd_stub() {
    for name in FIXTURES {
        let log = log(name);
        let p11 = on_pcr(&log, 11);
        let texts: Vec<String> = p11.iter().map(|e| text(e)).collect();
        assert_eq!(
            texts,
            [
                ".linux", ".linux", ".osrel", ".osrel", ".cmdline", ".cmdline", ".initrd",
                ".initrd"
            ]
        );
        // Each section: first sha256(name + NUL), then the section's contents.
        for pair in p11.chunks(2) {
            let name_nul = [text(pair[0]).as_bytes(), b"\0"].concat();
            assert_eq!(pair[0].digest(HashAlg::Sha256).unwrap(), sha256(&name_nul));
            assert_ne!(pair[1].digest(HashAlg::Sha256).unwrap(), sha256(&name_nul));
        }
        let p12: Vec<String> = on_pcr(&log, 12).into_iter().map(text).collect();
        let p13: Vec<String> = on_pcr(&log, 13).into_iter().map(text).collect();
        if name == "extra" {
            assert_eq!(p12, ["Credentials initrd", "Global credentials initrd"]);
            assert_eq!(p13, ["System extension initrd"]);
        } else {
            assert!(p12.is_empty() && p13.is_empty(), "{name}");
        }
        for e in on_pcr(&log, 11).into_iter().chain(on_pcr(&log, 12)) {
            assert!(matches!(e.decode(), EventData::Text { utf16: true, .. }));
        }
    }
    // Signing does not touch the sections: PCR 11 is the same in all three boots.
    let p11: Vec<Vec<u8>> = FIXTURES.iter().map(|n| pcrs(n)[&11].clone()).collect();
    assert!(p11.iter().all(|v| *v == p11[0]));
}

#[test]
fn pcr0_depends_on_the_firmware_file() {
    let [plain, extra, sb] = FIXTURES.map(|n| pcrs(n)[&0].clone());
    assert_eq!(plain, extra);
    assert_ne!(plain, sb);
}
