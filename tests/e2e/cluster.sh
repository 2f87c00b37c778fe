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

(cd "$repo" && cargo build -q -p nacre-init -p nacre-keyservice -p nacre-measure)
init=$target/debug/nacre-init ks=$target/debug/nacre-keyservice measure=$target/debug/nacre-measure

rm -rf "$work"; mkdir -p "$work"
work=$(cd "$work" && pwd)

# The cluster: master secret, id, CA. Nodes trust the CA (it is in their measured root).
"$ks" init --state "$work/ks" --overlay 10.244.0.0/16 --api-server https://10.0.2.2:6443

cat > "$work/init.toml" <<'EOF'
[payload]
command = "/etc/nacre/check.sh"

[network]
interface = "eth0"
dhcp = true

[network.wireguard]
listen_port = 51820
cluster_ranges = ["10.244.0.0/16"]
peers = "key-service"

[key_service]
endpoint = "10.0.2.2:7443"
ca = "/etc/nacre/keyservice-ca.pem"
timeout_s = 120
refresh_s = 2

[state_disk]
serial = "nacre-state"
key_source = "key-service"
EOF
tcti=$(readlink -f /usr/lib/x86_64-linux-gnu/libtss2-tcti-device.so.0)
"$repo/tests/init/build-node.sh" "$work/node" --init "$init" \
  --payload "$repo/tests/e2e/cluster-payload.sh" \
  --add /usr/sbin/mkfs.ext4:usr/sbin/mkfs.ext4 \
  --add-file "$tcti:lib/x86_64-linux-gnu/libtss2-tcti-device.so.0" \
  --add-file "$work/init.toml:etc/nacre/init.toml" \
  --add-file "$work/ks/ca.pem:etc/nacre/keyservice-ca.pem" \
  --initrd-modules "virtio_pci virtio_blk dm-verity erofs virtio_net wireguard dm-crypt xts algif_skcipher crc32c_generic ext4"

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
# certificate from the operator's CA (swtpm's local CA, state in $work/ekca) and an EK that
# certifies the AK; the service trusts that CA. b's TPM has no EK certificate: the operator
# enrolls its attestation key instead (nacre-keyservice ak).
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
"$repo/tests/e2e/boot-cluster.sh" "$work/run1" --timeout 400 --tpm-state-root "$work/tpm" \
  --service "$serve" \
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
