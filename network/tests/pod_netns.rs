//! The node's pod routing and ingress filtering on a real kernel, without a guest: the node in
//! one network namespace, with the same calls nacre-init makes (strict rp_filter, the cluster
//! routing, the pod bridge cni0, forwarding), and three neighbours in their own namespaces,
//! each behind a veth pair:
//!
//! - `under`: the underlay (the node's `va`, 192.0.2.1/24, default route via 192.0.2.2): an
//!   attacker that sends from cluster addresses and from an outside one;
//! - `remote`: stands in for wg0 (a veth named `wg0`: no WireGuard module on every test host;
//!   routing and rp_filter only see the interface): another node sending from its overlay address;
//! - `pod`: a pod on cni0 (10.32.1.5/24, gateway 10.32.1.1).
//!
//! It shows: (a) a packet with a cluster source from the underlay is dropped by the
//! reverse-path filter (TcpExt IPReversePathFilter rises, the listener gets nothing) while the
//! same packet from an outside source is delivered; from that outside source, the node's own
//! cluster addresses (its overlay address on wg0, the pod gateway on cni0) are not reached
//! (`lookup local` comes after the `iif` rules), while the node itself reaches them; and cluster sources through wg0 and the
//! pod's own address through cni0 are accepted; the underlay cannot reach a pod through the
//! forwarding node; (b) the own pod range goes to cni0, never to wg0 (whose route covers the
//! whole cluster range), and with cni0 deleted it is unreachable, not sent out the underlay.
//!
//! Needs root (namespaces) and `ip` (iproute2). Everything is deleted at the end.

use nacre_network::cidr::Cidr;
use nacre_network::rtnl::Rtnl;
use nacre_network::{sysctl, WG_TABLE};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

const PORT: u16 = 7777;

fn run(args: &[&str]) -> String {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `ip -n NS ARGS...`, its exit status and stdout + stderr.
fn ip_ns(ns: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new("ip")
        .args(["-n", ns])
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Run `f` on a thread inside namespace `ns` (sockets it creates stay in `ns`).
fn in_ns<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(format!("/run/netns/{ns}")).unwrap();
            // SAFETY: setns on a namespace file this test opened; only this thread moves.
            let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns {ns}: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap()
    })
}

/// The node's `TcpExt: IPReversePathFilter` (this thread's namespace).
fn rp_filter_drops() -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| l.starts_with("TcpExt:")).collect();
    assert_eq!(lines.len(), 2, "{text}");
    let names = lines[0].split_whitespace();
    let values = lines[1].split_whitespace();
    names
        .zip(values)
        .find(|(n, _)| *n == "IPReversePathFilter")
        .map(|(_, v)| v.parse().unwrap())
        .expect("no IPReversePathFilter counter")
}

/// Send one datagram from `from` to `to` inside `ns`.
fn send(ns: &str, from: &str, to: &str, payload: &[u8]) {
    in_ns(ns, || {
        let s = UdpSocket::bind(format!("{from}:0")).unwrap();
        s.send_to(payload, to).unwrap();
    });
}

/// Every datagram `l` receives within a short time (source, payload).
fn drain(l: &UdpSocket) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((n, from)) = l.recv_from(&mut buf) {
        got.push((from, buf[..n].to_vec()));
    }
    got
}

fn c(s: &str) -> Cidr {
    s.parse().unwrap()
}

fn mac(ns: &str, dev: &str) -> String {
    let (ok, out) = ip_ns(ns, &["-o", "link", "show", dev]);
    assert!(ok, "{out}");
    let after = out.split("link/ether ").nth(1).expect("no MAC");
    after.split_whitespace().next().unwrap().to_string()
}

fn tx_packets(ns: &str, dev: &str) -> u64 {
    let out = run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "cat",
        &format!("/sys/class/net/{dev}/statistics/tx_packets"),
    ]);
    out.trim().parse().unwrap()
}

