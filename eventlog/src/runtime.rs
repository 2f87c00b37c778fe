//! The runtime events nacre's PID 1 extends: the single definition shared by the init (which
//! extends them) and the measurement predictor (which predicts the PCRs they produce).
//!
//! * **PCR 11, boot phases** — exactly what systemd-pcrphase does, so UKIs carrying a
//!   `.pcrsig` made by `systemd-measure sign`/ukify/mkosi for the phases `enter-initrd`,
//!   `:leave-initrd`, `:sysinit`, `:ready` match a nacre boot although nacre runs no systemd.
//!   Each phase extends `H(word)`: the word's UTF-8 bytes, no NUL, in every bank. This was
//!   checked against systemd 252's `systemd-measure calculate`, whose phase lines are the
//!   stub's PCR 11 followed by these extends (see the tests). When nacre extends them:
//!   - `enter-initrd`: first thing stage 1 (the initrd init) does;
//!   - `leave-initrd`: just before switching root;
//!   - `sysinit`: first thing stage 2 on the verified root does;
//!   - `ready`: just before services (the kubelet) start.
//! * **PCR 15, cluster identity** — extended once, when the node is initialized (joined or
//!   bootstrapped a cluster). Content `nacre.cluster-id=<64 lowercase hex digits>`, digest the
//!   hash of that content string. A node that never joined has PCR 15 = 0, which is how a join
//!   service tells that a node is not already part of another cluster.
//!
//! * **PCR 15, cluster configuration** — before the cluster id, once per boot: the digest of the
//!   cluster configuration the node read from outside the image (QEMU `fw_cfg`, cloud metadata;
//!   `nacre_cluster`), extended before the node acts on it. Content
//!   `nacre.cluster-config=<64 lowercase hex digits>` (SHA-256 of the configuration's bytes).
//!   A node of a release image thus shows, before it joins, which cluster it was told to join;
//!   the key service of that cluster knows its configuration and so the value.
//!
//! In every case the digest is the hash of the CEL record's `content.string`, so anyone can
//! re-check a record without knowing nacre.
//!
//! * **RTMR[3], phases and cluster identity on Intel TDX** — in a TDX guest nacre-init extends
//!   stage 2's phases (`sysinit`, `ready`) and the cluster events (configuration, id) into
//!   RTMR[3] as well (SHA-384 of the same content string, through the kernel's
//!   `/sys/devices/virtual/misc/tdx_guest/measurements/rtmr3:sha384`, Linux 6.16+). RTMR[3]
//!   starts at 48 zero bytes and an extend is `SHA-384(old || digest)`, like a PCR; the TDX
//!   module keeps it, so the host cannot reset it the way it could restart a vTPM it emulates,
//!   and root in the TD can only add to it. [`rtmr3_after`] is its replay, [`rtmr3_state`] the
//!   phase and cluster events it proves, [`cluster_rtmr3_after`] / [`member_rtmr3`] its cluster
//!   part (what PCR 15 shows).

use std::fmt;
use std::str::FromStr;

use crate::alg::{AlgError, HashAlg};
use crate::cel::{CelContent, CelDigest, CelRecord, CONTENT_TYPE_NACRE};

/// PCR extended with the boot phases.
pub const PHASE_PCR: u32 = 11;
/// PCR extended with the cluster identity.
pub const CLUSTER_ID_PCR: u32 = 15;
/// Prefix of the cluster identity content string.
pub const CLUSTER_ID_PREFIX: &str = "nacre.cluster-id=";
/// Prefix of the cluster configuration content string.
pub const CLUSTER_CONFIG_PREFIX: &str = "nacre.cluster-config=";
/// TDX runtime measurement register extended with the cluster identity (in a TDX guest).
pub const CLUSTER_ID_RTMR: usize = 3;
/// Size of an RTMR (SHA-384).
pub const RTMR_LEN: usize = 48;

/// A boot phase, in the order they happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Phase {
    /// Stage 1 started.
    EnterInitrd,
    /// Stage 1 is about to switch root.
    LeaveInitrd,
    /// Stage 2 started on the verified root.
    Sysinit,
    /// Services are about to start.
    Ready,
}

impl Phase {
    /// All phases, in boot order.
    pub const ALL: [Phase; 4] = [
        Phase::EnterInitrd,
        Phase::LeaveInitrd,
        Phase::Sysinit,
        Phase::Ready,
    ];

