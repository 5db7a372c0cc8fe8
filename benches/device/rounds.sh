#!/usr/bin/env bash
# Every device on (built-in policies) against the CPU alone, alternating, on the GPU machine,
# after benches/device/run.sh has set up the driver (run it first in the same call):
#   bash benches/device/run.sh models hybrid && bash benches/device/rounds.sh [ROUNDS]
# Round 1 starts from an empty cache directory (calibration, pipeline compilation, no
# history); later rounds reuse it, as a user's second run would. Appends to $OUT/rounds.log.
set -uo pipefail
cd "$(dirname "$0")/../.."
export XDG_CACHE_HOME=/tmp/nh-rounds-cache LD_LIBRARY_PATH="$PWD/.devbin/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
icd=$(find /usr/local/nvidia /usr/share/vulkan /etc/vulkan /usr/local/share/vulkan -name 'nvidia_icd*.json' 2>/dev/null | head -n 1)
[ -n "$icd" ] && export VK_DRIVER_FILES=$icd
[ -d /usr/local/nvidia/lib64 ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/nvidia/lib64"
out=${OUT:-/tmp/out}/rounds.log
rm -rf "$XDG_CACHE_HOME"
b=.devbin
for round in $(seq 1 "${1:-3}"); do
  for devices in gpu,sim cpu; do
    echo "== round $round, devices $devices"
    only_cpu=$([ "$devices" = cpu ] && echo --cpu-only)
    timeout 100 $b/embed --bench --synthetic --bench-seconds 1 --devices "$devices" 2>&1 | grep BENCH
    timeout 60 $b/workload --policy default --seq 512 ${only_cpu:---devices gpu,sim} 2>&1 | grep -E 'block as a graph|graph placement'
    timeout 60 $b/generate --model $b/tiny_llama --devices "$devices" --policy llm_inference --quiet --steps 64 \
      --explain 2>&1 | grep -E '^(prefill|decode):|graph placement|candidates' | cut -c1-400
    timeout 200 $b/generate --synthetic llama-3.2-1b --prompt-len 512 --steps 17 --devices "$devices" \
      --policy llm_inference --quiet --explain 2>&1 | grep -E '^(prefill|decode):|graph placement|candidates' | cut -c1-400
  done
done >>"$out" 2>&1
grep -E '^==|BENCH|mean|tokens/s' "$out" | cut -c1-160
