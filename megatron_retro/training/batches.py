"""Deterministic micro-batches: which samples each data-parallel rank reads at each step.

Step ``s`` consumes the samples ``[s*G, (s+1)*G)`` of a (shuffled-by-the-dataset) sample stream
(G = global batch).  Micro-batch ``j`` of DP rank ``r`` holds the ``mbs`` samples starting at
``s*G + (j*dp + r)*mbs``.  The global batch is therefore the same set of samples whatever the DP
size, and a resumed run reads exactly what the uninterrupted run would have.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import torch

BATCH_KEYS = ("tokens", "labels", "loss_mask", "position_ids")


def collate(samples: Sequence[dict]) -> dict:
    """Stack dataset items (numpy or torch) into [mbs, ns] tensors."""
    out = {}
    for key in samples[0]:
        values = [torch.as_tensor(np.asarray(s[key])) for s in samples]
        out[key] = torch.stack(values)
    return out


def step_microbatches(dataset, step: int, global_batch: int, micro_batch: int, dp: int, dp_rank: int,
                      ) -> Iterator[dict]:
    """The micro-batches of one optimizer step for one DP rank, in order."""
    n = len(dataset)
    num_micro = global_batch // (micro_batch * dp)
    base = step * global_batch
    for j in range(num_micro):
        start = base + (j * dp + dp_rank) * micro_batch
        yield collate([dataset[(start + i) % n] for i in range(micro_batch)])


def eval_microbatches(dataset, num_micro: int, micro_batch: int, dp: int, dp_rank: int) -> Iterator[dict]:
    """A fixed held-out set: the first num_micro*mbs*dp samples, split over DP ranks."""
    n = len(dataset)
    for j in range(num_micro):
        start = (j * dp + dp_rank) * micro_batch
        yield collate([dataset[(start + i) % n] for i in range(micro_batch)])
