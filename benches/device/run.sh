#!/usr/bin/env bash
# Runs on the GPU machine (the `device` tool), over binaries built by prepare.sh. Every
# measurement goes to $OUT as one file per step; a failing step does not stop the others.
#   bash benches/device/run.sh [GROUP...]   groups: kernels, falloff, models, hybrid, gemvq, gemvdiag,
#   submit
# (default: the first four; one call of the device tool must end within 10 minutes: take
# kernels alone, then the rest; gemvq, the quantized GEMVs under several shapes, on its own;
# gemvdiag, about 3 minutes (at most 9 with every step at its limit): why the vocabulary projection's GEMV is slow, see docs/PERFORMANCE.md;
# submit, how a decode step's submission is recorded, on its own).
# kernels: Vulkan matmul/GEMV vs cuBLAS (benches/device/compare.py prints the issue's table);
# falloff: the 4096 fall-off varied one thing at a time and the first coopmat shader as an A/B;
# models: embeddings, tiny Llama and a Llama-3.2-1B-shaped f16 model on the GPU vs the
# machine's CPU; hybrid: every device enabled
# under the built-in policies vs the best single device, same call.
set -uo pipefail
cd "$(dirname "$0")/../.."
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
# The NVIDIA ICD sits in /usr/local/nvidia on the H100 image and in /usr/share on the H200 one;
# its library may be found only through the image's own LD_LIBRARY_PATH: keep that.
icd=$(find /usr/local/nvidia /usr/share/vulkan /etc/vulkan /usr/local/share/vulkan -name 'nvidia_icd*.json' 2>/dev/null | head -n 1)
[ -n "$icd" ] && export VK_DRIVER_FILES=$icd
export XDG_CACHE_HOME=/tmp/nh-cache LD_LIBRARY_PATH="$PWD/.devbin/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -d /usr/local/nvidia/lib64 ] && LD_LIBRARY_PATH="$LD_LIBRARY_PATH:/usr/local/nvidia/lib64"
out=${OUT:-/tmp/out}
steps=/tmp/nh-steps
mkdir -p "$out" "$steps"
groups=${*:-kernels falloff models hybrid}
want() { [[ " $groups " == *" $1 "* ]]; }
step() { # name timeout command...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  { echo "\$ $*"; timeout "$limit" "$@"; echo "exit status: $? after $((SECONDS - t0)) s"; } >"$steps/$name.txt" 2>&1
  # At most 8 files come back, and a call cut at its limit keeps what it wrote: one growing log.
  { echo "=== $name"; cat "$steps/$name.txt"; } >>"$out/all.log"
}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; uname -r; date -u
  echo "VK_DRIVER_FILES=${VK_DRIVER_FILES:-} LD_LIBRARY_PATH=$LD_LIBRARY_PATH"; cat "${VK_DRIVER_FILES:-/dev/null}"
  ldconfig -p | grep -E 'libvulkan|libGLX_nvidia|libGLdispatch' | head; } >>"$out/all.log" 2>&1
# Which GPU the library sees (and, if none, why, in the loader's words).
step vulkan_probe 30 env VK_LOADER_DEBUG=error,warn .devbin/generate --model .devbin/tiny_llama --devices gpu --steps 2 --quiet
if grep -q 'gpu .*unavailable' "$steps/vulkan_probe.txt"; then
  echo "no Vulkan GPU: nothing else is worth the device time"; grep -v '^RESULT' "$out/all.log" | tail -n 40; exit 1
fi
# The GPU's own copy bandwidth (device to device), the bound for weight-streaming decode.
step copy_bandwidth 60 python3 -c "
import torch
x = torch.empty(1 << 28, dtype=torch.float32, device='cuda'); y = torch.empty_like(x)
for _ in range(3): y.copy_(x)
s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
s.record()
for _ in range(20): y.copy_(x)
e.record(); torch.cuda.synchronize()
print(f'RESULT case=copy_bandwidth GBps={2 * x.numel() * 4 * 20 / (s.elapsed_time(e) / 1e3) / 1e9:.0f}')"
if want kernels; then
  step vulkan_matmul 400 .devbin/vulkan_matmul --bench
  step cublas_baseline 200 python3 benches/vulkan_torch_baseline.py
  # The issue's table: ours / cuBLAS per case, targets, sizes whose rate falls below the one before.
  step compare 30 python3 benches/device/compare.py "$steps/vulkan_matmul.txt" "$steps/cublas_baseline.txt"
