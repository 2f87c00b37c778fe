#!/usr/bin/env bash
# Check a built image (scripts/build-image.sh OUTDIR) without root: the root hash that
# `nacre-measure inspect` reads from the disk's UKI, the UKI's .cmdline, OUTDIR/roothash and the
# one veritysetup computes from the root partition (cut out of the disk with dd at its GPT offsets)
# must all be equal, the hash partition must verify and equal a fresh `veritysetup format`, and the
# root/verity partition UUIDs must derive from the root hash (Discoverable Partitions Spec).
# With --boot (a TEST image: scripts/build-image.sh --test; a release node runs no payload and
# waits for its cluster) it also boots the disk (scripts/qemu-capture.sh: OVMF + swtpm, -nic none), checks
# that nacre-init verified the root and ran stage 2 and the payload, and compares the PCRs the
# guest reports with `nacre-measure predict DISK --phase ready`.
#
# Usage: scripts/check-image.sh OUTDIR [--boot] [--measure PATH-TO-nacre-measure]
# Exit: 0 all checks passed, 1 a check failed, 2 usage.
set -euo pipefail
help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
root=$(cd "$(dirname "$0")/.." && pwd)
out="" boot=0 measure=""
while (($#)); do
  case "$1" in
    --boot) boot=1; shift ;;
    --measure) measure="${2:?}"; shift 2 ;;
    -h|--help) help; exit 0 ;;
    -*) echo "check-image: unknown option $1" >&2; help >&2; exit 2 ;;
    *) [[ -z "$out" ]] || { help >&2; exit 2; }; out="$1"; shift ;;
  esac
done
[[ -n "$out" && -f "$out/disk.img" ]] || { help >&2; exit 2; }
out=$(cd "$out" && pwd) disk=$out/disk.img
if [[ -z "$measure" ]]; then
  cargo build --release -q --manifest-path "$root/Cargo.toml" -p nacre-measure
  measure=$root/target/release/nacre-measure
