#!/usr/bin/env python3
"""Where a traced run's GPU time goes, by op kind: python3 trace_ops.py TRACE.json [PHASE]

Reads the op slices that `--trace` writes for submissions whose ops were timed one by one
(NPUHYBRID_VULKAN_OP_TIMESTAMPS=1 times all of them) and prints, per op kind, the count, the
summed kernel time and its share, then the idle time between consecutive timed ops of one
segment (barriers, launch gaps) against the segments' wall time.
"""
import collections
import json
import statistics
import sys


def main():
    trace = json.load(open(sys.argv[1]))
    phase = sys.argv[2] if len(sys.argv) > 2 else "decode"
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    ops = [e for e in events if e.get("ph") == "X" and e.get("cat") == "op" and e.get("name") != "segment"]
    ops = [e for e in ops if f"phase={phase}" in str(e.get("args", {}).get("tags", ""))]
    segs = [e for e in events if e.get("ph") == "X" and e.get("name") == "segment"]
    if not ops:
        sys.exit(f"no timed {phase} ops in {sys.argv[1]}")
    per_kind = collections.defaultdict(lambda: [0, 0.0])
    for e in ops:
        key = e["name"]
        if key == "matmul":
            d = e["args"].get("dims", {})
            key = f"matmul m{d.get('m')} n{d.get('n')} k{d.get('k')}"
        per_kind[key][0] += 1
        per_kind[key][1] += e["dur"]
    ops.sort(key=lambda e: e["ts"])
    gaps = 0.0
    for a, b in zip(ops, ops[1:]):
        gap = b["ts"] - (a["ts"] + a["dur"])
        if 0 < gap < 1000:  # between ops of one submission, not between steps
            gaps += gap
    total = sum(v[1] for v in per_kind.values())
    print(f"{len(ops)} timed {phase} ops, kernels {total / 1e3:.2f} ms, gaps between them {gaps / 1e3:.2f} ms")
    for key, (n, us) in sorted(per_kind.items(), key=lambda kv: -kv[1][1]):
        print(f"  {key:<34} {n:>6} x  {us / n:>8.1f} us  {us / 1e3:>8.2f} ms  {100 * us / total:5.1f}%")
    # Host phases of the submissions, grouped by their op count (a decode step's is the most
    # frequent), medians in us: where the wall time goes beyond the GPU's busy time.
    by_ops = collections.defaultdict(list)
    for e in segs:
        by_ops[e.get("args", {}).get("ops")].append(e)
    for n, group in sorted(by_ops.items(), key=lambda kv: -len(kv[1]))[:3]:
        fields = ["dur", "prepare_us", "record_us", "wait_us", "finish_us", "device_us"]
        med = {f: statistics.median(e["dur"] if f == "dur" else e["args"].get(f, 0) for e in group) for f in fields}
        print(f"{len(group)} submissions of {n} ops, medians (us): " + ", ".join(f"{f} {v:.0f}" for f, v in med.items()))
        group.sort(key=lambda e: e["ts"])
        between = [b["ts"] - (a["ts"] + a["dur"]) for a, b in zip(group, group[1:])]
        if between:
            print(f"  between consecutive ones (the caller's work, and the trace's own cost: about 7 us an op): median {statistics.median(between):.0f} us")


main()
