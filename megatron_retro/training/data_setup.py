"""Pretraining data for a run: the bundled (or a user's indexed) corpus as megatron GPT datasets.

Rank 0 prepares the data directory first (generation, tokenizer, indexed dataset), the other
ranks wait at a barrier and then reuse it, so concurrent ranks never race on the same files.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch.distributed as dist

from megatron_retro.config import RunConfig


@dataclass
class PretrainData:
    train: object          # map-style dataset of {tokens, labels, loss_mask, position_ids}
    valid: object          # held-out documents, same item format
    vocab_size: int        # the tokenizer's vocabulary (padded for TP by the model builder)
    feed: Optional[object] = None  # gives each step's micro-batches instead (RETRO: neighbour_feed.RetroFeed)


def rank0_first(fn):
    if dist.is_initialized() and dist.get_rank() != 0:
        dist.barrier()
        return fn()
    out = fn()
    if dist.is_initialized():
        dist.barrier()
    return out


def prepare_gpt_datasets(cfg: RunConfig, dp: int = 1):
    """(prepared data bundle, tokenizer, train dataset, held-out dataset) of a run (GPT and RETRO)."""
    from megatron_retro.data.indexed import build_gpt_datasets
    from megatron_retro.data.prepare import resolve_data
    from megatron_retro.data.tokenizer import load_tokenizer
    from megatron_retro.errors import UserError

    data = rank0_first(lambda: resolve_data(cfg.data))
    tokenizer = load_tokenizer(data.tokenizer)
    train = cfg.train
    global_batch = train.global_batch_size or train.micro_batch_size * dp
    num_samples = (train.steps * global_batch, train.eval_iters * train.micro_batch_size * dp, None)
    train_ds, valid_ds, _ = build_gpt_datasets(data.prefix, tokenizer, cfg.model.seq_length, cfg.data.split,
                                               num_samples=num_samples, seed=cfg.data.seed)
    if valid_ds is None:
        raise UserError(f"data.split={cfg.data.split!r}: the valid weight is 0; held-out loss needs documents")
    return data, tokenizer, train_ds, valid_ds


def build_pretrain_data(cfg: RunConfig, dp: int = 1) -> PretrainData:
    """GPT pretraining data; ``data.copy_share`` mixes synthetic copy samples into the training ones."""
    _, tokenizer, train_ds, valid_ds = prepare_gpt_datasets(cfg, dp)
    if cfg.data.copy_share > 0:
        from megatron_retro.data.copy_mix import CopyMixDataset

        train_ds = CopyMixDataset(train_ds, tokenizer, cfg.model.seq_length, cfg.data.copy_share,
                                  cfg.data.seed, max_span=cfg.data.copy_max_span, vocab=cfg.data.copy_vocab)
    return PretrainData(train=train_ds, valid=valid_ds, vocab_size=tokenizer.vocab_size)