    /// The word extended into PCR 11 (systemd-pcrphase's word).
    pub const fn word(self) -> &'static str {
        match self {
            Phase::EnterInitrd => "enter-initrd",
            Phase::LeaveInitrd => "leave-initrd",
            Phase::Sysinit => "sysinit",
            Phase::Ready => "ready",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

impl FromStr for Phase {
    type Err = RuntimeError;
    fn from_str(s: &str) -> Result<Self, RuntimeError> {
        Phase::ALL
            .into_iter()
            .find(|p| p.word() == s)
            .ok_or_else(|| RuntimeError::UnknownPhase(s.to_owned()))
    }
}

/// An event nacre-init extends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeEvent {
    /// A boot phase, on PCR 11.
    Phase(Phase),
    /// The cluster identity, on PCR 15.
    ClusterId([u8; 32]),
    /// SHA-256 of the cluster configuration read at boot, on PCR 15 (before the cluster id).
    ClusterConfig([u8; 32]),
}

/// Why a runtime event or record is not what nacre defines.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// Hashing failed.
    #[error(transparent)]
    Alg(#[from] AlgError),
    /// A PCR value of the wrong length for its bank.
    #[error("{alg} PCR value is {found} bytes, expected {expected}")]
    PcrLength {
        /// The bank.
        alg: HashAlg,
        /// The value's length.
        found: usize,
        /// The bank's size.
        expected: usize,
    },
    /// The record is not one of nacre's.
    #[error("content_type is {0:?}, expected \"nacre\"")]
    ContentType(String),
    /// Unknown content.eventType.
    #[error("unknown nacre event type {0:?}")]
    UnknownEventType(String),
    /// Unknown phase word.
    #[error("unknown boot phase {0:?}")]
    UnknownPhase(String),
    /// Malformed cluster id content.
    #[error("cluster id content {0:?} is not \"nacre.cluster-id=\" and 64 lowercase hex digits")]
    BadClusterId(String),
    /// Malformed cluster configuration content.
    #[error("cluster configuration content {0:?} is not \"nacre.cluster-config=\" and 64 lowercase hex digits")]
    BadClusterConfig(String),
    /// The record is on the wrong PCR for its event.
    #[error("{event} belongs on PCR {expected}, record is on PCR {found}")]
    WrongPcr {
        /// The event's content.
        event: String,
        /// The event's PCR.
        expected: u32,
        /// The record's PCR.
        found: u32,
    },
    /// RTMR[3]'s phases are not nacre-init's sequence (`sysinit`, then `ready`, once each).
    #[error("RTMR[3] phases out of order: {0}")]
    PhaseOrder(String),
    /// A digest is not the hash of the content.
    #[error("{alg} digest does not match the content {content:?}")]
    DigestMismatch {
        /// The bank.
        alg: HashAlg,
        /// The content string.
        content: String,
    },
}

impl RuntimeEvent {
    /// The PCR this event extends.
    pub const fn pcr(&self) -> u32 {
        match self {
            RuntimeEvent::Phase(_) => PHASE_PCR,
            RuntimeEvent::ClusterId(_) | RuntimeEvent::ClusterConfig(_) => CLUSTER_ID_PCR,
        }
    }

    /// The CEL `content.eventType`.
    pub const fn event_type(&self) -> &'static str {
        match self {
            RuntimeEvent::Phase(_) => "phase",
            RuntimeEvent::ClusterId(_) => "cluster-id",
            RuntimeEvent::ClusterConfig(_) => "cluster-config",
        }
    }

    /// The measured string; its hash is the digest.
    pub fn content(&self) -> String {
        match self {
            RuntimeEvent::Phase(p) => p.word().to_owned(),
            RuntimeEvent::ClusterId(id) => format!("{CLUSTER_ID_PREFIX}{}", hex::encode(id)),
            RuntimeEvent::ClusterConfig(d) => {
                format!("{CLUSTER_CONFIG_PREFIX}{}", hex::encode(d))
            }
        }
    }

    /// The digest extended into `alg`'s bank.
    pub fn digest(&self, alg: HashAlg) -> Result<Vec<u8>, AlgError> {
        alg.hash(self.content().as_bytes())
    }

