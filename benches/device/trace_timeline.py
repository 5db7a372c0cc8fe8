#!/usr/bin/env python3
"""A traced run's placements over time, compressed: python3 trace_timeline.py TRACE.json

For a first run (empty cache: calibration, pipeline compilation, trials of placements), prints
the scheduler's instants (calibrated, lost, degraded) and runs of consecutive graph
submissions under one plan: when the run started, how many, their summed and median wall
time (segment slices), and any set-up (pipeline compilation) the backends reported.
"""
import json
import statistics
import sys


def main():
    trace = json.load(open(sys.argv[1]))
    events = trace["traceEvents"] if isinstance(trace, dict) else trace
    names = {e["tid"]: e["args"]["name"] for e in events if e.get("name") == "thread_name"}
    timed = sorted((e for e in events if "ts" in e), key=lambda e: e["ts"])
    if not timed:
        sys.exit("empty trace")
    t0 = timed[0]["ts"]
    lines = []  # (ts, text)
    runs = []  # [plan, first ts, count, [walls], setup]
    span = None  # [start, end] of the current submission: its 'i' to the last slice's end
    for e in timed:
        name, ph, args = e.get("name"), e.get("ph"), e.get("args", {})
        if name == "segment" and ph == "i" and args.get("first_op") == 0:
            plan = f"{args.get('plan', '?')} ({args.get('ops')} ops)"
            if runs and runs[-1][0] == plan:
                runs[-1][2] += 1
            else:
                runs.append([plan, e["ts"], 1, [], 0.0])
            span = [e["ts"], e["ts"]]
            runs[-1][3].append(span)
        elif ph == "X" and span is not None:
            span[1] = max(span[1], e["ts"] + e.get("dur", 0.0))
            runs[-1][4] += args.get("setup_us", 0.0)
        elif ph in ("i", "I") and name != "segment":
            lines.append((e["ts"], f"{name} on {names.get(e.get('tid'), e.get('tid'))}: {args}"))
    for plan, ts, count, spans, setup in runs:
        walls = [b - a for a, b in spans]
        text = (
            f"{count:5d} x {plan:<40} {sum(walls) / 1e3:9.1f} ms in all, median {statistics.median(walls) / 1e3:.3f} ms"
            + (f", set-up {setup / 1e3:.1f} ms" if setup else "")
        )
        lines.append((ts, text))
    for ts, text in sorted(lines, key=lambda x: x[0]):
        print(f"{(ts - t0) / 1e3:10.1f} ms  {text}")

main()
