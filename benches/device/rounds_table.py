#!/usr/bin/env python3
"""Reads rounds.log (benches/device/rounds.sh) and prints, per round and case, the hybrid's
speed over the better of the CPU alone and the GPU alone in the same round (the issue's
guarantee: never below 0.95). Higher is better for every figure it compares."""
import re
import sys
from collections import defaultdict

# (round, side) -> case -> rate (higher is better)
rates = defaultdict(dict)
round_side = None
generate_model = 0
for line in open(sys.argv[1] if len(sys.argv) > 1 else "rounds.log"):
    m = re.match(r"== round (\d+), (?:devices )?(\S+)", line)
    if m:
        # Older logs name the devices instead of the side.
        side = {"gpu,sim": "hybrid"}.get(m.group(2), m.group(2))
        round_side = (int(m.group(1)), side)
        generate_model = 0
        continue
    if round_side is None:
        continue
    m = re.search(r"BENCH case=(\S+) batch=(\d+) .*sentences_per_s=([\d.]+)", line)
    if m:
        rates[round_side][f"embed {m.group(1)} b{m.group(2)}"] = float(m.group(3))
        continue
    m = re.search(r"block as a graph: .*mean ([\d.]+) ms", line)
    if m:
        rates[round_side]["workload graph"] = 1e3 / float(m.group(1))
        continue
    m = re.match(r"prefill: +\d+ tokens in [\d.]+ ms: ([\d.]+) tokens/s", line)
    if m:
        generate_model += 1
        name = "tiny llama" if generate_model == 1 else "llama 1B"
        rates[round_side][f"{name} prefill"] = float(m.group(1))
        continue
    m = re.match(r"decode: +\d+ tokens in [\d.]+ ms: ([\d.]+) tokens/s", line)
    if m:
        name = "tiny llama" if generate_model == 1 else "llama 1B"
        rates[round_side][f"{name} decode"] = float(m.group(1))

rounds = sorted({r for r, _ in rates})
cases = list(dict.fromkeys(c for v in rates.values() for c in v))
print(f"{'case':28} " + " ".join(f"{'round ' + str(r):>26}" for r in rounds))
print(f"{'':28} " + " ".join(f"{'hybrid/best (cpu, gpu)':>26}" for _ in rounds))
worst = None
for c in cases:
    cells = []
    for r in rounds:
        h, cpu, gpu = (rates[(r, s)].get(c) for s in ("hybrid", "cpu", "gpu"))
        best = max(x for x in (cpu, gpu) if x is not None) if (cpu or gpu) else None
        if h is None or best is None:
            cells.append(f"{'-':>26}")
            continue
        ratio = h / best
        if r > 1:
            worst = ratio if worst is None else min(worst, ratio)
        cells.append(f"{ratio:>6.2f} ({cpu or 0:>8.1f}, {gpu or 0:>8.1f})")
    print(f"{c:28} " + " ".join(cells))
if worst is not None:
    print(f"worst hybrid/best after round 1: {worst:.2f} (the guarantee: >= 0.95)")
