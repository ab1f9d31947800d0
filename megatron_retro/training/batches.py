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


def step_sample_indices(n: int, step: int, global_batch: int, micro_batch: int, dp: int, dp_rank: int
                        ) -> list[list[int]]:
    """Sample indices (into a data set of ``n``) of each micro-batch of one step for one DP rank."""
    num_micro = global_batch // (micro_batch * dp)
    base = step * global_batch
    return [[(base + (j * dp + dp_rank) * micro_batch + i) % n for i in range(micro_batch)]
            for j in range(num_micro)]


def eval_sample_indices(n: int, num_micro: int, micro_batch: int, dp: int, dp_rank: int) -> list[list[int]]:
    """A fixed held-out set: the first num_micro*mbs*dp samples, split over DP ranks."""
    return [[((j * dp + dp_rank) * micro_batch + i) % n for i in range(micro_batch)] for j in range(num_micro)]


def step_microbatches(dataset, step: int, global_batch: int, micro_batch: int, dp: int, dp_rank: int,
                      ) -> Iterator[dict]:
    """The micro-batches of one optimizer step for one DP rank, in order."""
    for idx in step_sample_indices(len(dataset), step, global_batch, micro_batch, dp, dp_rank):
        yield collate([dataset[i] for i in idx])


def eval_microbatches(dataset, num_micro: int, micro_batch: int, dp: int, dp_rank: int) -> Iterator[dict]:
    """A fixed held-out set: the first num_micro*mbs*dp samples, split over DP ranks."""
    for idx in eval_sample_indices(len(dataset), num_micro, micro_batch, dp, dp_rank):
        yield collate([dataset[i] for i in idx])
