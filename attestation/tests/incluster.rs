//! In-cluster mode (issue 12 item 4): a node checks the key service the way the service checks
//! nodes — platform evidence where its policy needs it, the phase a running service is in, and
//! membership of this cluster (PCR 15, on TDX RTMR[3]) — with evidence made by a real swtpm
//! (`support`: a real OVMF boot's firmware log and nacre-init's runtime events).

use nacre_attestation::incluster::{ClusterIdentity, ServiceVerifier};
use nacre_attestation::tpm::Attester;
use nacre_attestation::verify::{
    ByPlatform, Check, EnrolledAks, Expectation, JoinKind, QemuVtpmVerifier, Verifier,
};
use nacre_attestation::{Accepted, Refusal};
use nacre_eventlog::{Phase, RuntimeEvent};
use nacre_measure::sign::{BlobSigner, PemSigner, PublicKey};
use std::sync::Arc;

mod support;
use support::*;

const ID: [u8; 32] = [0x42; 32];
const CONFIG: [u8; 32] = [0xc0; 32];

/// A control-plane node running the key service: booted to `upto`, with these PCR 15 events
/// after `sysinit`.
struct Service {
    node: Node,
    ak: Vec<u8>,
    tls: Vec<u8>,
    phase: &'static str,
}

fn service(upto: Phase, cluster: &[RuntimeEvent]) -> Service {
    let mut ev: Vec<RuntimeEvent> = [Phase::EnterInitrd, Phase::LeaveInitrd, Phase::Sysinit]
        .into_iter()
        .map(RuntimeEvent::Phase)
        .collect();
    ev.extend_from_slice(cluster);
    if upto == Phase::Ready {
        ev.push(RuntimeEvent::Phase(Phase::Ready));
    }
    let node = boot("plain", &ev);
    let ak = Attester::with_tcti(&node.tpm.tcti).ak_public().unwrap();
    Service {
        node,
        ak,
        tls: PemSigner::generate().unwrap().0.public_key_spki(),
        phase: upto.word(),
    }
}

impl Service {
    /// The control plane's golden manifest (this boot's PCRs, this phase), the service's QEMU
    /// vTPM verifier, and the node's check of the service with `known` and `platforms`.
    fn check(
        &self,
        known: ClusterIdentity,
        platforms: impl FnOnce(QemuVtpmVerifier) -> ByPlatform,
    ) -> Result<Accepted, Refusal> {
        let (signer, _) = PemSigner::generate().unwrap();
        let key = PublicKey::from_spki(&signer.public_key_spki()).unwrap();
        let m = manifest_signed_by(
            &replayed(&self.node),
            |m| m.phase = Some(self.phase.into()),
            &signer,
        );
        let qemu = QemuVtpmVerifier::with_manifests(
            vec![m],
            key,
            Box::new(EnrolledAks::new([self.ak.clone()])),
        );
        let v = ServiceVerifier {
            platforms: Arc::new(platforms(qemu)),
            phases: vec!["ready".into()],
            cluster: known,
        };
        let ev = Attester::with_tcti(&self.node.tpm.tcti)
            .evidence(
                b"node nonce",
                &self.tls,
                &QUOTED,
                self.node.firmware_log.clone(),
                self.node.runtime_log.clone(),
            )
            .unwrap();
        // The node checks the service as `atls` does: its own nonce, the service's TLS key,
        // JoinKind::Rejoin (PCR 15 judged by the ServiceVerifier).
        v.verify(
            &ev,
            &Expectation {
                nonce: b"node nonce",
                tls_public_key: &self.tls,
                join: JoinKind::Rejoin,
            },
        )
    }
}

fn qemu_only(q: QemuVtpmVerifier) -> ByPlatform {
    ByPlatform {
        qemu_vtpm: Some(Box::new(q)),
        ..ByPlatform::default()
    }
}

fn knows(id: Option<[u8; 32]>, config: Option<[u8; 32]>) -> ClusterIdentity {
    ClusterIdentity {
        cluster_id: id,
        config,
        ..ClusterIdentity::default()
    }
}

fn refused(r: Result<Accepted, Refusal>) -> Refusal {
    let r = r.expect_err("must be refused");
    eprintln!("{r}");
    r
}

