#!/usr/bin/env python3
"""Every device on against the CPU alone, in the same run, on this machine's examples.

    python3 benches/hybrid_vs_cpu.py [--examples build/examples] [--rounds 5]

For each workload (the transformer block under `default`, MiniLM embeddings, tiny-Llama
generation under `llm_inference`) it runs once with every device enabled in a fresh cache
directory (the first run: calibration, pipeline compilation, no history) and prints that run
apart; then it alternates every-device and CPU-only runs, `--rounds` of each, in the same cache
directory, and prints the medians and their ratio (higher is better for the hybrid; the
target is >= 0.95). Needs `bash .ci/build-install` (and the MiniLM model for `embed`).
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time

# name -> (arguments with every device, arguments for the CPU alone, metrics: label -> (regex, higher is better))
WORKLOADS = {
    "workload": (
        ["workload", "--policy", "default", "--iters", "30"],
        ["workload", "--policy", "default", "--iters", "30", "--cpu-only"],
        {"block as a graph, mean ms": (r"block as a graph: \d+ runs, mean ([0-9.]+) ms", False)},
    ),
    "embed": (
        ["embed", "--bench", "--bench-seconds", "1", "--devices", "gpu,sim"],
        ["embed", "--bench", "--bench-seconds", "1", "--devices", "cpu"],
        {
            f"embed {case} batch {b}, sentences/s": (
                rf"BENCH case={case} batch={b} .* sentences_per_s=([0-9.]+)",
                True,
            )
            for case in ("seq12", "seq256")
            for b in (1, 16)
        },
    ),
    "generate": (
        ["generate", "--devices", "gpu,sim", "--policy", "llm_inference", "--quiet", "--steps", "64"],
        ["generate", "--devices", "cpu", "--policy", "llm_inference", "--quiet", "--steps", "64"],
        {
            "generate prefill, tokens/s": (r"prefill: .*: ([0-9.]+) tokens/s", True),
            "generate decode, tokens/s": (r"decode:  \d+ tokens in .*: ([0-9.]+) tokens/s", True),
        },
    ),
}


def run(examples, args, cache):
    env = dict(os.environ, XDG_CACHE_HOME=cache)
    started = time.monotonic()
    p = subprocess.run([os.path.join(examples, args[0])] + args[1:], env=env, capture_output=True, text=True)
    wall = time.monotonic() - started
    if p.returncode != 0:
        sys.exit(f"{' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p.stdout + p.stderr, wall


def metrics(text, wanted):
    out = {}
    for label, (pattern, _) in wanted.items():
        m = re.search(pattern, text)
        if not m:
            sys.exit(f"no '{label}' in the output:\n{text}")
        out[label] = float(m.group(1))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", default="build/examples")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", choices=sorted(WORKLOADS), action="append")
    a = ap.parse_args()
    print(f"machine: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; {a.rounds} rounds each, alternating")
    rows = []
    for name in a.only or list(WORKLOADS):
        hybrid_args, cpu_args, wanted = WORKLOADS[name]
        with tempfile.TemporaryDirectory(prefix="nh-cache-") as cache:
            first_text, first_wall = run(a.examples, hybrid_args, cache)
            first = metrics(first_text, wanted)
            calib = re.findall(r"calibrated .*", first_text)
            hyb, cpu, walls = {k: [] for k in wanted}, {k: [] for k in wanted}, []
            for _ in range(a.rounds):
                text, wall = run(a.examples, hybrid_args, cache)
                walls.append(wall)
                for k, v in metrics(text, wanted).items():
                    hyb[k].append(v)
                for k, v in metrics(run(a.examples, cpu_args, cache)[0], wanted).items():
                    cpu[k].append(v)
            extra = first_wall - statistics.median(walls)
            print(f"\n{name}: first run with every device {first_wall:.2f} s, later runs "
                  f"{statistics.median(walls):.2f} s: first-run extra cost {extra:.2f} s")
            for line in calib:
                print(f"  {line}")
            for label, (_, higher) in wanted.items():
                # Every round's pair, so a median of a few noisy runs can be read for what it is.
                pairs = " ".join(f"{x:g}/{y:g}" for x, y in zip(hyb[label], cpu[label]))
                print(f"  {label}, every device / CPU alone by round: {pairs}")
                h, c = statistics.median(hyb[label]), statistics.median(cpu[label])
                ratio = h / c if higher else c / h
                rows.append((label, first[label], h, c, ratio))
    print(f"\n{'metric':40} {'first run':>10} {'every device':>13} {'CPU alone':>10} {'ratio':>7}")
    for label, f, h, c, ratio in rows:
        flag = "" if ratio >= 0.95 else "  < 0.95"
        print(f"{label:40} {f:10.2f} {h:13.2f} {c:10.2f} {ratio:7.3f}{flag}")
    print(f"load after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
