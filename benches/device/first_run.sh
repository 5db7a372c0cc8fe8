#!/usr/bin/env bash
# What a user's very first run does with every device on (empty cache: calibration, pipeline
# compilation, trials of placements), traced and compressed by trace_timeline.py. Run after
# benches/device/run.sh has set up the driver, in the same call.
set -uo pipefail
cd "$(dirname "$0")/../.."
source benches/device/driver_env.sh /tmp/nh-first-cache
out=${OUT:-/tmp/out}/first_run.log
b=.devbin
{
  rm -rf "$XDG_CACHE_HOME"
  echo "== embed, first run"
  timeout 100 $b/embed --bench --synthetic --bench-seconds 1 --devices gpu,sim --trace /tmp/first_embed.json 2>&1 | grep BENCH
  python3 benches/device/trace_timeline.py /tmp/first_embed.json | head -60
  rm -rf "$XDG_CACHE_HOME"
  echo "== llama 1B, first run"
  timeout 200 $b/generate --synthetic llama-3.2-1b --prompt-len 512 --steps 65 --devices gpu,sim \
    --policy llm_inference --quiet --trace /tmp/first_llama.json 2>&1 | grep -E '^(prefill|decode):'
  python3 benches/device/trace_timeline.py /tmp/first_llama.json | head -40
} >>"$out" 2>&1