#[test]
fn the_right_service_is_accepted() {
    let s = service(
        Phase::Ready,
        &[
            RuntimeEvent::ClusterConfig(CONFIG),
            RuntimeEvent::ClusterId(ID),
        ],
    );
    let a = s.check(knows(Some(ID), Some(CONFIG)), qemu_only).unwrap();
    assert_eq!(a.phase.as_deref(), Some("ready"));
    // By the configuration alone (before the node joined), or the id alone.
    s.check(knows(None, Some(CONFIG)), qemu_only).unwrap();
    s.check(knows(Some(ID), None), qemu_only).unwrap();
    // By the id the node learned when it joined.
    let learned = knows(None, None);
    learned.learned_id.set(ID).unwrap();
    s.check(learned, qemu_only).unwrap();
    // A service on an image with its configuration built in (PCR 15: the id only).
    let s = service(Phase::Ready, &[RuntimeEvent::ClusterId(ID)]);
    s.check(knows(Some(ID), None), qemu_only).unwrap();
}

#[test]
fn a_service_of_another_cluster_is_refused() {
    let s = service(
        Phase::Ready,
        &[
            RuntimeEvent::ClusterConfig(CONFIG),
            RuntimeEvent::ClusterId([0x43; 32]),
        ],
    );
    let r = refused(s.check(knows(Some(ID), Some(CONFIG)), qemu_only));
    assert_eq!(r.check, Check::ServiceIdentity);
    assert!(
        r.reason.contains(&format!(
            "member of cluster {}, this node's is {}",
            hex::encode([0x43; 32]),
            hex::encode(ID)
        )),
        "{r}"
    );
    // Told another configuration (same id).
    let s = service(
        Phase::Ready,
        &[
            RuntimeEvent::ClusterConfig([0xc1; 32]),
            RuntimeEvent::ClusterId(ID),
        ],
    );
    let r = refused(s.check(knows(Some(ID), Some(CONFIG)), qemu_only));
    assert!(
        r.reason.contains(&format!(
            "measured the cluster configuration {}",
            hex::encode(CONFIG)
        )),
        "{r}"
    );
    // Never joined (PCR 15: its configuration only).
    let s = service(Phase::Ready, &[RuntimeEvent::ClusterConfig(CONFIG)]);
    let r = refused(s.check(knows(None, Some(CONFIG)), qemu_only));
    assert!(r.reason.contains("not a member of a cluster"), "{r}");
    // A node that knows nothing of its cluster cannot check: refused, not trusted.
    let s = service(Phase::Ready, &[RuntimeEvent::ClusterId(ID)]);
    let r = refused(s.check(knows(None, None), qemu_only));
    assert!(r.reason.contains("knows neither its cluster's id"), "{r}");
}

#[test]
fn a_service_in_the_wrong_phase_is_refused() {
    // Attested fine (its `sysinit` manifest matches), but not a running service.
    let s = service(
        Phase::Sysinit,
        &[
            RuntimeEvent::ClusterConfig(CONFIG),
            RuntimeEvent::ClusterId(ID),
        ],
    );
    let r = refused(s.check(knows(Some(ID), Some(CONFIG)), qemu_only));
    assert_eq!(r.check, Check::ServiceIdentity);
    assert!(
        r.reason
            .contains("the key service is at phase sysinit; a running service is at ready"),
        "{r}"
    );
}

