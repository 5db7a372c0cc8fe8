#!/bin/sh
# Peak and last-seen resident memory of a command: samples /proc/PID/status every 0.1 s and
# prints VmHWM (the peak) with the last sample's VmRSS, RssAnon (heap, buffers) and RssFile
# (mapped files: a GGUF model's weights, the libraries), then the command's prefill / decode
# lines. The last sample is taken while decoding ends, so it is the steady decode footprint.
#
#   tools/resident_memory.sh LABEL COMMAND [ARGS...]
label=$1
shift
out=$(mktemp)
"$@" >"$out" 2>&1 &
pid=$!
last=""
while kill -0 "$pid" 2>/dev/null; do
  s=$(grep -E "VmHWM|VmRSS|RssAnon|RssFile" "/proc/$pid/status" 2>/dev/null | tr -s ' \t' ' ' | tr '\n' ' ')
  [ -n "$s" ] && last="$s"
  sleep 0.1
done
wait "$pid"
echo "$label rc=$? last: $last"
grep -E "^(prefill|decode):" "$out" | grep -v "per token"
rm -f "$out"