    /// The TDX RTMR this event also extends in a TDX guest: RTMR[3] for the cluster
    /// configuration, the cluster id and stage 2's phases (`sysinit`, `ready`: what the key
    /// service's rules tell apart); stage 1's phases extend none (they happen before the
    /// verified root, and RTMR[1]/[2] already hold the UKI, measured by the firmware).
    pub const fn rtmr(&self) -> Option<usize> {
        match self {
            RuntimeEvent::Phase(Phase::EnterInitrd | Phase::LeaveInitrd) => None,
            RuntimeEvent::Phase(Phase::Sysinit | Phase::Ready)
            | RuntimeEvent::ClusterId(_)
            | RuntimeEvent::ClusterConfig(_) => Some(CLUSTER_ID_RTMR),
        }
    }

    /// The digest extended into the RTMR: SHA-384 of the content string (what the TPM's
    /// sha384 bank gets too).
    pub fn rtmr_digest(&self) -> [u8; RTMR_LEN] {
        sha384(&[self.content().as_bytes()])
    }

    /// The CEL record for this event, with a digest for each of `banks`.
    pub fn to_cel(&self, recnum: u64, banks: &[HashAlg]) -> Result<CelRecord, AlgError> {
        let digests = banks
            .iter()
            .map(|&alg| {
                Ok(CelDigest {
                    hash_alg: alg,
                    digest: self.digest(alg)?,
                })
            })
            .collect::<Result<_, AlgError>>()?;
        Ok(CelRecord {
            recnum,
            pcr: self.pcr(),
            digests,
            content_type: CONTENT_TYPE_NACRE.to_owned(),
            content: CelContent {
                event_type: self.event_type().to_owned(),
                string: self.content(),
            },
        })
    }

    /// Recognizes one of nacre's records and checks its PCR and every digest against its
    /// content, so a verifier can trust the content it shows.
    pub fn from_cel(rec: &CelRecord) -> Result<Self, RuntimeError> {
        if rec.content_type != CONTENT_TYPE_NACRE {
            return Err(RuntimeError::ContentType(rec.content_type.clone()));
        }
        let s = &rec.content.string;
        let ev = match rec.content.event_type.as_str() {
            "phase" => RuntimeEvent::Phase(s.parse()?),
            "cluster-id" => RuntimeEvent::ClusterId(parse_cluster_id(s)?),
            "cluster-config" => RuntimeEvent::ClusterConfig(parse_cluster_config(s)?),
            other => return Err(RuntimeError::UnknownEventType(other.to_owned())),
        };
        if rec.pcr != ev.pcr() {
            return Err(RuntimeError::WrongPcr {
                event: ev.content(),
                expected: ev.pcr(),
                found: rec.pcr,
            });
        }
        for d in &rec.digests {
            if ev.digest(d.hash_alg)? != d.digest {
                return Err(RuntimeError::DigestMismatch {
                    alg: d.hash_alg,
                    content: ev.content(),
                });
            }
        }
        Ok(ev)
    }
}

fn parse_cluster_id(s: &str) -> Result<[u8; 32], RuntimeError> {
    parse_hex32(s, CLUSTER_ID_PREFIX, RuntimeError::BadClusterId)
}

fn parse_cluster_config(s: &str) -> Result<[u8; 32], RuntimeError> {
    parse_hex32(s, CLUSTER_CONFIG_PREFIX, RuntimeError::BadClusterConfig)
}

fn parse_hex32(
    s: &str,
    prefix: &str,
    err: fn(String) -> RuntimeError,
) -> Result<[u8; 32], RuntimeError> {
    let bad = || err(s.to_owned());
    let h = s.strip_prefix(prefix).ok_or_else(bad)?;
    // Only the canonical (lowercase) spelling hashes to the digest nacre extends.
    if h.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(bad());
    }
    let v = hex::decode(h).map_err(|_| bad())?;
    v.try_into().map_err(|_| bad())
}

impl fmt::Display for RuntimeEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PCR {} {}: {}",
            self.pcr(),
            self.event_type(),
            self.content()
        )
    }
}

/// PCR 11 after the phases up to and including `upto`, starting from `initial` (the value
/// systemd-stub left, i.e. the replayed firmware log's PCR 11).
pub fn pcr11_after(initial: &[u8], upto: Phase, alg: HashAlg) -> Result<Vec<u8>, RuntimeError> {
    if initial.len() != alg.digest_size() {
        return Err(RuntimeError::PcrLength {
            alg,
            found: initial.len(),
            expected: alg.digest_size(),
        });
    }
    let mut v = initial.to_vec();
    for p in Phase::ALL.into_iter().take_while(|p| *p <= upto) {
        v = alg.extend(&v, &RuntimeEvent::Phase(p).digest(alg)?)?;
    }
    Ok(v)
}

