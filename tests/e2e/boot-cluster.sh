#!/usr/bin/env bash
# Boot several UEFI guests (QEMU TCG + OVMF + one swtpm each) on one private L2 segment: a bridge
# br0 (10.0.2.2/24) in a network namespace of their own, with busybox udhcpd serving leases on it
# and optional host-side service processes listening on it. Waits until every guest powers off,
# then tears everything down (processes, taps, namespace) on every exit path.
#
# Usage: boot-cluster.sh WORKDIR [--timeout S] [--service-port PORT]... [--service CMD]...
#                        [--tpm-state-root DIR] [--pcap FILE] [--secure-boot VARS.fd]
#                        [--fw-cfg NAME:FILE]... [--fw-cfg-item NAME:ITEM:FILE]... [--stop-file PATH]
#                        --node NAME:ESP_DISK:ROOT_DISK[:STATE_DISK] [--node ...]
#   Namespace nacre-e2e-<pid>: lo, bridge br0 10.0.2.2/24, tap<i> per node (i from 1, in order),
#   udhcpd leasing 10.0.2.100-10.0.2.199 (router 10.0.2.2; lease file WORKDIR/udhcpd.leases).
#   Node i has MAC 52:54:00:e2:e0:<i in hex, 2 digits>.
#   --service CMD: a shell command (sh -c) run in the namespace, in the background, with
#     NACRE_E2E_NETNS set, output in WORKDIR/service.log; may repeat. The guests start once
#     something listens on every TCP port --service-port names (may repeat; default 7443) in the
#     namespace (30 s at most).
#   --node: ESP_DISK boots first (bootindex 0) and ROOT_DISK is the second virtio disk, both
#     read-only (never modified; several nodes may share them); ROOT_DISK "-": none (a whole
#     image, ESP and root on one disk); STATE_DISK, if given, is a third virtio disk, read-write,
#     serial "nacre-state". Paths must not contain ':' or ','.
#   --secure-boot VARS.fd: every node boots OVMF_CODE_4M.secboot.fd (q35 smm=on) with a copy of
#     VARS.fd (own PK/KEK/db enrolled) instead of the plain firmware.
#   --fw-cfg-item NAME:ITEM:FILE: node NAME gets FILE as the fw_cfg item ITEM (e.g.
#     opt/nacre/tpm2-pcr-signature.json); may repeat.
#   --fw-cfg NAME:FILE: node NAME gets FILE as the fw_cfg item opt/nacre/cluster.toml (its
#     cluster configuration, nacre_cluster).
#   --stop-file PATH: once PATH exists, the guests still running are stopped (exit "stopped")
#     and the run ends as if they had powered off: for nodes that run until told otherwise.
#   --tpm-state-root DIR: node NAME's TPM state is DIR/NAME, kept and reused across runs (same TPM
#     identity); default: fresh state in WORKDIR/NAME/tpm on every run.
#   --timeout S: for all guests together (default 300); then they are killed.
#   --pcap FILE: also merge the per-node captures (always written) into FILE (needs python3).
#   Writes per node WORKDIR/NAME/{console.log (serial), qemu.log (QEMU's stderr), wire.pcap
#   (the node's NIC, QEMU filter-dump), exit (QEMU's exit status, "timeout" if killed)},
#   and WORKDIR/{udhcpd.conf,udhcpd.leases,udhcpd.log,service.log}.
#   Needs root, ip, ss, setsid, qemu-system-x86_64, swtpm, swtpm_setup, busybox (udhcpd), OVMF.
# Exit codes: 0 every guest powered off by itself (QEMU exited 0); 2 usage; 4 timeout;
#   7 setup failed (tools, namespace, DHCP server, service, swtpm, or a QEMU exited non-zero).
# Environment: OVMF_DIR (default /usr/share/OVMF), QEMU (default qemu-system-x86_64).
set -euo pipefail

