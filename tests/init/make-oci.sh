#!/usr/bin/env bash
# Build an OCI image archive (image layout in a tar: oci-layout, index.json, blobs/sha256/*) of
# one uncompressed layer with busybox-static, for `ctr image import` in the init's service tests
# (no registry is reachable here). Deterministic: fixed times, owners, order.
#
# Usage: make-oci.sh OUT.tar [IMAGE_NAME]   (default name docker.io/nacre/busybox-test:1)
# Environment: BUSYBOX, the busybox-static to put in (default /bin/busybox; the mkosi test image
#   passes its own tree's).
set -euo pipefail
out="$1" name="${2:-docker.io/nacre/busybox-test:1}"
bb=${BUSYBOX:-/bin/busybox}
[[ -x $bb ]] || { echo "make-oci: no $bb (busybox-static)" >&2; exit 1; }
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

mkdir -p "$work/rootfs/bin"
install -m 0755 "$bb" "$work/rootfs/bin/busybox"
for a in sh echo cat ls; do ln -s busybox "$work/rootfs/bin/$a"; done
tarit "$work/rootfs" "$work/layer.tar"
layer=$(blob "$work/layer.tar")

printf '{"architecture":"amd64","os":"linux","config":{"Env":["PATH=/bin"],"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' \
  "$layer" > "$work/config.json"
config=$(blob "$work/config.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"sha256:%s","size":%d}]}' \
  "$config" "$(size "$work/config.json")" "$layer" "$(size "$work/layer.tar")" > "$work/manifest.json"
manifest=$(blob "$work/manifest.json")

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"platform":{"architecture":"amd64","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
  "$manifest" "$(size "$work/manifest.json")" "$name" "${name##*:}" > "$work/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/oci/oci-layout"
find "$work/oci" -exec touch -h -d @0 {} +
tarit "$work/oci" "$out"
echo "make-oci: $out ($name, manifest sha256:$manifest)"
