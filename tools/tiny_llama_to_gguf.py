#!/usr/bin/env python3
"""Converts the tiny Llama test model (tests/data/tiny_llama, safetensors f32) into a llama
GGUF file the way llama.cpp's converter does: llama.cpp tensor names and metadata keys,
Q and K rows permuted for rope on adjacent pairs, weights in f32, f16, bf16, q8_0 or q4_0 (rows
that are not whole 32-blocks stay f32, as llama.cpp falls back too). A placeholder vocabulary
(the test model has no tokenizer). Standard library only, so CI needs nothing installed.

    python3 tools/tiny_llama_to_gguf.py TYPE OUT.gguf [MODEL_DIR]
"""
import array
import json
import math
import os
import struct
import sys

GGML = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8, "bf16": 30}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", name
        a = array.array("f")
        a.frombytes(data[t["data_offsets"][0]:t["data_offsets"][1]])
        out[name] = (t["shape"], a)
    return out


def permute(rows, n_rows, n_head):
    """llama.cpp's LlamaModel.permute: per head, rows [first half; second half] interleave."""
    cols = len(rows) // n_rows
    hd = n_rows // n_head
    out = array.array("f", bytes(len(rows) * 4))
    for h in range(n_head):
        for i in range(hd // 2):
            for j in range(2):
                src = h * hd + j * (hd // 2) + i
                dst = h * hd + 2 * i + j
                out[dst * cols:(dst + 1) * cols] = rows[src * cols:(src + 1) * cols]
    return out


def round_away(v):
    return math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5)


def quantize(kind, x):
    """GGUF's reference q8_0 / q4_0 (ggml-quants.c quantize_row_*_ref)."""
    out = bytearray()
    for b in range(0, len(x), 32):
        blk = x[b:b + 32]
        if kind == "q8_0":
            amax = max(abs(v) for v in blk)
            d = amax / 127
            inv = 1 / d if d else 0.0
            out += struct.pack("<e", d) + bytes((round_away(v * inv) & 0xFF) for v in blk)
        else:
            m = max(blk, key=abs)
            d = m / -8
            inv = 1 / d if d else 0.0
            q = [min(15, int(v * inv + 8.5)) for v in blk]
            out += struct.pack("<e", d) + bytes(q[j] | (q[j + 16] << 4) for j in range(16))
    return bytes(out)


def bf16_bytes(x):
    """f32 -> bf16, round to nearest even (as the gguf package's converter; no NaNs here)."""
    bits = array.array("I", x.tobytes())
    return struct.pack(f"<{len(bits)}H", *(((b + 0x7FFF + ((b >> 16) & 1)) >> 16) & 0xFFFF for b in bits))


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, payload):
    return gguf_string(key) + struct.pack("<I", vtype) + payload


def main():
    kind, out_path = sys.argv[1], sys.argv[2]
    model = sys.argv[3] if len(sys.argv) > 3 else os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tiny_llama")
    cfg = json.load(open(os.path.join(model, "config.json")))
    st = read_safetensors(os.path.join(model, "model.safetensors"))
    H, HKV, L = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["num_hidden_layers"]
    vocab = cfg["vocab_size"]
    meta = [
        kv("general.architecture", 8, gguf_string("llama")),
        kv("llama.block_count", 4, struct.pack("<I", L)),
        kv("llama.context_length", 4, struct.pack("<I", cfg["max_position_embeddings"])),
        kv("llama.embedding_length", 4, struct.pack("<I", cfg["hidden_size"])),
        kv("llama.feed_forward_length", 4, struct.pack("<I", cfg["intermediate_size"])),
        kv("llama.attention.head_count", 4, struct.pack("<I", H)),
        kv("llama.attention.head_count_kv", 4, struct.pack("<I", HKV)),
        kv("llama.rope.freq_base", 6, struct.pack("<f", cfg["rope_theta"])),
        kv("llama.attention.layer_norm_rms_epsilon", 6, struct.pack("<f", cfg["rms_norm_eps"])),
        kv("tokenizer.ggml.model", 8, gguf_string("llama")),
        kv("tokenizer.ggml.tokens", 9, struct.pack("<IQ", 8, vocab) + b"".join(gguf_string(f"<t{i}>") for i in range(vocab))),
        kv("tokenizer.ggml.scores", 9, struct.pack("<IQ", 6, vocab) + struct.pack(f"<{vocab}f", *([0.0] * vocab))),
        kv("tokenizer.ggml.token_type", 9, struct.pack("<IQ", 5, vocab) + struct.pack(f"<{vocab}i", *([1] * vocab))),
    ]
    names = [("token_embd.weight", "model.embed_tokens.weight"), ("output_norm.weight", "model.norm.weight"),
             ("output.weight", "lm_head.weight")]
    hf = {"attn_norm": "input_layernorm", "attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj",
          "attn_v": "self_attn.v_proj", "attn_output": "self_attn.o_proj", "ffn_norm": "post_attention_layernorm",
          "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj", "ffn_down": "mlp.down_proj"}
    for i in range(L):
        names += [(f"blk.{i}.{k}.weight", f"model.layers.{i}.{v}.weight") for k, v in hf.items()]
    infos, blobs, offset = [], [], 0
    for gname, hname in names:
        shape, data = st[hname]
        if gname.endswith("attn_q.weight"):
            data = permute(data, shape[0], H)
        elif gname.endswith("attn_k.weight"):
            data = permute(data, shape[0], HKV)
        t = kind
        if len(shape) == 1 or (kind in ("q8_0", "q4_0") and shape[-1] % 32):
            t = "f32"  # norms, and rows that are not whole blocks
        if t == "f32":
            blob = data.tobytes()
        elif t == "f16":
            blob = struct.pack(f"<{len(data)}e", *data)
        elif t == "bf16":
            blob = bf16_bytes(data)
        else:
            blob = quantize(t, data)
        ne = list(reversed(shape))
        infos.append(gguf_string(gname) + struct.pack("<I", len(ne)) + struct.pack(f"<{len(ne)}Q", *ne)
                     + struct.pack("<IQ", GGML[t], offset))
        pad = (-len(blob)) % 32
        blobs.append(blob + bytes(pad))
        offset += len(blob) + pad
    head = b"GGUF" + struct.pack("<IQQ", 3, len(infos), len(meta)) + b"".join(meta) + b"".join(infos)
    head += bytes((-len(head)) % 32)
    with open(out_path, "wb") as f:
        f.write(head)
        for b in blobs:
            f.write(b)
    print(f"{out_path}: {kind}, {os.path.getsize(out_path)} bytes")


if __name__ == "__main__":
    main()