help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
usage() { [[ $# -eq 0 ]] || echo "boot-cluster: $*" >&2; help >&2; exit 2; }
log() { echo "boot-cluster: $*" >&2; }
fail() { log "FAILED: $*"; exit 7; }

work="" timeout=300 ports=() services=() nodes=() tpm_root="" pcap="" sb_vars="" stop_file=""
declare -A fwcfg=()
fwitems=()
while (($#)); do
  case "$1" in
    --timeout) timeout="${2:?}"; shift 2 ;;
    --service-port) ports+=("${2:?}"); shift 2 ;;
    --secure-boot) sb_vars="${2:?}"; shift 2 ;;
    --fw-cfg) fwcfg[${2%%:*}]=${2#*:}; shift 2 ;;
    --fw-cfg-item) fwitems+=("$2"); shift 2 ;;
    --stop-file) stop_file="${2:?}"; shift 2 ;;
    --service) services+=("${2:?}"); shift 2 ;;
    --node) nodes+=("${2:?}"); shift 2 ;;
    --tpm-state-root) tpm_root="${2:?}"; shift 2 ;;
    --pcap) pcap="${2:?}"; shift 2 ;;
    -h|--help) help; exit 0 ;;
    -*) usage "unknown option $1" ;;
    *) [[ -z "$work" ]] || usage "more than one WORKDIR"; work="$1"; shift ;;
  esac
