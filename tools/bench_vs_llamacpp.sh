#!/bin/sh
# Prefill 512 / decode 64 of GGUF models: llama.cpp's llama-bench against our generate example,
# the two alternating model by model, ROUNDS times, each run under `flock` (one benchmark at a
# time on a shared machine) with the load average printed beside it. Peak resident memory of
# our run comes from /usr/bin/time -v.
#
#   tools/bench_vs_llamacpp.sh LLAMA_BENCH GENERATE ROUNDS MODEL.gguf [GENERATE_ARGS...]
#
# GENERATE_ARGS go to generate only (e.g. --dtype f16). Both sides use 2 threads; llama-bench
# runs tg64 from an empty context, generate decodes its 64 tokens after the 512-token prompt.
set -eu
lb=$1 gen=$2 rounds=$3 model=$4
shift 4
lock=/tmp/nh-bench.lock
for r in $(seq 1 "$rounds"); do
  echo "== round $r: $(basename "$model") $* ($(date -u +%H:%M:%S) UTC, load $(cut -d' ' -f1-3 /proc/loadavg))"
  flock "$lock" "$lb" -m "$model" -t 2 -p 512 -n 64 -r 3 -o md 2>/dev/null | grep -E '^\|' || echo "llama-bench failed"
  echo "-- load $(cut -d' ' -f1-3 /proc/loadavg)"
  flock "$lock" /usr/bin/time -v "$gen" --model "$model" --devices cpu --threads 2 --prompt-len 512 --steps 65 \
    --warmup 1 --quiet "$@" 2>&1 | grep -E '^(prefill|decode|activations):|Maximum resident' || echo "generate failed"
  echo "-- load $(cut -d' ' -f1-3 /proc/loadavg)"
done
