#!/bin/busybox sh
# Benchmark only: the busybox shell init's second half, on the verified root (see
# build-busybox-initrd.sh): the same steps as nacre-init's stage 2 before kubelet (file systems,
# containerd started and waited for), then the payload, then power off.
bb=/bin/busybox
read up _ < /proc/uptime; echo "$up" > /run/stage2-exec-uptime
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
$bb mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate cgroup2 /sys/fs/cgroup
$bb mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /tmp
$bb mount -t tmpfs -o nosuid,nodev,mode=0755 tmpfs /var
$bb mkdir -p /dev/shm && $bb mount -t tmpfs -o nosuid,nodev,mode=1777 tmpfs /dev/shm
read up _ < /proc/uptime; echo "$up" > /run/containerd-exec-uptime
/usr/bin/containerd --log-level warn < /dev/null > /dev/console 2>&1 &
while [ ! -S /run/containerd/containerd.sock ]; do $bb usleep 20000; done
/etc/nacre/check.sh < /dev/null
$bb sync
$bb poweroff -f
