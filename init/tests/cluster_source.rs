//! A release-style node that reads its cluster configuration from a cloud metadata server,
//! booted for real (direct kernel boot under QEMU/TCG, software TPM), once per cloud. Its
//! init.toml says `[cluster] source = "gcp-metadata"` (or `aws-imds`, `azure-imds`),
//! `[network] dhcp = true` with `[network.wireguard] peers = "key-service"` and no cluster
//! ranges, endpoint or CA (the configuration provides them). The guest's NIC is a tap in a
//! network namespace of the test's own, where dnsmasq leases 10.128.0.5 (router 10.128.0.1) and
//! tests/init/cluster/metadata-server.py answers on 169.254.169.254:80 like that cloud's
//! metadata server (GCE: Metadata-Flavor: Google both ways; AWS: the IMDSv2 token; Azure:
//! `Metadata: true`, base64), serving a cluster.toml whose key service (10.128.0.1:7443) does
//! not exist. The node must bring up the underlay alone, read the configuration over it, log
//! `cluster configuration "cloud-test" from <source> (sha256 <digest of the served bytes>)`,
//! extend `nacre.cluster-config=<digest>` into PCR 15, and only then create wg0 and ask the key
//! service, which fails: it stops with a FATAL naming the key service. The boots run one at a
//! time (about 20 s each).

mod console;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const MODULES: &str = "virtio_pci virtio_blk dm-verity erofs virtio_net wireguard";
const MAC: &str = "52:54:00:00:00:61";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A network namespace for the test, deleted (with what runs in it) on drop.
struct Netns {
    name: String,
    children: Vec<std::process::Child>,
}

impl Netns {
    fn new(name: &str) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip netns add {name} (this test needs root)");
        Netns {
            name: name.into(),
            children: Vec::new(),
        }
    }

    fn ip(&self, args: &str) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend(args.split_whitespace());
        let ok = Command::new("ip")
            .args(&all)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip {}", all.join(" "));
    }

    fn spawn(&mut self, argv: &[&str]) {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {argv:?}: {e}"));
        self.children.push(child);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// One boot at a time: the machine may be shared.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn gcp_metadata_configuration_is_read_over_the_underlay_and_measured_before_use() {
    boot_from("gcp", "gcp-metadata");
}

#[test]
fn aws_imds_configuration_is_read_over_the_underlay_and_measured_before_use() {
    boot_from("aws", "aws-imds");
}

#[test]
fn azure_imds_configuration_is_read_over_the_underlay_and_measured_before_use() {
    boot_from("azure", "azure-imds");
}

/// The request line (and headers) the node must have sent, as metadata-server.py logs it.
fn expected_requests(cloud: &str) -> Vec<(&'static str, &'static str)> {
    match cloud {
        "gcp" => vec![(
            "GET /computeMetadata/v1/instance/attributes/nacre-cluster ",
            "Metadata-Flavor=Google",
        )],
        "aws" => vec![
            (
                "PUT /latest/api/token ",
                "X-aws-ec2-metadata-token-ttl-seconds=60",
            ),
            ("GET /latest/user-data ", "X-aws-ec2-metadata-token="),
        ],
        _ => vec![(
            "GET /metadata/instance/compute/userData?api-version=2021-01-01&format=text ",
            "Metadata=true",
        )],
    }
}

