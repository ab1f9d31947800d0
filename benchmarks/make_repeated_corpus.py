"""A copy-rich variant of a prepared bundled corpus: in a share of the documents every sentence is
said twice ("S1 S1 S2 S2 ..."), so about a third of the training tokens are predictable only by
copying from a few tokens back — the pretraining-side lever of issue 13's recipe search
(BENCHMARKS.md "Study"). Same documents in the same order (the train/valid split is by document
index), the corpus's own tokenizer; writes ``OUT/text_document.{bin,idx}`` for ``data.source=indexed``:

    python benchmarks/make_repeated_corpus.py data/bundled runs/repeated50 --share 0.5
    megatron-retro pretrain --config configs/models/gpt-tiny.yaml --steps 300 data.source=indexed \\
        data.prefix=runs/repeated50/text_document data.tokenizer=data/bundled/tokenizer.model
    python benchmarks/probe_copying.py --data-dir data/bundled runs/gpt-tiny/checkpoints/iter_0000300
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re


def doubled(text: str) -> str:
    """Every sentence of ``text`` followed by itself."""
    return " ".join(f"{s} {s}" for s in re.split(r"(?<=[.!?])\s+", text))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data_dir", help="a prepared bundled data directory (documents.jsonl, tokenizer.model)")
    ap.add_argument("out", help="output directory")
    ap.add_argument("--share", type=float, default=0.5, help="share of documents whose sentences are doubled")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    from megatron_retro.data.indexed import write_indexed
    from megatron_retro.data.tokenizer import load_tokenizer

    rng = random.Random(args.seed)
    with open(os.path.join(args.data_dir, "documents.jsonl")) as f:
        texts = [json.loads(line)["text"] for line in f]
    texts = [doubled(t) if rng.random() < args.share else t for t in texts]
    os.makedirs(args.out, exist_ok=True)
    tok = load_tokenizer(os.path.join(args.data_dir, "tokenizer.model"))
    docs, tokens = write_indexed(texts, tok, os.path.join(args.out, "text_document"), progress=False)
    print(json.dumps({"documents": docs, "tokens": tokens, "prefix": os.path.join(args.out, "text_document")}))


if __name__ == "__main__":
    main()
