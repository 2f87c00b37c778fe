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

# A peer's allowed IPs: its overlay address (/32) and its pod range, comma-separated.
peer_ips() { /usr/lib/nacre/nacre-init wg-status 2>/dev/null | $B sed -n 's/.* allowed-ips \([^ ]*\) .*/\1/p' | $B head -n1 | $B tr ',' ' '; }
peer="" peer_range=""
for _ in $($B seq 120); do
  for a in $(peer_ips); do
    case "$a" in */32) peer=${a%/32} ;; */*) peer_range=$a ;; esac
  done
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

# --- pods, as kubelet runs them (nacre-cri-probe speaks CRI to containerd) ---------------------
# Node a (MAC ...:01) and node b each run a pod serving a file over HTTP and fetch the other's by
# its pod IP, through wg0. Node a also: the host injects spoofed packets (cluster sources) at it,
# and it fetches with wg0 down (must fail), then up again. The two nodes sync through busybox
# httpd on their overlay addresses (:8080, files "fetched" and "done").
P=/usr/lib/nacre/nacre-cri-probe
IMG=docker.io/nacre/busybox-test:1
mac=$($B cat /sys/class/net/eth0/address)
case "$mac" in *:01) me=a other=b ;; *) me=b other=a ;; esac
addr() { $B ip -4 -o addr show dev "$1" | $B sed -n 's/.* inet \([0-9.]*\)\/.*/\1/p' | $B head -n1; }
under=$(addr eth0) over=$(addr wg0)
conf=/run/nacre/cni/net.d/10-nacre.conflist
[ -f "$conf" ] || fail "no CNI configuration $conf"
# The CNI and kubelet files nacre-init wrote from the join, one line each (newlines become
# spaces: JSON stays JSON, a PEM keeps its lines apart), for the host's checks.
for f in $conf /run/nacre/kubernetes/*; do
  [ -f "$f" ] && echo "NACRE-KUBE-FILE ${f##*/} $($B tr '\n\t' '  ' < "$f")"
done
range=$($B tr -d ' \n' < $conf | $B sed -n 's/.*"subnet":"\([0-9./]*\)".*/\1/p')
[ -n "$peer_range" ] || fail "the peer's WireGuard allowed IPs carry no pod range"
# host-local hands out the range's first free address, .2 (the gateway is .1), on a fresh /run.
peer_pod=${peer_range%.0/*}.2
echo "NACRE-POD-NODE me=$me mac=$mac underlay=$under overlay=$over range=$range peer=$peer peer_range=$peer_range peer_pod=$peer_pod"
$B mkdir -p /run/e2e-www
$B httpd -p "$over:8080" -h /run/e2e-www || fail "httpd on $over:8080"
$P version || fail "CRI Version"
/usr/bin/ctr -n k8s.io images import /usr/share/nacre/busybox-test.tar >/dev/null || fail "ctr import of the busybox image"
$P image-status "$IMG" || fail "CRI ImageStatus $IMG"
# The pause image comes from the pause-import service (it may still be running).
for _ in $($B seq 120); do $P image-status nacre.local/pause:catatonit >/dev/null 2>&1 && break; $B usleep 500000; done
$P image-status nacre.local/pause:catatonit || fail "no pause image (pause-import)"

# DNS as kubelet gives a ClusterFirst pod (cluster DNS, search path, ndots:5).
out=$($P run-pod --name "web-$me" --dns 10.96.0.10 --search default.svc.cluster.local \
  --search svc.cluster.local --search cluster.local 2>&1); rc=$?
echo "NACRE-POD-RUN rc=$rc $out"
[ "$rc" = 0 ] || fail "RunPodSandbox"
pod=$(echo "$out" | $B sed -n 's/^pod [^ ]* \([0-9a-f]*\) ready ip .*/\1/p')
pod_ip=$(echo "$out" | $B sed -n 's/^pod .* ready ip \([0-9.]*\) .*/\1/p')
[ "$pod_ip" = "${range%.0/*}.2" ] || fail "pod IP $pod_ip is not the first free address of $range"
$P run-container --pod "$pod" --name httpd --image "$IMG" -- /bin/busybox sh -c \
  'busybox mkdir -p /www && echo "nacre-pod-file from $(busybox hostname) $((6*7))" > /www/index.html && exec busybox httpd -f -p 80 -h /www' \
  || fail "the httpd container"
read up _ < /proc/uptime
echo "NACRE-POD-FIRST-RUNNING uptime=$up"
route=$($B ip route get "$peer_pod" 2>&1)
echo "NACRE-POD-ROUTE $route"
case "$route" in *"dev wg0"*) ;; *) fail "the route to the peer's pod $peer_pod is not through wg0" ;; esac
# (busybox 1.35's static wget crashes with -T: timeout(1) bounds each try instead.)
fetch() { # NAME TRIES: a container in the pod fetching the peer pod's file
  $P run-container --pod "$pod" --name "$1" --image "$IMG" --wait-exit $(($2 * 4 + 30)) --log -- /bin/busybox sh -c \
    "for i in \$(busybox seq $2); do busybox timeout 5 busybox wget -q -O - http://$peer_pod/ && exit 0; busybox sleep 1; done; exit 1" 2>&1
}
out=$(fetch fetch 120); rc=$?
echo "$out" | $B sed 's/^/NACRE-POD-FETCH /'
[ "$rc" = 0 ] || fail "no answer from the peer's pod $peer_pod"
case "$out" in *"nacre-pod-file from web-$other 42"*) ;; *) fail "the peer pod's file is not web-$other's" ;; esac
echo "NACRE-POD-FETCH-OK web-$other's file from $peer_pod through wg0"
$B touch /run/e2e-www/fetched
wait_peer() { # FILE SECONDS
  for _ in $($B seq "$2"); do $B timeout 3 $B wget -q -O /dev/null "http://$peer:8080/$1" 2>/dev/null && return 0; $B sleep 1; done
  return 1
}

