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

# 1. The peer's overlay address answers, at the first try. Both nodes start pinging at the same
#    moment, when two WireGuard initiations would cross (each node's first pings start one):
#    each pings the other's underlay address (ICMP in clear, no cluster address), then waits
#    until its own kernel has answered an echo (/proc/net/snmp InEchos: the peer is ready too).
#    The time from the first ping to the first answer is the first-packet figure of issue 19.
case "$NAME" in node1) UPEER=192.0.2.2 ;; *) UPEER=192.0.2.1 ;; esac
echos() { $B awk '/^Icmp: [0-9]/ { print $10 }' /proc/net/snmp; }
for _ in $($B seq 100); do $B ping -c 1 -W 1 "$UPEER" >/dev/null 2>&1 && break; done
read -r start _ < /proc/uptime
while [ "$(echos)" = 0 ]; do
  read -r now _ < /proc/uptime
  [ $((${now%.*} - ${start%.*})) -lt 60 ] || fail "the peer never pinged the underlay"
done
up() { $B cut -d' ' -f1 /proc/uptime; }
t0=$(up)
ok=0
for _ in $($B seq 40); do
  if $B ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; then ok=1; break; fi
done
t1=$(up)
[ "$ok" = 1 ] || fail "no answer from $PEER through wg0"
echo "NACRE-NET-FIRST-PACKET $NAME: first ping at $t0, first answer at $t1"
echo "NACRE-NET-PING $NAME: $PEER answered through wg0"

# 2. The handshake, as the kernel reports it over netlink, and bytes received on wg0.
/usr/lib/nacre/nacre-init wg-status > /tmp/wg || fail "wg-status failed"
$B sed "s/^/NACRE-NET-WG $NAME: /" /tmp/wg
$B grep -q "latest-handshake never" /tmp/wg && fail "no WireGuard handshake"
$B grep -q "latest-handshake" /tmp/wg || fail "no peer on wg0"
rx=$(cat /sys/class/net/wg0/statistics/rx_bytes)
[ "$rx" -gt 0 ] || fail "wg0 received nothing"
echo "NACRE-NET-RX $NAME: wg0 rx_bytes $rx"

# 3. Wait until the peer is done with 1 and 2 before deleting wg0: each listens on the
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

# 3b. wg0 deleted on node1 (node2 waits): the init creates it again with the same key, address
#     and peers and puts its routes back. Meanwhile pings to the peer go nowhere (the test
#     reads the wire: none leaves on eth0). node1 then tells node2 through the new wg0.
if [ "$NAME" = node1 ]; then
  ( for _ in $($B seq 20); do $B ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; done ) &
  bg=$!
  t0=$(up)
  $B ip link del wg0 || fail "cannot delete wg0"
  gone=$($B ip route get "$PEER" 2>&1)
  echo "NACRE-NET-DELETED-ROUTE $NAME: $gone"
  case "$gone" in *"dev eth0"*) fail "with wg0 deleted, $PEER routes over eth0: $gone" ;; esac
  back=0
  for _ in $($B seq 200); do
    case "$($B ip route get "$PEER" 2>&1)" in *"dev wg0"*) back=1; break ;; esac
    $B sleep 0.05
  done
  t1=$(up)
  [ "$back" = 1 ] || fail "wg0 and its route were not restored"
  ok=0
  for _ in $($B seq 40); do
    if $B ping -c 1 -W 1 "$PEER" >/dev/null 2>&1; then ok=1; break; fi
  done
  t2=$(up)
  [ "$ok" = 1 ] || fail "no answer from $PEER through the restored wg0"
  wait "$bg"
  echo "NACRE-NET-RESTORED $NAME: wg0 deleted at $t0, route through wg0 at $t1, answer at $t2"
  $B ip addr show wg0 | $B grep -q "inet 10.244.0.1/32" || fail "the restored wg0 lacks its address"
  sent=0
  for _ in $($B seq 60); do
    if echo "restored" | $B nc -w 1 "$PEER" 7778 2>/dev/null; then sent=1; break; fi
    $B sleep 0.5
  done
  [ "$sent" = 1 ] || fail "cannot reach the peer's listener through the restored wg0"
else
  $B timeout 90 $B nc -l -p 7778 > /tmp/restored < /dev/null
  $B grep -q restored /tmp/restored || fail "no word from the peer through its restored wg0"
  echo "NACRE-NET-PEER-RESTORED $NAME"
fi

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
