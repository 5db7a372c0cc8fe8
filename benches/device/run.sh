#!/usr/bin/env bash
# Runs on the GPU machine (the `device` tool), over binaries built by prepare.sh. Every
# measurement goes to $OUT as one file per step; a failing step does not stop the others.
# `run.sh matmul` runs only the Vulkan matmul / GEMV steps (about 5 minutes less).
mode=${1:-all}
set -uo pipefail
cd "$(dirname "$0")/../.."
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
# The NVIDIA ICD sits in /usr/local/nvidia on the H100 image and in /usr/share on the H200 one.
for icd in /usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json /usr/share/vulkan/icd.d/nvidia_icd.json; do
  [ -f "$icd" ] && export VK_DRIVER_FILES=$icd && break
done
export XDG_CACHE_HOME=/tmp/nh-cache LD_LIBRARY_PATH="$PWD/.devbin/lib"
out=${OUT:-/tmp/out}
mkdir -p "$out"
step() { # name timeout command...
  local name=$1 limit=$2; shift 2
  { echo "\$ $*"; timeout "$limit" "$@"; echo "exit status: $?"; } >"$out/$name.txt" 2>&1
}
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; nproc; uname -r; } >"$out/machine.txt" 2>&1
step vulkan_matmul 400 .devbin/vulkan_matmul --bench
step cublas_baseline 200 python3 benches/vulkan_torch_baseline.py
# The issue's table: ours / cuBLAS per case, targets, sizes whose rate falls below the one before.
step compare 30 python3 benches/device/compare.py "$out/vulkan_matmul.txt" "$out/cublas_baseline.txt"
# The 4096 fall-off, one thing varied at a time: sizes around the power of two, memory blocks
# of 64 MiB and 2 GiB instead of 1 GiB, the portable f16 shader instead of coopmat.
step matmul_near_4096 120 .devbin/vulkan_matmul --bench --sizes 3968,4096,4224
step matmul_4096_block64m 60 env NPUHYBRID_VULKAN_BLOCK_MB=64 .devbin/vulkan_matmul --bench --sizes 4096
step matmul_4096_block2g 60 env NPUHYBRID_VULKAN_BLOCK_MB=2048 .devbin/vulkan_matmul --bench --sizes 4096
step matmul_4096_no_coopmat 60 env NPUHYBRID_VULKAN_NO_COOPMAT=1 .devbin/vulkan_matmul --bench --sizes 4096
# A/B: the first cooperative-matrix shader (fixed 16x16x16, 64 x 32 per subgroup) on the same machine.
step matmul_coopmat_v1 90 env NPUHYBRID_VULKAN_COOPMAT=v1 .devbin/vulkan_matmul --bench --sizes 1024,2048,4096
if [ "$mode" = all ]; then
step hybrid_mixed 150 .devbin/hybrid_mixed 1024 1,16,64,256,1024
step hybrid_sweep 120 .devbin/hybrid_sweep 8192
if [ -x .devbin/generate ] && [ -d .devbin/tiny_llama ]; then
  step generate_gpu 60 .devbin/generate --model .devbin/tiny_llama --devices gpu --policy llm_inference \
    --check .devbin/tiny_llama/reference.json
  step generate_cpu16 60 .devbin/generate --model .devbin/tiny_llama --devices cpu
fi
if [ -x .devbin/embed ]; then
  step embed_gpu 120 .devbin/embed --bench --synthetic --devices gpu --place gpu
  step embed_cpu 120 .devbin/embed --bench --synthetic --devices cpu
  # Where the GPU's time goes, op by op (Chrome trace format).
  step embed_gpu_trace 60 .devbin/embed --bench --synthetic --devices gpu --place gpu --bench-seq 256 \
    --batch-sizes 16 --bench-seconds 1 --trace "$out/embed_gpu_trace.json"
fi
[ -x .devbin/workload ] && step workload_gpu 60 .devbin/workload --policy default --devices gpu,sim --seq 512
fi
tail -n 25 "$out"/*.txt
# At most 8 files come back from the device machine: hand back one.
(cd "$out" && for f in *.txt; do echo "=== $f"; cat "$f"; done >all.log && rm -f ./*.txt)