done
[[ -n "$work" ]] || usage "no WORKDIR"
((${#nodes[@]} > 0)) || usage "no --node"
((${#nodes[@]} <= 99)) || usage "at most 99 nodes"
[[ "$timeout" =~ ^[0-9]+$ ]] || usage "--timeout wants whole seconds"
((${#ports[@]})) || ports=(7443)
for port in "${ports[@]}"; do
  [[ "$port" =~ ^[0-9]+$ ]] && ((port > 0 && port < 65536)) || usage "bad --service-port $port"
done

# --- checks ------------------------------------------------------------------------------------
OVMF_DIR=${OVMF_DIR:-/usr/share/OVMF}
QEMU=${QEMU:-qemu-system-x86_64}
((EUID == 0)) || fail "must run as root (network namespace, bridge, taps)"
for t in ip ss setsid "$QEMU" swtpm swtpm_setup busybox; do
  command -v "$t" >/dev/null || fail "missing tool: $t"
done
[[ -z "$pcap" ]] || command -v python3 >/dev/null || fail "missing tool: python3 (for --pcap)"
busybox --list | grep -x udhcpd >/dev/null || fail "busybox has no udhcpd applet"
[[ -c /dev/net/tun ]] || fail "no /dev/net/tun"
code=$OVMF_DIR/OVMF_CODE_4M.fd vars_src=$OVMF_DIR/OVMF_VARS_4M.fd machine=(-machine q35)
if [[ -n "$sb_vars" ]]; then
  code=$OVMF_DIR/OVMF_CODE_4M.secboot.fd vars_src=$sb_vars
  machine=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on)
fi
[[ -f "$code" && -f "$vars_src" ]] || fail "firmware missing: $code / $vars_src"

names=() esps=() roots=() states=()
for spec in "${nodes[@]}"; do
  IFS=: read -r name esp root state extra <<<"$spec"
  [[ -n "$name" && -n "$esp" && -n "$root" && -z "${extra:-}" ]] \
    || usage "--node wants NAME:ESP_DISK:ROOT_DISK[:STATE_DISK], got '$spec'"
  [[ "$name" =~ ^[A-Za-z0-9._-]+$ ]] || usage "bad node name '$name'"
  for n in "${names[@]}"; do [[ "$n" != "$name" ]] || usage "node name '$name' given twice"; done
  [[ "$root" != - ]] || root=""
  for f in "$esp" ${root:+"$root"} ${state:+"$state"}; do
    [[ -f "$f" ]] || usage "node $name: no such disk image: $f"
  done
  esp=$(realpath "$esp"); [[ -z "$root" ]] || root=$(realpath "$root")
  if [[ -n "${fwcfg[$name]:-}" ]]; then
    [[ -f "${fwcfg[$name]}" ]] || usage "node $name: no such file: ${fwcfg[$name]}"
    fwcfg[$name]=$(realpath "${fwcfg[$name]}")
  fi
  [[ -z "$state" ]] || state=$(realpath "$state")
  names+=("$name") esps+=("$esp") roots+=("$root") states+=("$state")
done

mkdir -p "$work"
work=$(realpath "$work")
[[ "$work" != *[,:]* ]] || usage "WORKDIR must not contain ',' or ':' (QEMU option syntax)"
for d in "${esps[@]}" "${roots[@]}" "${states[@]}"; do [[ "$d" != *,* ]] || usage "paths must not contain ','"; done
if [[ -n "$tpm_root" ]]; then mkdir -p "$tpm_root"; tpm_root=$(realpath "$tpm_root"); fi

# --- cleanup: on every exit path -----------------------------------------------------------------
ns=nacre-e2e-$$
tmp=$(mktemp -d /tmp/nacre-bc.XXXXXX)   # short: UNIX socket paths must stay under 108 bytes
ns_made=0 dhcp_pid="" service_pids=() swtpm_pids=() qemu_pids=()
stop() { # PID...: TERM, then KILL after 5 s
  local p left
  (($#)) || return 0
  kill "$@" 2>/dev/null || true
  for _ in $(seq 50); do
    left=0; for p in "$@"; do kill -0 "$p" 2>/dev/null && left=1; done
    ((left)) || break; sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
  for p in "$@"; do wait "$p" 2>/dev/null || true; done
}
cleanup() {
  local rc=$? p
  trap - EXIT INT TERM
  set +e
  stop "${qemu_pids[@]}"
  stop "${swtpm_pids[@]}"
  for p in "${service_pids[@]}"; do kill -- "-$p" 2>/dev/null; done   # setsid: whole group
  stop "${service_pids[@]}"
  if [[ -n "$dhcp_pid" ]]; then
    kill -USR1 "$dhcp_pid" 2>/dev/null && sleep 0.2   # udhcpd writes its lease file
    stop "$dhcp_pid"
  fi
  if ((ns_made)); then
    # Whatever else still runs in the namespace (children of services that left their group).
    p=$(ip netns pids "$ns" 2>/dev/null)
    [[ -z "$p" ]] || stop $p
    for i in "${!names[@]}"; do ip -n "$ns" link del "tap$((i + 1))" 2>/dev/null; done
    ip netns del "$ns" 2>/dev/null || log "could not delete namespace $ns"
  fi
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the segment ---------------------------------------------------------------------------------
# Not for background jobs: $! would be a subshell, not the process to signal.
nsx() { ip netns exec "$ns" "$@"; }
ip netns add "$ns" || fail "ip netns add $ns"
ns_made=1
{
  ip -n "$ns" link set lo up &&
  ip -n "$ns" link add br0 type bridge forward_delay 0 &&
  ip -n "$ns" addr add 10.0.2.2/24 dev br0 &&
  ip -n "$ns" link set br0 up
} || fail "could not set up br0 in $ns"
for i in "${!names[@]}"; do
  tap=tap$((i + 1))
  { ip -n "$ns" tuntap add dev "$tap" mode tap &&
    ip -n "$ns" link set "$tap" master br0 &&
    ip -n "$ns" link set "$tap" up; } || fail "could not create $tap in $ns"
done
log "namespace $ns: br0 10.0.2.2/24, taps tap1..tap${#names[@]}"

rm -f "$work"/{udhcpd.conf,udhcpd.leases,udhcpd.log,service.log}
cat >"$work/udhcpd.conf" <<EOF
start 10.0.2.100
end 10.0.2.199
max_leases 100
interface br0
lease_file $work/udhcpd.leases
pidfile $tmp/udhcpd.pid
option subnet 255.255.255.0
option router 10.0.2.2
option lease 3600
EOF
touch "$work/udhcpd.leases"
ip netns exec "$ns" busybox udhcpd -f "$work/udhcpd.conf" </dev/null >"$work/udhcpd.log" 2>&1 &
dhcp_pid=$!
sleep 0.3
kill -0 "$dhcp_pid" 2>/dev/null || { cat "$work/udhcpd.log" >&2; dhcp_pid=""; fail "udhcpd did not start"; }

# --- services --------------------------------------------------------------------------------------
if ((${#services[@]})); then
  : >"$work/service.log"
  for cmd in "${services[@]}"; do
    NACRE_E2E_NETNS=$ns setsid ip netns exec "$ns" sh -c "$cmd" </dev/null >>"$work/service.log" 2>&1 &
    service_pids+=($!)
  done
  for port in "${ports[@]}"; do
    listening=0
    for _ in $(seq 300); do
      if nsx ss -Hltn "sport = :$port" | awk -v p=":$port" '
           $4 == "10.0.2.2" p || $4 == "0.0.0.0" p || $4 == "*" p || $4 == "[::]" p { found = 1 }
           END { exit !found }'; then listening=1; break; fi
      for p in "${service_pids[@]}"; do kill -0 "$p" 2>/dev/null || break 3; done
      sleep 0.1
    done
    if ((!listening)); then
      log "--- $work/service.log"; cat "$work/service.log" >&2; log "---"
      fail "no service listening on 10.0.2.2:$port in $ns"
    fi
    log "service listening on 10.0.2.2:$port"
  done
fi

# --- nodes ----------------------------------------------------------------------------------------
start=$(date +%s)
for i in "${!names[@]}"; do
  name=${names[$i]} n=$((i + 1))
  dir=$work/$name
  mkdir -p "$dir"
  rm -f "$dir"/{console.log,qemu.log,wire.pcap,exit,vars.fd,swtpm.log,swtpm_setup.log}
  cp "$vars_src" "$dir/vars.fd"
  if [[ -n "$tpm_root" ]]; then
    tpmdir=$tpm_root/$name
  else
    tpmdir=$dir/tpm; rm -rf "$tpmdir"
  fi
  mkdir -p "$tpmdir"
  if [[ ! -f "$tpmdir/tpm2-00.permall" ]]; then
    swtpm_setup --tpm2 --tpmstate "$tpmdir" --pcr-banks sha256 --overwrite >"$dir/swtpm_setup.log" 2>&1 \
      || { cat "$dir/swtpm_setup.log" >&2; fail "node $name: swtpm_setup failed"; }
  fi
  sock=$tmp/tpm$n.sock
  swtpm socket --tpm2 --tpmstate dir="$tpmdir" --ctrl type=unixio,path="$sock" --terminate \
    --log file="$dir/swtpm.log" </dev/null >/dev/null 2>&1 &
  swtpm_pids+=($!)
  for _ in $(seq 50); do [[ -S "$sock" ]] && break; sleep 0.1; done
  [[ -S "$sock" ]] || fail "node $name: swtpm did not create its socket"

  state_args=()
  if [[ -n "${states[$i]}" ]]; then
    state_args=(-drive "if=none,id=state,format=raw,file=${states[$i]}"
                -device virtio-blk-pci,drive=state,serial=nacre-state)
  fi
  root_args=()
  [[ -z "${roots[$i]}" ]] || root_args=(-drive "if=none,id=root,format=raw,readonly=on,file=${roots[$i]}"
                                        -device virtio-blk-pci,drive=root)
  fwcfg_args=()
  [[ -z "${fwcfg[$name]:-}" ]] || fwcfg_args=(-fw_cfg "name=opt/nacre/cluster.toml,file=${fwcfg[$name]}")
  for item in "${fwitems[@]}"; do
    IFS=: read -r iname iitem ifile <<<"$item"
    [[ $iname == "$name" ]] || continue
    [[ -f $ifile ]] || usage "node $name: no such file: $ifile"
    fwcfg_args+=(-fw_cfg "name=$iitem,file=$(realpath "$ifile")")
  done
  mac=$(printf '52:54:00:e2:e0:%02x' "$n")
  ip netns exec "$ns" "$QEMU" -accel tcg "${machine[@]}" -cpu max -m 1024 -smp 1 -nographic -monitor none -no-reboot \
    -serial "file:$dir/console.log" \
    -drive if=pflash,format=raw,unit=0,file="$code",readonly=on \
    -drive if=pflash,format=raw,unit=1,file="$dir/vars.fd" \
    -chardev socket,id=chrtpm,path="$sock" -tpmdev emulator,id=tpm0,chardev=chrtpm \
    -device tpm-crb,tpmdev=tpm0 \
    -drive if=none,id=esp,format=raw,readonly=on,file="${esps[$i]}" \
    -device virtio-blk-pci,drive=esp,bootindex=0 \
    "${root_args[@]}" "${fwcfg_args[@]}" \
    "${state_args[@]}" \
    -netdev tap,id=n0,ifname="tap$n",script=no,downscript=no \
    -device virtio-net-pci,netdev=n0,mac="$mac" \
    -object filter-dump,id=f0,netdev=n0,file="$dir/wire.pcap" \
    </dev/null >"$dir/qemu.log" 2>&1 &
  qemu_pids+=($!)
  log "node $name: QEMU pid ${qemu_pids[$i]}, tap$n, mac $mac, console $dir/console.log"
  ((n == ${#names[@]})) || sleep 1
done

# --- wait for power-off ---------------------------------------------------------------------------
deadline=$((start + timeout))
declare -A done_rc=()
while ((${#done_rc[@]} < ${#names[@]})); do
  for i in "${!names[@]}"; do
    [[ -z "${done_rc[$i]:-}" ]] || continue
    kill -0 "${qemu_pids[$i]}" 2>/dev/null && continue
    rc=0; wait "${qemu_pids[$i]}" || rc=$?
    done_rc[$i]=$rc
    echo "$rc" >"$work/${names[$i]}/exit"
    log "node ${names[$i]}: QEMU exited $rc after $(($(date +%s) - start)) s"
  done
  ((${#done_rc[@]} < ${#names[@]})) || break
  if [[ -n "$stop_file" && -e "$stop_file" ]]; then
    for i in "${!names[@]}"; do
      [[ -z "${done_rc[$i]:-}" ]] || continue
      stop "${qemu_pids[$i]}"
      done_rc[$i]=0
      echo stopped >"$work/${names[$i]}/exit"
      log "node ${names[$i]}: stopped on request ($stop_file) after $(($(date +%s) - start)) s"
    done
    break
  fi
  if (($(date +%s) >= deadline)); then
    for i in "${!names[@]}"; do
      [[ -z "${done_rc[$i]:-}" ]] || continue
      echo timeout >"$work/${names[$i]}/exit"
      last=$(tr -d '\r' <"$work/${names[$i]}/console.log" 2>/dev/null | sed 's/\x1b\[[0-9;=?]*[A-Za-z]//g' | grep -v '^\s*$' | tail -n1 | cut -c1-100) || true
      log "node ${names[$i]}: still running after ${timeout} s (last console line: ${last:-<none>})"
    done
    log "FAILED: timeout"
    exit 4
  fi
  sleep 1
done

# Leases as udhcpd saw them (SIGUSR1 makes it write the lease file).
kill -USR1 "$dhcp_pid" 2>/dev/null && sleep 0.2 && busybox dumpleases -f "$work/udhcpd.leases" >&2 || true

if [[ -n "$pcap" ]]; then
  python3 - "$pcap" "${names[@]/#/$work/}" <<'PY' || fail "could not merge the captures into $pcap"
import struct, sys
out, dirs = sys.argv[1], sys.argv[2:]
header, records = None, []
for d in dirs:
    try:
        data = open(d + "/wire.pcap", "rb").read()
    except FileNotFoundError:
        continue
    if len(data) < 24:
        continue
    header = header or data[:24]
    off = 24
    while off + 16 <= len(data):
        sec, usec, incl, _ = struct.unpack_from("<IIII", data, off)
        records.append((sec, usec, data[off:off + 16 + incl]))
        off += 16 + incl
records.sort(key=lambda r: (r[0], r[1]))
with open(out, "wb") as f:
    f.write(header or struct.pack("<IHHiIII", 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    for r in records:
        f.write(r[2])
PY
  log "merged captures (frames between guests appear twice): $pcap"
fi

bad=0
for i in "${!names[@]}"; do [[ "${done_rc[$i]}" == 0 ]] || bad=1; done
((bad == 0)) || { log "FAILED: a QEMU exited non-zero (see WORKDIR/NAME/qemu.log)"; exit 7; }
log "OK: ${#names[@]} guests powered off in $(($(date +%s) - start)) s"
exit 0
