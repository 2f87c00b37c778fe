#!/bin/sh
# kubelet's stand-in for the attested-cluster test (tests/e2e/cluster.sh), run by nacre-init
# after the node joined the key service: /var is the state disk opened with the key the service
# released, kubelet's join data is there, and the other good node (whose peer entry reaches this
# node through the service's peer refresh) answers on its overlay address, through wg0 only.
B=busybox
fail() { echo "NACRE-CLUSTER-FAIL $*"; /usr/lib/nacre/nacre-init wg-status; $B ip route show table all; exit 1; }

join=$($B cat /run/nacre/kubelet-join.json) || fail "no kubelet join data"
echo "NACRE-CLUSTER-JOIN $join"
case "$join" in *'"bootstrap_token":"'*) ;; *) fail "no bootstrap token in the join data" ;; esac
var=$($B grep ' /var ' /proc/mounts)
echo "NACRE-CLUSTER-VAR $var"
case "$var" in /dev/mapper/*) ;; *) fail "/var is not on the opened state disk" ;; esac
# The test boots one node a second time: its disk, opened with the re-derived key, still holds
# what the first boot wrote, and that boot ends here.
if [ -f /var/nacre-e2e-marker ]; then
  echo "NACRE-CLUSTER-MARKER $($B cat /var/nacre-e2e-marker)"
  echo "NACRE-CLUSTER-REBOOT-OK"
  exit 0
fi
echo "written at first boot" > /var/nacre-e2e-marker && $B sync

peer=""
for _ in $($B seq 120); do
  peer=$(/usr/lib/nacre/nacre-init wg-status 2>/dev/null | $B sed -n 's/.* allowed-ips \([0-9.]*\)\/32 .*/\1/p' | $B head -n1)
  [ -n "$peer" ] && break
  $B sleep 1
done
[ -n "$peer" ] || fail "no peer on wg0 after 120 s"
route=$($B ip route get "$peer" 2>&1)
echo "NACRE-CLUSTER-ROUTE $route"
case "$route" in *"dev wg0"*) ;; *) fail "the route to $peer is not through wg0" ;; esac
ok=0
for _ in $($B seq 60); do
  if $B ping -c 1 -W 1 "$peer" >/dev/null 2>&1; then ok=1; break; fi
done
[ "$ok" = 1 ] || fail "no answer from $peer through wg0"
/usr/lib/nacre/nacre-init wg-status | $B sed 's/^/NACRE-CLUSTER-WG /'
echo "NACRE-CLUSTER-PING $peer answered through wg0"

# What a workload on a member node gets if it asks for keys: nothing. Its join is refused (PCR 15
# holds the cluster id, PCR 11 says ready); with a forged runtime log that stops at sysinit and
# leaves out the cluster id, the logs no longer replay to the quoted PCRs.
out=$(/usr/lib/nacre/nacre-init key-service-probe join 2>&1); rc=$?
echo "NACRE-CLUSTER-PROBE-JOIN rc=$rc $out"
[ "$rc" = 3 ] || fail "the key service did not refuse a member's second join"
$B head -n 3 /run/nacre/runtime.cel > /tmp/forged.cel
out=$(/usr/lib/nacre/nacre-init key-service-probe disk-key 00000000-0000-4000-8000-000000000001 --runtime-log /tmp/forged.cel 2>&1); rc=$?
echo "NACRE-CLUSTER-PROBE-FORGED rc=$rc $out"
[ "$rc" = 3 ] || fail "the key service did not refuse a forged runtime log"
# Stay up a while so the other node's pings to this one succeed too.
$B sleep "${NACRE_LINGER:-20}"
echo "NACRE-CLUSTER-OK"
