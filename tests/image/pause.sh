#!/usr/bin/env bash
# The release root's containerd configuration and pod sandbox ("pause") image (issue #11), checked
# on a built image (scripts/build-image.sh OUTDIR) with the image's own binaries:
#   1. the root (erofs partition of OUTDIR/disk.img, extracted) has /etc/containerd/config.toml
#      with the CNI directories (/usr/lib/cni, /run/nacre/cni/net.d, max_conf_num 1), overlayfs,
#      runc with SystemdCgroup = false, and sandbox_image nacre.local/pause:catatonit@<digest>;
#      /usr/share/nacre/pause.oci.tar whose index names one manifest, that digest (also in
#      pause.digest), whose blobs all hash to their names, whose config runs /catatonit -P and
#      whose one layer holds /catatonit (Debian's static catatonit; no /usr/bin/catatonit left);
#      init.toml runs pause-import (ctr) after containerd and kubelet (when present) after both
#      with args_file and no args;
#   2. the root's containerd (1.7, run from the extracted tree with its own loader and libraries,
#      the root's config.toml with only its paths moved to a scratch directory) and the root's ctr
#      with init.toml's pause-import arguments: the import gives the image sandbox_image names,
#      and CRI pins it (io.cri-containerd.pinned=pinned: kubelet's image GC keeps it); importing
#      again (the next boot) succeeds;
#   3. an archive with other content under the same name (one byte of catatonit changed) does not
#      give the pinned name: CRI would find no sandbox image (and nacre.local serves none).
# Needs root (containerd). Does not build: pass a build's OUTDIR.
#
# Usage: tests/image/pause.sh OUTDIR [--work DIR]   (default work dir OUTDIR/pause-check)
set -euo pipefail
die() { echo "pause: FAIL: $*" >&2; exit 1; }
out="" work=""
while (($#)); do
  case "$1" in
    --work) work="${2:?}"; shift 2 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "pause: unknown option $1" >&2; exit 2 ;;
    *) out="$1"; shift ;;
  esac
done
[[ -n "$out" && -f "$out/disk.img" ]] || die "usage: tests/image/pause.sh OUTDIR (a scripts/build-image.sh output with disk.img)"
((EUID == 0)) || die "run as root (containerd)"
root=$(cd "$(dirname "$0")/../.." && pwd)
work=${work:-$out/pause-check}
rm -rf "$work"; mkdir -p "$work"; work=$(cd "$work" && pwd)
cargo build -q --manifest-path "$root/Cargo.toml" -p nacre-image
ni=$root/target/debug/nacre-image

