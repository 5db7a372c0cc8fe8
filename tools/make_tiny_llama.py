#!/usr/bin/env python3
"""Creates a tiny Llama-style decoder with seeded random weights and its reference outputs.

    /opt/nhvenv/bin/python tools/make_tiny_llama.py [--out tests/data/tiny_llama] [--dim 128] ...

Writes, in --out:
  model.safetensors  f32 weights, Hugging Face Llama names, nn.Linear layout [out, in]
  config.json        the shape (flat keys, Hugging Face names)
  reference.json     prompt token ids, the greedy continuation, and the f32 logits of every
                     prompt position (prefill) and of every generated step

The forward pass is written here in plain PyTorch (no transformers library): token embedding;
per layer RMSNorm, Q/K/V projections, rotary embedding in the half-split layout of GPT-NeoX /
Hugging Face Llama (pairs (i, i + head_dim/2), the library's default; NH_FLAG_ROPE_INTERLEAVED
is not used), causal grouped-query attention (q head h reads kv head h // (heads/kv_heads)),
output projection + residual, RMSNorm, SwiGLU FFN down(silu(gate(x)) * up(x)) + residual;
final RMSNorm and the LM head. Decoding is greedy with a KV cache, one token a step, exactly
as generate.c does it; a second full-sequence pass without the cache checks the cache logic.

The same model is also run in float64; the largest f32-vs-f64 logit difference is stored
(`f32_vs_f64_max_abs`) as the scale of f32 rounding error, and the smallest gap between the
best and second-best logit over the greedy steps (`min_top2_gap`) as the margin that keeps the
greedy tokens stable under such errors.
"""

import argparse
import json
import math
import os

import torch
from safetensors.torch import save_file


def parse_args():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "data", "tiny_llama"))
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--ffn", type=int, default=344)
    p.add_argument("--theta", type=float, default=10000.0)
    p.add_argument("--eps", type=float, default=1e-5)
    p.add_argument("--max-pos", type=int, default=256)
    p.add_argument("--prompt-len", type=int, default=16)
    p.add_argument("--steps", type=int, default=64)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--min-gap", type=float, default=0.02,
                   help="draw prompts until every greedy step's best logit leads the next by this much")
    p.add_argument("--no-reference", action="store_true", help="write the model and config only")
    return p.parse_args()


def make_weights(a):
    g = torch.Generator().manual_seed(a.seed)

    def randn(*shape, std):
        return (torch.randn(*shape, generator=g, dtype=torch.float64) * std).to(torch.float32)

    hd = a.dim // a.heads
    w = {"model.embed_tokens.weight": randn(a.vocab, a.dim, std=1.0)}
    for i in range(a.layers):
        p = f"model.layers.{i}."
        # Norm gains near 1; projections ~ 1/sqrt(fan_in) keep every activation O(1). The
        # residual branches are scaled down a little so the stream grows slowly with depth.
        w[p + "input_layernorm.weight"] = 1.0 + randn(a.dim, std=0.1)
        w[p + "self_attn.q_proj.weight"] = randn(a.heads * hd, a.dim, std=1.0 / math.sqrt(a.dim))
        w[p + "self_attn.k_proj.weight"] = randn(a.kv_heads * hd, a.dim, std=1.0 / math.sqrt(a.dim))
        w[p + "self_attn.v_proj.weight"] = randn(a.kv_heads * hd, a.dim, std=1.0 / math.sqrt(a.dim))
        w[p + "self_attn.o_proj.weight"] = randn(a.dim, a.heads * hd, std=0.5 / math.sqrt(a.dim))
        w[p + "post_attention_layernorm.weight"] = 1.0 + randn(a.dim, std=0.1)
        w[p + "mlp.gate_proj.weight"] = randn(a.ffn, a.dim, std=1.0 / math.sqrt(a.dim))
        w[p + "mlp.up_proj.weight"] = randn(a.ffn, a.dim, std=1.0 / math.sqrt(a.dim))
        w[p + "mlp.down_proj.weight"] = randn(a.dim, a.ffn, std=0.5 / math.sqrt(a.ffn))
    w["model.norm.weight"] = 1.0 + randn(a.dim, std=0.1)
    # Logits with a spread of a few units: peaked enough that greedy decoding has clear
    # winners, random enough that it does not settle on one token.
    w["lm_head.weight"] = randn(a.vocab, a.dim, std=3.0 / math.sqrt(a.dim))
    return w