fn sha384(parts: &[&[u8]]) -> [u8; RTMR_LEN] {
    let mut h = ring::digest::Context::new(&ring::digest::SHA384);
    for p in parts {
        h.update(p);
    }
    let mut out = [0u8; RTMR_LEN];
    out.copy_from_slice(h.finish().as_ref());
    out
}

/// One RTMR extend, as `TDG.MR.RTMR.EXTEND` does it: `SHA-384(old || digest)`.
pub fn rtmr_extend(old: &[u8; RTMR_LEN], digest: &[u8; RTMR_LEN]) -> [u8; RTMR_LEN] {
    sha384(&[old, digest])
}

/// RTMR[3] after nacre-init extended these events (those of them that go to RTMR[3]: stage 2's
/// phases and the cluster events), from its initial 48 zero bytes: the replay of a runtime log.
pub fn rtmr3_after<'a>(events: impl IntoIterator<Item = &'a RuntimeEvent>) -> [u8; RTMR_LEN] {
    events
        .into_iter()
        .filter(|e| e.rtmr() == Some(CLUSTER_ID_RTMR))
        .fold([0u8; RTMR_LEN], |v, e| rtmr_extend(&v, &e.rtmr_digest()))
}

/// The cluster part of RTMR[3]: the replay of the cluster events alone (configuration, id),
/// without the phases. The key service compares it with its cluster's values (zero, this
/// cluster's configuration, then its id), as it compares PCR 15.
pub fn cluster_rtmr3_after<'a>(
    events: impl IntoIterator<Item = &'a RuntimeEvent>,
) -> [u8; RTMR_LEN] {
    rtmr3_after(
        events
            .into_iter()
            .filter(|e| !matches!(e, RuntimeEvent::Phase(_))),
    )
}

/// The cluster part of RTMR[3] of a TDX node that joined the cluster `cluster_id` in this boot
/// (and measured no cluster configuration): the TDX counterpart of PCR 15 = extend(0, id).
pub fn member_rtmr3(cluster_id: &[u8; 32]) -> [u8; RTMR_LEN] {
    rtmr3_after(&[RuntimeEvent::ClusterId(*cluster_id)])
}

/// What a runtime log that replays to a TD's RTMR[3] proves: the stage-2 phase the TD has
/// reached and its cluster events, in order. The TDX module keeps RTMR[3]: neither the host
/// (which may emulate the vTPM) nor root in the TD can take an extension back, only add one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtmr3State {
    /// The last stage-2 phase extended (`None`: stage 2 has not measured `sysinit`).
    pub phase: Option<Phase>,
    /// The cluster configuration and cluster id events, in the order extended.
    pub cluster: Vec<RuntimeEvent>,
}

impl Rtmr3State {
    /// Whether a cluster id was extended (the TD joined or bootstrapped a cluster in this boot).
    pub fn joined(&self) -> bool {
        self.cluster
            .iter()
            .any(|e| matches!(e, RuntimeEvent::ClusterId(_)))
    }
}

/// The RTMR[3] phases of a runtime log, which must be what nacre-init extends: `sysinit`, then
/// `ready`, each at most once, nothing after `ready`. Anything else is a TD whose phases were
/// extended by someone other than nacre-init (root extending `sysinit` again after `ready`, to
/// look as if no service had run): refused, never read as the last phase seen.
pub fn rtmr3_state<'a>(
    events: impl IntoIterator<Item = &'a RuntimeEvent>,
) -> Result<Rtmr3State, RuntimeError> {
    let mut state = Rtmr3State {
        phase: None,
        cluster: Vec::new(),
    };
    for e in events
        .into_iter()
        .filter(|e| e.rtmr() == Some(CLUSTER_ID_RTMR))
    {
        match e {
            RuntimeEvent::Phase(p) => {
                let next = match state.phase {
                    None => Phase::Sysinit,
                    Some(Phase::Sysinit) => Phase::Ready,
                    Some(other) => {
                        return Err(RuntimeError::PhaseOrder(format!(
                            "{p} extended after {other}"
                        )))
                    }
                };
                if *p != next {
                    return Err(RuntimeError::PhaseOrder(format!(
                        "{p} where {next} comes next (after {})",
                        state.phase.map(|q| q.word()).unwrap_or("no phase")
                    )));
                }
                state.phase = Some(*p);
            }
            other => state.cluster.push(*other),
        }
    }
    Ok(state)
}