fi
failed=0
ok() { echo "check-image: OK   $*"; }
bad() { echo "check-image: FAIL $*"; failed=1; }
tmp=$(mktemp -d "${TMPDIR:-/tmp}/check-image.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# --- root hash: inspect, cmdline, roothash file, veritysetup --------------------------------
inspect=$("$measure" inspect "$disk")
h_inspect=$(awk '/^roothash:/ {print $2}' <<<"$inspect")
h_cmdline=$(awk '/^cmdline:/' <<<"$inspect" | grep -oE 'roothash=[0-9a-f]+' | cut -d= -f2)
h_file=$(cat "$out/roothash")
# Partition table (sector size 512 is what mkosi.conf sets): "TYPE START SIZE UUID" per line.
sfdisk -J "$disk" | python3 -c '
import json, sys
t = json.load(sys.stdin)["partitiontable"]
assert t.get("sectorsize", 512) == 512, "sector size %s" % t.get("sectorsize")
for p in t["partitions"]:
    print(p["type"], p["start"], p["size"], p["uuid"])' >"$tmp/parts"
part() { awk -v t="$1" 'toupper($1) == t {print $2, $3, $4}' "$tmp/parts"; }
read -r r_start r_size r_uuid <<<"$(part 4F68BCE3-E8CD-4DB1-96E7-FBCAF984B709)"
read -r v_start v_size v_uuid <<<"$(part 2C7357ED-EBD2-46D9-AEC1-23D437EC2BF5)"
[[ -n "$r_start" && -n "$v_start" ]] || { bad "no root-x86-64 and root-x86-64-verity partitions in $disk"; exit 1; }
dd if="$disk" of="$tmp/root.img" bs=512 skip="$r_start" count="$r_size" status=none
dd if="$disk" of="$tmp/verity.img" bs=512 skip="$v_start" count="$v_size" status=none
dump=$(veritysetup dump "$tmp/verity.img")
field() { awk -F':[ \t]*' -v k="$1" '$1 == k {print $2}' <<<"$dump"; }
salt=$(field Salt) vuuid=$(field UUID) dbs=$(field "Data block size") hbs=$(field "Hash block size")
blocks=$(field "Data blocks") alg=$(field "Hash algorithm")
fmt=$(veritysetup format "$tmp/root.img" "$tmp/fresh.img" --salt="$salt" --uuid="$vuuid" \
  --data-block-size="$dbs" --hash-block-size="$hbs" --hash="$alg" --data-blocks="$blocks")
h_verity=$(awk '/^Root hash:/ {print $3}' <<<"$fmt")
echo "check-image: root partition $((r_size * 512)) bytes at sector $r_start ($blocks x $dbs-byte blocks), verity $((v_size * 512)) bytes at $v_start, $alg"
echo "check-image: root hash: inspect $h_inspect, cmdline $h_cmdline, roothash file $h_file, veritysetup $h_verity"
if [[ -n "$h_verity" && "$h_inspect" == "$h_verity" && "$h_cmdline" == "$h_verity" && "$h_file" == "$h_verity" ]]; then
  ok "the four root hashes are equal"
else
  bad "root hashes differ"
fi
if veritysetup verify "$tmp/root.img" "$tmp/verity.img" "$h_verity" >/dev/null 2>&1; then
  ok "veritysetup verify of the root partition against its hash partition"
else
  bad "veritysetup verify failed"
fi
if cmp -s <(head -c "$(stat -c %s "$tmp/fresh.img")" "$tmp/verity.img") "$tmp/fresh.img"; then
  ok "the hash partition equals a fresh veritysetup format (superblock, salt, tree)"
else
  bad "the hash partition differs from a fresh veritysetup format"
fi
u() { local h=${1^^}; echo "${h:0:8}-${h:8:4}-${h:12:4}-${h:16:4}-${h:20:12}"; }
if [[ "${r_uuid^^}" == "$(u "${h_verity:0:32}")" && "${v_uuid^^}" == "$(u "${h_verity:32:32}")" ]]; then
  ok "partition UUIDs derive from the root hash"
else
  bad "partition UUIDs $r_uuid/$v_uuid do not derive from the root hash"
fi

# --- boot -----------------------------------------------------------------------------------
if ((boot)); then
  rc=0
  "$root/scripts/qemu-capture.sh" "$disk" "$out/boot" --timeout 300 || rc=$?
  console=$out/boot/console.log
  for line in "nacre-init: root verified: $h_verity" "nacre-init: stage 2 (verified root)" \
              "nacre-init: measured ready into PCR 11" "NACRE-CHECK root read-only" \
              "NACRE-CHECK containerd running" "NACRE-CONTAINER-42" "NACRE-PAYLOAD-OK"; do
    if "$root/scripts/lib/console-text.sh" "$console" | grep -F "$line" >/dev/null; then ok "console: $line"; else bad "console lacks: $line"; fi
  done
  if ((rc == 0)); then
    "$measure" predict "$disk" --phase ready --json >"$out/predicted.json"
    python3 - "$out/predicted.json" "$out/boot/pcrs.json" "$console" <<'PY' || failed=1
import json, re, sys
pred, booted, console = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
p = pred["pcrs"]  # {"4": hex, "7": ..., "9", "11", "12", "13", "15"}: the PCRs it predicts
bad = 0
for k in sorted(p, key=int):
    g = booted.get(k)
    same = g == p[k].lower()
    bad |= not same
    print("check-image: %s PCR %2s predicted %s booted %s" % ("OK  " if same else "FAIL", k, p[k][:16], (g or "-")[:16]))
log = open(console, "rb").read().decode("latin-1")
m = re.search(r"PCR 11 \(sha256\) = ([0-9a-f]{64})", log)
print("check-image: %s PCR 11 logged by nacre-init after ready: %s" % ("OK  " if m and m.group(1) == booted["11"] else "FAIL", m.group(1) if m else "-"))
sys.exit(1 if bad or not m or m.group(1) != booted["11"] else 0)
PY
  else
    bad "boot failed (qemu-capture exit $rc, console $console)"
  fi
fi
((failed == 0)) && echo "check-image: all checks passed" || { echo "check-image: some checks FAILED"; exit 1; }
