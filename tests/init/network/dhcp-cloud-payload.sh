#!/bin/sh
# kubelet's stand-in for the cloud DHCP test (init/tests/network.rs, dhcp_cloud_lease_*): eth0
# got a GCE-style lease from dnsmasq: 10.128.0.5/32, the router 10.128.0.1 reachable only through
# option 121's on-link /32 route, the default route through it (option 3 names 10.128.0.99, which
# must be ignored), MTU 1460, DNS servers and search domains in /run/nacre/resolv.conf. The lease
# must be rebound (T2) and then renewed (T1) while this runs; then the router answers a ping.
B=busybox
fail() { echo "NACRE-CLOUD-FAIL $*"; exit 1; }
addr=$($B ip -4 addr show dev eth0)
echo "NACRE-CLOUD-ADDR $(echo "$addr" | $B grep inet)"
case "$addr" in *"inet 10.128.0.5/32"*) ;; *) fail "no 10.128.0.5/32 on eth0" ;; esac
routes=$($B ip route show)
echo "$routes" | while read -r l; do echo "NACRE-CLOUD-ROUTE $l"; done
echo "$routes" | $B grep -q "^default via 10.128.0.1 dev eth0" || fail "no default route via 10.128.0.1"
echo "$routes" | $B grep -q "^10.128.0.1 dev eth0" || fail "no on-link route to 10.128.0.1"
echo "$routes" | $B grep -q "10.128.0.99" && fail "option 3's router 10.128.0.99 was used"
mtu=$($B cat /sys/class/net/eth0/mtu)
echo "NACRE-CLOUD-MTU $mtu"
[ "$mtu" = 1460 ] || fail "MTU $mtu instead of 1460"
resolv=$($B cat /run/nacre/resolv.conf) || fail "no /run/nacre/resolv.conf"
echo "$resolv" | while read -r l; do echo "NACRE-CLOUD-RESOLV $l"; done
want="nameserver 10.128.0.1
nameserver 10.128.0.2
search c.nacre.internal google.internal"
[ "$(echo "$resolv" | $B grep -v '^#')" = "$want" ] || fail "resolv.conf is not as leased"
# The lease (T1 10 s, T2 15 s) must be renewed twice while the node runs: first by rebinding
# (the test drops unicast from this node to the server until then), then by renewing.
i=0
until [ "$($B dmesg | $B grep -c "network: DHCP: lease renewed")" -ge 2 ]; do
  i=$((i + 1))
  [ "$i" -le 70 ] || fail "not renewed twice within 70 s"
  $B sleep 1
done
echo "NACRE-CLOUD-RENEWED twice after ${i} s of waiting"
$B ping -c 2 -W 3 10.128.0.1 >/dev/null 2>&1 || fail "the router 10.128.0.1 does not answer a ping"
echo "NACRE-CLOUD-PING 10.128.0.1"
echo "NACRE-CLOUD-OK"
