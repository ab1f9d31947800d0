"""``data.copy_share`` / ``copy_max_span`` / ``copy_vocab`` from a run config through
``build_pretrain_data`` (the path ``megatron-retro pretrain`` takes): the training set carries the
configured copy samples, the held-out set stays plain corpus, and share 0 leaves the data alone."""
from __future__ import annotations

import numpy as np

from megatron_retro.config import load_config
from megatron_retro.training.data_setup import build_pretrain_data, prepare_gpt_datasets

CONFIG = "configs/models/gpt-tiny.yaml"


def _cfg(data_dir, *extra):
    return load_config(CONFIG, [f"data.dir={data_dir}", "data.num_entities=60", "data.vocab_size=512",
                                "data.seed=3", "train.steps=4", "train.micro_batch_size=8",
                                "train.eval_iters=2", *extra])


def _is_copy(tokens: np.ndarray, eod: int) -> bool:
    """Starts with eod and every complete segment between eods is one span said 2-4 times."""
    starts = np.flatnonzero(tokens == eod)
    if len(starts) < 2 or starts[0] != 0:
        return False
    for a, b in zip(starts[:-1], starts[1:]):
        seg = tokens[a + 1:b]
        if not any(len(seg) % r == 0 and np.array_equal(seg, np.tile(seg[:len(seg) // r], r)) for r in (2, 3, 4)):
            return False
    return True


def test_copy_share_reaches_the_pretraining_data(small_data_dir):
    plain = build_pretrain_data(_cfg(small_data_dir))
    mixed = build_pretrain_data(_cfg(small_data_dir, "data.copy_share=0.25", "data.copy_max_span=6",
                                     "data.copy_vocab=20"))
    eod = prepare_gpt_datasets(_cfg(small_data_dir))[1].eod
    samples = [mixed.train[i]["tokens"].numpy() for i in range(16)]
    plain_samples = [plain.train[i]["tokens"].numpy() for i in range(16)]
    kinds = [_is_copy(t, eod) for t in samples]
    assert sum(kinds[:8]) == 2 and sum(kinds[8:]) == 2, kinds        # 0.25 of every batch of 8
    for t, copy in zip(samples, kinds):
        if copy:
            body = t[t != eod]
            assert len(np.unique(body)) <= 20                          # copy_vocab
            spans = np.diff(np.flatnonzero(t == eod)) - 1
            assert all(8 <= s <= 6 * 4 for s in spans), spans          # span <= copy_max_span, said 2-4 times
    corpus = [t for t, copy in zip(samples, kinds) if not copy]
    assert all(np.array_equal(a, b) for a, b in zip(corpus, plain_samples))   # corpus samples in order
    assert not any(_is_copy(t, eod) for t in plain_samples)
    for i in range(len(plain.valid)):                                  # held-out: plain corpus
        assert np.array_equal(mixed.valid[i]["tokens"].numpy(), plain.valid[i]["tokens"].numpy())
