#!/usr/bin/env bash
# Reproducibility and input sensitivity of the node image (issue #3):
#   1. two builds from clean, separate caches (scripts/build-image.sh --cache a fresh directory:
#      mkosi, its tools tree, the package cache and the incremental cache all fetched again) give
#      byte-identical disk.img and uki.efi;
#   2. the package lock: a's Debian package versions, written as a lock, are b's too; a lock with
#      one version changed is refused, naming the package (nacre-image lock check);
#   3. the cut-down root of the RELEASE image: exactly the node's programs (nacre-init,
#      containerd and its runc shim, runc, four CNI plugins, mke2fs for the state disk, ctr as the
#      pause image's importer), no shell, no busybox, no test payload; its size and count are printed
#      (OUTDIR/a/root-report.json);
#   4. one more package (jq, not on the allowlist): the image stays byte-identical (nothing outside
#      the allowlist reaches the root) and the lock check names it;
#   5. a pinned kubelet (busybox-static stands in: no kubelet can be downloaded here) lands in the
#      root as /usr/bin/kubelet; one with another sha256 than its pin is refused before building;
#   6. one more cmdline word (mkosi --kernel-command-line=, appended to the variant's) gives a
#      different UKI and a different predicted PCR 11 (and PCR 4), and nothing outside the ESP and
#      the UKI's .cmdline changes.
# Differences are reported with `nacre-image diff`. Needs root (mkosi) and deb.debian.org.
#
# Usage: tests/image/reproducible.sh [OUTDIR] [--variant qemu-vtpm] [--warm]
#   OUTDIR     default target/tmp/reproducible (caches in OUTDIR/cache-a, OUTDIR/cache-b)
#   --warm     keep OUTDIR's caches from a previous run (checks the cached build path, not a clean
#              one; ~10 s per build instead of ~3 min and ~2 GB of downloads)
set -euo pipefail
help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "reproducible: FAIL: $*" >&2; exit 1; }
root=$(cd "$(dirname "$0")/../.." && pwd)
out="" variant=qemu-vtpm warm=0
while (($#)); do
  case "$1" in
    --variant) variant="${2:?}"; shift 2 ;;
    --warm) warm=1; shift ;;
    -h|--help) help; exit 0 ;;
    -*) echo "reproducible: unknown option $1" >&2; help >&2; exit 2 ;;
    *) out="$1"; shift ;;
  esac
done
out=${out:-$root/target/tmp/reproducible}
mkdir -p "$out"; out=$(cd "$out" && pwd)
t0=$(date +%s)

cargo build -q --manifest-path "$root/Cargo.toml" -p nacre-image
cargo build -q --release --manifest-path "$root/Cargo.toml" -p nacre-init
ni=$root/target/debug/nacre-image init=$root/target/release/nacre-init

build() { # NAME CACHE [extra mkosi args]
  local name=$1 cache=$2 s; shift 2
  s=$(date +%s)
  echo "== build $name (cache $(basename "$cache"))" >&2
  MKOSI_ARGS="$*" "$root/scripts/build-image.sh" "$out/$name" --variant "$variant" --cache "$cache" \
    --init "$init" 2>"$out/$name.log" || { tail -n 30 "$out/$name.log" >&2; die "build $name"; }
  echo "   $(( $(date +%s) - s )) s" >&2
}

if ((!warm)); then rm -rf "$out/cache-a" "$out/cache-b"; fi
rm -rf "$out/a" "$out/b" "$out/c" "$out/d" "$out/k"
build a "$out/cache-a"
build b "$out/cache-b"

echo "== a vs b: must be identical" >&2
"$ni" diff "$out/a/disk.img" "$out/b/disk.img" || die "disk.img differs between two clean builds"
"$ni" diff "$out/a/uki.efi" "$out/b/uki.efi" || die "uki.efi differs between two clean builds"
cmp "$out/a/disk.img" "$out/b/disk.img" && cmp "$out/a/uki.efi" "$out/b/uki.efi" \
  || die "cmp disagrees with nacre-image diff"
echo "   disk.img $(sha256sum <"$out/a/disk.img" | cut -c1-16)…, uki.efi $(sha256sum <"$out/a/uki.efi" | cut -c1-16)… identical" >&2

echo "== package lock: a's versions are b's; one changed version is refused" >&2
"$ni" lock write "$out/a/manifest.json" "$out/a.lock"
"$ni" lock check "$out/b/manifest.json" "$out/a.lock" >/dev/null || die "b's packages differ from a's lock"
pkg=$(awk '/^containerd:/ { print $1; exit }' "$out/a.lock")
[[ -n "$pkg" ]] || die "containerd is not in the lock"
awk -v p="$pkg" '$1 == p { $2 = $2 "+changed" } { print }' "$out/a.lock" >"$out/changed.lock"
set +e; "$ni" lock check "$out/b/manifest.json" "$out/changed.lock" >"$out/lock-drift.txt"; rc=$?; set -e
((rc == 1)) && grep -q "^changed $pkg: locked .*+changed, built " "$out/lock-drift.txt" \
  || die "a changed lock was not refused (exit $rc): $(cat "$out/lock-drift.txt")"
echo "   $(grep -vc '^#' "$out/a.lock") packages locked; a changed $pkg is refused" >&2

