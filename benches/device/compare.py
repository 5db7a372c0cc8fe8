"""Puts benches/vulkan_matmul.rs and benches/vulkan_torch_baseline.py side by side: one row
per case with ours / cuBLAS (single op per submission and batched), the issue's target, and
whether our rate falls below the size before it. Usage: compare.py ours.txt cublas.txt"""
import re
import sys

TARGETS = {"matmul_f32": 0.7, "matmul_f16": 0.5, "gemv_f16_nt": 0.85, "gemv_f16_nn": 0.7}


def results(path):
    out = {}
    for line in open(path, errors="replace"):
        if line.startswith("RESULT "):
            kv = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
            out[kv["case"]] = kv
    return out


ours, theirs = results(sys.argv[1]), results(sys.argv[2])
print("| case | ours us | batched us | cuBLAS us | ours/cuBLAS | batched/cuBLAS | target | rate vs previous size | check |")
print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | --- |")
previous = {}
for case, r in ours.items():
    m = re.match(r"(matmul_f\d+|gemv_f16)_(\d+)(?:_(nt|nn))?$", case)
    if not m:
        continue
    family = m.group(1) + ("_" + m.group(3) if m.group(3) else "")
    t = theirs.get("torch_" + case)
    us, bus = float(r["us"]), float(r["batched_us"])
    rate = float(r["tflops"])
    fall = ""
    if family in previous:
        fall = "ok" if rate >= previous[family] else f"FALLS ({previous[family]:.2f} -> {rate:.2f})"
    previous[family] = rate
    if t:
        tus = float(t["us"])
        ratio, bratio = f"{tus / us:.2f}", f"{tus / bus:.2f}"
        met = "met" if min(tus / us, tus / bus) >= TARGETS[family] else "not met"
        tcol = f"{tus:.1f}"
    else:
        ratio = bratio = tcol = "-"
        met = "no baseline"
    print(f"| {case} | {us:.1f} | {bus:.1f} | {tcol} | {ratio} | {bratio} | >= {TARGETS[family]}: {met} | {fall} | {r['check']} |")
    if bus > us:
        print(f"|   {case}: batched slower than single ({bus:.1f} > {us:.1f} us) | | | | | | | | |")
