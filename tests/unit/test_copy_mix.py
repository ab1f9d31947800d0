"""data.copy_share: the share of synthetic copy samples per batch, their repetition structure,
their vocabulary, determinism, and the config's validation."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from megatron_retro.data.copy_mix import CopyMixDataset, is_copy_sample


class FakeTokenizer:
    pad, unk, bos, eos, eod = 0, 1, 2, 3, 3
    vocab_size = 60

    def piece(self, t: int) -> str:
        return f"<0x{t:02X}>" if 4 <= t < 10 else ("\n" if t == 10 else f"w{t}")


class Corpus:
    """Base samples whose tokens are all the sample's index (so the mix's mapping is visible)."""

    def __len__(self) -> int:
        return 400

    def __getitem__(self, j: int) -> dict:
        return {"tokens": torch.full((32,), 1000 + j), "labels": torch.full((32,), 1000 + j),
                "loss_mask": torch.ones(32), "position_ids": torch.arange(32)}


def segments_ok(seq: np.ndarray, eod: int, max_span: int) -> bool:
    """Every complete segment [eod] x*r has 4 <= len(x) <= max_span and 2 <= r <= 4."""
    starts = np.flatnonzero(seq == eod)
    if len(starts) < 2 or starts[0] != 0:
        return False
    for a, b in zip(starts[:-1], starts[1:]):   # the last segment may be cut at the sample's end
        seg = seq[a + 1:b]
        if not any(len(seg) == span * r and np.array_equal(seg, np.tile(seg[:span], r))
                   for r in (2, 3, 4) for span in range(4, max_span + 1)):
            return False
    return True


def test_copy_mix_share_order_and_structure():
    ds = CopyMixDataset(Corpus(), FakeTokenizer(), seq_length=255, share=0.25, seed=7, max_span=12)
    kinds = [is_copy_sample(i, 0.25) for i in range(len(ds))]
    for step in range(len(ds) // 8):   # every batch of 8 holds exactly 2 copy samples
        assert sum(kinds[step * 8:(step + 1) * 8]) == 2
    corpus = [int(ds[i]["tokens"][0]) - 1000 for i in range(40) if not kinds[i]]
    assert corpus == list(range(len(corpus)))   # corpus samples in order, none skipped
    copies = [i for i in range(40) if kinds[i]]
    for i in copies:
        item = ds[i]
        tokens, labels = item["tokens"].numpy(), item["labels"].numpy()
        assert tokens.shape == (255,) and item["loss_mask"].sum() == 255
        assert np.array_equal(tokens[1:], labels[:-1])
        seq = np.concatenate([tokens, labels[-1:]])
        assert segments_ok(seq, 3, 12), seq
        body = seq[seq != 3]
        assert body.min() >= 11   # ordinary pieces only: no special, byte or newline ids
    assert torch.equal(ds[copies[0]]["tokens"], ds[copies[0]]["tokens"])   # deterministic per (seed, i)
    other = CopyMixDataset(Corpus(), FakeTokenizer(), 255, 0.25, seed=8, max_span=12)
    assert not torch.equal(ds[copies[0]]["tokens"], other[copies[0]]["tokens"])
    small = CopyMixDataset(Corpus(), FakeTokenizer(), 255, 0.25, seed=7, max_span=12, vocab=20)
    assert set(small[copies[0]]["tokens"].tolist()) <= {3} | set(range(11, 31))   # the first 20 ordinary ids


def test_copy_share_validated():
    from megatron_retro.config import ConfigError, load_config

    with pytest.raises(ConfigError, match=r"data\.copy_share=1\.5: must be in \[0, 1\)"):
        load_config("configs/models/gpt-tiny.yaml", ["data.copy_share=1.5"])
    assert load_config("configs/models/gpt-tiny.yaml", ["data.copy_share=0.25"]).data.copy_share == 0.25
