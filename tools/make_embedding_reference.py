#!/usr/bin/env python3
"""Writes the sentence-embedding reference that `embed --check` compares against.

Runs sentence-transformers (offline, CPU, f32) with all-MiniLM-L6-v2 from the local model
directory that .ci/setup unpacks, on every line of tests/data/embed_sentences.txt, and writes
tests/data/minilm_reference.txt:

    # comment lines
    model all-MiniLM-L6-v2 dim 384 sentences N max_seq_length 256
    tokens I id id id ...        (the tokenizer's ids, [CLS] ... [SEP], truncated to 256)
    emb I v0 v1 ... v383         (the normalised embedding, %.7g)

Needs torch and sentence-transformers (e.g. /opt/nhvenv/bin/python); CI does not run it.

    /opt/nhvenv/bin/python tools/make_embedding_reference.py [--model DIR] [--sentences FILE] [--out FILE]
"""
import argparse
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def read_sentences(path):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    # One sentence per line, kept exactly (leading/trailing spaces and tabs included).
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "models", "all-MiniLM-L6-v2"))
    ap.add_argument("--sentences", default=os.path.join(ROOT, "tests", "data", "embed_sentences.txt"))
    ap.add_argument("--out", default=os.path.join(ROOT, "tests", "data", "minilm_reference.txt"))
    args = ap.parse_args()

    import torch
    from sentence_transformers import SentenceTransformer

    if not os.path.isfile(os.path.join(args.model, "model.safetensors")):
        sys.exit(f"error: {args.model}/model.safetensors is missing: run .ci/setup first")
    torch.set_num_threads(2)
    model = SentenceTransformer(args.model, device="cpu")
    if model.max_seq_length != 256:
        sys.exit(f"error: max_seq_length is {model.max_seq_length}, expected 256")
    sentences = read_sentences(args.sentences)
    if len(sentences) < 50:
        sys.exit(f"error: {len(sentences)} sentences, want >= 50")
    tok = model.tokenizer
    ids = [tok(s, truncation=True, max_length=model.max_seq_length)["input_ids"] for s in sentences]
    emb = model.encode(sentences, batch_size=8, convert_to_numpy=True, normalize_embeddings=False)
    lens = [len(i) for i in ids]
    print(f"{len(sentences)} sentences, tokens min {min(lens)} max {max(lens)}; "
          f"{sum(1 for n in lens if n >= 240)} with >= 240 tokens", file=sys.stderr)
    if max(lens) != 256 or not any(240 <= n < 256 for n in lens):
        sys.exit("error: the sentences must include one truncated to 256 tokens and one near 256")
    norms = (emb ** 2).sum(axis=1) ** 0.5
    if abs(norms - 1).max() > 1e-4:
        sys.exit("error: embeddings are not normalised: is the Normalize module missing?")
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("# all-MiniLM-L6-v2 sentence embeddings by sentence-transformers (f32, CPU), for embed --check\n")
        f.write(f"# sentences: {os.path.relpath(args.sentences, ROOT)}; regenerate with tools/make_embedding_reference.py\n")
        f.write(f"model all-MiniLM-L6-v2 dim {emb.shape[1]} sentences {len(sentences)} max_seq_length 256\n")
        for i, (t, e) in enumerate(zip(ids, emb)):
            f.write(f"tokens {i} " + " ".join(str(x) for x in t) + "\n")
            f.write(f"emb {i} " + " ".join(f"{float(v):.7g}" for v in e) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
