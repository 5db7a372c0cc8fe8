#!/usr/bin/env bash
# Builds bf16 GEMM kernels for the NPU backend with mlir-aie / IRON and writes the kernel
# directory (xclbins, instruction streams, manifest.json in format 2 with the target PCI id and
# a sha256 per file). See docs/XRT.md, "Kernels a user can get".
#
#   tools/npu_kernels.sh npu  OUT_DIR   # XDNA1: Phoenix / Hawk Point (PCI 1022:1502), 4 columns
#   tools/npu_kernels.sh npu2 OUT_DIR   # XDNA2: Strix / Krackan (PCI 1022:17f0), 8 columns
#
# NOT RUN by the project: our CI machines have no NPU and the AIE toolchain (mlir-aie wheels,
# the Peano compiler llvm-aie, XRT's xclbinutil) is not installed there. The pins below are
# the ones public projects pair (mlir-aie v1.4.0 with llvm-aie 21.0.0.2026062301); the
# design is mlir-aie's own whole-array matrix multiplication example at the same tag. The
# first build on a laptop is the check (docs/XRT.md, hardware checklist).
#
# Needs: Linux x86_64, Python 3.10-3.14, git, make, XRT with xclbinutil (2.17+), network.
set -euo pipefail
target=${1:?usage: $0 npu|npu2 OUT_DIR}
out=$(realpath -m "${2:?usage: $0 npu|npu2 OUT_DIR}")
MLIR_AIE_TAG=${MLIR_AIE_TAG:-v1.4.0}
MLIR_AIE_PIN=${MLIR_AIE_PIN:-mlir_aie==1.4.0}
LLVM_AIE_PIN=${LLVM_AIE_PIN:-llvm-aie==21.0.0.2026062301+cb664e8c}
work=${WORK:-$PWD/build/npu-kernels}
# Core tile (one AIE core's share) and launch shapes (one instruction stream each). M must be
# a multiple of 4 * m (four core rows), N of columns * n, K of k.
m=${TILE_M:-64}; k=${TILE_K:-64}; n=${TILE_N:-64}
case $target in
  npu)  pci=1022:1502; cols=4; shapes=${SHAPES:-"256x512x256 512x512x256"} ;;
  npu2) pci=1022:17f0; cols=8; shapes=${SHAPES:-"256x512x512 512x512x512"} ;;
  *) echo "target must be npu (XDNA1) or npu2 (XDNA2)" >&2; exit 2 ;;
esac
command -v xclbinutil >/dev/null || { echo "xclbinutil (XRT 2.17+) is needed on PATH" >&2; exit 1; }

mkdir -p "$work" "$out"
if [ ! -d "$work/venv" ]; then
  python3 -m venv "$work/venv"
  "$work/venv/bin/pip" install -q -U pip
  "$work/venv/bin/pip" install -q "$MLIR_AIE_PIN" -f "https://github.com/Xilinx/mlir-aie/releases/expanded_assets/$MLIR_AIE_TAG"
  "$work/venv/bin/pip" install -q "$LLVM_AIE_PIN" -f https://github.com/Xilinx/llvm-aie/releases/expanded_assets/nightly
fi
[ -d "$work/mlir-aie" ] || git clone -q --depth 1 --branch "$MLIR_AIE_TAG" https://github.com/Xilinx/mlir-aie "$work/mlir-aie"
# shellcheck disable=SC1091
source "$work/venv/bin/activate"
export PEANO_INSTALL_DIR
PEANO_INSTALL_DIR=$(python3 -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("llvm_aie").origin))' 2>/dev/null ||
  pip show -f llvm-aie | sed -n 's/^Location: //p')
ex="$work/mlir-aie/programming_examples/basic/matrix_multiplication/whole_array"

streams=()
for shape in $shapes; do
  IFS=x read -r M K N <<< "$shape"
  make -C "$ex" -s devicename="$target" dtype_in=bf16 dtype_out=f32 \
    M="$M" K="$K" N="$N" m="$m" k="$k" n="$n" n_aie_cols="$cols" b_col_maj=0 \
    "build/final_${M}x${K}x${N}_${m}x${k}x${n}_${cols}c.xclbin"
  suffix="${M}x${K}x${N}_${m}x${k}x${n}_${cols}c"
  cp "$ex/build/final_$suffix.xclbin" "$out/mm_$suffix.xclbin"
  cp "$ex/build/insts_$suffix.txt" "$out/mm_$suffix.insts.txt"
  streams+=("$M $K $N $suffix")
done

# One manifest entry per distinct xclbin (the array design depends on the core tile, the
# launch shape only on the instruction stream; identical xclbins share one hardware context).
python3 - "$out" "$pci" "${streams[@]}" <<'PY'
import hashlib, json, os, sys
out, pci, streams = sys.argv[1], sys.argv[2], sys.argv[3:]
sha = lambda f: hashlib.sha256(open(os.path.join(out, f), "rb").read()).hexdigest()
entries = {}
for s in streams:
    M, K, N, suffix = s.split()
    x = f"mm_{suffix}.xclbin"
    e = entries.setdefault(sha(x), {"op": "matmul", "dtype_in": "bf16", "dtype_out": "f32",
                                    "xclbin": x, "xclbin_sha256": sha(x), "instructions": []})
    i = f"mm_{suffix}.insts.txt"
    e["instructions"].append({"tile": {"m": int(M), "k": int(K), "n": int(N)}, "file": i, "sha256": sha(i)})
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump({"format": 2, "device": pci, "kernels": list(entries.values())}, f, indent=2)
print(f"{out}/manifest.json: {len(entries)} xclbin(s), {len(streams)} instruction stream(s) for {pci}")
PY
