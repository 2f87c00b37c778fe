//! TDX runtime phases (issue 12 item 2), end to end through [`TdxVerifier`] with a real swtpm
//! node (`support`: a real OVMF boot's firmware log and nacre-init's runtime events extended
//! into its PCRs) and the real v4 quote of dcap-qvl 0.7.1 (tests/fixtures/tdx). The quote's
//! signatures and collateral verify in `tests/tdx.rs`; here its body is changed the way a TD
//! running this node would have it — REPORTDATA binding this verifier's nonce, the swtpm's AK
//! and the TLS key; RTMR[3] what nacre-init extended — and judged with
//! [`TdxVerifier::verify_verified_body`] (nothing is re-signed: no TDX hardware here).
//!
//! The phase is RTMR[3]'s, not the vTPM's (which the host may run): a TD at `ready` (or root in
//! it) cannot pass for one at `sysinit`; RTMR[3] must be what the runtime log replays to; a TDX
//! manifest without golden RTMR[1]/[2] admits nothing; the right TD at `sysinit` is accepted.

use nacre_attestation::evidence::{Evidence, Platform};
use nacre_attestation::tdx::{
    collateral_from_json, Quote, TcbStatus, TcbVerdict, TdReport, TdxPolicy,
};
use nacre_attestation::tpm::Attester;
use nacre_attestation::verify::{Check, Expectation, JoinKind, TdxVerifier};
use nacre_attestation::{Accepted, Refusal};
use nacre_eventlog::runtime::{member_rtmr3, rtmr3_after};
use nacre_eventlog::{Phase, RuntimeEvent};
use nacre_measure::manifest::{Manifest, TdxLaunchValue};
use nacre_measure::sign::{BlobSigner, PemSigner, PublicKey};

mod support;
use support::*;

/// 2025-07-01T00:00:00Z: inside the v4 collateral's validity (see tests/tdx.rs).
const V4_TIME: u64 = 1_751_328_000;
const CLUSTER: [u8; 32] = [0x42; 32];