fn boot_from(cloud: &str, source: &str) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let w = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("cluster-source-{cloud}"));
    let _ = std::fs::remove_dir_all(&w);
    std::fs::create_dir_all(&w).unwrap();
    let dnsmasq = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("dnsmasq (Debian package dnsmasq-base) is needed for this test");
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("python3 is needed for this test");

    // The configuration the metadata server serves, and the digest the node must measure.
    let ca = std::fs::read_to_string(repo().join("cluster/tests/data/test-ca.pem")).unwrap();
    let cluster = nacre_cluster::ClusterConfig::new(
        "cloud-test",
        "10.128.0.1:7443".parse().unwrap(),
        &ca,
        vec!["10.244.0.0/16".into(), "10.96.0.0/12".into()],
    )
    .unwrap()
    .render()
    .unwrap();
    let cluster_toml = w.join("cluster.toml");
    std::fs::write(&cluster_toml, &cluster).unwrap();
    let digest = hex::encode(nacre_cluster::digest(cluster.as_bytes()));

    // The node: a release-style init.toml (nothing the configuration provides).
    let init_toml = w.join("init.toml");
    std::fs::write(
        &init_toml,
        r#"[cluster]
source = "SOURCE"
timeout_s = 30

[network]
interface = "eth0"
dhcp = true

[network.wireguard]
listen_port = 51820
peers = "key-service"

[key_service]
timeout_s = 2
"#
        .replace("SOURCE", source),
    )
    .unwrap();
    let node = w.join("node");
    let t = Instant::now();
    let status = Command::new(repo().join("tests/init/build-node.sh"))
        .arg(&node)
        .args(["--init", env!("CARGO_BIN_EXE_nacre-init")])
        .arg("--add-file")
        .arg(format!("{}:etc/nacre/init.toml", init_toml.display()))
        .args(["--initrd-modules", MODULES])
        .status()
        .expect("tests/init/build-node.sh");
    assert!(status.success(), "building the node failed");
    let build_secs = t.elapsed().as_secs_f64();

    // The cloud: DHCP on the tap, the metadata server on 169.254.169.254 (local in the
    // namespace: the guest reaches it through its default route, as on GCE).
    let mut ns = Netns::new(&format!("nacre-meta-{cloud}-{}", std::process::id()));
    ns.ip("link set lo up");
    ns.ip("addr add 169.254.169.254/32 dev lo");
    ns.ip("tuntap add dev tap0 mode tap");
    ns.ip("addr add 10.128.0.1/20 dev tap0");
    ns.ip("link set tap0 up");
    let dlog = w.join("dnsmasq.log");
    let dnsmasq_args = [
        dnsmasq.to_owned(),
        "--keep-in-foreground".into(),
        "--conf-file=/dev/null".into(),
        "--port=0".into(),
        "--no-resolv".into(),
        "--no-hosts".into(),
        "--user=root".into(),
        "--group=root".into(),
        "--interface=tap0".into(),
        "--bind-interfaces".into(),
        "--dhcp-authoritative".into(),
        "--dhcp-range=10.128.0.5,10.128.0.5,255.255.240.0,1h".into(),
        "--dhcp-option=option:router,10.128.0.1".into(),
        format!("--log-facility={}", dlog.display()),
        format!("--dhcp-leasefile={}", w.join("dnsmasq.leases").display()),
        format!("--pid-file={}", w.join("dnsmasq.pid").display()),
    ];
    ns.spawn(&dnsmasq_args.iter().map(String::as_str).collect::<Vec<_>>());
    let mlog = w.join("metadata.log");
    let server = repo().join("tests/init/cluster/metadata-server.py");
    ns.spawn(&[
        python,
        server.to_str().unwrap(),
        "--cloud",
        cloud,
        "--file",
        cluster_toml.to_str().unwrap(),
        "--log",
        mlog.to_str().unwrap(),
    ]);
    std::thread::sleep(Duration::from_millis(500));
    for c in &mut ns.children {
        assert!(
            c.try_wait().unwrap().is_none(),
            "dnsmasq or the metadata server stopped: {}",
            std::fs::read_to_string(&dlog).unwrap_or_default()
        );
    }

    let console_log = w.join("node.log");
    let t = Instant::now();
    let status = Command::new("ip")
        .args(["netns", "exec", &ns.name])
        .arg(repo().join("tests/init/boot.sh"))
        .arg(&node)
        .arg(&console_log)
        .args([
            "--tpm",
            "--cmdline",
            "nacre.insecure-platform=1",
            "--timeout",
            "120",
        ])
        .args([
            "--qemu-arg",
            "-netdev",
            "--qemu-arg",
            "tap,id=n0,ifname=tap0,script=no,downscript=no",
            "--qemu-arg",
            "-device",
            "--qemu-arg",
        ])
        .arg(format!("virtio-net-pci,netdev=n0,mac={MAC}"))
        .status()
        .expect("tests/init/boot.sh");
    let boot_secs = t.elapsed().as_secs_f64();
    let console = console::read(&console_log);
    let requests = std::fs::read_to_string(&mlog).unwrap_or_default();
    drop(ns);
    let ctx = || format!("console:\n{console}\nmetadata server:\n{requests}");
    assert!(status.success(), "boot.sh failed ({status}); {}", ctx());

    // The server was asked the cloud's way, and answered.
    for (line, header) in expected_requests(cloud) {
        assert!(
            requests
                .lines()
                .any(|l| l.starts_with(line) && l.contains(header) && l.ends_with("-> 200")),
            "no {line:?} with {header:?} answered 200; {}",
            ctx()
        );
    }
    // In this order: the underlay alone, the configuration read, checked, measured (the
    // served bytes' digest into PCR 15), logged, applied; then wg0; then the key service's
    // failure stops the node.
    let at = |s: &str| {
        console
            .find(s)
            .unwrap_or_else(|| panic!("no {s:?} on the console; {}", ctx()))
    };
    let underlay = at("bring up the underlay: done");
    let read = at("read the cluster configuration: done");
    let measured = at(&format!(
        "measured nacre.cluster-config={digest} into PCR 15"
    ));
    let logged = at(&format!(
        "cluster configuration \"cloud-test\" from {source} (sha256 {digest}): key service 10.128.0.1:7443"
    ));
    let applied = at("apply the cluster configuration: done");
    let wg0 = at("network: wg0: public key");
    let fatal = at("FATAL: bring up the network: peers from key-service");
    assert!(
        underlay < read && read < measured && measured < logged && logged < applied,
        "out of order; {}",
        ctx()
    );
    assert!(applied < wg0 && wg0 < fatal, "out of order; {}", ctx());
    assert!(
        console[..underlay].contains("network: underlay eth0"),
        "the underlay was not up before the read; {}",
        ctx()
    );
    // (The console as read holds the init's lines, then the raw log: count in the first.)
    let lines = console
        .split("\n---- the console as written ----\n")
        .next()
        .unwrap_or_default();
    assert_eq!(
        lines.matches("network: underlay eth0").count(),
        1,
        "the underlay came up more than once; {}",
        ctx()
    );
    eprintln!(
        "cluster-source {cloud}: node built in {build_secs:.1} s, boot {boot_secs:.1} s, total {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}
