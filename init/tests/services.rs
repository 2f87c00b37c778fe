//! nacre-init's services booted for real (direct kernel boot under QEMU/TCG, Debian's kernel, the
//! dm-verity root of tests/init/build-node.sh): real containerd and runc from Debian, and in
//! kubelet's place a test payload (tests/init/services/payload.sh) that checks what kubelet
//! would need, imports an OCI archive built from busybox-static (tests/init/make-oci.sh) and runs
//! it as a container, kills containerd and waits for the supervisor to restart it, then asks PID 1
//! to power off. Boots run two at a time (the test harness' threads).
//!
//! The boot-timeline benchmark against a busybox shell init is `#[ignore]`d (it wants a release
//! build): `tests/init/bench-services.sh`.

mod console;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const MODULES: &str = "virtio_pci virtio_blk dm-verity erofs overlay";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn tmp() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("services")
}

fn run(cmd: &mut Command) {
    let status = cmd.status().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(status.success(), "{cmd:?} failed: {status}");
}

/// A node whose root has containerd, runc, ctr, the OCI archive and the payload; `config` is
/// its /etc/nacre/init.toml.
fn build_node(dir: &Path, init: &Path, config: &str, with_containerd: bool) {
    build_node_with(dir, init, config, "payload.sh", with_containerd)
}

/// [`build_node`] with another payload (/etc/nacre/check.sh) from tests/init/services.
fn build_node_with(dir: &Path, init: &Path, config: &str, payload: &str, with_containerd: bool) {
    let s = repo().join("tests/init/services");
    let mut cmd = Command::new(repo().join("tests/init/build-node.sh"));
    cmd.arg(dir)
        .arg("--init")
        .arg(init)
        .arg("--payload")
        .arg(s.join(payload))
        .arg("--add-file")
        .arg(format!("{}:/etc/nacre/init.toml", s.join(config).display()));
    if with_containerd {
        let oci = tmp().join("busybox-test.tar");
        if !oci.exists() {
            std::fs::create_dir_all(tmp()).unwrap();
            run(Command::new(repo().join("tests/init/make-oci.sh")).arg(&oci));
        }
        for bin in [
            "/usr/bin/containerd",
            "/usr/bin/containerd-shim-runc-v2",
            "/usr/sbin/runc",
            "/usr/bin/ctr",
        ] {
            cmd.arg("--add").arg(format!("{bin}:{bin}"));
        }
        cmd.arg("--add-file")
            .arg(format!(
                "{}:/usr/share/nacre/busybox-test.tar",
                oci.display()
            ))
            .arg("--add-file")
            .arg(format!(
                "{}:/etc/nacre/bb-stage2.sh",
                s.join("bb-stage2.sh").display()
            ))
            .args(["--initrd-modules", MODULES]);
    }
    run(&mut cmd);
}

fn containerd_node() -> &'static Path {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = tmp().join("node");
        build_node(
            &dir,
            Path::new(env!("CARGO_BIN_EXE_nacre-init")),
            "services.toml",
            true,
        );
        dir
    })
}

struct Boot {
    console: String,
}

impl Boot {
    fn has(&self, s: &str) -> bool {
        self.console.contains(s)
    }

    /// Position of the first line containing `s` (for ordering checks).
    fn at(&self, s: &str) -> usize {
        self.console
            .find(s)
            .unwrap_or_else(|| panic!("no {s:?} in the console:\n{}", self.console))
    }

    /// The number after `key ` on the line that has it.
    fn number(&self, key: &str) -> Option<f64> {
        let line = self.console.lines().find(|l| l.contains(key))?;
        let rest = line.split(key).nth(1)?.trim();
        rest.split_whitespace().next()?.parse().ok()
    }

    /// The init's own timestamp (`[   1.234] nacre-init: ...`) of the line containing `s`.
    fn stamp(&self, s: &str) -> Option<f64> {
        let line = self.console.lines().find(|l| l.contains(s))?;
        line.trim_start_matches('[')
            .split(']')
            .next()?
            .trim()
            .parse()
            .ok()
    }
}

fn boot(node: &Path, name: &str, args: &[&str]) -> Boot {
    let log = node.join(format!("{name}.log"));
    let start = std::time::Instant::now();
    let status = Command::new(repo().join("tests/init/boot.sh"))
        .arg(node)
        .arg(&log)
        .args(args)
        .status()
        .expect("tests/init/boot.sh");
    let console = console::read(&log);
    eprintln!("{name}: boot took {:.1} s", start.elapsed().as_secs_f64());
    assert!(
        status.success(),
        "{name}: boot.sh failed ({status}); console:\n{console}"
    );
    Boot { console }
}

