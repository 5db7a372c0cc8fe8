#!/usr/bin/env python3
"""Checks the placement of a `generate --trace FILE` run under llm_inference from its Chrome
trace (python3 standard library only, for CI).

    check_generate_trace.py TRACE --prefill-matmuls N --decode-matmuls M

The trace has one lane (tid) per device, named "INDEX: DEVICE NAME" (lane 0 is the CPU), and
one "X" slice per op, named by the op kind (a "segment" slice encloses the ops a device ran as
one submission; it is not an op). Passes when
  - the NPU lanes (names containing "NPU") ran exactly N matmuls, and nothing but matmuls,
  - the GPU lanes (the other device lanes) ran exactly M matmuls,
  - the CPU ran no matmul,
  - every NPU matmul ended before the first GPU matmul started: the NPU's are the prefill's
    (the prompt is processed before the first decode step), the GPU's the decode steps'.
"""

import argparse
import json
import sys


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("trace")
    p.add_argument("--prefill-matmuls", type=int, required=True)
    p.add_argument("--decode-matmuls", type=int, required=True)
    a = p.parse_args()
    try:
        with open(a.trace) as f:
            events = json.load(f)["traceEvents"]
    except (OSError, ValueError, KeyError) as e:
        sys.exit(f"{a.trace}: not a readable Chrome trace: {e}")

    lanes = {e["tid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e.get("name") == "thread_name"}
    if 0 not in lanes:
        sys.exit(f"{a.trace}: no lane 0 (the CPU); lanes: {lanes}")
    npu = {t for t, n in lanes.items() if "NPU" in n}
    gpu = {t for t, n in lanes.items() if t != 0 and t not in npu and n != "scheduler"}
    if not npu or not gpu:
        sys.exit(f"{a.trace}: needs an NPU lane and a GPU lane; lanes: {lanes}")
    slices = [e for e in events if e.get("ph") == "X" and e["name"] != "segment"]
    mm = [e for e in slices if e["name"] == "matmul"]
    npu_mm = [e for e in mm if e["tid"] in npu]
    gpu_mm = [e for e in mm if e["tid"] in gpu]
    cpu_mm = [e for e in mm if e["tid"] == 0]
    npu_other = sorted({e["name"] for e in slices if e["tid"] in npu and e["name"] != "matmul"})
    for tid in sorted(lanes):
        kinds = {}
        for e in slices:
            if e["tid"] == tid:
                kinds[e["name"]] = kinds.get(e["name"], 0) + 1
        print(f"lane {tid} ({lanes[tid]}): {dict(sorted(kinds.items()))}")

    errors = []
    if len(npu_mm) != a.prefill_matmuls:
        errors.append(f"NPU ran {len(npu_mm)} matmuls, expected the {a.prefill_matmuls} of the prefill")
    if len(gpu_mm) != a.decode_matmuls:
        errors.append(f"GPU ran {len(gpu_mm)} matmuls, expected the {a.decode_matmuls} of the decode steps")
    if cpu_mm:
        errors.append(f"the CPU ran {len(cpu_mm)} matmuls")
    if npu_other:
        errors.append(f"the NPU ran ops other than matmul: {npu_other}")
    if npu_mm and gpu_mm:
        last_npu_end = max(e["ts"] + e["dur"] for e in npu_mm)
        first_gpu = min(e["ts"] for e in gpu_mm)
        if last_npu_end > first_gpu:
            errors.append(
                f"an NPU matmul ended at {last_npu_end:.1f} us, after the first GPU matmul began at {first_gpu:.1f} us"
            )
    if errors:
        for e in errors:
            print(f"FAILED: {e}", file=sys.stderr)
        sys.exit(1)
    print(f"OK: {len(npu_mm)} prefill matmuls on the NPU, then {len(gpu_mm)} decode matmuls on the GPU, none on the CPU")


if __name__ == "__main__":
    main()
