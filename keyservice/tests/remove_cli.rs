//! `nacre-keyservice init --max-nodes` and `remove`, through the binary: a removed node is gone
//! from `nodes`, its tombstone and disk bindings are what `remove` printed, the decision log
//! names the removal, and `remove` on a database a running service holds is refused clearly.

use nacre_keyservice::store::{Store, DB_FILE};
use std::process::Command;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nacre-keyservice"))
}

fn run(args: &[&str]) -> (bool, String) {
    let o = bin().args(args).output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[test]
fn init_max_nodes_and_remove_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let s = state.to_str().unwrap();
    let (ok, out) = run(&["init", "--state", s, "--max-nodes", "2"]);
    assert!(ok, "{out}");
    {
        let store = Store::open(&state.join(DB_FILE)).unwrap();
        assert_eq!(store.max_nodes().unwrap(), Some(2));
        let c = store.cluster().unwrap();
        for (ak, k) in [("aa11", "ka"), ("bb22", "kb")] {
            store
                .record_join(ak, &c.overlay, None, |r| r.wg_public_key = k.into())
                .unwrap();
        }
        store
            .bind_disk("6a0c3f7e-54b2-4c8e-9a41-0d2f7b3e9c01", "bb22")
            .unwrap();
        let e = store
            .record_join("cc33", &c.overlay, None, |r| r.wg_public_key = "kc".into())
            .unwrap_err();
        assert!(e.to_string().contains("limit of 2 node(s)"), "{e}");

        // The service holds the database: `remove` is refused, naming why.
        let (ok, out) = run(&["remove", "--state", s, "node-2"]);
        assert!(!ok);
        assert!(out.contains("stop the service first"), "{out}");
    }
    let (ok, out) = run(&["remove", "--state", s, "node-2"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("removed node-2 (10.244.0.2/32, ak bb22)")
            && out.contains("6a0c3f7e-54b2-4c8e-9a41-0d2f7b3e9c01"),
        "{out}"
    );
    let (ok, out) = run(&["remove", "--state", s, "node-2"]);
    assert!(!ok);
    assert!(
        out.contains("no node named or with the AK fingerprint \"node-2\""),
        "{out}"
    );
    let (ok, out) = run(&["nodes", "--state", s]);
    assert!(
        ok && out.contains("node-1") && !out.contains("node-2"),
        "{out}"
    );
    let (ok, out) = run(&["log", "--state", s]);
    assert!(
        ok && out.contains("node-2 (10.244.0.2/32) removed by operator"),
        "{out}"
    );

    // Room for one more node now (under a fresh name and address); the removed AK stays
    // refused.
    let store = Store::open(&state.join(DB_FILE)).unwrap();
    let c = store.cluster().unwrap();
    let e = store
        .record_join("bb22", &c.overlay, None, |r| r.wg_public_key = "kb".into())
        .unwrap_err();
    assert!(e.to_string().contains("removed"), "{e}");
    let (rec, _) = store
        .record_join("cc33", &c.overlay, None, |r| r.wg_public_key = "kc".into())
        .unwrap();
    assert_eq!(
        (rec.name.as_str(), rec.overlay.as_str()),
        ("node-3", "10.244.0.3/32")
    );
}