echo "== the cut-down root" >&2
python3 - "$out/a/root-report.json" <<'PY' || die "the root holds other executables than the node's (see $out/a/root-report.json)"
import json, sys
r = json.load(open(sys.argv[1]))
want = sorted(["/usr/lib/nacre/nacre-init", "/usr/bin/containerd", "/usr/bin/containerd-shim-runc-v2",
               "/usr/sbin/runc", "/usr/sbin/mke2fs", "/usr/bin/ctr"] + [f"/usr/lib/cni/{p}" for p in ("bridge", "host-local", "loopback", "portmap")]
              )  # the release image: no shell, no busybox, no test payload (ctr: the pause import)
print(f"   release root: {r['bytes'] / 1048576:.1f} MiB, {r['files']} files, {len(r['executables'])} executables, "
      f"{len(r['libraries'])} shared libraries", file=sys.stderr)
assert r["executables"] == want, r["executables"]
PY

echo "== d = a + one package outside the allowlist: same image, the lock names it" >&2
build d "$out/cache-a" --package=jq
cmp "$out/a/disk.img" "$out/d/disk.img" || { "$ni" diff "$out/a/disk.img" "$out/d/disk.img" >&2 || true; die "an extra package changed the image"; }
set +e; "$ni" lock check "$out/d/manifest.json" "$out/a.lock" >"$out/lock-drift-d.txt"; rc=$?; set -e
((rc == 1)) && grep '^added jq:amd64 ' "$out/lock-drift-d.txt" >/dev/null \
  || die "the lock check did not name jq (exit $rc): $(cat "$out/lock-drift-d.txt")"
echo "   image identical; lock: $(grep -c '^added' "$out/lock-drift-d.txt") packages added ($(grep '^added' "$out/lock-drift-d.txt" | cut -d' ' -f2 | tr '\n' ' '))" >&2

echo "== k = a + a pinned kubelet (busybox-static standing in)" >&2
standin=/bin/busybox
sum=$(sha256sum "$standin" | cut -d' ' -f1)
if "$root/scripts/build-image.sh" "$out/k" --cache "$out/cache-a" --init "$init" \
     --kubelet "$standin" --kubelet-sha256 "${sum//?/0}" 2>"$out/k-refused.log"; then
  die "a kubelet with another sha256 than its pin was accepted"
fi
grep 'is not the pinned' "$out/k-refused.log" >/dev/null || die "no pin error: $(cat "$out/k-refused.log")"
MKOSI_ARGS="" "$root/scripts/build-image.sh" "$out/k" --variant "$variant" --cache "$out/cache-a" --init "$init" \
  --kubelet "$standin" --kubelet-sha256 "$sum" 2>"$out/k.log" || { tail -n 30 "$out/k.log" >&2; die "build k"; }
python3 - "$out/k/root-report.json" <<'PY' || die "no /usr/bin/kubelet in k's root"
import json, sys
assert "/usr/bin/kubelet" in json.load(open(sys.argv[1]))["executables"]
PY
echo "   /usr/bin/kubelet in the root; a wrong pin is refused" >&2

echo "== c = a + one cmdline word: must differ in the UKI's .cmdline and in PCR 11" >&2
build c "$out/cache-a" --kernel-command-line=nacre.reproducible-check=1
cmdline=$("$ni" inspect --json "$out/c/uki.efi" | python3 -c 'import json,sys; print(json.load(sys.stdin)["uki"]["cmdline"])')
[[ " $cmdline " == *" nacre.reproducible-check=1 "* ]] || die "the word is not in c's cmdline: $cmdline"
set +e
"$ni" diff "$out/a/uki.efi" "$out/c/uki.efi" >"$out/diff-uki.txt"; rc_uki=$?
"$ni" diff --json "$out/a/disk.img" "$out/c/disk.img" >"$out/diff-disk.json"; rc_disk=$?
set -e
cat "$out/diff-uki.txt" >&2
((rc_uki == 1 && rc_disk == 1)) || die "nacre-image diff exit codes $rc_uki (uki), $rc_disk (disk); want 1, 1"
python3 - "$out" <<'PY' || die "unexpected differences (see $out/diff-*.{txt,json})"
import json, sys
out = sys.argv[1]
uki = open(f"{out}/diff-uki.txt").read().splitlines()
sections = sorted({l.split(":")[0] for l in uki if l.startswith("uki section")})
assert sections == ["uki section .cmdline"], sections
disk = json.load(open(f"{out}/diff-disk.json"))
locs = [d["location"] for d in disk]
assert "esp:/EFI/BOOT/BOOTX64.EFI section .cmdline" in locs, locs
bad = [l for l in locs if not (l.startswith("esp") or l == "partition 1 (esp)")]
assert not bad, f"differences outside the ESP: {bad}"
PY
pcr() { "$ni" inspect --json "$1" | python3 -c 'import json,sys; p=json.load(sys.stdin)["prediction"]["pcrs"]; print(p["'"$2"'"])'; }
a11=$(pcr "$out/a/disk.img" 11) c11=$(pcr "$out/c/disk.img" 11)
a4=$(pcr "$out/a/disk.img" 4) c4=$(pcr "$out/c/disk.img" 4)
echo "   PCR 11 ${a11:0:16}… -> ${c11:0:16}…, PCR 4 ${a4:0:16}… -> ${c4:0:16}…" >&2
[[ "$a11" != "$c11" && "$a4" != "$c4" ]] || die "the predicted PCR 11/4 did not change"
"$ni" inspect "$out/a/disk.img" | grep 'UKI and verity partition agree' >/dev/null || die "root hash: UKI vs verity partition"
echo "reproducible: OK ($(( $(date +%s) - t0 )) s; $( ((warm)) && echo warm || echo clean) caches)" >&2
