#!/usr/bin/env bash
# End to end: attested key release to a small cluster of QEMU guests (OVMF, a swtpm each, TCG).
#
# One node image (nacre-init, an erofs root under dm-verity, a UKI on an ESP) configured to join
# the key service at 10.0.2.2:7443, to take its overlay address and WireGuard peers from it
# (`peers = "key-service"`), and to open its state disk with the key the service releases.
# The service runs on the host, in a network namespace shared with the guests (a bridge, DHCP
# from busybox udhcpd; tests/e2e/boot-cluster.sh), with the golden manifests precomputed by
# nacre-measure from the UKI (phases sysinit and ready, signed), trusting the TPMs through their
# EK certificates (the operator's CA) or, for one node, an enrolled attestation key.
#
#   a, b  the good image: join, get their disk keys (/var is the opened LUKS2 disk), get each
#         other as WireGuard peers (b at its join, a through the peer refresh) and ping each
#         other's overlay address through wg0 only;
#   t     the same image with one word added to the UKI's command line (a tampered UKI): its
#         quote and logs are genuine, its PCRs 4 and 11 are not golden: refused in the handshake,
#         it gets no key and stops before any service;
#         a and b also run pods as kubelet would (tests/e2e/cluster-payload.sh: nacre-cri-probe
#         speaks CRI to containerd, whose CRI plugin attaches each pod to the CNI network
#         nacre-init wrote from the join): each fetches the other's pod's file by its pod IP
#         through wg0; a gets spoofed packets from the underlay (tests/e2e/inject-spoofed.py, run
#         in the test's namespace: only the non-cluster control may arrive) and fetches with wg0
#         down (must fail); the nodes' NIC captures must show only WireGuard between them and no
#         cluster address in clear (tests/e2e/check-underlay.py); the kubelet files they print
#         must carry the test's API server CA and the join's bootstrap token, and parse against
#         the upstream types (nacre-init's kube::upstream::tests::node_files);
# then the key service is restarted on its database and node a boots again: it rejoins as the
# same node with the same overlay address, and its disk opens with the same (re-derived) key.
# The decision log must show exactly these grants and refusals.
#
# Usage: tests/e2e/cluster.sh [WORKDIR]   (default target/e2e-cluster; needs root: netns, taps)
# Environment: CARGO_TARGET_DIR (binaries from $CARGO_TARGET_DIR/debug, built here if missing).
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$repo/target/e2e-cluster}
target=${CARGO_TARGET_DIR:-$repo/target}
die() { echo "cluster: FAIL: $*" >&2; exit 1; }
[[ $(id -u) == 0 ]] || die "needs root (network namespace, tap devices)"
t0=$(date +%s)

(cd "$repo" && cargo build -q -p nacre-init -p nacre-keyservice -p nacre-measure -p nacre-cri-probe &&
  cargo test -q -p nacre-init --bin nacre-init --no-run 2>/dev/null)
init=$target/debug/nacre-init ks=$target/debug/nacre-keyservice measure=$target/debug/nacre-measure
probe=$target/debug/nacre-cri-probe
for t in containerd containerd-shim-runc-v2 runc ctr catatonit python3; do
  command -v $t >/dev/null || die "missing $t (scripts/install-deps.sh)"
done
for p in bridge host-local loopback portmap; do
  [[ -x /usr/lib/cni/$p ]] || die "missing /usr/lib/cni/$p (containernetworking-plugins, scripts/install-deps.sh)"
done

rm -rf "$work"; mkdir -p "$work"
work=$(cd "$work" && pwd)

# The cluster: master secret, id, CA. Nodes trust the CA (it is in their measured root). Pods get
# a /24 each of 10.32.0.0/16; kubelet gets the API server's CA (a test CA made here) and DNS.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj "/CN=nacre-e2e-kubernetes-ca" -keyout "$work/k8s-ca.key" -out "$work/k8s-ca.pem" 2>/dev/null
"$ks" init --state "$work/ks" --overlay 10.244.0.0/16 --api-server https://10.0.2.2:6443 \
  --pod-cidr 10.32.0.0/16 --service-cidr 10.96.0.0/12 --cluster-dns 10.96.0.10 \
  --api-server-ca "$work/k8s-ca.pem"