#[test]
fn containerd_then_payload_a_container_a_restart_and_a_clean_poweroff() {
    let b = boot(
        containerd_node(),
        "containerd",
        &[
            "--tpm",
            "--cmdline",
            "nacre.insecure-platform=1",
            "--timeout",
            "180",
        ],
    );
    let c = &b.console;
    // Order: ready measured, containerd started and ready, then the payload.
    let ready = b.at("measured ready into PCR 11");
    let started = b.at("started containerd");
    let is_ready = b.at("containerd is ready");
    let payload = b.at("started payload");
    assert!(
        ready < started && started < is_ready && is_ready < payload,
        "{c}"
    );
    // The one-shot task (ready = "exited") completed before its dependent started.
    let oneshot = b.at("oneshot completed (exited with status 0");
    assert!(is_ready < oneshot && oneshot < payload, "{c}");
    // What kubelet would need.
    for check in [
        "NACRE-CHECK root read-only",
        "NACRE-CHECK root is the dm-verity mapping 'root'",
        "NACRE-CHECK /var writable",
        "NACRE-CHECK cgroup2",
        "NACRE-CHECK image imported",
    ] {
        assert!(b.has(&format!("[payload] {check}")), "{check}:\n{c}");
    }
    assert!(!b.has("NACRE-CHECK-FAIL"), "{c}");
    // The container ran (its pid 1 is the container's own) and printed its marker.
    assert!(b.has("[payload] NACRE-CONTAINER-42 pid=1"), "{c}");
    // containerd, killed, was restarted by the supervisor and the payload saw it back.
    let kill = b.at("NACRE-KILL containerd");
    let restarted = b.at("containerd was killed by SIGKILL");
    let back = b.at("NACRE-CONTAINERD-BACK");
    assert!(kill < restarted && restarted < back, "{c}");
    assert!(b.has("restart #1 in 500 ms"), "{c}");
    assert!(b.has("[payload] NACRE-CONTAINER-AGAIN-42"), "{c}");
    assert!(b.has("[payload] NACRE-PAYLOAD-OK"), "{c}");
    // `nacre-init poweroff`: services in reverse order, then the rest, then the root.
    let sig = b.at("SIGTERM: stopping the node (poweroff)");
    let stop_payload = b.at("shutdown: stopping payload");
    let stop_containerd = b.at("shutdown: stopping containerd");
    let stopped = b.at("containerd stopped");
    let final_stage = b.at("shutdown: final stage (poweroff) from a tmpfs");
    let root_line = "shutdown: unmounted /oldroot";
    let unmounted_root = c
        .match_indices(root_line)
        .map(|(i, _)| i)
        .find(|i| matches!(c.as_bytes().get(i + root_line.len()), Some(b'\r' | b'\n')))
        .unwrap_or_else(|| panic!("the old root was not unmounted:\n{c}"));
    assert!(
        sig < stop_payload
            && stop_payload < stop_containerd
            && stop_containerd < stopped
            && stopped < final_stage
            && final_stage < unmounted_root,
        "{c}"
    );
    assert!(
        b.has("shutdown: closed the device-mapper mapping root"),
        "{c}"
    );
    assert!(b.has("shutdown: device-mapper mappings left: none"), "{c}");
    let blocks = c
        .lines()
        .find(|l| l.contains("shutdown: block devices:"))
        .unwrap();
    assert!(!blocks.contains("dm-"), "{blocks}");
    let mounts = c
        .lines()
        .find(|l| l.contains("shutdown: mounts left:"))
        .unwrap();
    for fs in ["erofs", "overlay", "/oldroot"] {
        assert!(!mounts.contains(fs), "{mounts}");
    }
    assert!(b.has("reboot: Power down"), "{c}");
    assert!(!b.has("FATAL") && !b.has("Kernel panic"), "{c}");
    // For the record (the note).
    let t = |k: &str| b.number(k).unwrap_or(f64::NAN);
    eprintln!(
        "timeline (debug build, TPM): PID 1 exec {:.3} s, containerd exec {:.3} s, payload exec {:.3} s; {}",
        t("NACRE-T init-exec"),
        b.stamp("started containerd").unwrap_or(f64::NAN),
        t("NACRE-T payload-exec"),
        c.lines()
            .find(|l| l.contains("NACRE-RSS pid1 "))
            .unwrap_or("")
            .trim()
    );
}

