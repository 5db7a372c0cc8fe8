#!/usr/bin/env bash
# Why the tiny Llama's decode, placed all on the CPU, ran at half the CPU-alone speed with every
# device on (H100 rounds 2-3, 2026-12-07 sixth session) but not in round 1. Run after
# benches/device/run.sh has set up the driver, in the same call. (The 1B model's first run: first_1b.sh.)
set -uo pipefail
cd "$(dirname "$0")/../.."
source benches/device/driver_env.sh /tmp/nh-host-cache
out=${OUT:-/tmp/out}/host_overhead.log
b=.devbin
gen() { timeout 60 $b/generate --model $b/tiny_llama --policy llm_inference --quiet --steps 64 "$@" 2>&1; }
{
  rm -rf "$XDG_CACHE_HOME"
  for i in 1 2 3; do gen --devices gpu,sim --explain | grep -E '^decode:  63|candidates'; done
  for round in 1 2; do
    for d in cpu gpu,sim gpu sim; do
      echo "-- $d (round $round)"
      gen --devices "$d" --explain | grep -E "^decode:  (63|per)|^runtime|decode graph placement|candidates"
    done
  done
  for d in cpu gpu,sim; do
    echo "-- traced: $d"
    gen --devices "$d" --trace /tmp/ho_$d.json | grep -E '^decode:  63'
    python3 benches/device/trace_gaps.py /tmp/ho_$d.json
  done
} >>"$out" 2>&1