# containerd as on a release node (mkosi.conf.d/00-nacre/containerd.toml, its pause image built
# the same way from Debian's catatonit and pinned by digest), Debian's containerd 1.6 here.
pause_digest=$("$repo/scripts/lib/make-oci.sh" "$work/pause.oci.tar" --name nacre.local/pause:catatonit \
  --file "$(command -v catatonit):/catatonit:0755" --entrypoint '["/catatonit","-P"]')
sed "s|@SANDBOX_IMAGE@|nacre.local/pause:catatonit@$pause_digest|" \
  "$repo/mkosi.conf.d/00-nacre/containerd.toml" > "$work/containerd.toml"
"$repo/tests/init/make-oci.sh" "$work/busybox-test.tar" >/dev/null
# containerd's CRI copies the node's /etc/hosts into every pod (a release root has one too).
printf '127.0.0.1 localhost\n::1 localhost\n' > "$work/hosts"

cat > "$work/init.toml" <<'EOF'
[payload]
command = "/etc/nacre/check.sh"

[network]
interface = "eth0"
dhcp = true

[network.wireguard]
listen_port = 51820
cluster_ranges = ["10.244.0.0/16", "10.32.0.0/16", "10.96.0.0/12"]
peers = "key-service"

[key_service]
endpoint = "10.0.2.2:7443"
ca = "/etc/nacre/keyservice-ca.pem"
timeout_s = 120
refresh_s = 2

[state_disk]
serial = "nacre-state"
key_source = "key-service"

[[service]]
name = "containerd"
command = "/usr/bin/containerd"
args = ["--config", "/etc/containerd/config.toml", "--log-level", "warn"]
ready = { socket = "/run/containerd/containerd.sock" }
ready_timeout_s = 120
restart = "always"
restart_delay_ms = 500
stop_timeout_s = 10

[[service]]
name = "pause-import"
command = "/usr/bin/ctr"
args = ["--address", "/run/containerd/containerd.sock", "--namespace", "k8s.io", "images", "import", "--base-name", "nacre.local/pause", "--digests", "--snapshotter", "overlayfs", "/usr/share/nacre/pause.oci.tar"]
after = ["containerd"]
restart = "on-failure"
restart_delay_ms = 500
crash_loop = { restarts = 5, window_s = 300, action = "give-up" }
stop_timeout_s = 10
EOF
tcti=$(readlink -f /usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0)
"$repo/tests/init/build-node.sh" "$work/node" --init "$init" \
  --payload "$repo/tests/e2e/cluster-payload.sh" \
  --add /usr/sbin/mkfs.ext4:usr/sbin/mkfs.ext4 \
  --add "$(command -v containerd):usr/bin/containerd" \
  --add "$(command -v containerd-shim-runc-v2):usr/bin/containerd-shim-runc-v2" \
  --add "$(command -v runc):usr/sbin/runc" --add "$(command -v ctr):usr/bin/ctr" \
  --add /usr/lib/cni/bridge:usr/lib/cni/bridge --add /usr/lib/cni/host-local:usr/lib/cni/host-local \
  --add /usr/lib/cni/loopback:usr/lib/cni/loopback --add /usr/lib/cni/portmap:usr/lib/cni/portmap \
  --add "$probe:usr/lib/nacre/nacre-cri-probe" \
  --add-file "$work/containerd.toml:etc/containerd/config.toml" --add-file "$work/hosts:etc/hosts" \
  --add-file "$work/pause.oci.tar:usr/share/nacre/pause.oci.tar" \
  --add-file "$work/busybox-test.tar:usr/share/nacre/busybox-test.tar" \
  --add-file "$tcti:lib/x86_64-linux-gnu/libtss2-tcti-device.so.0" \
  --add-file "$work/init.toml:etc/nacre/init.toml" \
  --add-file "$work/ks/ca.pem:etc/nacre/keyservice-ca.pem" \
  --initrd-modules "virtio_pci virtio_blk dm-verity erofs virtio_net wireguard dm-crypt xts algif_skcipher crc32c_generic ext4 overlay bridge veth"

kernel=$(ls /boot/vmlinuz-* | sort -V | tail -n1)
cmdline="console=ttyS0 panic=-1 roothash=$(cat "$work/node/roothash") nacre.insecure-platform=1"
make_esp() { # NAME CMDLINE
  "$repo/scripts/lib/make-uki.sh" --kernel "$kernel" --initrd "$work/node/initrd.cpio" \
    --cmdline "$2" --osrel /etc/os-release --out "$work/$1.efi"
  "$repo/scripts/lib/make-esp-disk.sh" --efi "$work/$1.efi" --out "$work/$1-esp.img"
}
make_esp good "$cmdline"
make_esp tampered "$cmdline mitigations=off"