/// A node whose policy needs platform evidence (a TDX or SEV-SNP control plane) has no QEMU
/// vTPM verifier for the service: a TPM quote alone is refused, however right the rest.
#[test]
fn a_service_without_platform_evidence_is_refused() {
    let s = service(
        Phase::Ready,
        &[
            RuntimeEvent::ClusterConfig(CONFIG),
            RuntimeEvent::ClusterId(ID),
        ],
    );
    let tdx_only = |_q: QemuVtpmVerifier| {
        let (signer, _) = PemSigner::generate().unwrap();
        let key = PublicKey::from_spki(&signer.public_key_spki()).unwrap();
        let collateral = nacre_attestation::tdx::collateral_from_json(
            &std::fs::read(format!(
                "{}/tests/fixtures/tdx/tdx_quote_collateral.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .unwrap(),
        )
        .unwrap();
        ByPlatform {
            tdx: Some(Box::new(nacre_attestation::TdxVerifier::new(
                collateral,
                nacre_attestation::tdx::TdxPolicy::default(),
                vec![],
                key,
            ))),
            ..ByPlatform::default()
        }
    };
    let r = refused(s.check(knows(Some(ID), Some(CONFIG)), tdx_only));
    assert_eq!(r.check, Check::Platform);
    assert!(
        r.reason
            .contains("no verifier is configured for QEMU vTPM evidence"),
        "{r}"
    );
}

/// A qemu-snp control plane (the host's swtpm, an SEV-SNP report binding nonce, AK and TLS
/// key; the test-made chain): its AK is bound by nothing but its own REPORT_DATA, so a node
/// refuses the service unless it opts in (`[key_service] server_accept_guest_bound_ak =
/// ["qemu-snp"]`, as `serve --accept-guest-bound-ak qemu-snp` for nodes).
#[test]
fn a_qemu_snp_service_needs_the_nodes_guest_bound_opt_in() {
    use nacre_attestation::evidence::Platform;
    use nacre_attestation::snp::{report_data, Generation, SnpPolicy, Tcb};
    let s = service(
        Phase::Ready,
        &[
            RuntimeEvent::ClusterConfig(CONFIG),
            RuntimeEvent::ClusterId(ID),
        ],
    );
    let (signer, _) = PemSigner::generate().unwrap();
    let key = PublicKey::from_spki(&signer.public_key_spki()).unwrap();
    let m = manifest_signed_by(
        &replayed(&s.node),
        |m| {
            m.phase = Some("ready".into());
            m.image.variant = "qemu-snp".into();
        },
        &signer,
    );
    let nonce = b"node nonce";
    // The service's evidence by the nodes' own code path (Attester::cvm_evidence): no HCL
    // report, no GCE AK template, no NitroTPM in the swtpm, so a quote and the report.
    let ev = Attester::with_tcti(&s.node.tpm.tcti)
        .cvm_evidence(
            Some(nacre_attestation::tpm::Cvm::SevSnp),
            nonce,
            &s.tls,
            &QUOTED,
            s.node.firmware_log.clone(),
            s.node.runtime_log.clone(),
            &|ak| {
                Ok(Platform::SevSnp {
                    report: test_signed_report(report_data(nonce, ak, &s.tls)),
                    vcek: snp_file("test-made/test-made-vcek.der"),
                })
            },
        )
        .unwrap();
    assert!(ev.binding.is_none());
    let Platform::SevSnp { report, .. } = &ev.platform else {
        panic!("not SEV-SNP evidence")
    };
    let measurement: [u8; 48] = report[0x90..0xC0].try_into().unwrap();
    let verify = |accept: &[&str]| {
        let mut policy = SnpPolicy::new(0, [(Generation::Milan, Tcb::default())]);
        policy.measurements = vec![measurement];
        let mut binding = nacre_attestation::binding::BindingPolicy::default();
        binding
            .accept_guest_bound
            .extend(accept.iter().map(|v| v.to_string()));
        let snp = nacre_attestation::SevSnpVerifier::new(
            test_made_roots(),
            policy,
            vec![m.clone()],
            key.clone(),
        )
        .with_binding_policy(binding);
        let v = ServiceVerifier {
            platforms: Arc::new(ByPlatform {
                sev_snp: Some(Box::new(snp)),
                ..ByPlatform::default()
            }),
            phases: vec!["ready".into()],
            cluster: knows(Some(ID), Some(CONFIG)),
        };
        v.verify(
            &ev,
            &Expectation {
                nonce,
                tls_public_key: &s.tls,
                join: JoinKind::Rejoin,
            },
        )
    };
    let r = refused(verify(&[]));
    assert!(
        r.reason.contains("REPORT_DATA") && r.reason.contains("--accept-guest-bound-ak qemu-snp"),
        "{r}"
    );
    let a = verify(&["qemu-snp"]).unwrap();
    assert_eq!(a.phase.as_deref(), Some("ready"));
}