fi
if want falloff; then
  # Sizes around the power of two, memory blocks of 64 MiB and 2 GiB instead of 1 GiB, the
  # portable f16 shader instead of coopmat; then the first coopmat shader on the same machine.
  step matmul_near_4096 120 .devbin/vulkan_matmul --bench --sizes 3968,4096,4224
  step matmul_4096_block64m 60 env NPUHYBRID_VULKAN_BLOCK_MB=64 .devbin/vulkan_matmul --bench --sizes 4096
  step matmul_4096_block2g 60 env NPUHYBRID_VULKAN_BLOCK_MB=2048 .devbin/vulkan_matmul --bench --sizes 4096
  step matmul_4096_no_coopmat 60 env NPUHYBRID_VULKAN_NO_COOPMAT=1 .devbin/vulkan_matmul --bench --sizes 4096
  step matmul_coopmat_v1 90 env NPUHYBRID_VULKAN_COOPMAT=v1 .devbin/vulkan_matmul --bench --sizes 1024,2048,4096
fi
if want gemvq; then
  # Quantized decode GEMVs alone (weight_gbs: weight bytes per second; copy_bandwidth above is
  # the bound): the planner's shapes, then each forced shape (threads, rows of W per
  # workgroup, units in flight per thread: NPUHYBRID_VULKAN_GEMVQ) to check its choice.
  step gemvq 120 .devbin/vulkan_matmul --bench --quant
  for s in 128,1,2 128,2,2 128,4,2 256,1,2 256,2,2 64,4,4 128,2,4 256,4,1; do
    step "gemvq_$s" 90 env NPUHYBRID_VULKAN_GEMVQ=$s .devbin/vulkan_matmul --bench --quant \
      2048x2048,8192x2048,2048x8192,128256x2048
  done