# Golden values of the good image, signed: as a node presents them when it joins (phase sysinit:
# joins and disk keys) and once its services run (phase ready: the peer refresh).
"$measure" keygen --prefix "$work/release"
for phase in sysinit ready; do
  "$measure" golden "$work/good-esp.img" --phase $phase --ref nacre-e2e --version test \
    --key "$work/release.key" --out "$work/golden-$phase.json"
done

# A manifest whose signature does not verify: the service refuses to start on it.
sed 's/"version": "test"/"version": "tesT"/' "$work/golden-sysinit.json" > "$work/forged.json"
cp "$work/golden-sysinit.json.sig" "$work/forged.json.sig"
cmp -s "$work/forged.json" "$work/golden-sysinit.json" && die "the forged manifest is not different"
if "$ks" serve --state "$work/ks" --listen 127.0.0.1:0 --manifest "$work/forged.json" \
     --manifest-key "$work/release.pub" --ak /dev/null > "$work/forged.log" 2>&1; then
  die "the service started with a manifest whose signature does not verify"
fi
grep -q "signature" "$work/forged.log" || { cat "$work/forged.log" >&2; die "no signature error"; }
echo "cluster: a forged manifest is refused: $(grep -m1 -i signature "$work/forged.log")"

# Each node's TPM exists before its first boot. a and t are manufactured like real TPMs: an EK
# certificate from the operator's CA (swtpm's local CA, state in $work/ekca) and a decrypt-only
# EK with which the node proves its AK by credential activation; the service trusts that CA.
# b's TPM has no EK certificate: the operator enrolls its attestation key instead
# (nacre-keyservice ak).
mkdir -p "$work/tpm" "$work/aks" "$work/ekca"
manufacture() { # NAME
  "$repo/scripts/lib/make-tpm.sh" "$work/tpm/$1" "$work/ekca"
}
enroll() { # NAME: a TPM without EK certificate; start its swtpm, read its AK, stop it
  local dir=$work/tpm/$1 port pid attempt
  mkdir -p "$dir"
  swtpm_setup --tpm2 --tpmstate "$dir" --pcr-banks sha256 --overwrite >/dev/null
  for attempt in 1 2 3 4 5; do
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    swtpm socket --tpm2 --tpmstate dir="$dir" --flags not-need-init,startup-clear \
      --server type=tcp,port=$port,bindaddr=127.0.0.1 \
      --ctrl type=tcp,port=$((port + 1)),bindaddr=127.0.0.1 >/dev/null 2>&1 &
    pid=$!
    for _ in $(seq 50); do
      (exec 3<>/dev/tcp/127.0.0.1/$((port + 1))) 2>/dev/null && break
      sleep 0.1
    done
    sleep 0.2
    if kill -0 "$pid" 2>/dev/null &&
       RUST_BACKTRACE=0 "$ks" ak --tcti "swtpm:host=127.0.0.1,port=$port" --out "$work/aks/$1.pem" 2>"$work/aks/$1.err"; then
      kill "$pid"; wait "$pid" 2>/dev/null || true
      return 0
    fi
    kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true
  done
  cat "$work/aks/$1.err" >&2; die "could not read $1's attestation key"
}
manufacture a; manufacture t; enroll b
cp "$work/ekca/ek-ca.pem" "$work/ek-ca.pem"
for n in a b t; do truncate -s 64M "$work/$n-state.img"; done

