#!/usr/bin/env bash
# Boot every variant built by tests/e2e/build-variants.sh with scripts/qemu-capture.sh and check
# the captures.
#
# Usage: tests/e2e/capture-all.sh OUTDIR [--jobs N] [--timeout S] [--no-check] [VARIANT...]
#   VARIANTs default to: plain sb extra sb-unsigned plain-sha384, and stub257 when
#   OUTDIR/stub257 exists. --jobs: boots at a time (default 2).
#   Writes OUTDIR/<variant>/capture/{eventlog.bin,pcrs.json,console.log,capture.json,result}
#   (+ pcrs-<alg>.json per bank). A variant with OUTDIR/<variant>/banks (e.g. plain-sha384:
#   "sha256,sha384") is booted with qemu-capture.sh --banks <contents>.
#   sb-unsigned must be refused by the firmware: qemu-capture.sh exits 3 ("firmware refused the
#   image"); its result file records the reason.
#   Checks (unless --no-check), with tpm2_eventlog: replaying eventlog.bin gives pcrs.json (and
#   every pcrs-<alg>.json) for PCRs 0-7, 9, 11, 12, 13 (PCRs without events must be zero);
#   plain/sb/extra/plain-sha384 have the four systemd-stub 252 PCR 11 sections, stub257 five
#   (.linux .osrel .cmdline .initrd .sbat); extra has events in PCR 12 and 13, the others none;
#   sb has an EV_EFI_VARIABLE_AUTHORITY event in PCR 7, the others none; PCR 4 has two
#   EV_EFI_BOOT_SERVICES_APPLICATION events (UKI, kernel) without Secure Boot, one with it;
#   a variant with a banks file captured all its banks.
# Exit code 0 only if every variant behaved as expected.
set -euo pipefail

help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
here=$(cd "$(dirname "$0")" && pwd)
capture=$(cd "$here/../../scripts" && pwd)/qemu-capture.sh

out="" jobs=2 timeout=180 check=1 variants=()
while (($#)); do
  case "$1" in
    --jobs) jobs="$2"; shift 2 ;;
    --timeout) timeout="$2"; shift 2 ;;
    --no-check) check=0; shift ;;
    -h|--help) help; exit 0 ;;
    -*) echo "capture-all: unknown option $1" >&2; exit 2 ;;
    *) if [[ -z "$out" ]]; then out="$1"; else variants+=("$1"); fi; shift ;;
  esac
