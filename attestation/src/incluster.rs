//! In-cluster mode, the node's side: the key service runs on an attested control-plane node and
//! proves itself to nodes the way it checks them (issue 12 item 4). [`ServiceVerifier`] wraps
//! the platform verifiers ([`crate::ByPlatform`]: QEMU vTPM, SEV-SNP, TDX — a platform the
//! node's policy does not admit has no verifier and is refused there, so a policy that needs
//! platform evidence refuses a service with a TPM quote alone) and then checks, in this order:
//!
//! 1. the **phase**: the matched golden manifest's phase (on TDX RTMR[3]'s, [`crate::TdxVerifier`])
//!    must be one a running service is in (`ready` by default: nacre-init started the services);
//! 2. the **cluster identity**: PCR 15 must be quoted, and the runtime log's PCR 15 records —
//!    which the quote proves, since they replay to the quoted PCRs — must be exactly this
//!    cluster's: its configuration (when the node measured one, the same digest) and then its
//!    id (when the node knows it, that id); on TDX, RTMR[3]'s cluster part
//!    ([`crate::Accepted::tdx_rtmr3`]) must say the same. A service of another cluster, one
//!    that never joined, or one told another configuration is refused.
//!
//! A node that knows neither the cluster id nor a measured configuration has nothing to check
//! the service's membership against: refused (fail closed), never accepted on the quote alone.

use crate::evidence::Evidence;
use crate::verify::{Accepted, Check, Expectation, Refusal, Verifier};
use nacre_eventlog::runtime::{cluster_rtmr3_after, pcr15_after, CLUSTER_ID_PCR};
use nacre_eventlog::RuntimeEvent;
use std::sync::{Arc, OnceLock};

/// What the node knows of its cluster: the id (configured, or learned when it joined) and the
/// digest of the cluster configuration it measured.
#[derive(Debug, Clone, Default)]
pub struct ClusterIdentity {
    /// Configured (`[key_service] server_cluster_id`).
    pub cluster_id: Option<[u8; 32]>,
    /// Learned from the join's answer: later requests (disk key, peers) check it too.
    pub learned_id: Arc<OnceLock<[u8; 32]>>,
    /// SHA-256 of the cluster configuration this node measured into PCR 15.
    pub config: Option<[u8; 32]>,
}

impl ClusterIdentity {
    fn id(&self) -> Option<[u8; 32]> {
        self.cluster_id.or_else(|| self.learned_id.get().copied())
    }
}

/// The node's verifier of an in-cluster key service.
pub struct ServiceVerifier {
    /// The platform verifiers the node's policy admits for the service.
    pub platforms: Arc<dyn Verifier>,
    /// Phases a running service may be in (`ready`).
    pub phases: Vec<String>,
    pub cluster: ClusterIdentity,
}

fn refuse<T>(reason: String) -> Result<T, Refusal> {
    Err(Refusal {
        check: Check::ServiceIdentity,
        reason,
    })
}

impl Verifier for ServiceVerifier {
    fn name(&self) -> &'static str {
        "in-cluster key service"
    }

    fn verify(&self, ev: &Evidence, expect: &Expectation<'_>) -> Result<Accepted, Refusal> {
        let accepted = self.platforms.verify(ev, expect)?;
        check_phase(&accepted, &self.phases)?;
        check_cluster(&accepted, ev, &self.cluster)?;
        Ok(accepted)
    }
}

/// The service's phase (the matched manifest's; on TDX RTMR[3]'s) must be one of `allowed`.
pub fn check_phase(accepted: &Accepted, allowed: &[String]) -> Result<(), Refusal> {
    let phase = accepted.phase.as_deref().unwrap_or("none");
    if allowed.iter().any(|p| p == phase) {
        return Ok(());
    }
    refuse(format!(
        "the key service is at phase {phase}; a running service is at {}",
        allowed.join(" or ")
    ))
}

/// The service's PCR 15 (and on TDX RTMR[3]'s cluster part) shows membership of this cluster.
pub fn check_cluster(
    accepted: &Accepted,
    ev: &Evidence,
    known: &ClusterIdentity,
) -> Result<(), Refusal> {
    let id = known.id();
    if id.is_none() && known.config.is_none() {
        return refuse(
            "this node knows neither its cluster's id nor a measured cluster configuration to check the key service's membership against (set [key_service] server_cluster_id)".into(),
        );
    }
    let Some(pcr15) = accepted.pcrs.get(&CLUSTER_ID_PCR) else {
        return refuse("the key service's quote does not cover PCR 15 (its cluster id)".into());
    };
    let mut events = Vec::new();
    for r in ev.runtime_log.iter().filter(|r| r.pcr == CLUSTER_ID_PCR) {
        match RuntimeEvent::from_cel(r) {
            Ok(e) => events.push(e),
            Err(e) => return refuse(format!("runtime record {}: {e}", r.recnum)),
        }
    }
    // The records must be what PCR 15 holds (the verifier replayed them; checked here again so
    // this rule never rests on a log the quote does not prove).
    let replayed = pcr15_after(&events).unwrap_or_default();
    if replayed != *pcr15 {
        return refuse(format!(
            "the key service's runtime log replays PCR 15 to {}, its quote says {}",
            hex::encode(replayed),
            hex::encode(pcr15)
        ));
    }
    let shown: Vec<String> = events.iter().map(|e| e.content()).collect();
    let shown = if shown.is_empty() {
        "nothing (never joined in this boot)".to_string()
    } else {
        shown.join(", ")
    };
    let (config, joined) = match events.as_slice() {
        [RuntimeEvent::ClusterId(i)] => (None, *i),
        [RuntimeEvent::ClusterConfig(c), RuntimeEvent::ClusterId(i)] => (Some(*c), *i),
        _ => {
            return refuse(format!(
                "the key service's PCR 15 shows {shown}: not a member of a cluster (its configuration, then its id)"
            ))
        }
    };
    if let Some(want) = id {
        if joined != want {
            return refuse(format!(
                "the key service is a member of cluster {}, this node's is {}",
                hex::encode(joined),
                hex::encode(want)
            ));
        }
    }
    if let Some(want) = known.config {
        if config != Some(want) {
            return refuse(format!(
                "the key service's PCR 15 shows {shown}; this node measured the cluster configuration {} and expects it there",
                hex::encode(want)
            ));
        }
    }
    if let Some(rtmr3) = &accepted.tdx_rtmr3 {
        let want = cluster_rtmr3_after(&events);
        if *rtmr3 != want {
            return refuse(format!(
                "the key service's RTMR[3] cluster part is {}, its PCR 15 shows {shown} ({})",
                hex::encode(rtmr3),
                hex::encode(want)
            ));
        }
    }
    Ok(())
}
