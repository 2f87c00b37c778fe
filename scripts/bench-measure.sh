#!/usr/bin/env bash
# Benchmark: nacre-measure prediction throughput on a 100 MB UKI and a 1 GB disk image, against
# systemd-measure on the same UKI sections and against sha256sum / the SHA-256 limit of this
# machine (one core, `openssl speed`-style single buffer). Prints MB/s and ratios.
#
# Usage: scripts/bench-measure.sh [WORKDIR]     (default: target/bench)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(realpath -m "${1:-$root/target/bench}")
mkdir -p "$work"
cargo build --release -q --manifest-path "$root/Cargo.toml" -p nacre-measure
measure="$root/target/release/nacre-measure"
kernel=$(ls /boot/vmlinuz-* | sort -V | tail -n1)

best_of() { # best wall time in seconds of N runs of a command
  local n=$1; shift; local best=""
  for _ in $(seq "$n"); do
    local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null; t1=$(date +%s.%N)
    best=$(echo "$t0 $t1 $best" | awk '{d=$2-$1; if ($3=="" || d<$3) print d; else print $3}')
  done
  echo "$best"
}
mbps() { awk -v b="$1" -v s="$2" 'BEGIN{printf "%.0f", b/1e6/s}'; }

make_uki() { # SIZE_MB OUT
  local initrd="$work/initrd-$1M"
  [[ -f "$initrd" ]] || head -c "$(( $1 * 1000 * 1000 ))" /dev/urandom > "$initrd"
  printf 'ID=nacre\n' > "$work/osrel"; printf 'console=ttyS0' > "$work/cmdline"
  [[ -f "$2" ]] || "$root/scripts/lib/make-uki.sh" --kernel "$kernel" --initrd "$initrd" \
      --cmdline-file "$work/cmdline" --osrel "$work/osrel" --out "$2" >/dev/null
}

make_uki 100 "$work/uki-100M.efi"
make_uki 1000 "$work/uki-1G.efi"
[[ -f "$work/disk-1G.img" ]] || "$root/scripts/lib/make-esp-disk.sh" --efi "$work/uki-1G.efi" \
    --out "$work/disk-1G.img" --size-mib 1200 >/dev/null

uki=$(stat -c %s "$work/uki-100M.efi"); disk_uki=$(stat -c %s "$work/uki-1G.efi")
cat "$work/uki-100M.efi" "$work/uki-1G.efi" "$work/disk-1G.img" > /dev/null   # warm the page cache

t_nacre=$(best_of 5 "$measure" predict "$work/uki-100M.efi" --phase none --json)
t_sdm=$(best_of 5 /usr/lib/systemd/systemd-measure calculate --linux="$kernel" \
    --osrel="$work/osrel" --cmdline="$work/cmdline" --initrd="$work/initrd-100M" --bank=sha256)
t_sum=$(best_of 5 sha256sum "$work/uki-100M.efi")
t_disk=$(best_of 3 "$measure" predict "$work/disk-1G.img" --phase none --json)
t_sum_disk=$(best_of 3 sha256sum "$work/uki-1G.efi")
t_ossl=$(best_of 3 openssl dgst -sha256 "$work/uki-1G.efi")

echo "100 MB UKI ($uki bytes):"
echo "  nacre-measure predict (PCRs 4,7,9,11,12,13,15): $(mbps "$uki" "$t_nacre") MB/s ($t_nacre s)"
echo "  systemd-measure calculate (PCR 11 only):        $(mbps "$uki" "$t_sdm") MB/s ($t_sdm s)"
echo "  sha256sum of the file:                          $(mbps "$uki" "$t_sum") MB/s"
echo "  nacre / systemd-measure: $(awk -v a="$t_sdm" -v b="$t_nacre" 'BEGIN{printf "%.2fx", a/b}')"
echo "1 GB disk image (ESP with a $disk_uki-byte UKI):"
echo "  nacre-measure predict from the disk image:      $(mbps "$disk_uki" "$t_disk") MB/s of UKI ($t_disk s)"
echo "  openssl dgst -sha256 of the UKI (SHA-NI, 1 core): $(mbps "$disk_uki" "$t_ossl") MB/s"
echo "  sha256sum of the UKI:                           $(mbps "$disk_uki" "$t_sum_disk") MB/s"
