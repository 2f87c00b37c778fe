#!/bin/sh
# nacre TEST payload (busybox sh), run by nacre-init's stage 2 after `ready`: checks the root is
# read-only, then prints the PCRs, the firmware event log and nacre-init's runtime log in the
# console protocol of scripts/lib/capture-initrd.sh (parsed by scripts/qemu-capture.sh), and exits:
# nacre-init then powers the node off. The runtime log comes after the PCRs (nothing is extended
# after `ready`), as
#   NACRE-RUNTIME-SHA256 <hex> <size> / NACRE-RUNTIME-BEGIN / base64 lines / NACRE-RUNTIME-END
for a in cat cut wc base64 sha256sum touch uname pidof readlink; do eval "$a() { /usr/bin/busybox $a \"\$@\"; }"; done
fail() { echo "NACRE-CAPTURE-ERROR $*"; exit 1; }
if touch /should-fail 2>/dev/null; then fail "the root is writable"; fi
echo "NACRE-CHECK root read-only"
# containerd, started by nacre-init before this payload, runs from the verified root.
[ -S /run/containerd/containerd.sock ] || fail "no containerd socket"
cpid=$(pidof containerd) || fail "containerd is not running"
[ "$(readlink /proc/$cpid/exe)" = /usr/bin/containerd ] || fail "containerd is not /usr/bin/containerd"
echo "NACRE-CHECK containerd running (pid $cpid, /usr/bin/containerd)"
# A container through containerd, runc and the overlay snapshotter: the image is a busybox layer
# in the root; the marker is computed inside the container, so this script never contains it.
/usr/bin/ctr -n nacre image import /usr/share/nacre/busybox-test.tar >/dev/null || fail "ctr image import"
/usr/bin/ctr -n nacre run --rm docker.io/nacre/busybox-test:1 c1 /bin/sh -c 'echo NACRE-CONTAINER-$((6*7))' \
  || fail "ctr run"
# CRI, as kubelet speaks it (nacre-cri-probe): the runtime's version, and the busybox image in
# containerd's k8s.io namespace, where CRI looks (pods need the join's CNI network: the cluster
# e2e, tests/e2e/cluster.sh, runs them).
/usr/bin/ctr -n k8s.io image import /usr/share/nacre/busybox-test.tar >/dev/null || fail "ctr image import (k8s.io)"
cri=$(/usr/lib/nacre/nacre-cri-probe version) || fail "CRI Version"
echo "NACRE-CHECK CRI $cri"
/usr/lib/nacre/nacre-cri-probe image-status docker.io/nacre/busybox-test:1 >/dev/null || fail "CRI ImageStatus"
echo "NACRE-CHECK CRI ImageStatus docker.io/nacre/busybox-test:1"
pcrs=/sys/class/tpm/tpm0/pcr-sha256
log=/sys/kernel/security/tpm0/binary_bios_measurements
cel=/run/nacre/runtime.cel
[ -d "$pcrs" ] || fail "no $pcrs (no TPM?)"
[ -r "$log" ] || fail "no $log (no firmware event log?)"
[ -r "$cel" ] || fail "no $cel (no runtime log from nacre-init?)"
echo
echo "NACRE-CAPTURE-BEGIN"
echo "NACRE-UNAME $(uname -r)"
echo "NACRE-CMDLINE $(cat /proc/cmdline)"
n=0
while [ "$n" -le 23 ]; do echo "NACRE-PCR $n $(cat $pcrs/$n)"; n=$((n + 1)); done
echo "NACRE-PCR-BANKS sha256"
echo "NACRE-EVENTLOG-SHA256 $(sha256sum <$log | cut -d' ' -f1) $(cat $log | wc -c)"
echo "NACRE-EVENTLOG-BEGIN"
base64 <$log
echo "NACRE-EVENTLOG-END"
echo "NACRE-RUNTIME-SHA256 $(sha256sum <$cel | cut -d' ' -f1) $(cat $cel | wc -c)"
echo "NACRE-RUNTIME-BEGIN"
base64 <$cel
echo "NACRE-RUNTIME-END"
echo "NACRE-CAPTURE-END"
echo "NACRE-PAYLOAD-OK"
