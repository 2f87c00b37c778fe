#!/usr/bin/env bash
# Boot a disk image under QEMU (TCG) + OVMF + a fresh swtpm (sha256 bank by default) and capture
# the firmware event log and the PCRs the guest prints (initrd from scripts/lib/capture-initrd.sh).
#
# Usage: qemu-capture.sh DISK OUTDIR [--secure-boot VARS.fd] [--timeout S] [--banks LIST]
#   Without --secure-boot: OVMF_CODE_4M.fd with a fresh copy of OVMF_VARS_4M.fd.
#   With --secure-boot:    OVMF_CODE_4M.secboot.fd (q35 smm=on) with a copy of VARS.fd.
#   --banks: PCR banks swtpm allocates, comma-separated from sha1,sha256,sha384,sha512; must
#   include sha256 (default: sha256). Every requested bank must come back from the guest.
#   Writes OUTDIR/console.log (serial console), OUTDIR/qemu.log (QEMU's stderr), and on success
#   OUTDIR/eventlog.bin, OUTDIR/pcrs.json ({"0".."23": lowercase hex}, the sha256 bank),
#   OUTDIR/pcrs-<alg>.json (same format, one per bank, pcrs-sha256.json = pcrs.json),
#   OUTDIR/capture.json (with "banks"), and OUTDIR/runtime.cel when the guest prints nacre-init's
#   runtime log (NACRE-RUNTIME-SHA256 <hex> <size>, NACRE-RUNTIME-BEGIN, base64, NACRE-RUNTIME-END
#   inside the capture; the mkosi image's test payload does, capture-initrd.sh's initrd does not).
#   DISK is attached read-only and never modified; several captures may run in parallel.
# Exit codes: 0 capture complete; 2 usage; 3 firmware refused the image; 4 timeout;
#   5 kernel panic; 6 guest ended without a complete capture; 7 QEMU/swtpm failed to start.
# Environment: OVMF_DIR (default /usr/share/OVMF), QEMU (default qemu-system-x86_64).
set -euo pipefail

help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
usage() { help >&2; exit 2; }

disk="" out="" sb_vars="" timeout=180 banks=sha256
while (($#)); do
  case "$1" in
    --banks) banks="${2:?}"; shift 2 ;;
    --secure-boot) sb_vars="${2:?}"; shift 2 ;;
    --timeout) timeout="${2:?}"; shift 2 ;;
    -h|--help) help; exit 0 ;;
    -*) echo "qemu-capture: unknown option $1" >&2; usage ;;
    *) if [[ -z "$disk" ]]; then disk="$1"; elif [[ -z "$out" ]]; then out="$1"; else usage; fi; shift ;;
  esac
done
[[ -n "$disk" && -n "$out" ]] || usage
[[ "$timeout" =~ ^[0-9]+$ ]] || { echo "qemu-capture: --timeout wants whole seconds" >&2; exit 2; }
[[ -f "$disk" ]] || { echo "qemu-capture: no such disk image: $disk" >&2; exit 2; }
[[ -z "$sb_vars" || -f "$sb_vars" ]] || { echo "qemu-capture: no such varstore: $sb_vars" >&2; exit 2; }
[[ "$banks" =~ ^(sha1|sha256|sha384|sha512)(,(sha1|sha256|sha384|sha512))*$ && ",$banks," == *,sha256,* ]] \
  || { echo "qemu-capture: --banks wants a comma-separated list of sha1,sha256,sha384,sha512 including sha256" >&2; exit 2; }

OVMF_DIR=${OVMF_DIR:-/usr/share/OVMF}
QEMU=${QEMU:-qemu-system-x86_64}
if [[ -n "$sb_vars" ]]; then
  code=$OVMF_DIR/OVMF_CODE_4M.secboot.fd vars_src=$sb_vars
  machine=(-machine q35,smm=on -global driver=cfi.pflash01,property=secure,value=on)
else
  code=$OVMF_DIR/OVMF_CODE_4M.fd vars_src=$OVMF_DIR/OVMF_VARS_4M.fd
  machine=(-machine q35)
fi
[[ -f "$code" && -f "$vars_src" ]] || { echo "qemu-capture: firmware missing: $code / $vars_src" >&2; exit 7; }

mkdir -p "$out"
out=$(cd "$out" && pwd)
disk=$(cd "$(dirname "$disk")" && pwd)/$(basename "$disk")
[[ "$disk$out" != *,* ]] || { echo "qemu-capture: paths must not contain ',' (QEMU option syntax)" >&2; exit 2; }
rm -f "$out"/{console.log,qemu.log,eventlog.bin,pcrs.json,capture.json,runtime.cel} "$out"/pcrs-*.json