#[test]
fn reboot_asked_by_a_person_stops_services_in_order_and_reboots() {
    // `nacre-init reboot` sends PID 1 SIGINT, as the kernel does on ctrl-alt-del once PID 1
    // disabled it with reboot(RB_DISABLE_CAD). QEMU runs with -no-reboot: the reboot ends it.
    let b = boot(
        containerd_node(),
        "reboot",
        &[
            "--cmdline",
            "nacre.insecure-platform=1 nacre_test=reboot",
            "--timeout",
            "120",
        ],
    );
    let c = &b.console;
    let sig = b.at("SIGINT (ctrl-alt-del): stopping the node (reboot)");
    let stop_payload = b.at("shutdown: stopping payload");
    let stop_containerd = b.at("shutdown: stopping containerd");
    let fin = b.at("shutdown: final stage (reboot) from a tmpfs");
    assert!(
        sig < stop_payload && stop_payload < stop_containerd && stop_containerd < fin,
        "{c}"
    );
    assert!(b.has("shutdown: device-mapper mappings left: none"), "{c}");
    assert!(b.has("reboot: Restarting system"), "{c}");
    assert!(!b.has("FATAL"), "{c}");
}

#[test]
fn a_service_that_never_becomes_ready_stops_the_node() {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    let node = NODE.get_or_init(|| {
        let dir = tmp().join("never-ready");
        build_node(
            &dir,
            Path::new(env!("CARGO_BIN_EXE_nacre-init")),
            "never-ready.toml",
            false,
        );
        dir
    });
    let b = boot(
        node,
        "never-ready",
        &["--tpm", "--cmdline", "nacre.insecure-platform=1"],
    );
    assert!(b.has("started stuck"), "{}", b.console);
    assert!(
        b.has("FATAL: start stuck: not ready after 3 s (file /run/stuck.ready existing)"),
        "{}",
        b.console
    );
    assert!(!b.has("started payload"), "{}", b.console);
    assert!(b.has("reboot: Power down"), "{}", b.console);
}

/// One node for both crash-loop boots (tests/init/services/crash-loop.toml).
fn crash_loop_node() -> &'static Path {
    static NODE: OnceLock<PathBuf> = OnceLock::new();
    NODE.get_or_init(|| {
        let dir = tmp().join("crash-loop");
        build_node_with(
            &dir,
            Path::new(env!("CARGO_BIN_EXE_nacre-init")),
            "crash-loop.toml",
            "crash-loop.sh",
            false,
        );
        dir
    })
}

#[test]
fn crash_loop_stop_node_stops_it_with_one_fatal_line() {
    let b = boot(
        crash_loop_node(),
        "crash-stop",
        &[
            "--cmdline",
            "nacre.insecure-platform=1 nacre_test=crash-stop",
        ],
    );
    let c = &b.console;
    // One start and three restarts, the fourth exit is past the limit.
    assert!(b.has("doomed exited with status 3 after"), "{c}");
    assert!(b.has("restart #3 in"), "{c}");
    assert!(!b.has("restart #4 in"), "{c}");
    // The init's own lines (console::read appends the raw console after them).
    let init_lines = c
        .split("---- the console as written ----")
        .next()
        .unwrap_or(c);
    let fatal: Vec<&str> = init_lines.lines().filter(|l| l.contains("FATAL")).collect();
    assert_eq!(fatal.len(), 1, "{c}");
    let f = fatal[0];
    assert!(
        f.contains("FATAL: service doomed: crash loop: exited with status 3 after 3 restarts in ")
            && f.contains("(crash_loop: at most 3 restarts in 60 s, action stop-node)"),
        "{f}"
    );
    assert!(b.at("restart #3 in") < b.at("FATAL: service doomed"), "{c}");
    assert!(b.has("stopping the node (power off)"), "{c}");
    assert!(b.has("reboot: Power down"), "{c}");
    // Fail closed: no orderly shutdown, the other service never exited.
    assert!(!b.has("shutdown: stopping"), "{c}");
    assert!(!b.has("flaky exited"), "{c}");
    assert!(!b.has("Kernel panic"), "{c}");
}

