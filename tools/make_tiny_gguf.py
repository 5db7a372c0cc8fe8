#!/usr/bin/env python3
"""Writes tests/data/gguf/layouts.gguf: small tensors quantized by the `gguf` package's
reference quantizers (q8_0, q4_0, q4_1), the f32 values they came from, and the package's
dequantisation of each, plus llama-style metadata and a tiny vocabulary. tests/gguf.rs
checks our reader, quantizers and dequantisers against them byte for byte.

    python3 -m venv /tmp/ggufvenv && /tmp/ggufvenv/bin/pip install gguf numpy
    /tmp/ggufvenv/bin/python tools/make_tiny_gguf.py
"""
import os
import sys

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(__file__), "..", "tests", "data", "gguf", "layouts.gguf")
rng = np.random.default_rng(16)
# Rows of 64 (two blocks); a few rows with one large value and a constant row, the cases
# where rounding and the choice of scale differ most between implementations.
src = rng.standard_normal((6, 64)).astype(np.float32)
src[1, 5] = 9.0
src[2, :] = 0.25
src[3, 40] = -7.5

w = gguf.GGUFWriter(out, "llama")
w.add_block_count(1)
w.add_context_length(128)
w.add_embedding_length(64)
w.add_feed_forward_length(96)
w.add_head_count(4)
w.add_head_count_kv(2)
w.add_layer_norm_rms_eps(1e-5)
w.add_rope_freq_base(10000.0)
w.add_tokenizer_model("llama")
w.add_token_list(["<unk>", "<s>", "</s>", "\u2581hello", "\u2581world"])
w.add_token_scores([0.0, 0.0, 0.0, -1.5, -2.25])
w.add_token_types([2, 3, 3, 1, 1])
w.add_bos_token_id(1)
w.add_tensor("src", src)
w.add_tensor("src.f16", src.astype(np.float16))
for name, qt in [("q8_0", T.Q8_0), ("q4_0", T.Q4_0), ("q4_1", T.Q4_1)]:
    q = gguf.quants.quantize(src, qt)
    w.add_tensor(name, q, raw_dtype=qt)
    w.add_tensor("deq." + name, gguf.quants.dequantize(q, qt).astype(np.float32))
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
print(out, os.path.getsize(out), "bytes")