snmp() { # FILE SECTION FIELD
  $B awk -v s="$2:" -v f="$3" '$1 == s { if (!h) { for (i = 2; i <= NF; i++) if ($i == f) c = i; h = 1 } else print $c }' "$1"
}
if [ "$me" = a ]; then
  wait_peer fetched 180 && echo "NACRE-POD-PEER-FETCHED" || echo "NACRE-POD-PEER-FETCHED timeout"
  # Injection: the host sends ICMP echoes with the peer's overlay address as source to this
  # node's overlay and pod addresses (3 each), then 3 with a non-cluster source (10.0.2.2) to its
  # underlay address; only the latter may arrive.
  e0=$(snmp /proc/net/snmp Icmp InEchos) f0=$(snmp /proc/net/snmp Ip ForwDatagrams)
  r0=$(snmp /proc/net/netstat TcpExt IPReversePathFilter)
  echo "NACRE-INJECT-READY mac=$mac underlay=$under overlay=$over pod=$pod_ip spoof=$peer"
  e=$e0
  for _ in $($B seq 600); do e=$(snmp /proc/net/snmp Icmp InEchos); [ $((e - e0)) -ge 3 ] && break; $B usleep 100000; done
  f=$(snmp /proc/net/snmp Ip ForwDatagrams) r=$(snmp /proc/net/netstat TcpExt IPReversePathFilter)
  echo "NACRE-INJECT-RESULT echoes=$((e - e0)) forwarded=$((f - f0)) rp_filter_drops=$((r - r0))"
  [ $((e - e0)) -ge 3 ] || fail "the control echoes (non-cluster source) did not arrive"
  [ $((e - e0)) = 3 ] || fail "spoofed echoes (cluster source from the underlay) were delivered"
  [ $((f - f0)) = 0 ] || fail "spoofed packets to the pod were forwarded"
  # wg0 down: the pods cannot reach each other at all (no route out the underlay either).
  $B ip link set wg0 down || fail "ip link set wg0 down"
  route=$($B ip route get "$peer_pod" 2>&1)
  echo "NACRE-POD-WGDOWN-ROUTE $route"
  case "$route" in *"dev eth0"*|*" via "*) fail "with wg0 down, $peer_pod routes out the underlay" ;; esac
  out=$(fetch fetch-down 3); rc=$?
  echo "$out" | $B sed 's/^/NACRE-POD-WGDOWN /'
  [ "$rc" != 0 ] || fail "with wg0 down, the peer's pod still answered"
  echo "NACRE-POD-WGDOWN-OK no answer from $peer_pod with wg0 down"
  $B ip link set wg0 up || fail "ip link set wg0 up"
  out=$(fetch fetch-up 40); rc=$?
  echo "$out" | $B sed 's/^/NACRE-POD-WGUP /'
  [ "$rc" = 0 ] && echo "NACRE-POD-WGUP-OK" || echo "NACRE-POD-WGUP-FAILED rc=$rc"
  $B touch /run/e2e-www/done
else
  # Node b keeps its pod until node a is done with it.
  wait_peer done 150 && echo "NACRE-POD-PEER-DONE" || echo "NACRE-POD-PEER-DONE timeout"
fi
$P stop-pod "$pod" || fail "StopPodSandbox"
$P remove-pod "$pod" || fail "RemovePodSandbox"
if out=$($P pod-status "$pod" 2>&1); then fail "pod $pod still there after RemovePodSandbox: $out"; fi
echo "NACRE-POD-REMOVED $out"
# Node b: stay until node a stopped its pod (a's done file), so its last fetch is not cut short.
$B sleep "${NACRE_LINGER:-2}"
echo "NACRE-CLUSTER-OK"
