#!/usr/bin/env python3
"""Writes a llama-architecture GGUF file of random weights in real model shapes, for
decode/prefill benchmarks (PERFORMANCE.md). Needs the gguf and numpy packages:

    python3 -m venv /tmp/ggufvenv && /tmp/ggufvenv/bin/pip install gguf numpy
    /tmp/ggufvenv/bin/python tools/make_bench_gguf.py q4_0 /tmp/bench_q4_0.gguf --layers 8

Defaults are Qwen2.5-0.5B's shapes as a llama (hidden 896, 14/2 heads, FFN 4864) with a
32000-token vocabulary and an untied output; --layers cuts the depth.
"""
import argparse

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

p = argparse.ArgumentParser()
p.add_argument("type", choices=["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"])
p.add_argument("out")
p.add_argument("--layers", type=int, default=24)
p.add_argument("--hidden", type=int, default=896)
p.add_argument("--heads", type=int, default=14)
p.add_argument("--kv-heads", type=int, default=2)
p.add_argument("--ffn", type=int, default=4864)
p.add_argument("--vocab", type=int, default=32000)
a = p.parse_args()
rng = np.random.default_rng(0)
hd = a.hidden // a.heads
qt = {"f32": T.F32, "f16": T.F16, "bf16": T.BF16, "q8_0": T.Q8_0, "q4_0": T.Q4_0, "q4_1": T.Q4_1}[a.type]

w = gguf.GGUFWriter(a.out, "llama")
w.add_block_count(a.layers)
w.add_context_length(4096)
w.add_embedding_length(a.hidden)
w.add_feed_forward_length(a.ffn)
w.add_head_count(a.heads)
w.add_head_count_kv(a.kv_heads)
w.add_layer_norm_rms_eps(1e-6)
w.add_rope_freq_base(1000000.0)
w.add_tokenizer_model("llama")
w.add_token_list([f"<t{i}>" for i in range(a.vocab)])


def add(name, shape, matmul=True):
    x = (rng.standard_normal(shape, dtype=np.float32) * 0.02).astype(np.float32)
    if not matmul:
        w.add_tensor(name, np.ones(shape, dtype=np.float32))
    elif qt == T.F32:
        w.add_tensor(name, x)
    elif qt == T.F16:
        w.add_tensor(name, x.astype(np.float16))
    else:
        w.add_tensor(name, gguf.quants.quantize(x, qt), raw_dtype=qt)


add("token_embd.weight", (a.vocab, a.hidden))
add("output_norm.weight", (a.hidden,), matmul=False)
add("output.weight", (a.vocab, a.hidden))
for i in range(a.layers):
    add(f"blk.{i}.attn_norm.weight", (a.hidden,), matmul=False)
    add(f"blk.{i}.attn_q.weight", (a.heads * hd, a.hidden))
    add(f"blk.{i}.attn_k.weight", (a.kv_heads * hd, a.hidden))
    add(f"blk.{i}.attn_v.weight", (a.kv_heads * hd, a.hidden))
    add(f"blk.{i}.attn_output.weight", (a.hidden, a.heads * hd))
    add(f"blk.{i}.ffn_norm.weight", (a.hidden,), matmul=False)
    add(f"blk.{i}.ffn_gate.weight", (a.ffn, a.hidden))
    add(f"blk.{i}.ffn_up.weight", (a.ffn, a.hidden))
    add(f"blk.{i}.ffn_down.weight", (a.hidden, a.ffn))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(a.out)