fn tdx_fixture(name: &str) -> Vec<u8> {
    std::fs::read(format!(
        "{}/tests/fixtures/tdx/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn events(upto: Phase, joined: bool) -> Vec<RuntimeEvent> {
    let mut v: Vec<RuntimeEvent> = Phase::ALL
        .into_iter()
        .take_while(|p| *p <= upto.min(Phase::Sysinit))
        .map(RuntimeEvent::Phase)
        .collect();
    if joined {
        v.push(RuntimeEvent::ClusterId(CLUSTER));
    }
    if upto == Phase::Ready {
        v.push(RuntimeEvent::Phase(Phase::Ready));
    }
    v
}

/// A TD booted to `upto`: its swtpm (PCRs and runtime log) and its real-quote body.
struct Td {
    node: Node,
    ak: Vec<u8>,
    tls: Vec<u8>,
    body: TdReport,
}

impl Td {
    /// The swtpm holds `tpm_events`; RTMR[3] holds `rtmr_events` (the same for an honest TD).
    fn boot(tpm_events: &[RuntimeEvent], rtmr_events: &[RuntimeEvent]) -> Td {
        let node = boot("plain", tpm_events);
        let ak = Attester::with_tcti(&node.tpm.tcti).ak_public().unwrap();
        let tls = PemSigner::generate().unwrap().0.public_key_spki();
        let mut body = Quote::parse(&tdx_fixture("tdx_quote")).unwrap().body;
        body.report_data = nacre_attestation::snp::report_data(b"nonce", &ak, &tls);
        body.rtmr[3] = rtmr3_after(rtmr_events);
        Td {
            node,
            ak,
            tls,
            body,
        }
    }

    fn evidence(&self) -> Evidence {
        let mut ev = Attester::with_tcti(&self.node.tpm.tcti)
            .evidence(
                b"nonce",
                &self.tls,
                &QUOTED,
                self.node.firmware_log.clone(),
                self.node.runtime_log.clone(),
            )
            .unwrap();
        ev.platform = Platform::Tdx {
            quote: tdx_fixture("tdx_quote"),
        };
        ev
    }

    /// The golden values of this image: MRTD and RTMR[1]/[2] of the quote (`None`: left out).
    fn tdx_value(&self, rtmr1: bool, rtmr2: bool) -> TdxLaunchValue {
        TdxLaunchValue {
            mrtd: hex::encode(self.body.mr_td),
            page_add_order: "per-page".into(),
            rtmr1: rtmr1.then(|| hex::encode(self.body.rtmr[1])),
            rtmr2: rtmr2.then(|| hex::encode(self.body.rtmr[2])),
            ovmf_sha256: "00".repeat(32),
        }
    }

    /// Verify with manifests over this TD's PCRs, each changed by a tweak, at `join`.
    fn verify(
        &self,
        tweaks: &[&dyn Fn(&mut Manifest)],
        policy: TdxPolicy,
        join: JoinKind,
    ) -> Result<Accepted, Refusal> {
        let (signer, _) = PemSigner::generate().unwrap();
        let key = PublicKey::from_spki(&signer.public_key_spki()).unwrap();
        let manifests = tweaks
            .iter()
            .map(|t| {
                manifest_signed_by(
                    &replayed(&self.node),
                    |m| {
                        m.image.variant = "qemu-tdx".into();
                        m.tdx = Some(self.tdx_value(true, true));
                        t(m)
                    },
                    &signer,
                )
            })
            .collect();
        let v = TdxVerifier::new(
            collateral_from_json(&tdx_fixture("tdx_quote_collateral.json")).unwrap(),
            policy,
            manifests,
            key,
        )
        .at_time(V4_TIME);
        let verdict = TcbVerdict {
            status: TcbStatus::UpToDate,
            advisory_ids: vec![],
        };
        v.verify_verified_body(
            &self.body,
            &verdict,
            &self.evidence(),
            &Expectation {
                nonce: b"nonce",
                tls_public_key: &self.tls,
                join,
            },
        )
    }
}

fn phase(p: &'static str) -> impl Fn(&mut Manifest) {
    move |m: &mut Manifest| m.phase = Some(p.into())
}

fn refused(r: Result<Accepted, Refusal>) -> Refusal {
    let r = r.expect_err("must be refused");
    eprintln!("{r}");
    r
}

#[test]
fn sysinit_td_is_accepted_with_the_phase_rtmr3_proves() {
    let ev = events(Phase::Sysinit, false);
    let td = Td::boot(&ev, &ev);
    let a = td
        .verify(&[&phase("sysinit")], TdxPolicy::default(), JoinKind::First)
        .unwrap();
    assert_eq!(a.phase.as_deref(), Some("sysinit"));
    assert_eq!(a.ak_public, td.ak);
    // Not joined: RTMR[3]'s cluster part is zero although RTMR[3] holds `sysinit`.
    assert_ne!(td.body.rtmr[3], [0; 48]);
    assert_eq!(a.tdx_rtmr3, Some([0; 48]));
    // RTMR[0] has no golden value: a warning, not a refusal.
    assert!(
        a.platform_warnings.iter().any(|w| w.starts_with("RTMR0")),
        "{:?}",
        a.platform_warnings
    );
    // The same TD, a member: the cluster part is this cluster's.
    let ev = events(Phase::Sysinit, true);
    let td = Td::boot(&ev, &ev);
    let a = td
        .verify(&[&phase("sysinit")], TdxPolicy::default(), JoinKind::Either)
        .unwrap();
    assert_eq!(a.tdx_rtmr3, Some(member_rtmr3(&CLUSTER)));
    // ... which a first join refuses.
    let r = refused(td.verify(&[&phase("sysinit")], TdxPolicy::default(), JoinKind::First));
    assert_eq!(r.check, Check::TdxRtmr3);
    assert!(r.reason.contains("already joined in this boot"), "{r}");
}

/// A TD at `ready`, honest: both the vTPM and RTMR[3] say `ready`. Only the `ready` manifest
/// matches and the verdict's phase is `ready` (the key service's rules then give it no join
/// and no disk key: `keyservice/src/service.rs`, `check_phase`). With a manifest that does not
/// enforce PCR 11 and claims `sysinit`, the phase still comes from RTMR[3]: refused.
#[test]
fn ready_td_cannot_pass_for_sysinit() {
    let ev = events(Phase::Ready, false);
    let td = Td::boot(&ev, &ev);
    // The release's `sysinit` manifest: PCR 11 after the phases up to sysinit, from the
    // firmware log's PCR 11.
    let fw = nacre_eventlog::EventLog::parse(&td.node.firmware_log).unwrap();
    let fw11 = nacre_eventlog::replay_banks(&fw, &[], &[nacre_eventlog::HashAlg::Sha256])
        .unwrap()
        .remove(0)
        .get(11)
        .unwrap()
        .to_vec();
    let pcr11 = nacre_eventlog::runtime::pcr11_after(
        &fw11,
        Phase::Sysinit,
        nacre_eventlog::HashAlg::Sha256,
    )
    .unwrap();
    let sysinit = |m: &mut Manifest| {
        m.phase = Some("sysinit".into());
        m.measurements.get_mut(&11).unwrap().expected = pcr11.clone();
    };
    let r = refused(td.verify(&[&sysinit], TdxPolicy::default(), JoinKind::First));
    assert_eq!(r.check, Check::Measurements, "{r}");
    let a = td
        .verify(
            &[&sysinit, &phase("ready")],
            TdxPolicy::default(),
            JoinKind::First,
        )
        .unwrap();
    assert_eq!(a.phase.as_deref(), Some("ready"));
    // A manifest blind to PCR 11 that says `sysinit`.
    let blind = |m: &mut Manifest| {
        m.phase = Some("sysinit".into());
        m.measurements.remove(&11);
    };
    let r = refused(td.verify(&[&blind], TdxPolicy::default(), JoinKind::First));
    assert_eq!(r.check, Check::TdxRtmr3);
    assert!(
        r.reason
            .contains("RTMR[3] shows phase ready, the matched manifest is of phase sysinit"),
        "{r}"
    );
}

/// The host runs the vTPM: it shows `sysinit` (PCRs and log of a TD that stopped there) while
/// the TD's RTMR[3] shows `ready`. The log does not replay to RTMR[3]: refused, for a first
/// join and any other request.
#[test]
fn rtmr3_not_matching_the_runtime_log_is_refused() {
    let td = Td::boot(&events(Phase::Sysinit, false), &events(Phase::Ready, false));
    for join in [JoinKind::First, JoinKind::Either] {
        let r = refused(td.verify(&[&phase("sysinit")], TdxPolicy::default(), join));
        assert_eq!(r.check, Check::TdxRtmr3);
        assert!(
            r.reason
                .contains("the runtime log's phases and cluster events replay to"),
            "{r}"
        );
    }
    // The vTPM shows no join, RTMR[3] another cluster's id.
    let mut rtmr = events(Phase::Sysinit, false);
    rtmr.push(RuntimeEvent::ClusterId([0x43; 32]));
    let td = Td::boot(&events(Phase::Sysinit, false), &rtmr);
    let r = refused(td.verify(&[&phase("sysinit")], TdxPolicy::default(), JoinKind::Either));
    assert_eq!(r.check, Check::TdxRtmr3);
}

/// Root in a TD at `ready` extends `sysinit` again, into RTMR[3] and the vTPM alike, and hands
/// in the matching log: the replay holds, nacre-init's phase order does not.
#[test]
fn root_extending_sysinit_after_ready_is_refused() {
    let mut ev = events(Phase::Ready, false);
    ev.push(RuntimeEvent::Phase(Phase::Sysinit));
    let td = Td::boot(&ev, &ev);
    let anything = |m: &mut Manifest| {
        m.phase = Some("sysinit".into());
        m.measurements.remove(&11);
    };
    let r = refused(td.verify(&[&anything], TdxPolicy::default(), JoinKind::First));
    assert_eq!(r.check, Check::TdxRtmr3);
    assert!(r.reason.contains("sysinit extended after ready"), "{r}");
}

/// Golden RTMR[1]/[2] are required: a TDX manifest without them admits nothing, and without
/// any golden value the evidence is refused before anything else.
#[test]
fn missing_rtmr1_or_rtmr2_golden_values_are_refused() {
    let ev = events(Phase::Sysinit, false);
    let td = Td::boot(&ev, &ev);
    for (r1, r2, missing) in [(false, true, "RTMR1"), (true, false, "RTMR2")] {
        let v = td.tdx_value(r1, r2);
        let drop = move |m: &mut Manifest| {
            m.phase = Some("sysinit".into());
            m.tdx = Some(v.clone());
        };
        // No golden value anywhere.
        let r = refused(td.verify(&[&drop], TdxPolicy::default(), JoinKind::First));
        assert_eq!(r.check, Check::TdxQuote);
        assert!(
            r.reason
                .contains(&format!("no golden {missing} value (required on TDX")),
            "{r}"
        );
        // The operator configured it, the manifest lacks it: that manifest admits nothing.
        let configured = TdxPolicy {
            rtmr: [
                None,
                Some(vec![td.body.rtmr[1]]),
                Some(vec![td.body.rtmr[2]]),
            ],
            ..TdxPolicy::default()
        };
        let r = refused(td.verify(&[&drop], configured.clone(), JoinKind::First));
        assert_eq!(r.check, Check::LaunchValues);
        assert!(
            r.reason
                .contains(&format!("it records no {missing} (required on TDX")),
            "{r}"
        );
        // Without a `tdx` entry, paired with configured values: all three must be configured.
        let bare = |m: &mut Manifest| {
            m.phase = Some("sysinit".into());
            m.tdx = None;
        };
        let mut partial = configured.clone();
        partial.mrtd = vec![td.body.mr_td];
        partial.rtmr[if missing == "RTMR1" { 1 } else { 2 }] = None;
        let r = refused(td.verify(&[&bare], partial, JoinKind::First));
        assert!(
            r.reason
                .contains(&format!("no golden {missing} value (required on TDX")),
            "{r}"
        );
        let mut full = configured;
        full.mrtd = vec![td.body.mr_td];
        td.verify(&[&bare], full, JoinKind::First).unwrap();
    }
}

/// In-cluster mode on TDX: the key service's verdict from the TDX verifier (a member at
/// `ready`) passes the node's cluster rule; RTMR[3] showing another cluster than PCR 15 is
/// refused (`incluster::check_cluster`).
#[test]
fn tdx_key_service_identity_is_checked_with_rtmr3() {
    use nacre_attestation::incluster::{check_cluster, check_phase, ClusterIdentity};
    let ev = events(Phase::Ready, true);
    let td = Td::boot(&ev, &ev);
    let mut a = td
        .verify(&[&phase("ready")], TdxPolicy::default(), JoinKind::Rejoin)
        .unwrap();
    let known = ClusterIdentity {
        cluster_id: Some(CLUSTER),
        ..ClusterIdentity::default()
    };
    check_phase(&a, &["ready".into()]).unwrap();
    check_cluster(&a, &td.evidence(), &known).unwrap();
    a.tdx_rtmr3 = Some(member_rtmr3(&[0x43; 32]));
    let r = check_cluster(&a, &td.evidence(), &known).unwrap_err();
    assert_eq!(r.check, Check::ServiceIdentity);
    assert!(r.reason.contains("RTMR[3] cluster part"), "{r}");
}