/// PCR 15 (sha256 bank) after these events, from zero: what a verifier expects of a node that
/// extended exactly them.
pub fn pcr15_after(events: &[RuntimeEvent]) -> Result<Vec<u8>, RuntimeError> {
    let alg = HashAlg::Sha256;
    let mut v = vec![0u8; alg.digest_size()];
    for e in events.iter().filter(|e| e.pcr() == CLUSTER_ID_PCR) {
        v = alg.extend(&v, &e.digest(alg)?)?;
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_config_event_round_trips_and_goes_to_pcr15_and_rtmr3() {
        let d = [0xc5; 32];
        let ev = RuntimeEvent::ClusterConfig(d);
        assert_eq!(ev.pcr(), 15);
        assert_eq!(ev.rtmr(), Some(3));
        assert_eq!(
            ev.content(),
            format!("nacre.cluster-config={}", "c5".repeat(32))
        );
        let rec = ev.to_cel(3, &[HashAlg::Sha256]).unwrap();
        assert_eq!(RuntimeEvent::from_cel(&rec).unwrap(), ev);
        // The cluster id's prefix is not a configuration's, and upper case is refused.
        let mut other = rec.clone();
        other.content.string = format!("nacre.cluster-id={}", "c5".repeat(32));
        assert!(matches!(
            RuntimeEvent::from_cel(&other),
            Err(RuntimeError::BadClusterConfig(_))
        ));
        other.content.string = format!("nacre.cluster-config={}", "C5".repeat(32));
        assert!(RuntimeEvent::from_cel(&other).is_err());
        // PCR 15 after config then id: two extends, in that order.
        let id = RuntimeEvent::ClusterId([1; 32]);
        let a = pcr15_after(&[ev, id]).unwrap();
        let b = pcr15_after(&[id, ev]).unwrap();
        assert_ne!(a, b);
        let step1 = HashAlg::Sha256
            .extend(&[0; 32], &ev.digest(HashAlg::Sha256).unwrap())
            .unwrap();
        let step2 = HashAlg::Sha256
            .extend(&step1, &id.digest(HashAlg::Sha256).unwrap())
            .unwrap();
        assert_eq!(a, step2);
        assert_eq!(
            pcr15_after(&[RuntimeEvent::Phase(Phase::Ready)]).unwrap(),
            vec![0; 32]
        );
        assert_ne!(rtmr3_after(&[ev]), [0; 48]);
    }

    #[test]
    fn rtmr3_is_sha384_extend_of_the_cluster_id_content() {
        let id = [0x5a; 32];
        let ev = RuntimeEvent::ClusterId(id);
        assert_eq!(ev.rtmr(), Some(3));
        assert_eq!(RuntimeEvent::Phase(Phase::Ready).rtmr(), Some(3));
        assert_eq!(RuntimeEvent::Phase(Phase::Sysinit).rtmr(), Some(3));
        assert_eq!(RuntimeEvent::Phase(Phase::EnterInitrd).rtmr(), None);
        assert_eq!(RuntimeEvent::Phase(Phase::LeaveInitrd).rtmr(), None);
        // The RTMR digest is the sha384 bank's digest of the same record.
        assert_eq!(
            ev.rtmr_digest().to_vec(),
            ev.digest(HashAlg::Sha384).unwrap()
        );
        // From 48 zero bytes, as a sha384 PCR would be.
        let pcr = HashAlg::Sha384
            .extend(&[0u8; 48], &ev.digest(HashAlg::Sha384).unwrap())
            .unwrap();
        assert_eq!(member_rtmr3(&id).to_vec(), pcr);
        let mut by_hand = Vec::from([0u8; 48]);
        by_hand.extend_from_slice(&ev.rtmr_digest());
        assert_eq!(
            member_rtmr3(&id).as_slice(),
            ring::digest::digest(&ring::digest::SHA384, &by_hand).as_ref()
        );
        // Stage 2's phases are in RTMR[3] too, but not in its cluster part; stage 1's are not
        // in it; nothing extended leaves it zero.
        let phases = [
            RuntimeEvent::Phase(Phase::EnterInitrd),
            RuntimeEvent::Phase(Phase::Sysinit),
            ev,
        ];
        assert_eq!(cluster_rtmr3_after(&phases), member_rtmr3(&id));
        let sysinit = rtmr_extend(&[0; 48], &sha384(&[b"sysinit"]));
        assert_eq!(
            rtmr3_after(&phases),
            rtmr_extend(&sysinit, &ev.rtmr_digest())
        );
        assert_ne!(rtmr3_after(&phases), member_rtmr3(&id));
        assert_eq!(rtmr3_after(&[] as &[RuntimeEvent]), [0u8; 48]);
        assert_ne!(member_rtmr3(&[0x5b; 32]), member_rtmr3(&id));
        // Twice is not once.
        assert_ne!(rtmr3_after(&[ev, ev]), member_rtmr3(&id));
    }

    #[test]
    fn rtmr3_state_takes_the_phase_nacre_init_extended_and_nothing_else() {
        use Phase::*;
        let id = RuntimeEvent::ClusterId([7; 32]);
        let cfg = RuntimeEvent::ClusterConfig([8; 32]);
        let p = RuntimeEvent::Phase;
        let st = |evs: &[RuntimeEvent]| rtmr3_state(evs);
        // Stage 1 only: no stage-2 phase yet.
        assert_eq!(st(&[p(EnterInitrd), p(LeaveInitrd)]).unwrap().phase, None);
        let s = st(&[p(EnterInitrd), p(LeaveInitrd), p(Sysinit), cfg, id]).unwrap();
        assert_eq!(s.phase, Some(Sysinit));
        assert_eq!(s.cluster, vec![cfg, id]);
        assert!(s.joined());
        let s = st(&[p(Sysinit), cfg, id, p(Ready)]).unwrap();
        assert_eq!(s.phase, Some(Ready));
        assert!(!st(&[p(Sysinit), cfg]).unwrap().joined());
        // Root at `ready` extends `sysinit` again: refused, not read as the last phase.
        let e = st(&[p(Sysinit), id, p(Ready), p(Sysinit)]).unwrap_err();
        assert_eq!(
            e,
            RuntimeError::PhaseOrder("sysinit extended after ready".into())
        );
        // `ready` without `sysinit`, `sysinit` twice, `ready` twice.
        assert!(matches!(st(&[p(Ready)]), Err(RuntimeError::PhaseOrder(_))));
        assert!(st(&[p(Sysinit), p(Sysinit)]).is_err());
        assert!(st(&[p(Sysinit), p(Ready), p(Ready)]).is_err());
    }

    #[test]
    fn cel_round_trip_and_checks() {
        let id = [0x5a; 32];
        for ev in [
            RuntimeEvent::Phase(Phase::Sysinit),
            RuntimeEvent::ClusterId(id),
        ] {
            let rec = ev.to_cel(3, &[HashAlg::Sha256, HashAlg::Sha384]).unwrap();
            rec.validate().unwrap();
            assert_eq!(RuntimeEvent::from_cel(&rec), Ok(ev));
            let mut wrong = rec.clone();
            wrong.digests[1].digest[0] ^= 1;
            assert!(matches!(
                RuntimeEvent::from_cel(&wrong),
                Err(RuntimeError::DigestMismatch {
                    alg: HashAlg::Sha384,
                    ..
                })
            ));
            let mut wrong = rec.clone();
            wrong.pcr = 4;
            assert!(matches!(
                RuntimeEvent::from_cel(&wrong),
                Err(RuntimeError::WrongPcr { .. })
            ));
        }
        let ev = RuntimeEvent::ClusterId(id);
        assert_eq!(
            ev.content(),
            format!("nacre.cluster-id={}", "5a".repeat(32))
        );
        assert_eq!(ev.pcr(), 15);
        let mut upper = ev.to_cel(0, &[HashAlg::Sha256]).unwrap();
        upper.content.string = upper
            .content
            .string
            .to_uppercase()
            .replace("NACRE.CLUSTER-ID", "nacre.cluster-id");
        assert!(matches!(
            RuntimeEvent::from_cel(&upper),
            Err(RuntimeError::BadClusterId(_))
        ));
        assert_eq!("ready".parse::<Phase>().unwrap(), Phase::Ready);
        assert!(matches!(
            pcr11_after(&[0; 20], Phase::Ready, HashAlg::Sha256),
            Err(RuntimeError::PcrLength { found: 20, .. })
        ));
    }
}
