#!/bin/sh
# kubelet's stand-in for the init's service tests (the kubelet binary cannot be downloaded
# here): started by nacre-init after containerd is ready, it checks what kubelet would need and
# runs a real container through containerd, kills containerd and waits for the supervisor to
# bring it back, then asks PID 1 for an orderly power off.
# With nacre_bench=1 on the kernel command line it only reports the boot timeline and exits;
# with nacre_test=reboot it asks for a reboot at once.
bb=/bin/busybox
read up _ < /proc/uptime
echo "NACRE-T payload-exec $up"
echo "NACRE-T init-exec $($bb dmesg | $bb sed -n 's/^\[ *\([0-9.]*\)\] Run \/init as init process.*/\1/p' | $bb head -n1)"
echo "NACRE-T stage2-exec $($bb cat /run/stage2-exec-uptime 2>/dev/null)"
echo "NACRE-T containerd-exec $($bb cat /run/containerd-exec-uptime 2>/dev/null)"
echo "NACRE-RSS pid1 $($bb grep -E '^(VmHWM|VmRSS)' /proc/1/status | $bb tr -s ' \t' ' ' | $bb tr '\n' ' ')"
if $bb grep -q nacre_bench=1 /proc/cmdline; then exit 0; fi
# nacre_test=reboot: what ctrl-alt-del does (the kernel sends PID 1 SIGINT), asked by a person.
if $bb grep -q nacre_test=reboot /proc/cmdline; then
  /usr/lib/nacre/nacre-init reboot || fail "nacre-init reboot"
  exec $bb sleep 600
fi

fail() { echo "NACRE-CHECK-FAIL $*"; exit 1; }
if $bb touch /should-fail 2>/dev/null; then fail "root is writable"; fi
echo "NACRE-CHECK root read-only"
rootdev=$($bb stat -c %d /)
[ "$($bb cat /sys/dev/block/$((rootdev >> 8)):$((rootdev & 255))/dm/name 2>/dev/null)" = root ] \
  && $bb grep -q ' / erofs ro' /proc/self/mounts || fail "root is not the read-only verity mapping"
echo "NACRE-CHECK root is the dm-verity mapping 'root' (erofs, read-only)"
{ $bb mkdir -p /var/lib/nacre-check && $bb touch /var/lib/nacre-check/w; } || fail "/var is not writable"
echo "NACRE-CHECK /var writable"
$bb grep -q ' /sys/fs/cgroup cgroup2 ' /proc/self/mounts || fail "no cgroup2"
echo "NACRE-CHECK cgroup2"
[ -S /run/containerd/containerd.sock ] || fail "no containerd socket"
cpid=$($bb pidof containerd) || fail "containerd is not running"
echo "NACRE-CHECK containerd running (pid $cpid)"

ctr -n k8s.io image import /usr/share/nacre/busybox-test.tar || fail "image import"
ctr -n k8s.io image ls -q | $bb grep -q busybox-test || fail "image not listed"
echo "NACRE-CHECK image imported"
# The marker is computed inside the container, so this script's text never contains it.
ctr -n k8s.io run --rm docker.io/nacre/busybox-test:1 c1 /bin/sh -c 'echo NACRE-CONTAINER-$((6*7)) pid=$$' \
  || fail "ctr run"

echo "NACRE-KILL containerd $cpid"
kill -9 "$cpid"
i=0
while :; do
  new=$($bb pidof containerd)
  if [ -n "$new" ] && [ "$new" != "$cpid" ] && ctr version >/dev/null 2>&1; then break; fi
  i=$((i + 1)); [ $i -lt 600 ] || fail "containerd did not come back"
  $bb usleep 100000
done
echo "NACRE-CONTAINERD-BACK old=$cpid new=$new"
ctr -n k8s.io run --rm docker.io/nacre/busybox-test:1 c2 /bin/sh -c 'echo NACRE-CONTAINER-AGAIN-$((6*7))' \
  || fail "ctr run after the restart"
echo "NACRE-RSS pid1-end $($bb grep -E '^VmHWM' /proc/1/status | $bb tr -s ' \t' ' ')"
echo "NACRE-PAYLOAD-OK"
/usr/lib/nacre/nacre-init poweroff || fail "nacre-init poweroff"
exec $bb sleep 600
