#!/bin/sh
# Prefill 512 / decode 64 of GGUF models: llama.cpp's llama-bench against our generate example,
# alternating run by run, ROUNDS times, each run under `flock` (one benchmark at a time on a
# shared machine) with the load average printed beside it. Peak resident memory of our runs
# comes from /usr/bin/time -v.
#
#   tools/bench_vs_llamacpp.sh LLAMA_BENCH ROUNDS MODEL.gguf 'GENERATE [ARGS]' ['GENERATE [ARGS]' ...]
#
# Each quoted command is one generate variant (a binary and its extra arguments, e.g.
# 'build/examples/generate --dtype f16'). Both sides use 2 threads. generate decodes its 64
# tokens after the 512-token prompt, so llama-bench's tg64 runs at depth 512 too (-d 512); its
# tg64 from an empty context is printed as well.
set -eu
lb=$1 rounds=$2 model=$3
shift 3
lock=/tmp/nh-bench.lock
load() { cut -d' ' -f1-3 /proc/loadavg; }
for r in $(seq 1 "$rounds"); do
  echo "== round $r: $(basename "$model") ($(date -u +%H:%M:%S) UTC, load $(load))"
  flock "$lock" "$lb" -m "$model" -t 2 -p 512 -n 64 -r 3 -o md 2>/dev/null | grep -E '^\| llama' || echo "llama-bench failed"
  flock "$lock" "$lb" -m "$model" -t 2 -p 0 -n 64 -d 512 -r 3 -o md 2>/dev/null | grep -E '^\| llama' || echo "llama-bench failed"
  for g in "$@"; do
    echo "-- load $(load); $g"
    # shellcheck disable=SC2086 # $g is a command and its arguments
    flock "$lock" /usr/bin/time -v $g --model "$model" --devices cpu --threads 2 --prompt-len 512 --steps 65 \
      --warmup 1 --quiet 2>&1 | grep -E '^(prefill|decode):|Maximum resident' | grep -v 'devices busy' || echo "generate failed"
  done
  echo "-- load $(load)"
done