echo "== the root of $out/disk.img" >&2
read -r off size < <("$ni" inspect --json "$out/disk.img" | python3 -c '
import json, sys
d = json.load(sys.stdin)
p = [p for p in d["partitions"] if p["type_name"] == "root-x86-64"]
assert len(p) == 1, "no single root partition"
print(p[0]["offset"], p[0]["size"])')
dd if="$out/disk.img" of="$work/root.erofs" iflag=skip_bytes,count_bytes skip="$off" count="$size" status=none
fsck.erofs --extract="$work/root" --preserve "$work/root.erofs" >/dev/null || die "the root does not extract"
r=$work/root

python3 - "$r" <<'PY' || die "the root's containerd configuration, pause image or init.toml"
import hashlib, io, json, os, sys, tarfile, tomllib
r = sys.argv[1]
cfg = tomllib.load(open(f"{r}/etc/containerd/config.toml", "rb"))
assert cfg["version"] == 2, cfg["version"]
assert (cfg["root"], cfg["state"]) == ("/var/lib/containerd", "/run/containerd"), (cfg["root"], cfg["state"])
cri = cfg["plugins"]["io.containerd.grpc.v1.cri"]
cni = cri["cni"]
assert (cni["bin_dir"], cni["conf_dir"], cni["max_conf_num"]) == ("/usr/lib/cni", "/run/nacre/cni/net.d", 1), cni
assert cri["containerd"]["snapshotter"] == "overlayfs"
runc = cri["containerd"]["runtimes"][cri["containerd"]["default_runtime_name"]]
assert runc["runtime_type"] == "io.containerd.runc.v2" and runc["options"]["SystemdCgroup"] is False, runc
assert os.access(f"{r}{runc['options']['BinaryName']}", os.X_OK), runc
for d in ("/usr/lib/cni/bridge", "/usr/lib/cni/host-local", "/usr/lib/cni/loopback"):
    assert os.access(f"{r}{d}", os.X_OK), f"no {d}"
sandbox = cri["sandbox_image"]
name, _, digest = sandbox.partition("@")
assert name == "nacre.local/pause:catatonit" and len(digest) == 71 and digest.startswith("sha256:"), sandbox
assert open(f"{r}/usr/share/nacre/pause.digest").read() == digest + "\n", "pause.digest is not sandbox_image's digest"

t = tarfile.open(f"{r}/usr/share/nacre/pause.oci.tar")
blobs = {}
for m in t.getmembers():
    if m.isfile() and m.name.startswith("./blobs/sha256/"):
        b = t.extractfile(m).read()
        h = m.name.rsplit("/", 1)[1]
        assert hashlib.sha256(b).hexdigest() == h, f"blob {h} does not hash to its name"
        blobs["sha256:" + h] = b
index = json.load(t.extractfile("./index.json"))
assert len(index["manifests"]) == 1, index
m = index["manifests"][0]
assert m["digest"] == digest, f"the archive's manifest is {m['digest']}, sandbox_image pins {digest}"
assert m["annotations"]["io.containerd.image.name"] == "nacre.local/pause:catatonit", m
manifest = json.loads(blobs[digest])
config = json.loads(blobs[manifest["config"]["digest"]])
assert config["config"].get("Entrypoint") == ["/catatonit", "-P"], config
assert "created" not in config, "a build time in the image config"
assert len(manifest["layers"]) == 1
layer = tarfile.open(fileobj=io.BytesIO(blobs[manifest["layers"][0]["digest"]]))
cat = layer.getmember("./catatonit")
assert cat.isfile() and cat.mode == 0o755 and cat.mtime == 0, (cat.mode, cat.mtime)
elf = layer.extractfile(cat).read()
assert elf[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in elf, "/catatonit is not a static ELF"
assert not os.path.exists(f"{r}/usr/bin/catatonit"), "/usr/bin/catatonit left in the root"

init = tomllib.load(open(f"{r}/etc/nacre/init.toml", "rb"))
svc = {s["name"]: s for s in init["service"]}
order = [s["name"] for s in init["service"]]
imp = svc["pause-import"]
assert imp["command"] == "/usr/bin/ctr" and "containerd" in imp["after"], imp
assert imp["restart"] == "on-failure" and "/usr/share/nacre/pause.oci.tar" == imp["args"][-1], imp
assert order.index("containerd") < order.index("pause-import"), order
assert svc["containerd"]["args"][:2] == ["--config", "/etc/containerd/config.toml"], svc["containerd"]
if "kubelet" in svc:
    k = svc["kubelet"]
    assert set(k["after"]) >= {"containerd", "pause-import"}, k
    assert k.get("args_file") == "/run/nacre/kubernetes/kubelet.args" and not k.get("args"), k
print(f"   config.toml: sandbox_image {sandbox}; cni {cni['bin_dir']} {cni['conf_dir']}; "
      f"archive {len(blobs)} blobs, manifest {digest[:19]}…; services {' '.join(order)}", file=sys.stderr)
PY

echo "== import with the root's containerd and ctr" >&2
lib=$r/usr/lib/x86_64-linux-gnu ld=$r/usr/lib64/ld-linux-x86-64.so.2
[[ -e "$ld" ]] || ld=$r/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2
run() { "$ld" --library-path "$lib" "$@"; } # a program of the root with the root's libraries
d=$work/ctd
mkdir -p "$d"
sed -e "s|\"/var/lib/containerd\"|\"$d/root\"|; s|\"/run/containerd\"|\"$d/state\"|" \
    -e "s|/run/containerd/containerd.sock|$d/c.sock|; s|/run/nacre/cni/net.d|$d/net.d|" \
    "$r/etc/containerd/config.toml" >"$d/config.toml"
grep -q "$d/c.sock" "$d/config.toml" || die "could not move the socket in the scratch config"
sandbox=$(python3 -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["plugins"]["io.containerd.grpc.v1.cri"]["sandbox_image"])' "$d/config.toml")
pinned_ref="nacre.local/pause@${sandbox#*@}" # what CRI resolves sandbox_image to (the tag dropped)
mapfile -t import_args < <(python3 -c '
import sys, tomllib
s = [s for s in tomllib.load(open(sys.argv[1], "rb"))["service"] if s["name"] == "pause-import"][0]
a = s["args"]
assert a[:2] == ["--address", "/run/containerd/containerd.sock"], a
print("\n".join(a[2:-1]))' "$r/etc/nacre/init.toml")
ctd_pid=""
stop_ctd() { [[ -z "$ctd_pid" ]] || { kill "$ctd_pid" 2>/dev/null; wait "$ctd_pid" 2>/dev/null || true; ctd_pid=""; }; }
trap stop_ctd EXIT
start_ctd() { # fresh state each time
  stop_ctd; rm -rf "$d/root" "$d/state"
  "$ld" --library-path "$lib" "$r/usr/bin/containerd" --config "$d/config.toml" --log-level info >"$d/containerd.log" 2>&1 &
  ctd_pid=$! # containerd itself (not a subshell): stop_ctd ends it
  for _ in $(seq 100); do [[ -S "$d/c.sock" ]] && return 0; sleep 0.1; done
  tail -n 20 "$d/containerd.log" >&2; die "containerd did not start"
}
ctr() { run "$r/usr/bin/ctr" --address "$d/c.sock" "$@"; }
images() { sleep 1; ctr --namespace k8s.io images ls; } # CRI labels imported images from their event
start_ctd
grep -q 'Start cri plugin' "$d/containerd.log" || die "no CRI plugin in containerd's log"
if grep -aE 'level=(warning|error)' "$d/containerd.log" | grep -vE 'cni config load failed|failed to load cni during init' >&2; then
  die "containerd warns about its configuration (above)"
fi
ctr "${import_args[@]}" "$r/usr/share/nacre/pause.oci.tar" >"$d/import.log" || die "ctr import: $(cat "$d/import.log")"
ls=$(images)
grep -E "^$pinned_ref " <<<"$ls" | grep -q 'io.cri-containerd.pinned=pinned' \
  || { echo "$ls" >&2; die "no pinned image $pinned_ref after the import"; }
grep -qE '^nacre.local/pause:catatonit ' <<<"$ls" || { echo "$ls" >&2; die "no nacre.local/pause:catatonit"; }
ctr "${import_args[@]}" "$r/usr/share/nacre/pause.oci.tar" >"$d/import2.log" || die "the second import (next boot): $(cat "$d/import2.log")"
echo "   imported as $pinned_ref (pinned by CRI) and nacre.local/pause:catatonit; again: ok" >&2

echo "== an archive with other content under the same name" >&2
python3 - "$r/usr/share/nacre/pause.oci.tar" "$work/catatonit" <<'PY'
import io, json, sys, tarfile
t = tarfile.open(sys.argv[1])
index = json.load(t.extractfile("./index.json"))
manifest = json.load(t.extractfile("./blobs/sha256/" + index["manifests"][0]["digest"].split(":")[1]))
layer = tarfile.open(fileobj=io.BytesIO(t.extractfile("./blobs/sha256/" + manifest["layers"][0]["digest"].split(":")[1]).read()))
b = bytearray(layer.extractfile("./catatonit").read())
b[-1] ^= 1
open(sys.argv[2], "wb").write(b)
PY
"$root/scripts/lib/make-oci.sh" "$work/tampered.tar" --name nacre.local/pause:catatonit \
  --file "$work/catatonit:/catatonit:0755" --entrypoint '["/catatonit","-P"]' >"$work/tampered.digest" 2>/dev/null
[[ "$(cat "$work/tampered.digest")" != "${sandbox#*@}" ]] || die "the tampered archive has the pinned digest"
start_ctd
ctr "${import_args[@]}" "$work/tampered.tar" >"$d/import3.log" || die "ctr import of the tampered archive: $(cat "$d/import3.log")"
ls=$(images)
if grep -qE "^$pinned_ref " <<<"$ls" || grep -q 'io.cri-containerd.pinned=pinned' <<<"$ls"; then
  echo "$ls" >&2; die "the tampered archive gave the pinned name or a pinned image"
fi
echo "   tampered archive: imported as $(cat "$work/tampered.digest" | cut -c1-19)…, not as the pinned $pinned_ref; nothing pinned" >&2
stop_ctd
echo "pause: OK" >&2
