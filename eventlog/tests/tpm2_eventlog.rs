//! Differential test: nacre's parser and replay against tpm2-tools' `tpm2_eventlog`.
//!
//! For every fixture the event count, PCR indices, event type names, digests, variable
//! names/GUIDs and the final PCR values must agree. The tool is required: if it is missing
//! the test fails (run scripts/install-deps.sh), it never passes silently.

mod common;

use std::process::Command;

use common::{fixture_path, log, FIXTURES};
use nacre_eventlog::{replay, EventData, EventType};

#[derive(Debug, Default)]
struct ToolEvent {
    num: usize,
    pcr: u32,
    event_type: String,
    digests: Vec<(String, String)>,
    variable_guid: Option<String>,
    variable_name: Option<String>,
}

#[derive(Debug, Default)]
struct ToolOutput {
    events: Vec<ToolEvent>,
    /// (bank, pcr, hex value) from the trailing `pcrs:` section.
    pcrs: Vec<(String, u32, String)>,
}

fn unquote(s: &str) -> String {
    s.trim().trim_matches('"').trim_matches('\'').to_owned()
}

/// A line-based reader for the subset of tpm2_eventlog's YAML this test compares.
fn parse_tool_yaml(yaml: &str) -> ToolOutput {
    let mut out = ToolOutput::default();
    let mut in_pcrs = false;
    let mut bank = String::new();
    let mut pending_alg: Option<String> = None;
    for line in yaml.lines() {
        let t = line.trim();
        if line == "pcrs:" {
            in_pcrs = true;
            continue;
        }
        if in_pcrs {
            if let Some(b) = t.strip_suffix(':') {
                bank = b.to_owned();
            } else if let Some((pcr, value)) = t.split_once(':') {
                let value = value.trim().trim_start_matches("0x").to_owned();
                out.pcrs
                    .push((bank.clone(), pcr.trim().parse().unwrap(), value));
            }
            continue;
        }
        if let Some(n) = t.strip_prefix("- EventNum:") {
            out.events.push(ToolEvent {
                num: n.trim().parse().unwrap(),
                ..Default::default()
            });
            continue;
        }
        let Some(ev) = out.events.last_mut() else {
            continue;
        };
        if let Some(v) = t.strip_prefix("PCRIndex:") {
            ev.pcr = v.trim().parse().unwrap();
        } else if let Some(v) = t.strip_prefix("EventType:") {
            ev.event_type = v.trim().to_owned();
        } else if let Some(v) = t.strip_prefix("- AlgorithmId:") {
            pending_alg = Some(v.trim().to_owned());
        } else if let Some(v) = t.strip_prefix("Digest:") {
            // Event 0 (the SHA-1 header) has a bare Digest line with no AlgorithmId.
            let alg = pending_alg.take().unwrap_or_else(|| "sha1".to_owned());
            ev.digests.push((alg, unquote(v)));
        } else if let Some(v) = t.strip_prefix("VariableName:") {
            ev.variable_guid = Some(v.trim().to_owned());
        } else if let Some(v) = t.strip_prefix("UnicodeName:") {
            ev.variable_name = Some(v.trim().to_owned());
        }
    }
    out
}

fn run_tool(name: &str) -> ToolOutput {
    let path = fixture_path(name, "eventlog.bin");
    let output = match Command::new("tpm2_eventlog").arg(&path).output() {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run tpm2_eventlog ({e}): this differential test needs tpm2-tools; \
             run scripts/install-deps.sh (or apt-get install tpm2-tools)"
        ),
    };
    assert!(
        output.status.success(),
        "tpm2_eventlog failed on {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    parse_tool_yaml(&String::from_utf8(output.stdout).unwrap())
}

#[test]
fn agrees_with_tpm2_eventlog() {
    for name in FIXTURES {
        let tool = run_tool(name);
        let log = log(name);

        let mut ours = vec![log.header_event()];
        ours.extend(log.events.iter().cloned());
        assert_eq!(tool.events.len(), ours.len(), "{name}: event count");
        assert!(tool.events.len() > 30);

        for (t, e) in tool.events.iter().zip(&ours) {
            let at = format!("{name} event {}", t.num);
            assert_eq!(t.pcr, e.pcr, "{at}: PCR");
            assert_eq!(t.event_type, e.event_type.to_string(), "{at}: type");
            let digests: Vec<(String, String)> = e
                .digests
                .iter()
                .map(|d| (d.alg.name().to_owned(), hex::encode(&d.value)))
                .collect();
            assert_eq!(t.digests, digests, "{at}: digests");
            if let EventData::Variable(v) = e.decode() {
                assert_eq!(
                    t.variable_guid.as_deref(),
                    Some(v.guid.to_string().as_str()),
                    "{at}"
                );
                assert_eq!(t.variable_name.as_deref(), Some(v.name.as_str()), "{at}");
            } else {
                assert_eq!(
                    t.variable_name, None,
                    "{at}: tool decoded a variable, we did not"
                );
            }
        }

        // The PCRs the tool prints: exactly those the log extends, with our replayed values.
        let banks = replay(&log, &[]).unwrap();
        let mut extended: Vec<u32> = log
            .events
            .iter()
            .filter(|e| e.event_type != EventType::NoAction)
            .map(|e| e.pcr)
            .collect();
        extended.sort_unstable();
        extended.dedup();
        let tool_pcrs: Vec<u32> = tool.pcrs.iter().map(|(_, p, _)| *p).collect();
        assert_eq!(tool_pcrs, extended, "{name}: PCRs listed");
        for (bank, pcr, value) in &tool.pcrs {
            let ours = banks.iter().find(|b| b.alg.name() == bank).unwrap();
            assert_eq!(
                hex::encode(ours.get(*pcr).unwrap()),
                *value,
                "{name}: PCR {pcr}"
            );
        }
    }
}
