#!/usr/bin/env bash
# The main job: the product flow, end to end on one machine.
#   1. build the RELEASE node image (mkosi: Debian trixie, nacre-init, erofs root + dm-verity, UKI;
#      no shell, no test payload: scripts/build-image.sh without --test);
#   2. sign it for Secure Boot with own keys (PK/KEK/db, enrolled into an OVMF varstore);
#   3. publish its golden values exactly as CI does (scripts/lib/finish-image.sh: one signed
#      manifest per phase a verifier checks, measurements-{sysinit,ready}.json + .sig);
#   4. create two clusters (nacre-keyservice init --endpoint: each writes its cluster.toml) and
#      start their key services with those published manifests;
#   5. boot three nodes from the SAME image bytes under QEMU (OVMF with Secure Boot enforced, a
#      manufactured swtpm each), each given a cluster configuration through fw_cfg:
#        a  cluster A's configuration: attested by A's service, joins, opens its state disk with
#           the released key, brings up wg0 and runs containerd;
#        b  cluster B's configuration: the same with B (same image, same golden values);
#        x  an edited copy of A's configuration (one more cluster range) pointing at A: its
#           measurements are golden, but PCR 15 shows another configuration: refused, it gets
#           nothing (its state disk stays all zeros) and stops;
#   6. check that the firmware refuses the UKI with one byte changed.
#
# Usage: scripts/main.sh [OUTDIR] [--cache DIR]      (default OUTDIR: ./out/main)
#   --cache  the image build's cache (scripts/build-image.sh --cache; default target/image-cache;
#            a cold one first bootstraps mkosi's trixie tools tree, a few minutes)
#   Writes OUTDIR/disk.img (signed), uki.efi (unsigned, reproducible), uki.signed.efi, vars.fd,
#   measurements-{sysinit,ready}.json + .sig, constellation-measurements.json, clusters/{a,b}
#   (key service state, cluster.toml), nodes/ (consoles, service logs), tampered/, main-timings.
#
# The keys are generated on first use in OUTDIR/keys (secure-boot/: PK, KEK, db; measurements.key
# and .pub: the golden values' signing key) and kept, so PCR 7 and the signatures stay stable
# across runs. A release uses its own keys (see ci/README.md). Needs root (network namespace).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out="" cache="$root/target/image-cache"
while (($#)); do
  case "$1" in
    --cache) cache="${2:?}"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "main: unknown option $1" >&2; exit 2 ;;
    *) [[ -z "$out" ]] || { echo "main: one OUTDIR only" >&2; exit 2; }; out="$1"; shift ;;
  esac
done
out=$(realpath -m "${out:-$root/out/main}")
lib="$root/scripts/lib"
die() { echo "main: FAIL: $*" >&2; exit 1; }
mkdir -p "$out/keys"
timings=""
t0=$(date +%s.%N) tstep=$t0
step() { printf '\n== %s\n' "$*"; }
lap() { # NAME: record the time since the previous lap
  local now; now=$(date +%s.%N)
  timings+=$(printf '%-34s %6.1f s' "$1" "$(awk -v a="$tstep" -v b="$now" 'BEGIN { print b - a }')")$'\n'
  tstep=$now
}

step "installing dependencies"
"$root/scripts/install-deps.sh"
lap "dependencies"

step "building nacre-measure and nacre-keyservice"
cargo build --release -q --manifest-path "$root/Cargo.toml" -p nacre-measure -p nacre-keyservice
measure="$root/target/release/nacre-measure" ks="$root/target/release/nacre-keyservice"
lap "host tools (cargo)"

step "building the release node image (mkosi, cache $cache)"
"$root/scripts/build-image.sh" "$out" --cache "$cache" --no-finish
python3 - "$out/root-report.json" <<'PY' || die "the release root holds a shell or test tools"
import json, sys
r = json.load(open(sys.argv[1]))
# (ctr is there: the pause-import service's importer, mkosi.conf.d/00-nacre/mkosi.finalize)
bad = [e for e in r["executables"] if e.rsplit("/", 1)[1] in ("busybox", "sh", "test-payload.sh")]
assert not bad, bad
print(f"main: release root {r['bytes'] / 1048576:.1f} MiB, {len(r['executables'])} executables: "
      + " ".join(e.rsplit("/", 1)[1] for e in r["executables"]))
PY
lap "image (nacre-init + mkosi)"

step "signing the image for Secure Boot (own PK/KEK/db)"
"$lib/make-sb-keys.sh" "$out/keys/secure-boot"
"$lib/sign-image.sh" "$out" --keys "$out/keys/secure-boot"
lap "Secure Boot signing + varstore"

step "publishing the golden measurements (as CI does: scripts/lib/finish-image.sh)"
[[ -f "$out/keys/measurements.key" ]] || "$measure" keygen --prefix "$out/keys/measurements"
"$lib/finish-image.sh" "$out" --variant qemu-vtpm --vars "$out/vars.fd" --version dev \
  --key "$out/keys/measurements.key" --measure "$measure" --no-formats