# Short private directory: UNIX socket paths must stay under 108 bytes.
tmp=$(mktemp -d /tmp/nacre-cap.XXXXXX)
qemu_pid="" swtpm_pid=""
cleanup() {
  local rc=$?
  [[ -n "$qemu_pid" ]] && kill "$qemu_pid" 2>/dev/null && wait "$qemu_pid" 2>/dev/null
  [[ -n "$swtpm_pid" ]] && kill "$swtpm_pid" 2>/dev/null && wait "$swtpm_pid" 2>/dev/null
  rm -rf "$tmp"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

fail() { # CODE MESSAGE
  echo "qemu-capture: FAILED ($disk): $2" >&2
  exit "$1"
}

start=$(date +%s.%N)
cp "$vars_src" "$tmp/vars.fd"
mkdir "$tmp/tpm"
swtpm_setup --tpm2 --tpmstate "$tmp/tpm" --pcr-banks "$banks" --overwrite >"$tmp/swtpm_setup.log" 2>&1 \
  || { cat "$tmp/swtpm_setup.log" >&2; fail 7 "swtpm_setup failed"; }
swtpm socket --tpm2 --tpmstate dir="$tmp/tpm" --ctrl type=unixio,path="$tmp/swtpm-sock" \
  --terminate --log file="$tmp/swtpm.log" &
swtpm_pid=$!
for _ in $(seq 50); do [[ -S "$tmp/swtpm-sock" ]] && break; sleep 0.1; done
[[ -S "$tmp/swtpm-sock" ]] || fail 7 "swtpm did not create its socket"

"$QEMU" -accel tcg "${machine[@]}" -cpu max -m 1024 -smp 1 -no-reboot \
  -display none -monitor none -serial "file:$out/console.log" -nic none \
  -drive if=pflash,format=raw,unit=0,file="$code",readonly=on \
  -drive if=pflash,format=raw,unit=1,file="$tmp/vars.fd" \
  -chardev socket,id=chrtpm,path="$tmp/swtpm-sock" -tpmdev emulator,id=tpm0,chardev=chrtpm \
  -device tpm-crb,tpmdev=tpm0 \
  -drive if=none,id=disk,format=raw,readonly=on,file="$disk" \
  -device virtio-blk-pci,drive=disk,bootindex=0 \
  </dev/null >"$out/qemu.log" 2>&1 &
qemu_pid=$!

# Wait for power-off, a terminal console message, or the timeout.
reason=""
deadline=$(($(date +%s) + timeout))
while kill -0 "$qemu_pid" 2>/dev/null; do
  if [[ -f "$out/console.log" ]]; then
    if grep -q "No bootable option" "$out/console.log"; then reason=refused
    elif grep -q "Kernel panic - not syncing" "$out/console.log"; then reason=panic
    fi
    if [[ -n "$reason" ]]; then sleep 2; break; fi
  fi
  if (($(date +%s) >= deadline)); then reason=timeout; break; fi
  sleep 1
done
qemu_rc=0
if [[ -z "$reason" ]]; then
  wait "$qemu_pid" || qemu_rc=$?
else
  kill "$qemu_pid" 2>/dev/null || true
  wait "$qemu_pid" 2>/dev/null || true
fi
qemu_pid=""
secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

console=$out/console.log
[[ -f "$console" ]] || touch "$console"
if grep -q "Access Denied" "$console" || [[ "$reason" == refused ]]; then
  what=$(grep -o -E "Access Denied|No bootable option[^.]*" "$console" | sort -u | paste -sd';' -) || true
  fail 3 "firmware refused the image after ${secs}s (console: ${what:-?})"
fi
if [[ "$reason" == panic ]]; then
  fail 5 "kernel panic after ${secs}s: $(grep -m1 -o 'Kernel panic - not syncing.*' "$console" | tr -d '\r' || true)"
fi
if [[ "$reason" == timeout ]]; then
  last=$(tr -d '\r' <"$console" | grep -v '^\s*$' | tail -n1 | cut -c1-100) || true
  fail 4 "timeout after ${timeout}s (last console line: ${last:-<none>})"
fi
((qemu_rc == 0)) || fail 7 "QEMU exited with $qemu_rc after ${secs}s: $(tail -n1 "$out/qemu.log")"
if err=$(tr -d '\r' <"$console" | grep -m1 -o 'NACRE-CAPTURE-ERROR.*'); then
  fail 6 "guest reported: ${err#NACRE-CAPTURE-ERROR }"
fi

# Extract and check the capture.
python3 - "$console" "$out" "$secs" "${sb_vars:+1}" "$code" "$banks" <<'PY' || fail 6 "guest powered off after ${secs}s without a complete capture (see $out/console.log)"
import base64, hashlib, json, re, sys
console, out, secs, sb, code, banks = sys.argv[1:7]
banks = banks.split(",")
HEXLEN = {"sha1": 40, "sha256": 64, "sha384": 96, "sha512": 128}
lines = [l.rstrip("\r\n") for l in open(console, "rb").read().decode("latin-1").split("\n")]
SUPERVISED = re.compile(r"^\[\s*[0-9.]+\] nacre-init: \[[^\]]+\] ")
def strip(l):  # tolerate stray bytes before a marker, and nacre-init's "[service] " prefix
    l = SUPERVISED.sub("", l)
    i = l.find("NACRE-")
    return l[i:] if i >= 0 else l
lines = [strip(l) for l in lines]
if "NACRE-CAPTURE-BEGIN" not in lines or "NACRE-CAPTURE-END" not in lines:
    sys.exit("markers missing")
b = lines.index("NACRE-CAPTURE-BEGIN")
body = lines[b:lines.index("NACRE-CAPTURE-END", b)]
pcrs, meta, digest, size, rt_digest, rt_size = {}, {}, None, None, None, None
bank_pcrs, guest_banks = {}, None
for l in body:
    m = re.fullmatch(r"NACRE-PCR (\d+) ([0-9A-Fa-f]{64})", l)
    mb = re.fullmatch(r"NACRE-PCR-(sha1|sha256|sha384|sha512) (\d+) ([0-9A-Fa-f]+)", l)
    if m:
        pcrs[m.group(1)] = m.group(2).lower()
    elif mb and len(mb.group(3)) == HEXLEN[mb.group(1)]:
        bank_pcrs.setdefault(mb.group(1), {})[mb.group(2)] = mb.group(3).lower()
    elif l.startswith("NACRE-PCR-BANKS "):
        guest_banks = l.split()[1:]
    elif l.startswith("NACRE-UNAME "):
        meta["uname"] = l[len("NACRE-UNAME "):]
    elif l.startswith("NACRE-CMDLINE "):
        meta["cmdline"] = l[len("NACRE-CMDLINE "):]
    elif l.startswith("NACRE-EVENTLOG-SHA256 "):
        _, digest, size = l.split()
    elif l.startswith("NACRE-RUNTIME-SHA256 "):
        _, rt_digest, rt_size = l.split()
if sorted(pcrs, key=int) != [str(i) for i in range(24)]:
    sys.exit("not all 24 PCRs captured: %s" % sorted(pcrs, key=int))
bank_pcrs.setdefault("sha256", pcrs)   # older capture initrds print the sha256 bank only
if bank_pcrs["sha256"] != pcrs:
    sys.exit("NACRE-PCR and NACRE-PCR-sha256 lines disagree")
for b in banks:
    if sorted(bank_pcrs.get(b, {}), key=int) != [str(i) for i in range(24)]:
        sys.exit("bank %s requested but not all 24 PCRs captured (guest has banks %s)" % (b, guest_banks))
s = body.index("NACRE-EVENTLOG-BEGIN") + 1
e = body.index("NACRE-EVENTLOG-END")
blob = base64.b64decode("".join(body[s:e]), validate=True)
if hashlib.sha256(blob).hexdigest() != digest or len(blob) != int(size):
    sys.exit("event log corrupted on the console: sha256/size mismatch")
open(out + "/eventlog.bin", "wb").write(blob)
runtime = None
if "NACRE-RUNTIME-BEGIN" in body:
    s = body.index("NACRE-RUNTIME-BEGIN") + 1
    e = body.index("NACRE-RUNTIME-END", s)
    runtime = base64.b64decode("".join(body[s:e]), validate=True)
    if rt_digest is None or hashlib.sha256(runtime).hexdigest() != rt_digest or len(runtime) != int(rt_size):
        sys.exit("runtime log corrupted on the console: sha256/size mismatch")
    open(out + "/runtime.cel", "wb").write(runtime)
with open(out + "/pcrs.json", "w") as f:
    json.dump(pcrs, f, indent=1, sort_keys=True)
    f.write("\n")
for b, values in sorted(bank_pcrs.items()):
    with open(out + "/pcrs-%s.json" % b, "w") as f:
        json.dump(values, f, indent=1, sort_keys=True)
        f.write("\n")
m = re.search(r"secureboot: Secure boot (enabled|disabled)", "\n".join(lines))
meta["kernel_secureboot"] = m.group(1) if m else "unknown"
meta.update(seconds=float(secs), secure_boot=bool(sb), firmware_code=code, banks=sorted(bank_pcrs),
            eventlog_sha256=digest, eventlog_size=len(blob))
if runtime is not None:
    meta.update(runtime_log_sha256=rt_digest, runtime_log_size=len(runtime))
with open(out + "/capture.json", "w") as f:
    json.dump(meta, f, indent=1, sort_keys=True)
    f.write("\n")
PY
extra=""
[[ -f "$out/runtime.cel" ]] && extra=", $out/runtime.cel"
[[ "$banks" == sha256 ]] || extra="$extra (banks $banks: $out/pcrs-<alg>.json)"
echo "qemu-capture: OK ($disk) in ${secs}s: $out/eventlog.bin, $out/pcrs.json$extra" >&2
