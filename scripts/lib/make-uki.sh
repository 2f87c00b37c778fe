#!/usr/bin/env bash
# Assemble a Unified Kernel Image (UKI) from a systemd-stub and its payloads with objcopy.
#
# Usage: make-uki.sh --kernel VMLINUZ --initrd INITRD (--cmdline-file FILE | --cmdline STRING)
#                    --osrel FILE --out UKI.efi [--stub STUB]
#   --stub     default /usr/lib/systemd/boot/efi/linuxx64.efi.stub (systemd 252 on Debian 12);
#              trixie's 257 stub (scripts/lib/fetch-trixie-systemd.sh) works too
#   --cmdline  written without a trailing newline; --cmdline-file is embedded byte for byte
#
# Layout (like ukify): sections .osrel .cmdline .linux .initrd appended in this order, each at the
# end of the previous one (the stub's last section first) rounded up to 4 KiB, with flags
# alloc,load,readonly,data; .initrd is last so it can be as large as it likes. The output is
# deterministic: same inputs give the same bytes (the stub's PE timestamp is kept).
# Check the result with: objdump -h UKI.efi
set -euo pipefail

help() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; }
die() { echo "make-uki: $*" >&2; exit 1; }

stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
kernel="" initrd="" cmdline_file="" cmdline="" have_cmdline=0 osrel="" out=""
while (($#)); do
  case "$1" in
    --stub) stub="$2"; shift 2 ;;
    --kernel) kernel="$2"; shift 2 ;;
    --initrd) initrd="$2"; shift 2 ;;
    --cmdline-file) cmdline_file="$2"; shift 2 ;;
    --cmdline) cmdline="$2"; have_cmdline=1; shift 2 ;;
    --osrel) osrel="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) help; exit 0 ;;
    *) die "unknown argument: $1" ;;
  esac
done
[[ -n "$kernel" && -n "$initrd" && -n "$osrel" && -n "$out" ]] || die "need --kernel, --initrd, --osrel, --out (see --help)"
[[ -n "$cmdline_file" || $have_cmdline == 1 ]] || die "need --cmdline or --cmdline-file"
[[ -z "$cmdline_file" || $have_cmdline == 0 ]] || die "give only one of --cmdline and --cmdline-file"
for f in "$stub" "$kernel" "$initrd" "$osrel" ${cmdline_file:+"$cmdline_file"}; do
  [[ -f "$f" ]] || die "no such file: $f"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/make-uki.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
if [[ -n "$cmdline_file" ]]; then
  cp "$cmdline_file" "$tmp/cmdline"
else
  printf '%s' "$cmdline" >"$tmp/cmdline"
fi

# End of the stub's last section: max(VMA + size) over its section table. objdump's VMAs include
# ImageBase (0 for the 252 stub, 0x14df90000 for trixie's 257 stub); the new VMAs we give objcopy
# do too, so the RVAs come out right either way.
end=0
while read -r idx _ size vma _; do
  [[ "$idx" =~ ^[0-9]+$ ]] || continue
  if ((0x$vma + 0x$size > end)); then end=$((0x$vma + 0x$size)); fi
done < <(objdump -h "$stub")
((end > 0)) || die "cannot read the section table of $stub"
align() { echo $(( ($1 + 4095) / 4096 * 4096 )); }

args=()
vma=$(align "$end")
for pair in ".osrel:$osrel" ".cmdline:$tmp/cmdline" ".linux:$kernel" ".initrd:$initrd"; do
  name=${pair%%:*} file=${pair#*:}
  size=$(stat -c %s "$file")
  ((size > 0)) || die "empty section $name from $file"
  args+=(--add-section "$name=$file"
         --set-section-flags "$name=alloc,load,readonly,data"
         --change-section-vma "$name=$(printf '0x%x' "$vma")")
  vma=$(align $((vma + size)))
done

# objcopy stamps PE output with the current time (it ignores SOURCE_DATE_EPOCH); --preserve-dates
# keeps the stub's own TimeDateStamp instead (0 for Debian's stub) and copies its file mtime.
objcopy --preserve-dates "${args[@]}" "$stub" "$tmp/uki.efi"
touch "$tmp/uki.efi"
# Self-check: the sections are where we put them, in order, with .initrd last.
got=$(objdump -h "$tmp/uki.efi" | while read -r idx name _; do if [[ "$idx" =~ ^[0-9]+$ ]]; then printf '%s ' "$name"; fi; done)
[[ "$got" == *".osrel .cmdline .linux .initrd " ]] || die "unexpected section order: $got"
mkdir -p "$(dirname "$out")"
mv "$tmp/uki.efi" "$out"
