#!/bin/sh
# Teacher-forced top-1 agreement of MODEL (a quantized GGUF, say) with REF_MODEL (its f32
# version): REF_MODEL's greedy tokens after PROMPT, then MODEL fed those tokens step by step
# (`generate --follow`), counting the steps whose top-1 token is the one REF_MODEL chose.
# Exits 1 when the agreement is below MIN_PERCENT (default 0: report only).
#
#   tools/top1_agreement.sh GENERATE REF_MODEL MODEL [STEPS] [PROMPT_IDS] [MIN_PERCENT] [-- ARGS]
#
# ARGS go to both runs (e.g. --activations f32). CPU, 2 threads, no warm-up.
set -eu
gen=$1 ref=$2 model=$3
shift 3
steps=64 prompt=1,2,3,4,5,6,7,8 min=0
[ $# -gt 0 ] && [ "$1" != -- ] && { steps=$1; shift; }
[ $# -gt 0 ] && [ "$1" != -- ] && { prompt=$1; shift; }
[ $# -gt 0 ] && [ "$1" != -- ] && { min=$1; shift; }
[ "${1:-}" = -- ] && shift
# shellcheck disable=SC2086 # $gen is a command and its arguments
tokens=$($gen --model "$ref" --devices cpu --threads 2 --warmup 0 --steps "$steps" --prompt "$prompt" "$@" |
  sed -n 's/^tokens: //p' | tr ' ' ',')
[ -n "$tokens" ] || { echo "no tokens from $ref" >&2; exit 2; }
echo "reference $ref: $tokens"
# shellcheck disable=SC2086
line=$($gen --model "$model" --devices cpu --threads 2 --warmup 0 --prompt "$prompt" --follow "$tokens" "$@" |
  grep '^teacher-forced')
echo "$model: $line"
pct=$(echo "$line" | sed -n 's/.*(\([0-9.]*\)%).*/\1/p')
awk -v p="$pct" -v m="$min" 'BEGIN { exit !(p >= m) }' || { echo "below $min%" >&2; exit 1; }