for phase in sysinit ready; do
  openssl dgst -sha256 -verify "$out/keys/measurements.pub" \
    -signature <(base64 -d "$out/measurements-$phase.json.sig") "$out/measurements-$phase.json" >/dev/null \
    || die "measurements-$phase.json: the signature does not verify with openssl"
done
"$measure" export constellation "$out/measurements-sysinit.json" >"$out/constellation-measurements.json"
"$measure" predict "$out/disk.img" --vars "$out/vars.fd" --phase sysinit | grep -E '^PCR +[0-9]+:'
lap "golden measurements"

step "two clusters, one image: key services A and B, a manufactured TPM per node"
rm -rf "$out/clusters" "$out/nodes" "$out/tpm"
mkdir -p "$out/clusters" "$out/nodes"
"$ks" init --state "$out/clusters/a" --name cluster-a --endpoint 10.0.2.2:7443 --overlay 10.244.0.0/16
"$ks" init --state "$out/clusters/b" --name cluster-b --endpoint 10.0.2.2:7444 --overlay 10.245.0.0/16
# x: cluster A's configuration with one more range routed through wg0: a different document, so
# a different digest in PCR 15, though endpoint and CA are A's.
sed 's#cluster_ranges = \["10.244.0.0/16"\]#cluster_ranges = ["10.244.0.0/16", "10.250.0.0/16"]#' \
  "$out/clusters/a/cluster.toml" >"$out/clusters/x.toml"
cmp -s "$out/clusters/a/cluster.toml" "$out/clusters/x.toml" && die "the edited configuration is not different"
for n in a b x; do
  "$lib/make-tpm.sh" "$out/tpm/$n" "$out/tpm/ek-ca"
  truncate -s 64M "$out/nodes/$n-state.img"
done
serve() { # NAME PORT
  echo "$ks serve --state $out/clusters/$1 --listen 10.0.2.2:$2 --manifest-key $out/keys/measurements.pub \
--manifest $out/measurements-sysinit.json --manifest $out/measurements-ready.json \
--ek-ca $out/tpm/ek-ca/ek-ca.pem >$out/nodes/service-$1.log 2>&1"
}
lap "clusters + TPMs"

step "booting a, b, x from the same image bytes (OVMF, Secure Boot enforced, swtpm)"
con() { "$lib/console-text.sh" "$out/nodes/run/$1/console.log" 2>/dev/null; }
stopf=$out/nodes/stop
rm -f "$stopf"
"$root/tests/e2e/boot-cluster.sh" "$out/nodes/run" --timeout 600 --tpm-state-root "$out/tpm" \
  --secure-boot "$out/vars.fd" --stop-file "$stopf" \
  --service "$(serve a 7443)" --service "$(serve b 7444)" --service-port 7443 --service-port 7444 \
  --fw-cfg "a:$out/clusters/a/cluster.toml" --fw-cfg "b:$out/clusters/b/cluster.toml" \
  --fw-cfg "x:$out/clusters/x.toml" \
  --node "a:$out/disk.img:-:$out/nodes/a-state.img" \
  --node "b:$out/disk.img:-:$out/nodes/b-state.img" \
  --node "x:$out/disk.img:-:$out/nodes/x-state.img" &
bc=$!
# a and b run until stopped: wait until both run containerd and have had their peer set refreshed
# at phase `ready` (the second published manifest); x powers itself off.
ok=0
for _ in $(seq 600); do
  kill -0 "$bc" 2>/dev/null || break
  if con a | grep -E "all [0-9]+ services started" >/dev/null && con b | grep -E "all [0-9]+ services started" >/dev/null &&
     grep -E "peers granted" "$out/nodes/service-a.log" >/dev/null 2>&1 &&
     grep -E "peers granted" "$out/nodes/service-b.log" >/dev/null 2>&1 &&
     [[ -s "$out/nodes/run/x/exit" ]]; then
    ok=1; break
  fi
  sleep 1
done
touch "$stopf"
rc=0; wait "$bc" || rc=$?
for n in a b x; do echo "--- node $n (last lines)"; con "$n" | grep -E "nacre-init|FATAL|refused" | tail -n 6 || true; done
((rc == 0)) || die "boot-cluster.sh exited $rc (consoles: $out/nodes/run/*/console.log)"
((ok)) || die "the nodes did not reach their end state (consoles: $out/nodes/run/*/console.log, services: $out/nodes/service-*.log)"
lap "three nodes (TCG)"

