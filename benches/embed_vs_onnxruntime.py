#!/usr/bin/env python3
"""Sentence embeddings: npuhybrid's `embed` against ONNX Runtime on the CPU, same weights,
same sentences, same batches, same thread count, in one run.

The ONNX graph is built here, at benchmark time, from the same safetensors file with the
`onnx` package's helpers (opset 17: Gather, MatMul, LayerNormalization, Softmax, GELU through
Erf, mean pooling, L2 normalisation); it is checked against tests/data/minilm_reference.txt
(sentence-transformers) before anything is timed. Nothing generated is committed.

Cases: `short` = the sentences of tests/data/embed_sentences.txt with at most 18 tokens (about
12 on average); `seq256` = the sentence that is truncated to 256 tokens, 16 times. Each case
runs at batch 1 and 16 (padded to the longest sentence of the batch, padding masked).

    /opt/nhvenv/bin/python benches/embed_vs_onnxruntime.py [--embed build/examples/embed]
        [--threads 2] [--seconds 2] [--rounds 3] [--f16] [--devices cpu] [--policy default] [--ort-no-spin]

Prints a table: case, batch, tokens, ours sentences/s, ORT sentences/s, ratio (ours / ORT).
"""
import argparse
import os
import platform
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
D, H, DH, F, L = 384, 12, 32, 1536, 6