#[test]
fn crash_loop_give_up_leaves_the_service_stopped_and_the_node_running() {
    let b = boot(
        crash_loop_node(),
        "crash-give-up",
        &[
            "--cmdline",
            "nacre.insecure-platform=1 nacre_test=crash-give-up",
        ],
    );
    let c = &b.console;
    let gave_up = b.at("flaky: crash loop: exited with status 3 after 3 restarts in ");
    assert!(
        b.has("(crash_loop: at most 3 restarts in 60 s, action give-up): giving up on it; it stays stopped, the node keeps running"),
        "{c}"
    );
    assert!(b.at("restart #3 in") < gave_up, "{c}");
    assert!(!b.has("restart #4 in"), "{c}");
    // The payload saw flaky stay stopped (4 runs) while doomed runs, and powered the node off.
    let ok = b.at("[payload] NACRE-GIVE-UP-OK runs=4");
    assert!(gave_up < ok, "{c}");
    assert!(!b.has("NACRE-CRASH-FAIL"), "{c}");
    assert!(b.at("SIGTERM: stopping the node (poweroff)") > ok, "{c}");
    assert!(b.has("shutdown: stopping doomed"), "{c}");
    assert!(b.has("reboot: Power down"), "{c}");
    assert!(!b.has("FATAL") && !b.has("Kernel panic"), "{c}");
}

/// The median of a few boots of each: PID 1 exec -> containerd exec -> payload (kubelet) exec,
/// nacre-init against a busybox shell init doing the same steps (build-busybox-initrd.sh and
/// services/bb-stage2.sh say which, and what the shell is spared), no TPM for either. Set
/// NACRE_INIT_BENCH to the nacre-init to measure (a release build); prints the figures.
#[test]
#[ignore]
fn boot_timeline_against_a_busybox_shell_init() {
    let init = std::env::var("NACRE_INIT_BENCH")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_BIN_EXE_nacre-init")));
    let rounds: usize = std::env::var("NACRE_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let node = tmp().join("bench");
    build_node(&node, &init, "services.toml", true);
    run(
        Command::new(repo().join("tests/init/build-busybox-initrd.sh"))
            .arg(&node)
            .arg(&init)
            .arg(MODULES),
    );
    let bb_initrd = node.join("initrd-busybox.cpio");
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let mut rows = Vec::new();
    let inits = [("nacre-init", None), ("busybox sh", Some(&bb_initrd))];
    // Rounds interleave the two inits, so a change in the machine's load weighs on both alike.
    let mut samples = vec![[(); 4].map(|_| Vec::new()); inits.len()];
    for r in 0..rounds {
        for (k, (label, initrd)) in inits.iter().enumerate() {
            let [to_stage2, to_containerd, to_payload, hwm] = &mut samples[k];
            let mut args = vec!["--cmdline", "nacre.insecure-platform=1 nacre_bench=1"];
            let initrd_s;
            if let Some(i) = initrd {
                initrd_s = i.display().to_string();
                args.extend(["--initrd", initrd_s.as_str()]);
            }
            let b = boot(
                &node,
                &format!("bench-{}-{r}", label.replace(' ', "-")),
                &args,
            );
            let init_exec = b.number("NACRE-T init-exec").expect("init-exec");
            let payload = b.number("NACRE-T payload-exec").expect("payload-exec");
            let (stage2, containerd) = match initrd {
                None => (
                    b.stamp("stage 2 (verified root)"),
                    b.stamp("started containerd"),
                ),
                Some(_) => (
                    b.number("NACRE-T stage2-exec"),
                    b.number("NACRE-T containerd-exec"),
                ),
            };
            to_stage2.push(stage2.expect("stage 2 exec") - init_exec);
            let containerd = containerd.expect("containerd exec");
            to_containerd.push(containerd - init_exec);
            to_payload.push(payload - init_exec);
            hwm.push(b.number("VmHWM:").unwrap_or(f64::NAN));
        }
    }
    for ((label, _), [s2, c, p, h]) in inits.iter().zip(samples) {
        rows.push((label, median(s2), median(c), median(p), median(h)));
    }
    eprintln!("\nboot timeline, median of {rounds} boots (TCG, 1 vCPU, no TPM), from PID 1 exec:");
    eprintln!(
        "{:<12} {:>12} {:>15} {:>12} {:>12}",
        "init", "root switched", "containerd exec", "payload exec", "PID 1 VmHWM"
    );
    for (label, s2, c, p, h) in &rows {
        eprintln!("{label:<12} {s2:>12.3}s {c:>14.3}s {p:>11.3}s {h:>9.0} kB");
    }
}