serve="$ks serve --state $work/ks --listen 10.0.2.2:7443 --manifest $work/golden-sysinit.json --manifest $work/golden-ready.json"
serve+=" --manifest-key $work/release.pub --ek-ca $work/ek-ca.pem --ak $work/aks/b.pem"
t1=$(date +%s)
"$repo/tests/e2e/boot-cluster.sh" "$work/run1" --timeout 600 --tpm-state-root "$work/tpm" \
  --service "$serve" --service "python3 $repo/tests/e2e/inject-spoofed.py $work/run1/a/console.log 600" \
  --node "a:$work/good-esp.img:$work/node/disk.img:$work/a-state.img" \
  --node "b:$work/good-esp.img:$work/node/disk.img:$work/b-state.img" \
  --node "t:$work/tampered-esp.img:$work/node/disk.img:$work/t-state.img" \
  || { tail -n 30 "$work"/run1/*/console.log "$work/run1/service.log" >&2 || true; die "boot-cluster (first boots) failed"; }
t2=$(date +%s)

con() { "$repo/scripts/lib/console-text.sh" "$work/$1/console.log"; }
has() { con "$1" | grep -- "$2" >/dev/null || { con "$1" | tail -n 40 >&2; die "$1: no \"$2\" on the console"; }; }
hasnt() { if con "$1" | grep -- "$2" >/dev/null; then con "$1" | tail -n 40 >&2; die "$1: \"$2\" on the console"; fi; }

for n in a b; do
  has "run1/$n" "NACRE-CLUSTER-PROBE-JOIN rc=3"
  has "run1/$n" "NACRE-CLUSTER-PROBE-FORGED rc=3"
  has "run1/$n" "NACRE-CLUSTER-OK"
  has "run1/$n" "answered through wg0"
  has "run1/$n" "measured nacre.cluster-id="
  hasnt "run1/$n" "NACRE-CLUSTER-FAIL"
done
has run1/t "refused this node"
has run1/t "FATAL: bring up the network"
hasnt run1/t "NACRE-CLUSTER"
hasnt run1/t "state disk"
# The tampered node's state disk was never formatted: no key, nothing written.
if cmp -s "$work/t-state.img" <(head -c 64M /dev/zero); then :; else die "t's state disk was written"; fi

# Pods (cluster-payload.sh): each node fetched the other pod's file through wg0.
for n in a b; do
  has "run1/$n" "NACRE-POD-FETCH-OK"
  has "run1/$n" "NACRE-POD-REMOVED"
done
has run1/a "NACRE-POD-WGDOWN-OK"
has run1/a "NACRE-INJECT-RESULT echoes=3 forwarded=0"
grep -q "inject: done" "$work/run1/service.log" || { grep "inject:" "$work/run1/service.log" >&2; die "the injector's control echoes got no answer"; }
grep "inject:" "$work/run1/service.log"
# The first match of a sed expression on a console (reads it all: no SIGPIPE under pipefail).
first() { con "$1" | sed -n "$2" | sed -n 1p; }
for n in a b; do
  echo "cluster: $n: boot -> first pod running at uptime $(first "run1/$n" 's/.*NACRE-POD-FIRST-RUNNING uptime=\([0-9.]*\).*/\1/p') s"
done
echo "cluster: a: $(first run1/a 's/.*\(NACRE-INJECT-RESULT.*\)/\1/p')"
echo "cluster: a: wg0 down: $(first run1/a 's/.*NACRE-POD-WGDOWN-ROUTE \(.*\)/\1/p'); up again: $(first run1/a 's/.*\(NACRE-POD-WGUP-[A-Z]*\).*/\1/p')"
# The underlay: only WireGuard between the nodes, no cluster address in clear.
ua=$(first run1/a 's/.*NACRE-POD-NODE .* underlay=\([0-9.]*\) .*/\1/p')
ub=$(first run1/b 's/.*NACRE-POD-NODE .* underlay=\([0-9.]*\) .*/\1/p')
python3 "$repo/tests/e2e/check-underlay.py" --node "$ua" --node "$ub" \
  --range 10.244.0.0/16 --range 10.32.0.0/16 --range 10.96.0.0/12 --min-wg 20 \
  "$work/run1/a/wire.pcap" "$work/run1/b/wire.pcap" || die "the underlay carried cluster traffic in clear"
# kubelet's files as the nodes wrote them: the test's CA, the join's token, upstream's fields.
for n in a b; do
  mkdir -p "$work/kube-$n"
  con "run1/$n" | python3 -c '
import json, re, sys
out, seen = sys.argv[1], set()
# The console holds each line twice (console-text.sh); a kernel record may have landed inside
# one copy: keep the first that parses.
for line in sys.stdin:
    m = re.search(r"NACRE-KUBE-FILE (\S+) (.*)$", line.rstrip("\n"))
    if not m or m.group(1) in seen or m.group(1) in ("ca.crt", "kubelet.args"):
        continue
    try:
        json.loads(m.group(2))
    except ValueError:
        continue
    seen.add(m.group(1))
    open(out + "/" + m.group(1), "w").write(m.group(2))
' "$work/kube-$n"
  cp "$work/k8s-ca.pem" "$work/kube-$n/ca.crt"
  token=$(first "run1/$n" 's/.*NACRE-CLUSTER-JOIN .*"bootstrap_token":"\([^"]*\)".*/\1/p')
  [[ -n "$token" ]] || die "$n: no bootstrap token in its join data"
  python3 - "$work/kube-$n" "$work/k8s-ca.pem" "$token" <<'PY' || die "$n: kubelet's files"
import base64, json, sys
d, ca, token = sys.argv[1], open(sys.argv[2]).read(), sys.argv[3]
kc = json.load(open(d + "/bootstrap-kubelet.conf"))
data = base64.b64decode(kc["clusters"][0]["cluster"]["certificate-authority-data"]).decode()
assert data.split() == ca.split(), "the bootstrap kubeconfig's CA is not the test's API server CA"
assert kc["users"][0]["user"]["token"] == token, "the bootstrap kubeconfig's token is not the join's"
cfg = json.load(open(d + "/kubelet-config.json"))
assert cfg["kind"] == "KubeletConfiguration" and cfg["apiVersion"] == "kubelet.config.k8s.io/v1beta1", cfg
assert cfg.get("clusterDNS") == ["10.96.0.10"], cfg.get("clusterDNS")
assert cfg["authentication"]["anonymous"]["enabled"] is False, cfg["authentication"]
print(f"cluster: {d}: bootstrap kubeconfig carries the test CA and the join's token; KubeletConfiguration v1beta1")
PY
  (cd "$repo" && NACRE_KUBE_FILES="$work/kube-$n" NACRE_KUBE_TOKEN="$token" \
    cargo test -q -p nacre-init --bin nacre-init kube::upstream::tests::node_files -- --ignored 2>&1 | tail -n 3) \
    | grep -q "1 passed" || die "$n: kubelet's files do not parse against the upstream types (kube::upstream::tests::node_files)"
  echo "cluster: $n: kubelet's files match the upstream types"
done

# The service, restarted on its database: node a boots again and rejoins.
t3=$(date +%s)
"$repo/tests/e2e/boot-cluster.sh" "$work/run2" --timeout 300 --tpm-state-root "$work/tpm" \
  --service "$serve" \
  --node "a:$work/good-esp.img:$work/node/disk.img:$work/a-state.img" \
  || { tail -n 30 "$work"/run2/*/console.log "$work/run2/service.log" >&2 || true; die "boot-cluster (reboot) failed"; }
t4=$(date +%s)
has run2/a "NACRE-CLUSTER-REBOOT-OK"
has run2/a "written at first boot"
has run2/a "rejoined"

# The decision log, from the database.
"$ks" log --state "$work/ks" --json > "$work/decisions.json"
"$ks" log --state "$work/ks"
python3 - "$work/decisions.json" <<'PY'
import json, sys
log = json.load(open(sys.argv[1]))
grants = [(d["op"], d["detail"].split()[0]) for d in log if d["outcome"] == "granted" and d["op"] in ("join", "disk-key")]
refused = [d for d in log if d["outcome"] == "refused"]
joins = [d for d in log if d["op"] == "join" and d["outcome"] == "granted"]
keys = [d for d in log if d["op"] == "disk-key" and d["outcome"] == "granted"]
assert len(joins) == 3, f"3 joins expected (a, b, a again): {joins}"
assert sum(d["detail"].startswith("rejoined") for d in joins) == 1, joins
assert len(keys) == 3, f"3 disk keys expected: {keys}"
by_check = {}
for d in refused:
    by_check.setdefault(d["check"], []).append(d)
assert sorted((c, len(v)) for c, v in by_check.items()) == [("PCR digest", 2), ("measurements", 1), ("policy", 2)], \
    f"expected: the tampered node (measurements), each good node's second join (policy) and forged log (PCR digest): {refused}"
r = by_check["measurements"][0]
assert r["op"] == "attest" and "PCR 4" in r["detail"] and "PCR 11" in r["detail"], r
assert all("already joined" in d["detail"] for d in by_check["policy"]), by_check["policy"]
assert all("forged or incomplete" in d["detail"] for d in by_check["PCR digest"]), by_check["PCR digest"]
print(f"cluster: decision log ok: {len(joins)} joins, {len(keys)} disk keys, {len(refused)} refusals")
for d in refused:
    print(f"  refused {d['op']} [{d['check']}] {d['detail'][:110]}")
PY
echo "cluster: PASS (build $((t1 - t0)) s, three nodes $((t2 - t1)) s, reboot $((t4 - t3)) s)"
