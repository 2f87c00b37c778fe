#!/usr/bin/env bash
# Fuzz the parsers that read bytes before the peer is authenticated (fuzz/: cargo-fuzz,
# libFuzzer, nightly). Each target's corpus (fuzz/corpus/TARGET, not in git) starts from its
# seeds in fuzz/seeds.list; a crash is saved under fuzz/artifacts/TARGET and ends the run.
# Not part of scripts/test.sh (CI time): there, keyservice/tests/fuzz_corpus.rs runs the seeds
# through the same entry functions.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET]   (default: 60 s each, every target, one at a time)
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
only=${2:-}

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz
fi

cd fuzz
targets=$(cargo +nightly fuzz list)
if [[ -n "$only" ]]; then
  grep -qx "$only" <<<"$targets" || { echo "no fuzz target $only (have: $(echo $targets))" >&2; exit 2; }
  targets=$only
fi
# One build, then the binaries themselves: `cargo fuzz run` would rebuild whenever the tree
# changed, and a build failure is not a crash.
cargo +nightly fuzz build -O
bin=target/$(rustc +nightly -vV | sed -n 's/^host: //p')/release
summary=()
for t in $targets; do
  mkdir -p "corpus/$t"
  grep -E "^$t[[:space:]]" seeds.list | while read -r _ _ path; do
    cp "../$path" "corpus/$t/seed-$(basename "$path")"
  done
  echo "== $t: $secs s"
  log=$(mktemp)
  status=ok
  mkdir -p "artifacts/$t"
  "$bin/$t" -artifact_prefix="artifacts/$t/" -max_total_time="$secs" -print_final_stats=1 \
    "corpus/$t" >"$log" 2>&1 || status=CRASH
  grep -E '^(#[0-9]+.*(INITED|DONE)|==[0-9]+==|SUMMARY|thread .* panicked)' "$log" || true
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' || echo 0)
  rate=$(grep -oE 'exec/s: [0-9]+' "$log" | tail -n1 | grep -oE '[0-9]+' || echo 0)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -n1 | grep -oE '[0-9]+' || echo 0)
  summary+=("$(printf '%-16s %-6s %10s execs %8s exec/s  cov %s' "$t" "$status" "$execs" "$rate" "$cov")")
  [[ $status == ok ]] || { echo "crash input: $(grep -oE 'artifacts/[^ ]+' "$log" | tail -n1)"; }
  rm -f "$log"
done
echo "== summary ($secs s per target)"
printf '%s\n' "${summary[@]}"
! printf '%s\n' "${summary[@]}" | grep -q CRASH
