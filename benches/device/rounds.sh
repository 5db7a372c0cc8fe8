#!/usr/bin/env bash
# Every device on (built-in policies) against the CPU alone and the GPU alone, alternating, on the GPU machine,
# after benches/device/run.sh has set up the driver (run it first in the same call):
#   bash benches/device/run.sh models hybrid && bash benches/device/rounds.sh [ROUNDS]
# Round 1 starts from an empty cache directory (calibration, pipeline compilation, no
# history); later rounds reuse it, as a user's second run would. Appends to $OUT/rounds.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
source benches/device/driver_env.sh /tmp/nh-rounds-cache
out=${OUT:-/tmp/out}/rounds.log
rm -rf "$XDG_CACHE_HOME"
b=.devbin
# Three sides per round: every device under the built-in policies (hybrid), the CPU alone,
# and the GPU alone (every op it can run on it: --place gpu / all_gpu.nhp). The guarantee:
# hybrid within 5% of the better single device of the same round (rounds_table.py).
for round in $(seq 1 "${1:-3}"); do
  for side in hybrid cpu gpu; do
    echo "== round $round, $side"
    case $side in
      hybrid) devices=gpu,sim embed_place="" policy=llm_inference wl="--devices gpu,sim" ;;
      cpu) devices=cpu embed_place="" policy=llm_inference wl="--cpu-only" ;;
      gpu) devices=gpu embed_place="--place gpu" policy=benches/device/all_gpu.nhp wl="--devices gpu --policy-file benches/device/all_gpu.nhp" ;;
    esac
    timeout 100 $b/embed --bench --synthetic --bench-seconds 1 --devices "$devices" $embed_place 2>&1 | grep BENCH
    if [ "$side" = gpu ]; then
      timeout 60 $b/workload --seq 512 $wl 2>&1 | grep -E 'block as a graph|graph placement'
    else
      timeout 60 $b/workload --policy default --seq 512 $wl 2>&1 | grep -E 'block as a graph|graph placement'
    fi
    timeout 60 $b/generate --model $b/tiny_llama --devices "$devices" --policy $policy --quiet --steps 64 \
      --explain 2>&1 | grep -E '^(prefill|decode):|graph placement|candidates' | cut -c1-600
    # 64 tokens: long enough for the measured placements (plan_times.rs) to settle within a run.
    timeout 200 $b/generate --synthetic llama-3.2-1b --prompt-len 512 --steps 65 --devices "$devices" \
      --policy $policy --quiet --explain 2>&1 | grep -E '^(prefill|decode):|graph placement|candidates' | cut -c1-600
  done
done >>"$out" 2>&1
python3 benches/device/rounds_table.py "$out"
