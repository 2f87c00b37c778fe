//! The DHCP client against a real server on the host, without a guest: dnsmasq in one network
//! namespace, this test's thread in another (setns), a veth pair between them; everything is
//! deleted at the end and nothing leaves the two namespaces. It checks what a guest cannot show
//! cheaply: the lease applied over rtnetlink (routes with `proto dhcp`, MTU, resolv.conf) and
//! changed (a route removed, another added), a renewal unicast and one broadcast, a NAK from an
//! authoritative server that does not know the lease, and no answer at all.
//!
//! Needs root (namespaces) and dnsmasq (Debian: dnsmasq-base).

use nacre_network::config::Selector;
use nacre_network::dhcp::{self, Renewal, Route};
use nacre_network::lease;
use nacre_network::rtnl::Rtnl;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

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

struct Env {
    server: String,
    client: String,
    dir: PathBuf,
    dnsmasq: Option<Child>,
}

impl Env {
    fn start_dnsmasq(&mut self, first: &str) {
        self.stop_dnsmasq();
        let dnsmasq = ["/usr/sbin/dnsmasq", "/usr/bin/dnsmasq"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("dnsmasq (Debian package dnsmasq-base) is needed for this test");
        let leases = self.dir.join(format!("leases-{first}"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.server, dnsmasq])
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                "--no-resolv",
                "--no-hosts",
                "--user=root",
                "--group=root",
                "--interface=va",
                "--bind-interfaces",
                "--dhcp-authoritative",
                "--log-dhcp",
                "--dhcp-option=option:netmask,255.255.255.255",
                "--dhcp-option=option:router,10.128.0.99",
                "--dhcp-option=121,10.128.0.1/32,0.0.0.0,0.0.0.0/0,10.128.0.1",
                "--dhcp-option=option:mtu,1460",
                "--dhcp-option=option:dns-server,10.128.0.1",
                "--dhcp-option=option:domain-search,c.nacre.internal",
            ])
            .arg(format!("--dhcp-range={first},{first},255.255.240.0,2m"))
            .arg(format!(
                "--log-facility={}",
                self.dir.join("dnsmasq.log").display()
            ))
            .arg(format!("--dhcp-leasefile={}", leases.display()))
            .arg(format!(
                "--pid-file={}",
                self.dir.join("dnsmasq.pid").display()
            ))
            .stdin(Stdio::null())
            .spawn()
            .expect("starting dnsmasq");
        self.dnsmasq = Some(child);
        std::thread::sleep(Duration::from_millis(300));
    }

    fn stop_dnsmasq(&mut self) {
        if let Some(mut c) = self.dnsmasq.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        self.stop_dnsmasq();
        for n in [&self.server, &self.client] {
            let _ = Command::new("ip")
                .args(["netns", "del", n])
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

#[test]
fn lease_renewal_nak_and_silence_against_dnsmasq() {
    let id = std::process::id();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dhcp-netns");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut env = Env {
        server: format!("nacre-dhcps-{id}"),
        client: format!("nacre-dhcpc-{id}"),
        dir: dir.clone(),
        dnsmasq: None,
    };
    for n in [&env.server, &env.client] {
        run(&["ip", "netns", "add", n]);
        run(&["ip", "-n", n, "link", "set", "lo", "up"]);
    }
    run(&[
        "ip",
        "link",
        "add",
        "va",
        "netns",
        &env.server,
        "type",
        "veth",
        "peer",
        "name",
        "vb",
        "netns",
        &env.client,
        "address",
        "52:54:00:12:34:56",
    ]);
    run(&[
        "ip",
        "-n",
        &env.server,
        "addr",
        "add",
        "10.128.0.1/20",
        "dev",
        "va",
    ]);
    run(&["ip", "-n", &env.server, "link", "set", "va", "up"]);
    run(&["ip", "-n", &env.client, "link", "set", "vb", "up"]);
    env.start_dnsmasq("10.128.0.5");

    // This thread joins the client's namespace (threads spawned later would inherit it).
    let ns = std::fs::File::open(format!("/run/netns/{}", env.client)).unwrap();
    // SAFETY: setns on a namespace file this test opened; only this thread moves.
    assert_eq!(
        unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) },
        0,
        "setns: {}",
        std::io::Error::last_os_error()
    );

    let (l, _) = dhcp::acquire("vb", MAC, Duration::from_secs(20)).unwrap();
    assert_eq!((l.address, l.prefix), (ip("10.128.0.5"), 32));
    assert_eq!(l.router, Some(ip("10.128.0.1")));
    assert!(l.classless);
    let mut rt = Rtnl::open().unwrap();
    let vb = rt.find(&Selector::Name("vb".into())).unwrap().unwrap();
    let resolv = dir.join("run/resolv.conf");
    let changed = lease::apply(&mut rt, vb.index, "vb", &l, None, &resolv).unwrap();
    assert_eq!(changed.len(), 4, "{changed:?}");
    let routes = run(&["ip", "-n", &env.client, "-4", "route", "show"]);
    assert!(
        routes.contains("default via 10.128.0.1 dev vb proto dhcp src 10.128.0.5"),
        "{routes}"
    );
    assert!(
        routes.contains("10.128.0.1 dev vb proto dhcp scope link src 10.128.0.5"),
        "{routes}"
    );
    assert!(!routes.contains("10.128.0.99"), "{routes}");
    let link = run(&["ip", "-n", &env.client, "link", "show", "vb"]);
    assert!(link.contains("mtu 1460"), "{link}");
    assert_eq!(
        std::fs::read_to_string(&resolv).unwrap(),
        "# nacre-init: from the DHCP lease of 10.128.0.5 on vb (server 10.128.0.1)\n\
         nameserver 10.128.0.1\nsearch c.nacre.internal\n"
    );

    // The same lease again: nothing to do. Another set of routes: the old one goes.
    assert!(lease::apply(&mut rt, vb.index, "vb", &l, Some(&l), &resolv)
        .unwrap()
        .is_empty());
    let mut l2 = l.clone();
    l2.routes = vec![
        l.routes[0],
        Route {
            dest: ip("10.0.0.0"),
            prefix: 8,
            gateway: Some(ip("10.128.0.1")),
        },
    ];
    lease::apply(&mut rt, vb.index, "vb", &l2, Some(&l), &resolv).unwrap();
    let routes = run(&["ip", "-n", &env.client, "-4", "route", "show"]);
    assert!(!routes.contains("default"), "{routes}");
    assert!(
        routes.contains("10.0.0.0/8 via 10.128.0.1 dev vb proto dhcp"),
        "{routes}"
    );

    // RENEWING (unicast to the server), then REBINDING (broadcast).
    for to in [l.server, Ipv4Addr::BROADCAST] {
        let deadline = Instant::now() + Duration::from_secs(10);
        match dhcp::renew("vb", MAC, l.address, to, deadline).unwrap() {
            Renewal::Ack(n, _) => {
                assert_eq!(n.address, l.address);
                assert_eq!(n.routes, l.routes);
            }
            other => panic!("renewal towards {to}: {other:?}"),
        }
    }
    let log = std::fs::read_to_string(dir.join("dnsmasq.log")).unwrap();
    assert_eq!(
        log.matches("DHCPACK(va) 10.128.0.5 52:54:00:12:34:56")
            .count(),
        3,
        "{log}"
    );

    // An authoritative server that does not know this lease: NAK.
    env.start_dnsmasq("10.128.0.6");
    let deadline = Instant::now() + Duration::from_secs(10);
    assert_eq!(
        dhcp::renew("vb", MAC, l.address, l.server, deadline).unwrap(),
        Renewal::Nak(l.server)
    );
    // No server: no answer by the deadline.
    env.stop_dnsmasq();
    let t = Instant::now();
    let r = dhcp::renew("vb", MAC, l.address, l.server, t + Duration::from_secs(3)).unwrap();
    assert_eq!(r, Renewal::NoAnswer(None));
    assert!(t.elapsed() < Duration::from_secs(4));
}