def read_lines(path):
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def build_onnx(weights):
    """A plain ONNX graph of BERT (MiniLM-L6) + mean pooling + L2 normalisation."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits = [], []
    count = [0]

    def name(prefix):
        count[0] += 1
        return f"{prefix}_{count[0]}"

    def const(arr, prefix="c"):
        n = name(prefix)
        inits.append(numpy_helper.from_array(np.asarray(arr), n))
        return n

    def node(op, inputs, **attrs):
        out = name(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    w = lambda k: weights[k].astype(np.float32)

    def linear(x, prefix):
        return node("Add", [node("MatMul", [x, const(w(prefix + ".weight").T.copy())]), const(w(prefix + ".bias"))])

    def layernorm(x, prefix):
        return node("LayerNormalization", [x, const(w(prefix + ".weight")), const(w(prefix + ".bias"))],
                    axis=-1, epsilon=1e-12)

    ids, mask = "input_ids", "attention_mask"
    shape = node("Shape", [ids])
    seq = node("Gather", [shape, const(np.array(1, dtype=np.int64))], axis=0)
    pos_ids = node("Range", [const(np.array(0, dtype=np.int64)), seq, const(np.array(1, dtype=np.int64))])
    x = node("Gather", [const(w("embeddings.word_embeddings.weight")), ids], axis=0)
    x = node("Add", [x, node("Gather", [const(w("embeddings.position_embeddings.weight")), pos_ids], axis=0)])
    x = node("Add", [x, const(w("embeddings.token_type_embeddings.weight")[0])])
    x = layernorm(x, "embeddings.LayerNorm")
    maskf = node("Cast", [mask], to=TensorProto.FLOAT)
    # additive mask [B, 1, 1, S]: 0 for tokens, -1e4 for padding
    madd = node("Mul", [node("Sub", [const(np.float32(1.0)), maskf]), const(np.float32(-10000.0))])
    madd = node("Unsqueeze", [madd, const(np.array([1, 2], dtype=np.int64))])
    heads = const(np.array([0, 0, H, DH], dtype=np.int64))
    flat = const(np.array([0, 0, D], dtype=np.int64))
    for l in range(L):
        p = f"encoder.layer.{l}."
        q = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.query"), heads])], perm=[0, 2, 1, 3])
        k = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.key"), heads])], perm=[0, 2, 3, 1])
        v = node("Transpose", [node("Reshape", [linear(x, p + "attention.self.value"), heads])], perm=[0, 2, 1, 3])
        s = node("Add", [node("Mul", [node("MatMul", [q, k]), const(np.float32(1.0 / np.sqrt(DH)))]), madd])
        ctx = node("MatMul", [node("Softmax", [s], axis=-1), v])
        ctx = node("Reshape", [node("Transpose", [ctx], perm=[0, 2, 1, 3]), flat])
        x = layernorm(node("Add", [linear(ctx, p + "attention.output.dense"), x]), p + "attention.output.LayerNorm")
        hdn = linear(x, p + "intermediate.dense")
        gelu = node("Mul", [node("Mul", [hdn, const(np.float32(0.5))]),
                            node("Add", [node("Erf", [node("Mul", [hdn, const(np.float32(1 / np.sqrt(2)))])]),
                                         const(np.float32(1.0))])])
        x = layernorm(node("Add", [linear(gelu, p + "output.dense"), x]), p + "output.LayerNorm")
    m3 = node("Unsqueeze", [maskf, const(np.array([2], dtype=np.int64))])
    summed = node("ReduceSum", [node("Mul", [x, m3]), const(np.array([1], dtype=np.int64))], keepdims=0)
    count_ = node("ReduceSum", [maskf, const(np.array([1], dtype=np.int64))], keepdims=1)
    pooled = node("Div", [summed, count_])
    norm = node("ReduceL2", [pooled], axes=[1], keepdims=1)  # axes is an attribute until opset 18
    out = node("Div", [pooled, node("Max", [norm, const(np.float32(1e-12))])])
    nodes.append(helper.make_node("Identity", [out], ["embedding"]))
    graph = helper.make_graph(
        nodes, "minilm",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["B", "S"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["B", "S"])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["B", D])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def batches(tokens, b):
    for s in range(0, len(tokens), b):
        chunk = tokens[s:s + b]
        n = max(len(t) for t in chunk)
        ids = np.zeros((len(chunk), n), dtype=np.int64)
        mask = np.zeros((len(chunk), n), dtype=np.int64)
        for i, t in enumerate(chunk):
            ids[i, :len(t)] = t
            mask[i, :len(t)] = 1
        yield ids, mask


def ort_embed(sess, tokens, b):
    return np.concatenate([sess.run(None, {"input_ids": i, "attention_mask": m})[0] for i, m in batches(tokens, b)])


def ort_bench(sess, tokens, b, seconds):
    feeds = [{"input_ids": i, "attention_mask": m} for i, m in batches(tokens, b)]
    for f in feeds:  # warm-up pass
        sess.run(None, f)
    done, start = 0, time.perf_counter()
    while True:
        for f in feeds:
            sess.run(None, f)
            done += f["input_ids"].shape[0]
        el = time.perf_counter() - start
        if el >= seconds:
            return done / el


def read_reference(path):
    tokens, emb = {}, {}
    for line in open(path, encoding="utf-8"):
        parts = line.split()
        if parts and parts[0] == "tokens":
            tokens[int(parts[1])] = [int(x) for x in parts[2:]]
        elif parts and parts[0] == "emb":
            emb[int(parts[1])] = np.array([float(x) for x in parts[2:]], dtype=np.float32)
    n = len(emb)
    return [tokens[i] for i in range(n)], np.stack([emb[i] for i in range(n)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--embed", default=os.path.join(ROOT, "build", "examples", "embed"))
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=2.0, help="seconds per measurement")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds; the best of each side is kept")
    ap.add_argument("--batches", default="1,16")
    ap.add_argument("--f16", action="store_true", help="run ours in f16 (ORT stays f32)")
    ap.add_argument("--devices", default="cpu")
    ap.add_argument("--policy", default="default")
    ap.add_argument("--ort-no-spin", action="store_true",
                    help="turn off ORT's spin-waiting intra-op threads (kinder on a loaded machine)")
    args = ap.parse_args()
    import onnxruntime as ort
    from safetensors.numpy import load_file

    batch_sizes = [int(b) for b in args.batches.split(",")]
    sentences = read_lines(os.path.join(ROOT, "tests", "data", "embed_sentences.txt"))
    ref_tokens, ref_emb = read_reference(os.path.join(ROOT, "tests", "data", "minilm_reference.txt"))
    assert len(ref_tokens) == len(sentences), "reference and sentences differ in length"

    weights = load_file(os.path.join(args.model, "model.safetensors"))
    t0 = time.perf_counter()
    model = build_onnx(weights)
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if args.ort_no_spin:
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    print(f"ONNX graph: {len(model.graph.node)} nodes, session ready in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    # The ORT graph must reproduce sentence-transformers before it is timed.
    got = ort_embed(sess, ref_tokens, 8)
    cos = (got * ref_emb).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref_emb, axis=1)
    print(f"ORT vs sentence-transformers: cosine min {cos.min():.7f} over {len(cos)} sentences", file=sys.stderr)
    if cos.min() < 0.9999:
        sys.exit("error: the ONNX graph does not reproduce the reference")

    short = [i for i, t in enumerate(ref_tokens) if len(t) <= 18]
    long_ = [i for i, t in enumerate(ref_tokens) if len(t) == 256][:1] * 16
    cases = [("short", short), ("seq256", long_)]
    rows = []
    tmp = tempfile.mkdtemp(prefix="embed_bench_")
    for cname, idx in cases:
        toks = [ref_tokens[i] for i in idx]
        path = os.path.join(tmp, cname + ".txt")
        with open(path, "w", encoding="utf-8") as f:
            f.write("\n".join(sentences[i] for i in idx) + "\n")
        cmd = [args.embed, "--bench", "--model", args.model, "--sentences", path, "--case", cname,
               "--threads", str(args.threads), "--bench-seconds", str(args.seconds),
               "--devices", args.devices, "--policy", args.policy] + (["--f16"] if args.f16 else [])
        # Alternate ORT and ours in rounds and keep each one's best: the machine is shared, and
        # load that comes and goes should not decide the ratio.
        ort_rate, ours = {}, {}
        for b in batch_sizes:
            for _ in range(args.rounds):
                ort_rate[b] = max(ort_rate.get(b, 0.0), ort_bench(sess, toks, b, args.seconds))
                res = subprocess.run(cmd + ["--batch-sizes", str(b)], capture_output=True, text=True)
                if res.returncode != 0:
                    sys.exit(f"error: {' '.join(cmd)} failed:\n{res.stderr}")
                for line in res.stdout.splitlines():
                    if line.startswith("BENCH "):
                        kv = dict(p.split("=", 1) for p in line.split()[1:])
                        ours[b] = max(ours.get(b, 0.0), float(kv["sentences_per_s"]))
        mean_tok = sum(len(t) for t in toks) / len(toks)
        for b in batch_sizes:
            rows.append((cname, b, mean_tok, ours[b], ort_rate[b]))
    try:
        load = os.getloadavg()
    except OSError:
        load = (float("nan"),) * 3
    cpu = platform.processor() or "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    print(f"# {cpu}, {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (after the run); "
          f"onnxruntime {ort.__version__}; {args.threads} threads each; ours {'f16' if args.f16 else 'f32'} "
          f"on {args.devices}, ORT f32{' without spinning' if args.ort_no_spin else ''}; best of {args.rounds} alternating rounds of {args.seconds:g} s")
    print(f"| case | batch | tokens (mean) | ours sentences/s | ORT sentences/s | ratio |")
    print(f"| --- | ---: | ---: | ---: | ---: | ---: |")
    for cname, b, tok, o, r in rows:
        print(f"| {cname} | {b} | {tok:.1f} | {o:.1f} | {r:.1f} | {o / r:.2f} |")


if __name__ == "__main__":
    main()
