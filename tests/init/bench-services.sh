#!/usr/bin/env bash
# Boot-timeline benchmark of nacre-init (issue #4, item 8): PID 1 exec -> root switched ->
# containerd exec -> payload (kubelet's stand-in) exec, and PID 1's peak RSS, against a busybox
# shell init doing the same steps in the same guest (tests/init/build-busybox-initrd.sh,
# tests/init/services/bb-stage2.sh). Median of NACRE_BENCH_ROUNDS boots each (default 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -p nacre-init
NACRE_INIT_BENCH="$PWD/target/release/nacre-init" NACRE_BENCH_ROUNDS="${NACRE_BENCH_ROUNDS:-5}" \
  cargo test -p nacre-init --test services -- --ignored --nocapture boot_timeline 2>&1 \
  | grep -vE '^(bench-.*boot took|running|$)'
