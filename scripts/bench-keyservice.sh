#!/usr/bin/env bash
# Load benchmark of the key service on loopback (release build): attested requests per second
# and latency percentiles with 2, 8 and 32 concurrent nodes. The service is the real one (redb
# on disk, every decision committed, rustls, the QEMU vTPM verifier); the nodes' TPMs are
# simulated in software (P-256 AKs signing marshalled TPMS_ATTEST quotes over a real OVMF log),
# so the figure is the service's, with the clients sharing the same cores.
#
# Then the same 8 nodes beside unauthenticated attackers (`--hostile 16`: 16 slowloris, 16
# flood and 16 garbage threads from 4 sources each), one run without and one with, so the good
# nodes' p99 and the decision log's growth can be compared in one run.
#
# Usage: scripts/bench-keyservice.sh [SECONDS]   (default 10 per run)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
cargo build -q --release -p nacre-keyservice
for c in 2 8 32; do
  ./target/release/nacre-keyservice bench --clients "$c" --seconds "$secs" 2>/dev/null
done
echo "== 8 nodes, then 8 nodes beside attackers"
./target/release/nacre-keyservice bench --clients 8 --seconds "$secs" 2>/dev/null
./target/release/nacre-keyservice bench --clients 8 --seconds "$secs" --hostile 16 2>/dev/null
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