fi
if want gemvdiag; then
  # Why the 128256 x 2048 GEMV ran 3-10x slower than 8192 x 2048 and 4x apart between runs
  # (docs/PERFORMANCE.md, "The vocabulary projection's GEMV"): clocks sampled throughout
  # (gemvdiag_smi at the end), then one thing varied at a time. Every RESULT line carries
  # min_us / max_us / first_us of its 20 single runs and the time of day (at=, UTC).
  smi_q=timestamp,pstate,clocks.sm,clocks.mem,power.draw,utilization.gpu,utilization.memory,clocks_event_reasons.active
  nvidia-smi --query-gpu=$smi_q --format=csv >/dev/null 2>&1 || smi_q=timestamp,pstate,clocks.sm,clocks.mem,power.draw,utilization.gpu
  nvidia-smi --query-gpu=$smi_q --format=csv -lms 200 >"$steps/gemvdiag_smi.txt" 2>&1 &
  smi_pid=$!
  vm=.devbin/vulkan_matmul
  lm=128256x2048
  # Repeats in one process (fresh weights each time): stable or not, and first run vs the rest.
  step gemvdiag_repeat 75 $vm --bench --quant $lm,8192x2048 --qtypes q8_0,q4_0 --gemv $lm,8192x2048,8192x8192 --repeat 2
  # The GPU kept busy for 500 ms before each case is timed (clocks up).
  step gemvdiag_sustain 40 $vm --bench --quant $lm --qtypes q8_0,q4_0 --gemv $lm --sustain-ms 500
  # Weights cycled through copies of 256 MiB in all: no run finds its weights in the L2 cache.
  step gemvdiag_cold 60 $vm --bench --quant 8192x2048,$lm --qtypes q8_0,q4_0 --gemv 8192x2048,$lm --cold
  # Placement: 4 GiB device blocks, and 64 MiB ones (a weight over 64 MiB gets a block of its own).
  step gemvdiag_block4g 30 env NPUHYBRID_VULKAN_BLOCK_MB=4096 $vm --bench --quant $lm --qtypes q8_0,q4_0 --gemv $lm
  step gemvdiag_block64m 30 env NPUHYBRID_VULKAN_BLOCK_MB=64 $vm --bench --quant $lm --qtypes q8_0,q4_0 --gemv $lm
  # f16 GEMV: gemv.comp against gemv_quant.comp over plain f16 weights (NPUHYBRID_VULKAN_GEMV=rows),
  # at the planner's shape and one forced one, weights past the L2 cache.
  step gemvdiag_f16_gemv 40 env NPUHYBRID_VULKAN_GEMV=tiled $vm --bench --gemv $lm,8192x2048,2048x8192,8192x8192 --cold
  step gemvdiag_f16_rows 40 env NPUHYBRID_VULKAN_GEMV=rows $vm --bench --gemv $lm,8192x2048,2048x8192,8192x8192 --cold
  step gemvdiag_f16_rows_256,2,2 40 env NPUHYBRID_VULKAN_GEMV=rows NPUHYBRID_VULKAN_GEMVQ=256,2,2 $vm --bench \
    --gemv $lm,8192x2048,2048x8192,8192x8192 --cold
  # The f16 decode end to end, every op on the GPU: gemv.comp, then the rows GEMV for every
  # projection (decode ms/token; the second also checks the path in a whole model).
  if [ -x .devbin/generate ]; then
    step gemvdiag_decode_gemv 45 env NPUHYBRID_VULKAN_GEMV=tiled .devbin/generate --synthetic llama-3.2-1b --prompt-len 64 --steps 17 \
      --devices gpu --policy benches/device/all_gpu.nhp --quiet
    step gemvdiag_decode_rows 45 env NPUHYBRID_VULKAN_GEMV=rows .devbin/generate --synthetic llama-3.2-1b \
      --prompt-len 64 --steps 17 --devices gpu --policy benches/device/all_gpu.nhp --quiet
  fi
  kill "$smi_pid" 2>/dev/null
  { echo "=== gemvdiag_smi"; cat "$steps/gemvdiag_smi.txt"; } >>"$out/all.log"
fi
if want models; then
  if [ -x .devbin/generate ] && [ -d .devbin/tiny_llama ]; then
    step generate_gpu 60 .devbin/generate --model .devbin/tiny_llama --devices gpu --policy llm_inference \
      --check .devbin/tiny_llama/reference.json --quiet
    step generate_cpu16 60 .devbin/generate --model .devbin/tiny_llama --devices cpu --quiet
    # Llama-3.2-1B shapes, f16, random weights: prefill 512 tokens, then decode.
    step llama1b_gpu 240 .devbin/generate --synthetic llama-3.2-1b --prompt-len 512 --steps 33 \
      --devices gpu --policy llm_inference --quiet --trace "$out/llama1b_gpu_trace.json"
    # Every op on the GPU (benches/device/all_gpu.nhp): the GPU-alone side, and its kernel time.
    step llama1b_all_gpu 150 .devbin/generate --synthetic llama-3.2-1b --prompt-len 512 --steps 33 \
      --devices gpu --policy benches/device/all_gpu.nhp --quiet --trace "$out/llama1b_all_gpu_trace.json"
    step generate_all_gpu 60 .devbin/generate --model .devbin/tiny_llama --devices gpu \
      --policy benches/device/all_gpu.nhp --check .devbin/tiny_llama/reference.json --quiet
    # What the per-op timestamps still cost now that they are sampled (A/B against the two
    # steps above; the `submit` group compares them on every op).
    step llama1b_all_gpu_no_ts 150 env NPUHYBRID_VULKAN_OP_TIMESTAMPS=0 .devbin/generate --synthetic llama-3.2-1b \
      --prompt-len 512 --steps 33 --devices gpu --policy benches/device/all_gpu.nhp --quiet
    step generate_all_gpu_no_ts 60 env NPUHYBRID_VULKAN_OP_TIMESTAMPS=0 .devbin/generate --model .devbin/tiny_llama \
      --devices gpu --policy benches/device/all_gpu.nhp --quiet
    step llama1b_cpu16 120 .devbin/generate --synthetic llama-3.2-1b --prompt-len 512 --steps 9 \
      --devices cpu --quiet
  fi
  if [ -x .devbin/embed ]; then
    step embed_gpu 100 .devbin/embed --bench --synthetic --devices gpu --place gpu --bench-seconds 1 \
      --trace "$out/embed_gpu_trace.json"
    step embed_cpu 100 .devbin/embed --bench --synthetic --devices cpu --bench-seconds 1
  fi