done
[[ -n "$out" && -d "$out" ]] || { help >&2; exit 2; }
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "capture-all: --jobs wants a positive number" >&2; exit 2; }
out=$(cd "$out" && pwd)
if ((${#variants[@]} == 0)); then
  variants=(plain sb extra sb-unsigned plain-sha384)
  [[ -d "$out/stub257" ]] && variants+=(stub257)
fi

# Boot one variant; the result file holds "<rc> <seconds> <last qemu-capture line>".
boot() {
  local v=$1 dir=$out/$1 args=() rc=0 t0 t1
  [[ -f "$dir/disk.img" ]] || { echo "capture-all: $dir/disk.img missing (run build-variants.sh)" >&2; return 1; }
  [[ -f "$dir/vars.fd" ]] && args+=(--secure-boot "$dir/vars.fd")
  [[ -f "$dir/banks" ]] && args+=(--banks "$(cat "$dir/banks")")
  mkdir -p "$dir/capture"
  t0=$(date +%s.%N)
  "$capture" "$dir/disk.img" "$dir/capture" ${args[@]+"${args[@]}"} --timeout "$timeout" \
    2>"$dir/capture/qemu-capture.err" || rc=$?
  t1=$(date +%s.%N)
  printf '%s %s %s\n' "$rc" "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')" \
    "$(tail -n1 "$dir/capture/qemu-capture.err")" >"$dir/capture/result"
  echo "capture-all: $v: $(cat "$dir/capture/result")" >&2
}

start=$(date +%s.%N)
running=0
for v in "${variants[@]}"; do
  rm -f "$out/$v/capture/result"
  if ((running >= jobs)); then wait -n || true; running=$((running - 1)); fi
  boot "$v" &
  running=$((running + 1))
done
wait || true
wall=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
echo "capture-all: ${#variants[@]} boots, --jobs $jobs, wall time ${wall}s" >&2

# Replay check: tpm2_eventlog's final "pcrs:" block (one sub-block per bank) against pcrs.json and
# each pcrs-<alg>.json.
check_variant() { # VARIANT -> prints problems, returns non-zero on any
  local v=$1 cap=$out/$1/capture
  tpm2_eventlog "$cap/eventlog.bin" >"$cap/eventlog.yaml" 2>"$cap/eventlog.warn" \
    || { echo "tpm2_eventlog failed on $cap/eventlog.bin"; return 1; }
  python3 - "$v" "$cap" <<'PY'
import glob, json, os, re, sys
v, cap = sys.argv[1], sys.argv[2]
yaml = open(cap + "/eventlog.yaml").read()
live = {"sha256": json.load(open(cap + "/pcrs.json"))}
for f in glob.glob(cap + "/pcrs-*.json"):
    live[os.path.basename(f)[5:-5]] = json.load(open(f))
# "pcrs:" then "  <alg>:" then "    <n> : 0x<hex>" lines.
replayed, bank = {}, None
for l in yaml.split("\npcrs:")[-1].splitlines():
    m = re.fullmatch(r"\s+(sha1|sha256|sha384|sha512):\s*", l)
    if m:
        bank = m.group(1); replayed[bank] = {}; continue
    m = re.fullmatch(r"\s+(\d+)\s*:\s*0x([0-9A-Fa-f]+)", l)
    if m and bank:
        replayed[bank][int(m.group(1))] = m.group(2).lower()
bad = []
for alg, pcrs in sorted(live.items()):
    for n in (0, 1, 2, 3, 4, 5, 6, 7, 9, 11, 12, 13):
        want = pcrs[str(n)]
        got = replayed.get(alg, {}).get(n, "0" * len(want))
        if got != want:
            bad.append("PCR %d (%s): replay %s != live %s" % (n, alg, got[:16], want[:16]))
if os.path.exists(cap + "/../banks"):
    want_banks = sorted(open(cap + "/../banks").read().strip().split(","))
    if sorted(live) != want_banks:
        bad.append("banks captured %s, want %s" % (sorted(live), want_banks))
# Events per PCR and type.
events = re.findall(r"PCRIndex: (\d+)\n\s+EventType: (\S+)", yaml)
def count(pcr, etype=None):
    return sum(1 for p, t in events if int(p) == pcr and (etype is None or t == etype))
n12, n13, auth = count(12), count(13), count(7, "EV_EFI_VARIABLE_AUTHORITY")
ipl, sections = (10, ".linux .osrel .cmdline .initrd .sbat") if v == "stub257" else (8, ".linux .osrel .cmdline .initrd")
if count(11, "EV_IPL") != ipl:
    bad.append("PCR 11: %d EV_IPL events, want %d (%s)" % (count(11, "EV_IPL"), ipl, sections))
apps = count(4, "EV_EFI_BOOT_SERVICES_APPLICATION")
if apps != (1 if v == "sb" else 2):
    bad.append("PCR 4: %d EV_EFI_BOOT_SERVICES_APPLICATION events, want %d" % (apps, 1 if v == "sb" else 2))
if v == "extra":
    if n12 == 0: bad.append("no PCR 12 events (credentials)")
    if n13 == 0: bad.append("no PCR 13 events (sysext)")
elif n12 or n13:
    bad.append("unexpected PCR 12/13 events: %d/%d" % (n12, n13))
if v == "sb" and auth != 1:
    bad.append("%d EV_EFI_VARIABLE_AUTHORITY events in PCR 7, want 1" % auth)
if v != "sb" and auth:
    bad.append("unexpected EV_EFI_VARIABLE_AUTHORITY in PCR 7")
print("%s: %d events; PCR 12: %d, PCR 13: %d, PCR 7 authority: %d; replay (%s) %s" % (
    v, len(events), n12, n13, auth, ",".join(sorted(live)),
    "matches" if not any(b.startswith("PCR ") and "replay" in b for b in bad) else "MISMATCH"))
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
PY
}

failed=0
for v in "${variants[@]}"; do
  res=$out/$v/capture/result
  if [[ ! -f "$res" ]]; then echo "capture-all: $v: no result" >&2; failed=1; continue; fi
  read -r rc secs msg <"$res"
  if [[ "$v" == sb-unsigned ]]; then
    if [[ "$rc" == 3 ]]; then
      echo "capture-all: PASS sb-unsigned refused as expected after ${secs}s: $msg" >&2
      echo "refused: $msg" >"$out/$v/capture/expected"
    else
      echo "capture-all: FAIL sb-unsigned was not refused (rc $rc): $msg" >&2; failed=1
    fi
    continue
  fi
  if [[ "$rc" != 0 ]]; then echo "capture-all: FAIL $v: capture failed (rc $rc): $msg" >&2; failed=1; continue; fi
  if ((check)); then
    if report=$(check_variant "$v"); then
      echo "capture-all: PASS $v (${secs}s) $report" >&2
    else
      echo "capture-all: FAIL $v (${secs}s) $report" >&2; failed=1
    fi
  else
    echo "capture-all: captured $v (${secs}s)" >&2
  fi
done
exit "$failed"
