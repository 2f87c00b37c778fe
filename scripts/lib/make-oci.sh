#!/usr/bin/env bash
# Build a deterministic OCI image archive (the image layout in a tar: oci-layout, index.json,
# blobs/sha256/*) of ONE uncompressed layer, for `ctr images import` (nodes reach no registry for
# their own images). Same inputs, same bytes: fixed times (0), owners (0:0), file order, no
# `created` in the config. Prints the manifest digest (sha256:HEX) on stdout.
#
# Usage: make-oci.sh OUT.tar --name NAME --file SRC:DEST[:MODE]... [--entrypoint JSON] [--cmd JSON]
#                    [--env K=V]... [--digest-file FILE]
#   --name        the image name, in the index's io.containerd.image.name annotation (what ctr
#                 names the image; its tag is also org.opencontainers.image.ref.name)
#   --file        SRC copied to DEST (absolute path in the image), mode MODE (default 0755)
#   --entrypoint, --cmd   the config's Entrypoint / Cmd, as JSON arrays
#   --env         an Env entry (repeatable)
#   --digest-file also write the manifest digest (sha256:HEX and a newline) to FILE
# The layer: the files' parent directories (0755) and the files; architecture amd64, os linux.
# Used by mkosi.conf.d/00-nacre/mkosi.finalize for the node's pause image (catatonit).
set -euo pipefail
die() { echo "make-oci: $*" >&2; exit 1; }
out="" name="" entrypoint="" cmd="" digest_file="" files=() envs=()
while (($#)); do
  case "$1" in
    --name) name="${2:?}"; shift 2 ;;
    --file) files+=("${2:?}"); shift 2 ;;
    --entrypoint) entrypoint="${2:?}"; shift 2 ;;
    --cmd) cmd="${2:?}"; shift 2 ;;
    --env) envs+=("${2:?}"); shift 2 ;;
    --digest-file) digest_file="${2:?}"; shift 2 ;;
    -*) die "unknown option $1" ;;
    *) [[ -z "$out" ]] || die "one OUT.tar only"; out="$1"; shift ;;
  esac
done
[[ -n "$out" ]] || die "usage: make-oci.sh OUT.tar --name NAME --file SRC:DEST[:MODE]..."
[[ "$name" =~ ^[a-z0-9.-]+(/[a-z0-9._-]+)+:[A-Za-z0-9_][A-Za-z0-9._-]*$ ]] \
  || die "--name $name: want a full name with a tag (domain/path:tag)"
((${#files[@]})) || die "no --file: an image needs content"
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
tarit() { # DIR OUT: reproducible tar of DIR's contents
  tar -C "$1" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf "$2" .
}
blob() { # FILE -> prints sha256 hex, stores the blob
  local d; d=$(sha256sum "$1" | cut -d' ' -f1)
  mkdir -p "$work/oci/blobs/sha256"; cp "$1" "$work/oci/blobs/sha256/$d"; echo "$d"
}
size() { stat -c %s "$1"; }
json_array() { # JSON: checked to be an array of strings, printed compact
  python3 -c 'import json,sys; v=json.loads(sys.argv[1]); assert isinstance(v, list) and all(isinstance(s, str) for s in v), "not an array of strings"; print(json.dumps(v, separators=(",", ":")))' "$1" \
    || die "not a JSON array of strings: $1"
}

[[ -z "$entrypoint" ]] || json_array "$entrypoint" >/dev/null
[[ -z "$cmd" ]] || json_array "$cmd" >/dev/null
umask 022
mkdir -p "$work/rootfs"
for f in "${files[@]}"; do
  IFS=: read -r src dest mode <<<"$f"
  [[ -f "$src" ]] || die "--file $f: no file $src"
  [[ "$dest" == /* && "$dest" != */ && "$dest" != *..* ]] || die "--file $f: DEST must be an absolute file path"
  install -D -m "${mode:-0755}" "$src" "$work/rootfs$dest"
done
find "$work/rootfs" -type d -exec chmod 0755 {} +
find "$work/rootfs" -exec touch -h -d @0 {} +
tarit "$work/rootfs" "$work/layer.tar"
layer=$(blob "$work/layer.tar")

python3 - "$work/config.json" "$layer" "$entrypoint" "$cmd" "${envs[@]}" <<'PY' || die "writing the image config"
import json, sys
path, layer, entrypoint, cmd, envs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
c = {}
if envs: c["Env"] = envs
if entrypoint: c["Entrypoint"] = json.loads(entrypoint)
if cmd: c["Cmd"] = json.loads(cmd)
doc = {"architecture": "amd64", "os": "linux", "config": c,
       "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer}"]}}
open(path, "w").write(json.dumps(doc, separators=(",", ":")))
PY
config=$(blob "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
  "$config" "$(size "$work/config.json")" "$layer" "$(size "$work/layer.tar")" > "$work/manifest.json"
manifest=$(blob "$work/manifest.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest" "$(size "$work/manifest.json")" "$name" "${name##*:}" > "$work/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/oci/oci-layout"
find "$work/oci" -type d -exec chmod 0755 {} +
find "$work/oci" -type f -exec chmod 0644 {} +
find "$work/oci" -exec touch -h -d @0 {} +
tarit "$work/oci" "$out"
[[ -z "$digest_file" ]] || echo "sha256:$manifest" >"$digest_file"
echo "make-oci: $out ($name, manifest sha256:$manifest)" >&2
echo "sha256:$manifest"
