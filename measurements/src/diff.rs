//! Event-by-event comparison of a prediction with a real event log, so a mismatch is explained
//! by the event that differs (a firmware update, a changed command line, a different stub), not
//! by two opaque PCR values.

use crate::predict::{self, Event as Predicted};
use nacre_eventlog::alg::HashAlg;
use nacre_eventlog::tcg::{Event as Logged, EventType};
use serde::Serialize;
use std::fmt;

/// An event as it was logged, decoded for a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Observed {
    pub pcr: u32,
    /// Byte offset in the firmware log, or `None` for a runtime (CEL) record.
    pub offset: Option<usize>,
    #[serde(rename = "type", serialize_with = "type_name")]
    pub event_type: EventType,
    #[serde(with = "hex::serde")]
    pub digest: Vec<u8>,
    pub description: String,
}

fn type_name<S: serde::Serializer>(t: &EventType, s: S) -> Result<S::Ok, S::Error> {
    predict::event_type_name::serialize(t, s)
}

impl Observed {
    /// From a firmware log event; `None` if the log has no digest in this bank.
    pub fn from_log(e: &Logged, alg: HashAlg) -> Option<Self> {
        Some(Observed {
            pcr: e.pcr,
            offset: Some(e.offset),
            event_type: e.event_type,
            digest: e.digest(alg)?.to_vec(),
            description: e.decode().to_string(),
        })
    }
}

impl Observed {
    /// From a record of nacre-init's runtime log (CEL-JSON). Runtime records carry no TCG
    /// event type; predictions give nacre-init's events EV_IPL, so they are read as such.
    pub fn from_cel(r: &nacre_eventlog::CelRecord, alg: HashAlg) -> Option<Self> {
        Some(Observed {
            pcr: r.pcr,
            offset: None,
            event_type: EventType::Ipl,
            digest: r.digest(alg)?.to_vec(),
            description: format!(
                "runtime #{} {}: {}",
                r.recnum, r.content.event_type, r.content.string
            ),
        })
    }
}

/// The first place where a PCR's predicted and logged events part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub pcr: u32,
    /// Position among this PCR's events (0-based).
    pub index: usize,
    pub predicted: Option<Predicted>,
    pub observed: Option<Observed>,
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "PCR {} differs at its event #{}:", self.pcr, self.index)?;
        match &self.predicted {
            Some(p) => writeln!(
                f,
                "  predicted: {} {} [{}] {}",
                type_label(p.event_type),
                hex::encode(&p.digest),
                serde_json::to_value(p.origin)
                    .ok()
                    .and_then(|v| v.as_str().map(String::from))
                    .unwrap_or_default(),
                p.description
            )?,
            None => writeln!(f, "  predicted: (no more events)")?,
        }
        match &self.observed {
            Some(o) => write!(
                f,
                "  observed:  {} {} {}{}",
                type_label(o.event_type),
                hex::encode(&o.digest),
                o.offset.map(|x| format!("@{x:#x} ")).unwrap_or_default(),
                o.description
            ),
            None => write!(f, "  observed:  (no more events)"),
        }
    }
}

fn type_label(t: EventType) -> String {
    t.name()
        .map(String::from)
        .unwrap_or_else(|| format!("{:#x}", t.value()))
}

/// Compare, for each PCR in `pcrs`, the predicted events with the observed ones (EV_NO_ACTION
/// events are informational and skipped). Returns the first difference of each PCR that has one.
pub fn compare(predicted: &[Predicted], observed: &[Observed], pcrs: &[u32]) -> Vec<Difference> {
    let mut out = Vec::new();
    for &pcr in pcrs {
        let p: Vec<&Predicted> = predicted.iter().filter(|e| e.pcr == pcr).collect();
        let o: Vec<&Observed> = observed
            .iter()
            .filter(|e| e.pcr == pcr && e.event_type != EventType::NoAction)
            .collect();
        for i in 0..p.len().max(o.len()) {
            let (pe, oe) = (p.get(i), o.get(i));
            let same = matches!((pe, oe), (Some(a), Some(b)) if a.digest == b.digest && a.event_type == b.event_type);
            if !same {
                out.push(Difference {
                    pcr,
                    index: i,
                    predicted: pe.map(|e| (*e).clone()),
                    observed: oe.map(|e| (*e).clone()),
                });
                break;
            }
        }
    }
    out
}