step "checking what each node and each key service did"
has() { con "$1" | grep -- "$2" >/dev/null || { con "$1" | tail -n 40 >&2; die "$1: no \"$2\" on the console"; }; }
hasnt() { if con "$1" | grep -- "$2" >/dev/null; then con "$1" | tail -n 40 >&2; die "$1: \"$2\" on the console"; fi; }
for n in a b; do
  has "$n" "Secure boot enabled"
  has "$n" "cluster configuration \"cluster-$n\" from qemu-fw-cfg"
  has "$n" "measure the cluster configuration: done"
  has "$n" "wg0 "
  has "$n" "mounted on /var"
  has "$n" "measured nacre.cluster-id="
  has "$n" "containerd is ready"
  hasnt "$n" "FATAL"
  grep -E "join granted" "$out/nodes/service-$n.log" >/dev/null || die "service $n granted no join"
  grep -E "disk-key granted" "$out/nodes/service-$n.log" >/dev/null || die "service $n released no disk key"
done
has x "cluster configuration \"cluster-a\" from qemu-fw-cfg"
has x "FATAL"
hasnt x "mounted on /var"
hasnt x "containerd"
grep -E "refused.*another cluster's configuration" "$out/nodes/service-a.log" >/dev/null \
  || { cat "$out/nodes/service-a.log" >&2; die "service A did not refuse x for its configuration"; }
if grep -E "granted" "$out/nodes/service-a.log" | grep -v "$(grep -m1 'join granted' "$out/nodes/service-a.log" | awk '{print $2}' | cut -d: -f1):" >/dev/null; then
  die "service A granted something to a node other than a"
fi
cmp -s "$out/nodes/x-state.img" <(head -c 64M /dev/zero) || die "x's state disk was written"
for n in a b; do
  cmp -s "$out/nodes/$n-state.img" <(head -c 64M /dev/zero) && die "$n's state disk was never formatted"
done
echo "main: a joined cluster-a and b joined cluster-b from the same image and golden values; x (edited configuration) was refused:"
grep -E "refused" "$out/nodes/service-a.log" | head -n 3
lap "checks"

step "negative check: one byte of the UKI changed, the firmware must refuse it"
neg=$out/tampered
rm -rf "$neg"; mkdir -p "$neg"
cp "$out/disk.img" "$neg/disk.img"
# Flip one byte in the middle of the UKI's .linux section (covered by the Authenticode digest).
python3 - "$out/uki.signed.efi" "$neg/uki.efi" <<'PY'
import struct, sys
d = bytearray(open(sys.argv[1], "rb").read())
pe = struct.unpack_from("<I", d, 0x3C)[0]
n, opt = struct.unpack_from("<H", d, pe + 6)[0], struct.unpack_from("<H", d, pe + 20)[0]
for i in range(n):
    h = pe + 24 + opt + 40 * i
    if d[h:h + 8].rstrip(b"\0") == b".linux":
        size, ptr = struct.unpack_from("<II", d, h + 16)
        off = ptr + size // 2
d[off] ^= 0xFF
open(sys.argv[2], "wb").write(d)
print("main: flipped the byte at file offset %d (in .linux) of the signed UKI" % off)
PY
if sbverify --cert "$out/keys/secure-boot/db.crt" "$neg/uki.efi" >/dev/null 2>&1; then
  die "sbverify accepts the tampered UKI"
fi
esp=$(sfdisk -J "$neg/disk.img" | jq '.partitiontable as $t | $t.partitions[]
  | select(.type == "C12A7328-F81F-11D2-BA4B-00A0C93EC93B") | .start * ($t.sectorsize // 512)')
MTOOLS_SKIP_CHECK=1 SOURCE_DATE_EPOCH=0 mcopy -o -i "$neg/disk.img@@$esp" "$neg/uki.efi" ::/EFI/BOOT/BOOTX64.EFI
rc=0
"$root/scripts/qemu-capture.sh" "$neg/disk.img" "$neg/boot" --secure-boot "$out/vars.fd" --timeout 300 || rc=$?
((rc == 3)) || die "the tampered UKI was not refused by the firmware (qemu-capture exit $rc, expected 3)"
echo "main: OK, the firmware refused the tampered UKI ($(grep -o -m1 'Access Denied' "$neg/boot/console.log" || echo refused))"
lap "negative check (boot)"

timings+=$(printf '%-34s %6.1f s' total "$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { print b - a }')")
printf '%s\n' "$timings" >"$out/main-timings"
step "summary"
echo "image:        $out/disk.img ($(du -h --apparent-size "$out/disk.img" | cut -f1)), roothash $(cat "$out/roothash")"
echo "UKI:          $out/uki.efi (unsigned, reproducible), uki.signed.efi (in the ESP)"
echo "golden:       $out/measurements-{sysinit,ready}.json (+ .sig, key keys/measurements.pub), constellation-measurements.json"
echo "clusters:     A $(sha256sum <"$out/clusters/a/cluster.toml" | cut -c1-16)… admitted a; B $(sha256sum <"$out/clusters/b/cluster.toml" | cut -c1-16)… admitted b; x refused"
echo "tampered UKI: refused by the firmware (qemu-capture exit 3)"
echo "timings ($out/main-timings; the image build's own: $out/timings):"
printf '%s\n' "$timings"
echo
echo "main job OK"
