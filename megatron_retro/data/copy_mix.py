"""Synthetic copy sequences mixed into the pretraining samples (``data.copy_share``).

A tiny model pretrained on a few million tokens of natural text learns its n-gram statistics
long before it learns to copy from its context (no induction heads), so it cannot read an answer
out of a passage (BENCHMARKS.md, "Study (issue 13)").  Random token sequences in which a span is
repeated can only be predicted by copying, so a share of them in every batch teaches that early.

Sample ``i`` of the mixed stream is a copy sample when ``floor((i+1)*share) > floor(i*share)``:
exactly ``share * n`` of any ``n`` consecutive samples (to within one), so every global batch of
``G`` samples holds ``round(share * G)`` of them (exactly when ``share * G`` is an integer), and
the corpus samples keep their order (corpus sample ``i - floor(i*share)``; none is skipped).

A copy sample (``s`` = seq_length) is ``s + 1`` tokens of segments ``[eod] x x .. x`` (a span
``x`` of 4..``data.copy_max_span`` random ordinary pieces, said 2-4 times), the last
segment cut at the sample's end; ids are drawn from the tokenizer's ordinary pieces (no special,
byte-fallback or newline pieces; with ``data.copy_vocab=N`` the first N of them by id, which a
from-scratch model learns to copy far sooner: benchmarks/copy_task_plateau.py ``--ids``),
deterministically from ``(seed, i)``.  Loss on every token, as
for the corpus samples.  Held-out samples stay plain corpus, so validation losses compare
with a run without the mix.
"""
from __future__ import annotations

import math

import numpy as np
import torch


def is_copy_sample(i: int, share: float) -> bool:
    """Whether sample ``i`` of the mixed stream is a synthetic copy sample."""
    return math.floor((i + 1) * share) > math.floor(i * share)


def ordinary_ids(tokenizer) -> np.ndarray:
    """int64[n]: ids of the tokenizer's ordinary pieces (not special, ``<...>`` or a newline)."""
    special = {tokenizer.pad, tokenizer.unk, tokenizer.bos, tokenizer.eos, tokenizer.eod}
    keep = []
    for t in range(tokenizer.vocab_size):
        piece = tokenizer.piece(t)
        if t in special or "\n" in piece or (piece.startswith("<") and piece.endswith(">")):
            continue
        keep.append(t)
    return np.asarray(keep, dtype=np.int64)


def copy_tokens(rng: np.random.Generator, ids: np.ndarray, n: int, eod: int, min_span: int, max_span: int
                ) -> np.ndarray:
    """int64[n]: segments ``[eod] x*r`` (r in 2..4, len(x) in min_span..max_span), cut at n."""
    out: list[int] = []
    while len(out) < n:
        span = ids[rng.integers(0, len(ids), size=int(rng.integers(min_span, max_span + 1)))]
        out.append(eod)
        out.extend(np.tile(span, int(rng.integers(2, 5))).tolist())
    return np.asarray(out[:n], dtype=np.int64)


class CopyMixDataset:
    """Map-style dataset: ``base``'s items with a share of synthetic copy samples mixed in."""

    def __init__(self, base, tokenizer, seq_length: int, share: float, seed: int,
                 min_span: int = 4, max_span: int = 48, vocab: int = 0):
        self.base, self.share, self.seed = base, share, seed
        self.s, self.eod = seq_length, tokenizer.eod
        self.min_span, self.max_span = min_span, max_span
        self.ids = ordinary_ids(tokenizer)
        if vocab:
            self.ids = self.ids[:vocab]

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict:
        if not is_copy_sample(i, self.share):
            return self.base[i - math.floor(i * self.share)]
        rng = np.random.default_rng([self.seed, i])
        seq = torch.from_numpy(copy_tokens(rng, self.ids, self.s + 1, self.eod, self.min_span, self.max_span))
        return {"tokens": seq[:-1].clone(), "labels": seq[1:].clone(),       # int64[s] each
                "loss_mask": torch.ones(self.s, dtype=torch.float32),        # float32[s]
                "position_ids": torch.arange(self.s, dtype=torch.int64)}     # int64[s]
