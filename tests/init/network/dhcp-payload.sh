#!/bin/sh
# kubelet's stand-in for the DHCP test (init/tests/network.rs): eth0 got its address and
# on-link route from QEMU's user-mode DHCP server (restrict=on: nothing leaves QEMU, and the
# server then offers no router, so there is no default route to check).
B=busybox
addr=$($B ip -4 addr show dev eth0)
route=$($B ip route show default)
echo "NACRE-DHCP-ADDR $(echo "$addr" | $B grep inet)"
echo "NACRE-DHCP-ROUTE $route"
case "$addr" in *"inet 10.0.2.15/24"*) ;; *) echo "NACRE-DHCP-FAIL no 10.0.2.15/24 on eth0"; exit 1 ;; esac
onlink=$($B ip route show dev eth0)
case "$onlink" in *"10.0.2.0/24"*"src 10.0.2.15"*) ;; *) echo "NACRE-DHCP-FAIL no route for 10.0.2.0/24: $onlink"; exit 1 ;; esac
[ -e /sys/class/net/wg0 ] && { echo "NACRE-DHCP-FAIL wg0 exists without [network.wireguard]"; exit 1; }
echo "NACRE-DHCP-OK"
