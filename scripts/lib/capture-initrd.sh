#!/usr/bin/env bash
# Build a tiny, deterministic initrd (newc cpio) from busybox-static whose /init prints the TPM
# event log and the PCRs of every bank the TPM has to the serial console, then powers off.
#
# Usage: capture-initrd.sh OUT.cpio [--busybox /bin/busybox]
#
# Console protocol (parsed by scripts/qemu-capture.sh; the kernel needs console=ttyS0):
#   NACRE-CAPTURE-BEGIN
#   NACRE-UNAME <uname -r>            NACRE-CMDLINE <contents of /proc/cmdline>
#   NACRE-PCR <n> <hex>               (sha256 bank, n = 0..23, read first, before anything else)
#   NACRE-PCR-<alg> <n> <hex>         (every other bank in /sys/class/tpm/tpm0/pcr-<alg>/, read next)
#   NACRE-PCR-BANKS <alg>...          all banks present, e.g. "sha256 sha384"
#   NACRE-EVENTLOG-SHA256 <hex> <size>
#   NACRE-EVENTLOG-BEGIN / base64 lines / NACRE-EVENTLOG-END
#   NACRE-CAPTURE-END
# On a problem it prints "NACRE-CAPTURE-ERROR <reason>" instead and still powers off.
set -euo pipefail

help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "capture-initrd: $*" >&2; exit 1; }
out="" busybox=/bin/busybox
while (($#)); do
  case "$1" in
    --busybox) busybox="$2"; shift 2 ;;
    -h|--help) help; exit 0 ;;
    -*) die "unknown argument: $1" ;;
    *) [[ -z "$out" ]] || die "one output only"; out="$1"; shift ;;
  esac
done
[[ -n "$out" ]] || die "usage: capture-initrd.sh OUT.cpio [--busybox PATH]"
[[ -x "$busybox" ]] || die "no busybox at $busybox (apt-get install busybox-static)"
if command -v file >/dev/null; then
  file -L "$busybox" | grep 'statically linked' >/dev/null || die "$busybox is not statically linked"
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/capture-initrd.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
root=$tmp/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp}
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"

cat >"$root/init" <<'INIT'
#!/bin/sh
# nacre capture init: print event log and PCRs, then power off.
/bin/busybox mkdir -p /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t securityfs securityfs /sys/kernel/security
# Keep kernel messages from interleaving with the capture.
echo 1 >/proc/sys/kernel/printk

fail() { echo "NACRE-CAPTURE-ERROR $*"; poweroff -f; sleep 60; }
i=0
while [ ! -d /sys/class/tpm/tpm0/pcr-sha256 ] && [ "$i" -lt 20 ]; do sleep 1; i=$((i + 1)); done
[ -d /sys/class/tpm/tpm0/pcr-sha256 ] || fail "no /sys/class/tpm/tpm0/pcr-sha256 (no TPM?)"
log=/sys/kernel/security/tpm0/binary_bios_measurements
[ -r "$log" ] || fail "no $log (no firmware event log?)"

# PCRs first, into tmpfs, so nothing below can change them before they are read.
n=0
while [ "$n" -le 23 ]; do
  echo "NACRE-PCR $n $(cat /sys/class/tpm/tpm0/pcr-sha256/$n)" >>/tmp/pcrs
  n=$((n + 1))
done
banks=""
for d in /sys/class/tpm/tpm0/pcr-*; do
  [ -d "$d" ] || continue
  alg=${d##*/pcr-}
  banks="$banks $alg"
  [ "$alg" = sha256 ] && continue
  n=0
  while [ "$n" -le 23 ]; do
    echo "NACRE-PCR-$alg $n $(cat "$d/$n")" >>/tmp/pcrs
    n=$((n + 1))
  done
done
echo "NACRE-PCR-BANKS${banks}" >>/tmp/pcrs
cat "$log" >/tmp/eventlog

echo
echo "NACRE-CAPTURE-BEGIN"
echo "NACRE-UNAME $(uname -r)"
echo "NACRE-CMDLINE $(cat /proc/cmdline)"
cat /tmp/pcrs
echo "NACRE-EVENTLOG-SHA256 $(sha256sum </tmp/eventlog | cut -d' ' -f1) $(wc -c </tmp/eventlog)"
echo "NACRE-EVENTLOG-BEGIN"
base64 </tmp/eventlog
echo "NACRE-EVENTLOG-END"
echo "NACRE-CAPTURE-END"
poweroff -f
INIT
chmod 0755 "$root/init"

# Deterministic archive: sorted names, mtime 0, owner root, fixed modes (whatever the umask).
chmod 0755 "$root" "$root"/{bin,dev,proc,sys} "$root/bin/busybox" "$root/init"
chmod 1777 "$root/tmp"
find "$root" -exec touch -h -d @0 {} +
tmpout=$tmp/initrd.cpio
(cd "$root" && find . -mindepth 1 | LC_ALL=C sort | cpio -o -H newc --reproducible -R 0:0 --quiet >"$tmpout")
mkdir -p "$(dirname "$out")"
mv "$tmpout" "$out"