#[test]
fn pod_range_routing_and_ingress_filtering() {
    let id = std::process::id();
    let node = format!("nacre-pn-node-{id}");
    let under = format!("nacre-pn-under-{id}");
    let remote = format!("nacre-pn-remote-{id}");
    let pod = format!("nacre-pn-pod-{id}");
    let _guard = Namespaces(vec![
        node.clone(),
        under.clone(),
        remote.clone(),
        pod.clone(),
    ]);
    for n in [&node, &under, &remote, &pod] {
        run(&["ip", "netns", "add", n]);
        run(&["ip", "-n", n, "link", "set", "lo", "up"]);
    }
    let veth = |a: &str, ans: &str, b: &str, bns: &str| {
        run(&[
            "ip", "link", "add", a, "netns", ans, "type", "veth", "peer", "name", b, "netns", bns,
        ]);
        run(&["ip", "-n", ans, "link", "set", a, "up"]);
        run(&["ip", "-n", bns, "link", "set", b, "up"]);
    };
    veth("va", &node, "vb", &under);
    veth("wg0", &node, "wr", &remote);
    veth("pb", &node, "pa", &pod);
    // No IPv6 on the node's va and wg0: their router solicitations and MLD reports would
    // count in the tx_packets checks below (IPv4 is what is tested).
    for dev in ["va", "wg0"] {
        run(&[
            "ip",
            "netns",
            "exec",
            &node,
            "sh",
            "-c",
            &format!("echo 1 > /proc/sys/net/ipv6/conf/{dev}/disable_ipv6"),
        ]);
    }
    // The underlay: node 192.0.2.1, its gateway 192.0.2.2 (the attacker), which also holds a
    // cluster overlay address, an address in the node's pod range and an outside one.
    run(&[
        "ip",
        "-n",
        &node,
        "addr",
        "add",
        "192.0.2.1/24",
        "dev",
        "va",
    ]);
    run(&[
        "ip",
        "-n",
        &node,
        "route",
        "add",
        "default",
        "via",
        "192.0.2.2",
    ]);
    run(&[
        "ip",
        "-n",
        &under,
        "addr",
        "add",
        "192.0.2.2/24",
        "dev",
        "vb",
    ]);
    for a in ["10.244.0.9/32", "10.32.1.77/32", "198.51.100.9/32"] {
        run(&["ip", "-n", &under, "addr", "add", a, "dev", "vb"]);
    }
    // The attacker knows the node's MAC (no ARP needed, which the filter would also stop).
    let va_mac = mac(&node, "va");
    run(&[
        "ip",
        "-n",
        &under,
        "neigh",
        "add",
        "192.0.2.1",
        "lladdr",
        &va_mac,
        "dev",
        "vb",
    ]);
    for to in ["10.32.0.0/16", "10.244.0.3/32"] {
        run(&["ip", "-n", &under, "route", "add", to, "via", "192.0.2.1"]);
    }
    // The "other node" behind wg0: overlay 10.244.0.9, pods 10.32.2.0/24.
    run(&[
        "ip",
        "-n",
        &remote,
        "addr",
        "add",
        "10.244.0.9/32",
        "dev",
        "wr",
    ]);
    run(&[
        "ip",
        "-n",
        &remote,
        "addr",
        "add",
        "10.32.2.9/32",
        "dev",
        "wr",
    ]);
    for to in ["192.0.2.1/32", "10.244.0.3/32"] {
        run(&["ip", "-n", &remote, "route", "add", to, "dev", "wr"]);
    }
    let wg_mac = mac(&node, "wg0");
    for to in ["192.0.2.1", "10.244.0.3"] {
        run(&[
            "ip", "-n", &remote, "neigh", "add", to, "lladdr", &wg_mac, "dev", "wr",
        ]);
    }

    // The node, as nacre-network sets it up: rp_filter, the cluster routing, the pod range,
    // forwarding, then the cluster ranges through wg0.
    let cluster = [c("10.244.0.0/16"), c("10.32.0.0/16")];
    let pods = c("10.32.1.0/24");
    in_ns(&node, || {
        let set = sysctl::strict_rp_filter(Path::new(sysctl::PROC_SYS), "va").unwrap();
        assert_eq!(set.len(), 3);
        let mut rt = Rtnl::open().unwrap();
        nacre_network::install_cluster_routing(&mut rt, &cluster, "va").unwrap();
        nacre_network::check_pod_range(&pods, &cluster, "10.244.0.3".parse().unwrap()).unwrap();
        nacre_network::install_pod_range(&mut rt, &pods).unwrap();
        sysctl::enable_forwarding(Path::new(sysctl::PROC_SYS)).unwrap();
        let wg0 = rt
            .find(&nacre_network::config::Selector::Name("wg0".into()))
            .unwrap()
            .unwrap();
        // The overlay address as setup_wireguard adds it (no prefix route).
        rt.add_address(wg0.index, &c("10.244.0.3/32"), false)
            .unwrap();
        nacre_network::route_cluster_via(&mut rt, &cluster, wg0.index).unwrap();
    });
    // `lookup local` moved after the underlay rules, before the cluster's.
    let rules = || {
        let (ok, out) = ip_ns(&node, &["-4", "rule", "show"]);
        assert!(ok, "{out}");
        out
    };
    let expected = [
        "98:\tfrom all to 10.244.0.0/16 iif va unreachable",
        "98:\tfrom all to 10.32.0.0/16 iif va unreachable",
        "99:\tfrom all lookup local proto static",
        "100:\tfrom all to 10.244.0.0/16 lookup 51820 proto static",
    ];
    let shown = rules();
    for e in expected {
        assert_eq!(shown.matches(e).count(), 1, "{e:?} in\n{shown}");
    }
    assert_eq!(shown.matches("lookup local").count(), 1, "{shown}");
    for (k, v) in [
        ("net/ipv4/conf/all/rp_filter", "1"),
        ("net/ipv4/conf/va/rp_filter", "1"),
        ("net/ipv4/ip_forward", "1"),
    ] {
        let got = run(&[
            "ip",
            "netns",
            "exec",
            &node,
            "cat",
            &format!("/proc/sys/{k}"),
        ]);
        assert_eq!(got.trim(), v, "{k}");
    }
    // The pod joins cni0 (as the CNI bridge plugin would attach its veth).
    run(&["ip", "-n", &node, "link", "set", "pb", "master", "cni0"]);
    run(&["ip", "-n", &pod, "addr", "add", "10.32.1.5/24", "dev", "pa"]);
    run(&[
        "ip",
        "-n",
        &pod,
        "route",
        "add",
        "default",
        "via",
        "10.32.1.1",
    ]);
    let (ok, out) = ip_ns(&node, &["-o", "addr", "show", "dev", "cni0"]);
    assert!(ok && out.contains("inet 10.32.1.1/24"), "{out}");

    // (b) Where the node sends: its pods through cni0, the rest of the cluster through wg0.
    let route = |dst: &str| ip_ns(&node, &["route", "get", dst]);
    let (ok, out) = route("10.32.1.5");
    assert!(ok && out.contains("dev cni0"), "own pod: {out}");
    for dst in ["10.32.2.5", "10.244.0.9"] {
        let (ok, out) = route(dst);
        assert!(ok && out.contains("dev wg0"), "{dst}: {out}");
    }
    let (ok, out) = route("198.51.100.9");
    assert!(ok && out.contains("dev va"), "outside: {out}");
    // The main table holds no route for the pod range (the bridge address has none).
    let (_, main) = ip_ns(&node, &["route", "show", "table", "main"]);
    assert!(!main.contains("10.32.1.0/24"), "{main}");
    let (_, table) = ip_ns(&node, &["route", "show", "table", &WG_TABLE.to_string()]);
    assert!(table.contains("unreachable 10.32.1.0/24"), "{table}");

    // (a) Ingress. Listeners on the node and in the pod.
    let node_l = in_ns(&node, || {
        let l = UdpSocket::bind(("0.0.0.0", PORT)).unwrap();
        l.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        l
    });
    let pod_l = in_ns(&pod, || {
        let l = UdpSocket::bind(("0.0.0.0", PORT)).unwrap();
        l.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        l
    });
    let drops = || in_ns(&node, rp_filter_drops);
    let node_addr = format!("192.0.2.1:{PORT}");

    // From the underlay with an outside source: delivered (the control).
    let before = drops();
    send(&under, "198.51.100.9", &node_addr, b"outside");
    let got = drain(&node_l);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.ip().to_string(), "198.51.100.9");
    assert_eq!(got[0].1, b"outside");
    assert_eq!(drops(), before);

    // The same outside source to the node's own cluster addresses (the overlay address, which
    // kubelet serves on, and the pod gateway): not delivered (the `iif va` rule comes before
    // local delivery), so nothing answers out the underlay in clear.
    for to in ["10.244.0.3", "10.32.1.1"] {
        let before = drops();
        send(
            &under,
            "198.51.100.9",
            &format!("{to}:{PORT}"),
            b"to cluster",
        );
        let got = drain(&node_l);
        assert!(
            got.is_empty(),
            "the underlay reached the node's {to}: {got:?}"
        );
        assert_eq!(drops(), before, "{to}: not the reverse-path filter");
    }
    // The node itself still reaches its own addresses (local delivery, just consulted later).
    for to in ["127.0.0.1", "192.0.2.1", "10.244.0.3", "10.32.1.1"] {
        send(&node, "0.0.0.0", &format!("{to}:{PORT}"), b"self");
        let got = drain(&node_l);
        assert_eq!(got.len(), 1, "node to its own {to}: {got:?}");
    }

    // From the underlay "from" a peer's overlay address and "from" the node's own pod: dropped.
    for src in ["10.244.0.9", "10.32.1.77"] {
        let before = drops();
        send(&under, src, &node_addr, b"spoofed");
        let got = drain(&node_l);
        assert!(
            got.is_empty(),
            "{src} from the underlay was delivered: {got:?}"
        );
        assert_eq!(drops(), before + 1, "{src}: IPReversePathFilter");
    }

    // The same cluster source through wg0: accepted.
    let before = drops();
    send(&remote, "10.244.0.9", &node_addr, b"via wg0");
    let got = drain(&node_l);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.ip().to_string(), "10.244.0.9");
    assert_eq!(drops(), before);
    // And through wg0 to the node's overlay address (kubelet's): delivered.
    send(
        &remote,
        "10.244.0.9",
        &format!("10.244.0.3:{PORT}"),
        b"wg0 to overlay",
    );
    let got = drain(&node_l);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].1, b"wg0 to overlay");

    // The pod through cni0: accepted (to the node's underlay address and its gateway).
    for to in [node_addr.clone(), format!("10.32.1.1:{PORT}")] {
        send(&pod, "10.32.1.5", &to, b"pod");
        let got = drain(&node_l);
        assert_eq!(got.len(), 1, "pod to {to}: {got:?}");
        assert_eq!(got[0].0.ip().to_string(), "10.32.1.5");
    }

    // The underlay cannot reach the pod through the forwarding node (outside source, so not
    // the reverse-path filter: the `iif va` rule); the node itself can.
    send(
        &under,
        "198.51.100.9",
        &format!("10.32.1.5:{PORT}"),
        b"in clear",
    );
    assert!(drain(&pod_l).is_empty(), "the underlay reached a pod");
    send(&node, "0.0.0.0", &format!("10.32.1.5:{PORT}"), b"node");
    let got = drain(&pod_l);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].0.ip().to_string(),
        "10.32.1.1",
        "sent from the bridge"
    );
    // A peer's pod sending through wg0 reaches the pod (forwarded wg0 -> cni0).
    let (ok, out) = ip_ns(&remote, &["route", "add", "10.32.1.0/24", "dev", "wr"]);
    assert!(ok, "{out}");
    run(&[
        "ip",
        "-n",
        &remote,
        "neigh",
        "add",
        "10.32.1.5",
        "lladdr",
        &wg_mac,
        "dev",
        "wr",
    ]);
    send(
        &remote,
        "10.32.2.9",
        &format!("10.32.1.5:{PORT}"),
        b"peer pod",
    );
    let got = drain(&pod_l);
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].0.ip().to_string(), "10.32.2.9");

    // (b) Without cni0 the own pod range is unreachable: not out the underlay, not into wg0.
    run(&["ip", "-n", &node, "link", "del", "cni0"]);
    let (ok, out) = route("10.32.1.5");
    assert!(!ok, "with cni0 gone, 10.32.1.5 is routed: {out}");
    assert!(out.contains("No route to host"), "{out}");
    let va_before = tx_packets(&node, "va");
    let wg0_mid = tx_packets(&node, "wg0");
    let err = in_ns(&node, || {
        let s = UdpSocket::bind("0.0.0.0:0").unwrap();
        s.send_to(b"lost", format!("10.32.1.5:{PORT}")).unwrap_err()
    });
    assert_eq!(
        err.raw_os_error(),
        Some(libc::EHOSTUNREACH),
        "sending to the own pod range without cni0: {err}"
    );
    assert_eq!(tx_packets(&node, "va"), va_before, "sent out the underlay");
    assert_eq!(tx_packets(&node, "wg0"), wg0_mid, "sent into wg0");
    // Forwarded traffic for the range (from wg0) is not sent on either.
    send(&remote, "10.32.2.9", &format!("10.32.1.5:{PORT}"), b"after");
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(
        tx_packets(&node, "va"),
        va_before,
        "forwarded out the underlay"
    );

    // Links that come back: wg0 down and up loses its routes for good (the kernel does not
    // put them back); meanwhile the cluster is unreachable, not routed elsewhere.
    let bounce = |dev: &str| {
        run(&["ip", "-n", &node, "link", "set", dev, "down"]);
        run(&["ip", "-n", &node, "link", "set", dev, "up"]);
    };
    bounce("wg0");
    let (ok, out) = route("10.244.0.9");
    assert!(!ok && out.contains("No route to host"), "{out}");
    // reconcile_routes puts back what exists (wg0), the pod range stays unreachable (no cni0).
    let done = in_ns(&node, || {
        let mut rt = Rtnl::open().unwrap();
        nacre_network::reconcile_routes(&mut rt, &cluster, Some(&pods)).unwrap()
    });
    assert_eq!(done, ["10.244.0.0/16 dev wg0", "10.32.0.0/16 dev wg0"]);
    // The rules again, once each (a second run changes nothing); a deleted underlay rule and a
    // `lookup local` put back at 0 are corrected.
    let shown = rules();
    for e in expected {
        assert_eq!(shown.matches(e).count(), 1, "{e:?} in\n{shown}");
    }
    assert_eq!(shown.matches("lookup local").count(), 1, "{shown}");
    run(&[
        "ip",
        "-n",
        &node,
        "rule",
        "del",
        "pref",
        "98",
        "to",
        "10.32.0.0/16",
    ]);
    run(&[
        "ip", "-n", &node, "rule", "add", "pref", "0", "lookup", "local",
    ]);
    in_ns(&node, || {
        let mut rt = Rtnl::open().unwrap();
        nacre_network::reconcile_routes(&mut rt, &cluster, Some(&pods)).unwrap()
    });
    let shown = rules();
    for e in expected {
        assert_eq!(shown.matches(e).count(), 1, "{e:?} in\n{shown}");
    }
    assert_eq!(shown.matches("lookup local").count(), 1, "{shown}");
    let (ok, out) = route("10.244.0.9");
    assert!(ok && out.contains("dev wg0"), "{out}");
    let (ok, out) = route("10.32.1.5");
    assert!(!ok, "{out}");
    // The watcher does the same on its own, for wg0 and for a cni0 the bridge plugin creates.
    in_ns(&node, || {
        nacre_network::watch::spawn(cluster.to_vec(), Some(pods), |l| eprintln!("watch: {l}"))
            .unwrap()
    });
    let settled = |dst: &str, dev: &str| {
        for _ in 0..40 {
            let (ok, out) = route(dst);
            if ok && out.contains(&format!("dev {dev}")) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("{dst} not back on {dev}: {:?}", route(dst));
    };
    bounce("wg0");
    settled("10.244.0.9", "wg0");
    run(&["ip", "-n", &node, "link", "add", "cni0", "type", "bridge"]);
    run(&[
        "ip",
        "-n",
        &node,
        "addr",
        "add",
        "10.32.1.1/24",
        "dev",
        "cni0",
    ]);
    let (ok, out) = route("10.32.1.5");
    assert!(!ok, "a new cni0 that is down: {out}");
    run(&["ip", "-n", &node, "link", "set", "cni0", "up"]);
    settled("10.32.1.5", "cni0");
}
