#!/usr/bin/env python3
"""Idle time inside a traced run's graph submissions: python3 trace_gaps.py TRACE.json

A submission runs from its placement instant to its last op's end; its ops' slices cover
part of that. Prints per op count (a decode step's is the most frequent) the median span,
the median summed op time, the idle rest, and the median gap from the instant to the first op.
"""
import collections
import json
import statistics
import sys

events = json.load(open(sys.argv[1]))
events = events["traceEvents"] if isinstance(events, dict) else events
timed = sorted((e for e in events if "ts" in e), key=lambda e: e["ts"])
subs = []  # [ops, t0, first op start, last op end, summed op time, tids]
for e in timed:
    if e.get("name") == "segment" and e.get("ph") == "i" and e.get("args", {}).get("first_op") == 0:
        subs.append([e["args"].get("ops"), e["ts"], None, e["ts"], 0.0, collections.Counter()])
    elif e.get("ph") == "X" and e.get("cat") == "op" and e.get("name") != "segment" and subs:
        s = subs[-1]
        s[2] = e["ts"] if s[2] is None else s[2]
        s[3] = max(s[3], e["ts"] + e["dur"])
        s[4] += e["dur"]
        s[5][e.get("tid")] += 1
groups = collections.defaultdict(list)
for s in subs:
    groups[s[0]].append(s)
for n, g in sorted(groups.items(), key=lambda kv: -len(kv[1]))[:2]:
    med = lambda xs: statistics.median(xs) if xs else 0.0
    span = med([s[3] - s[1] for s in g])
    ops = med([s[4] for s in g])
    first = med([s[2] - s[1] for s in g if s[2] is not None])
    tids = sum((s[5] for s in g), collections.Counter())
    print(f"{len(g)} submissions of {n} ops: span {span:.0f} us, ops {ops:.0f} us, idle {span - ops:.0f} us, "
          f"instant to first op {first:.0f} us; ops per device {dict(tids)}")