class TinyLlama:
    """The reference forward pass, in the dtype of the weights it is given."""

    def __init__(self, a, w, dtype):
        self.a = a
        self.w = {k: v.to(dtype) for k, v in w.items()}
        self.dtype = dtype
        self.hd = a.dim // a.heads

    def rmsnorm(self, x, weight):
        var = (x * x).mean(dim=-1, keepdim=True)
        return x * torch.rsqrt(var + self.a.eps) * weight

    def rope(self, x, pos0):
        # x [seq, heads, hd]; half-split pairs (i, i + hd/2), angle (pos0 + s) * theta^(-2i/hd).
        # Angles in float64 like the library's CPU kernel, then cos/sin in the model's dtype.
        seq, half = x.shape[0], self.hd // 2
        inv = self.a.theta ** (-2.0 * torch.arange(half, dtype=torch.float64) / self.hd)
        ang = (torch.arange(seq, dtype=torch.float64) + pos0)[:, None] * inv[None, :]
        c, s = ang.cos().to(self.dtype)[:, None, :], ang.sin().to(self.dtype)[:, None, :]
        x1, x2 = x[..., :half], x[..., half:]
        return torch.cat([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1)

    def forward(self, tokens, cache, pos0):
        """tokens: list of ids at positions pos0.. ; cache: per layer [k, v] lists of [Hkv, hd]
        rows, extended in place. Returns the logits [len(tokens), vocab]."""
        a, w, hd = self.a, self.w, self.hd
        x = w["model.embed_tokens.weight"][torch.tensor(tokens)]
        seq = x.shape[0]
        for i in range(a.layers):
            p = f"model.layers.{i}."
            h = self.rmsnorm(x, w[p + "input_layernorm.weight"])
            q = (h @ w[p + "self_attn.q_proj.weight"].T).view(seq, a.heads, hd)
            k = (h @ w[p + "self_attn.k_proj.weight"].T).view(seq, a.kv_heads, hd)
            v = (h @ w[p + "self_attn.v_proj.weight"].T).view(seq, a.kv_heads, hd)
            q, k = self.rope(q, pos0), self.rope(k, pos0)
            ck, cv = cache[i]
            ck.append(k)
            cv.append(v)
            K, V = torch.cat(ck, dim=0), torch.cat(cv, dim=0)  # [kv, Hkv, hd]
            kv = K.shape[0]
            group = a.heads // a.kv_heads
            K = K.permute(1, 0, 2).repeat_interleave(group, dim=0)  # [H, kv, hd]
            V = V.permute(1, 0, 2).repeat_interleave(group, dim=0)
            Q = q.permute(1, 0, 2)  # [H, seq, hd]
            scores = (Q @ K.transpose(1, 2)) / math.sqrt(hd)
            # Query j sits at absolute position pos0 + j and sees keys 0..pos0 + j.
            qpos = torch.arange(seq)[:, None] + pos0
            kpos = torch.arange(kv)[None, :]
            scores = scores.masked_fill(kpos > qpos, float("-inf"))
            att = torch.softmax(scores, dim=-1) @ V  # [H, seq, hd]
            att = att.permute(1, 0, 2).reshape(seq, a.heads * hd)
            x = x + att @ w[p + "self_attn.o_proj.weight"].T
            h = self.rmsnorm(x, w[p + "post_attention_layernorm.weight"])
            gate = torch.nn.functional.silu(h @ w[p + "mlp.gate_proj.weight"].T)
            up = h @ w[p + "mlp.up_proj.weight"].T
            x = x + (gate * up) @ w[p + "mlp.down_proj.weight"].T
        x = self.rmsnorm(x, w["model.norm.weight"])
        return x @ w["lm_head.weight"].T

    def generate(self, prompt, steps):
        """Greedy decoding: prefill, then one token a step. Returns (tokens, prefill logits,
        step logits [steps, vocab]); step 0's logits are the prefill's last row."""
        cache = [[[], []] for _ in range(self.a.layers)]
        pre = self.forward(prompt, cache, 0)
        logits = [pre[-1]]
        tokens = [int(pre[-1].argmax())]
        pos = len(prompt)
        while len(tokens) < steps:
            out = self.forward([tokens[-1]], cache, pos)[0]
            pos += 1
            logits.append(out)
            tokens.append(int(out.argmax()))
        return tokens, pre, torch.stack(logits)


def main():
    a = parse_args()
    assert a.dim % a.heads == 0 and a.heads % a.kv_heads == 0 and (a.dim // a.heads) % 2 == 0
    assert a.prompt_len + a.steps <= a.max_pos
    torch.manual_seed(a.seed)
    os.makedirs(a.out, exist_ok=True)
    w = make_weights(a)
    save_file(w, os.path.join(a.out, "model.safetensors"), metadata={"format": "pt", "generator": "tools/make_tiny_llama.py"})
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": a.vocab,
        "hidden_size": a.dim,
        "num_hidden_layers": a.layers,
        "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads,
        "intermediate_size": a.ffn,
        "rope_theta": a.theta,
        "rms_norm_eps": a.eps,
        "max_position_embeddings": a.max_pos,
        "hidden_act": "silu",
        "tie_word_embeddings": False,
        "rope_layout": "half_split",
        "torch_dtype": "float32",
        "seed": a.seed,
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    if a.no_reference:
        return

    # Prompts are drawn from a seeded generator until the greedy continuation has a clear
    # winner at every step (a near tie would make the reference depend on rounding).
    m32 = TinyLlama(a, w, torch.float32)
    g = torch.Generator().manual_seed(a.seed + 1)
    for attempt in range(100):
        prompt = torch.randint(0, a.vocab, (a.prompt_len,), generator=g).tolist()
        tokens, pre, logits = m32.generate(prompt, a.steps)
        top2 = logits.topk(2, dim=-1).values
        run = longest = 1
        for prev, cur in zip(tokens, tokens[1:]):
            run = run + 1 if cur == prev else 1
            longest = max(longest, run)
        # ... and it does not collapse into one repeated token.
        if float((top2[:, 0] - top2[:, 1]).min()) >= a.min_gap and longest <= 2 and len(set(tokens)) >= a.steps // 2:
            break
    else:
        raise SystemExit(f"no prompt in 100 draws keeps a top-2 gap of {a.min_gap} without repeating itself")

    # The cache path must agree with one pass over the whole sequence.
    full = m32.forward(prompt + tokens[:-1], [[[], []] for _ in range(a.layers)], 0)
    cache_vs_full = float((full[len(prompt) - 1:] - logits).abs().max())
    assert cache_vs_full < 1e-3, f"KV-cache decoding disagrees with a full pass: {cache_vs_full}"

    # f32 rounding scale: the same computation in float64, teacher-forced on the f32 tokens.
    m64 = TinyLlama(a, w, torch.float64)
    full64 = m64.forward(prompt + tokens[:-1], [[[], []] for _ in range(a.layers)], 0)
    f64_diff = float((full64[len(prompt) - 1:] - logits.double()).abs().max())
    pre_diff = float((full64[: len(prompt)] - pre.double()).abs().max())

    gaps = (top2[:, 0] - top2[:, 1]).tolist()
    distinct = len(set(tokens))
    ref = {
        "format": "npuhybrid tiny llama reference v1",
        "vocab_size": a.vocab,
        "prompt": prompt,
        "steps": a.steps,
        "tokens": tokens,
        "logits_abs_max": float(logits.abs().max()),
        "f32_vs_f64_max_abs": max(f64_diff, pre_diff),
        "min_top2_gap": min(gaps),
        "distinct_tokens": distinct,
        "cache_vs_full_max_abs": cache_vs_full,
        # Row-major [prompt_len, vocab]: the logits of every prompt position.
        "prefill_logits": [round(float(x), 6) for x in pre.flatten().tolist()],
        # Row-major [steps, vocab]: step i's logits chose tokens[i].
        "logits": [round(float(x), 6) for x in logits.flatten().tolist()],
    }
    with open(os.path.join(a.out, "reference.json"), "w") as f:
        json.dump(ref, f, separators=(",", ":"))
        f.write("\n")
    print(f"prompt (draw {attempt + 1}) {prompt}")
    print(f"tokens {tokens}")
    print(
        f"distinct tokens {distinct}/{a.steps}, |logits| max {ref['logits_abs_max']:.3f}, "
        f"min top-2 gap {min(gaps):.4f}, f32 vs f64 {ref['f32_vs_f64_max_abs']:.2e}, "
        f"cache vs full {cache_vs_full:.2e}"
    )
    params = sum(t.numel() for t in w.values())
    print(f"{params} parameters, {os.path.getsize(os.path.join(a.out, 'model.safetensors'))} bytes")


if __name__ == "__main__":
    main()
