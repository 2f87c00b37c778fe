#!/usr/bin/env bash
# Direct kernel boot (no firmware, ~10 s under TCG) of a node built by build-node.sh, with the
# console in a log; optionally with a software TPM. Returns when the guest powers off (or the
# timeout ends it); the caller reads the console log.
#
# Usage: boot.sh NODEDIR LOG [--cmdline EXTRA] [--roothash HASH|none] [--tpm] [--timeout S]
#                [--disk IMG] [--initrd CPIO] [--state-disk IMG] [--tpm-state DIR] [--qemu-arg ARG]...
#   The kernel command line is "console=ttyS0 panic=-1 roothash=<NODEDIR/roothash> EXTRA".
#   --roothash overrides it (none: no roothash= at all). --disk boots another disk image.
#   --initrd boots another initrd (default NODEDIR/initrd.cpio).
#   --state-disk attaches IMG read-write as a second virtio disk (serial "nacre-state").
#   --tpm-state keeps the swtpm state in DIR across boots (sealed keys survive a reboot).
#   --qemu-arg passes one more argument to QEMU (e.g. a -netdev for two-guest tests).
# Exit codes: 0 guest powered off; 4 timeout; 7 QEMU or swtpm failed to start.
set -euo pipefail
node="$1" log="$2"; shift 2
initrd="" extra="" roothash="" tpm=0 timeout=120 disk="$node/disk.img" state="" tpm_state="" qemu_extra=()
while (($#)); do
  case "$1" in
    --cmdline) extra="$2"; shift 2 ;;
    --roothash) roothash="$2"; shift 2 ;;
    --tpm) tpm=1; shift ;;
    --timeout) timeout="$2"; shift 2 ;;
    --disk) disk="$2"; shift 2 ;;
    --initrd) initrd="$2"; shift 2 ;;
    --state-disk) state="$2"; shift 2 ;;
    --tpm-state) tpm_state="$2"; shift 2 ;;
    --qemu-arg) qemu_extra+=("$2"); shift 2 ;;
    *) echo "boot: unknown option $1" >&2; exit 2 ;;
  esac
done
[[ -n "$roothash" ]] || roothash=$(cat "$node/roothash")
[[ -n "$initrd" ]] || initrd="$node/initrd.cpio"
cmdline="console=ttyS0 panic=-1"
[[ "$roothash" == none ]] || cmdline+=" roothash=$roothash"
[[ -z "$extra" ]] || cmdline+=" $extra"
kernel=$(ls /boot/vmlinuz-* | sort -V | tail -n1)
tmp=$(mktemp -d)
cleanup() { if [[ -n "${swtpm_pid:-}" ]]; then kill "$swtpm_pid" 2>/dev/null || true; fi; rm -rf "$tmp"; }
trap cleanup EXIT
tpm_args=()
if ((tpm)); then
  tpmdir="${tpm_state:-$tmp/tpm}"
  mkdir -p "$tpmdir"
  if [[ ! -f "$tpmdir/tpm2-00.permall" ]]; then
    swtpm_setup --tpm2 --tpmstate "$tpmdir" --pcr-banks sha256 --overwrite >/dev/null 2>&1 || exit 7
  fi
  swtpm socket --tpm2 --tpmstate dir="$tpmdir" --ctrl type=unixio,path="$tmp/swtpm-sock" \
    --terminate >/dev/null 2>&1 &
  swtpm_pid=$!
  for _ in $(seq 50); do [[ -S "$tmp/swtpm-sock" ]] && break; sleep 0.1; done
  [[ -S "$tmp/swtpm-sock" ]] || exit 7
  tpm_args=(-chardev "socket,id=chrtpm,path=$tmp/swtpm-sock" -tpmdev emulator,id=tpm0,chardev=chrtpm
            -device tpm-crb,tpmdev=tpm0)
fi
state_args=()
if [[ -n "$state" ]]; then
  state_args=(-drive "file=$state,if=none,id=state,format=raw" -device "virtio-blk-pci,drive=state,serial=nacre-state")
fi
set +e
timeout "$timeout" qemu-system-x86_64 -accel tcg -machine q35 -cpu max -m 512 -smp 1 \
  -nographic -no-reboot -nic none -kernel "$kernel" -initrd "$initrd" -append "$cmdline" \
  -drive "file=$disk,if=virtio,format=raw,readonly=on" "${tpm_args[@]}" "${state_args[@]}" \
  "${qemu_extra[@]}" > "$log" 2>&1 < /dev/null
rc=$?
set -e
((rc == 124)) && exit 4
((rc == 0)) || exit 7
exit 0
