#!/usr/bin/env bash
# The Llama-3.2-1B-shaped model's very first run with every device on (empty cache: the GPU
# is calibrated while the prefill runs on the CPU), then the calibration it saved. Run after
# benches/device/run.sh has set up the driver, in the same call. Appends to $OUT/first_1b.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
source benches/device/driver_env.sh /tmp/nh-first-1b-cache
out=${OUT:-/tmp/out}/first_1b.log
{
  rm -rf "$XDG_CACHE_HOME"
  for run in 1 2; do
    echo "== run $run"
    timeout 200 .devbin/generate --synthetic llama-3.2-1b --prompt-len 512 --steps 65 --devices gpu,sim \
      --policy llm_inference --quiet --explain 2>&1 | grep -E '^(prefill|decode):|placement|candidates' | cut -c1-300
  done
  for f in "$XDG_CACHE_HOME"/npuhybrid/perf-*.json; do
    python3 -c 'import json, sys; d = json.load(open(sys.argv[1])); print(d["device"], d.get("calibration"), d.get("overhead"))' "$f"
  done
} >>"$out" 2>&1
