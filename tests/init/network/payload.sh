#!/bin/sh
# kubelet's stand-in for the two-node WireGuard test (init/tests/network.rs). Node NAME reaches
# its peer's overlay address PEER only through wg0: the ping works, the WireGuard handshake
# happened, and once wg0 is down the cluster route is unreachable (nothing goes out in clear).
# NAME and PEER come from /etc/nacre/net-test (written by the test).
. /etc/nacre/net-test
B=busybox
fail() { echo "NACRE-NET-FAIL $NAME: $*"; $B ip addr; $B ip rule; $B ip route show table all; exit 1; }

$B ping -c 1 -W 2 127.0.0.1 >/dev/null 2>&1 || fail "loopback is not up"
route=$($B ip route get "$PEER" 2>&1)
echo "NACRE-NET-ROUTE $NAME: $route"
case "$route" in *"dev wg0"*) ;; *) fail "the route to $PEER is not through wg0: $route" ;; esac
# A default route on the underlay: what cluster traffic would take if nacre's rules did not stop it.
case "$($B ip route show default)" in *"via 192.0.2.254 dev eth0"*) ;; *) fail "no default route on eth0" ;; esac

# 1. The peer's overlay address answers (the first pings also trigger the handshake). When both
#    nodes initiate at the same instant, each handshake state is overwritten by the other's
#    initiation and WireGuard only retries after its 5 s rekey timeout: node2 lets node1 go
#    first (for up to 10 s).
if [ "$NAME" = node2 ]; then
  for _ in $($B seq 50); do
    /usr/lib/nacre/nacre-init wg-status 2>/dev/null | $B grep -q "latest-handshake [0-9]" && break
    $B sleep 0.2
  done
fi
ok=0
for _ in $($B seq 40); do
  if $B ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; then ok=1; break; fi
done
[ "$ok" = 1 ] || fail "no answer from $PEER through wg0"
echo "NACRE-NET-PING $NAME: $PEER answered through wg0"

# 2. The handshake, as the kernel reports it over netlink, and bytes received on wg0.
/usr/lib/nacre/nacre-init wg-status > /tmp/wg || fail "wg-status failed"
$B sed "s/^/NACRE-NET-WG $NAME: /" /tmp/wg
$B grep -q "latest-handshake never" /tmp/wg && fail "no WireGuard handshake"
$B grep -q "latest-handshake" /tmp/wg || fail "no peer on wg0"
rx=$(cat /sys/class/net/wg0/statistics/rx_bytes)
[ "$rx" -gt 0 ] || fail "wg0 received nothing"
echo "NACRE-NET-RX $NAME: wg0 rx_bytes $rx"

# 3. Wait until the peer is done with 1 and 2 before taking wg0 down: each listens on the
#    overlay once done, and connects to the other's listener.
$B timeout 60 $B nc -l -p 7777 > /tmp/from-peer < /dev/null &
lpid=$!
sent=0
for _ in $($B seq 120); do
  if echo "$NAME done" | $B nc -w 1 "$PEER" 7777 2>/dev/null; then sent=1; break; fi
  $B sleep 0.5
done
[ "$sent" = 1 ] || fail "the peer never finished its checks"
wait "$lpid"
$B grep -q "done" /tmp/from-peer || fail "no word from the peer"
$B sleep 1

# 4. wg0 down: its route goes, the unreachable route in the cluster table takes over; the
#    ping must fail at once (and nothing may leave on eth0: the test reads the wire).
$B ip link set wg0 down || fail "cannot set wg0 down"
down=$($B ip route get "$PEER" 2>&1)
echo "NACRE-NET-DOWN-ROUTE $NAME: $down"
case "$down" in *"dev eth0"*) fail "with wg0 down, $PEER routes over eth0: $down" ;; esac
if out=$($B ping -c 2 -W 1 "$PEER" 2>&1); then
  fail "reached $PEER with wg0 down: $out"
fi
echo "NACRE-NET-DOWN-PING $NAME: $(echo "$out" | $B tail -n 1)"
echo "NACRE-NET-OK $NAME"