fi
if want hybrid; then
  # Every device on, the built-in policies: never slower than the best single device above.
  [ -x .devbin/embed ] && step embed_hybrid 100 .devbin/embed --bench --synthetic --devices gpu,sim --bench-seconds 1 \
    --trace "$out/embed_hybrid_trace.json"
  [ -x .devbin/generate ] && step generate_hybrid 60 .devbin/generate --model .devbin/tiny_llama \
    --devices gpu,sim --policy llm_inference --quiet
  [ -x .devbin/workload ] && step workload_hybrid 60 .devbin/workload --policy default --devices gpu,sim --seq 512
  [ -x .devbin/workload ] && step workload_cpu 60 .devbin/workload --policy default --cpu-only --seq 512
  # (benches/hybrid_mixed: `step hybrid_mixed 150 .devbin/hybrid_mixed 1024 1,16,64,256,1024`,
  # left out so that models + hybrid fit one call.)
fi
if want submit && [ -x .devbin/generate ]; then
  # A decode step all on the GPU as recorded by default (per-op timestamps sampled: the first
  # 8 steps, then 1 in 16; command buffers cut after 8 ops, then every 32), then one thing
  # changed at a time: every op timed and traced (trace_ops.py: GPU time per op kind and the
  # idle gaps between dispatches), no timestamps, and uploads through staging instead of from
  # imported host memory (NPUHYBRID_VULKAN_NO_HOST_IMPORT). Earlier A/Bs (chunk sizes, one
  # command buffer) are in docs/results/h100-2026-12-07e/models_hybrid_submit.log.
  llama() { # name, then environment assignments
    local name=$1; shift
    step "$name" 150 env "$@" .devbin/generate --synthetic llama-3.2-1b --prompt-len 512 --steps 65 \
      --devices gpu --policy benches/device/all_gpu.nhp --quiet
  }
  llama llama1b_all_gpu_default
  step llama1b_all_gpu_timed 150 env NPUHYBRID_VULKAN_OP_TIMESTAMPS=1 .devbin/generate --synthetic llama-3.2-1b \
    --prompt-len 512 --steps 65 --devices gpu --policy benches/device/all_gpu.nhp --quiet --trace /tmp/timed_trace.json
  step llama1b_trace_ops 60 python3 benches/device/trace_ops.py /tmp/timed_trace.json decode
  step llama1b_trace_ops_prefill 60 python3 benches/device/trace_ops.py /tmp/timed_trace.json prefill
  llama llama1b_all_gpu_ts_never NPUHYBRID_VULKAN_OP_TIMESTAMPS=0
  llama llama1b_all_gpu_no_host_import NPUHYBRID_VULKAN_NO_HOST_IMPORT=1
  # Correctness of chunked submissions on a discrete GPU (staging copies; lavapipe has none).
  step generate_all_gpu_chunk_1_1 60 env NPUHYBRID_VULKAN_CHUNK=1,1 .devbin/generate --model .devbin/tiny_llama \
    --devices gpu --policy benches/device/all_gpu.nhp --check .devbin/tiny_llama/reference.json --quiet
  step generate_all_gpu_sampled 60 .devbin/generate --model .devbin/tiny_llama --devices gpu \
    --policy benches/device/all_gpu.nhp --check .devbin/tiny_llama/reference.json --quiet
fi
grep -E '^(===|RESULT|exit status)' "$out/all.log"
