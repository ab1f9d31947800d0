"""RETRO forward step for megatron's pipeline schedules, and an Engine declaring the payload shape.

A RETRO micro-batch is a GPT micro-batch plus ``neighbours`` int64 [mbs, l, k, r] (l = ns / m).
Every stage's forward step reads the same micro-batch; the first stage embeds the neighbours and
later stages receive them (embedded, or encoded) inside the inter-stage payload up to the last
retrieval layer; :class:`RetroEngine` hands the schedule each stage's payload shape
(``payload.schedule_shape_kwargs``).
"""
from __future__ import annotations

from functools import partial

from megatron_retro.training.engine import Engine
from megatron_retro.training.gpt_step import masked_token_loss


def retro_forward_step(data_iterator, model):
    """Read one micro-batch and run the RETRO model; the schedule calls the returned loss function."""
    batch = next(data_iterator)
    device = next(model.parameters()).device
    loss_mask = batch["loss_mask"].to(device)
    output = model(batch["tokens"].to(device), batch["position_ids"].to(device), None,
                   labels=batch["labels"].to(device), neighbours=batch["neighbours"].to(device),
                   loss_mask=loss_mask)   # logits only where loss_mask != 0
    return output, partial(masked_token_loss, loss_mask)


class RetroEngine(Engine):
    """Engine whose pipeline p2p tensors are RETRO payloads (hidden states + neighbour context)."""

    def __init__(self, cfg, chunks, forward_step=retro_forward_step):
        super().__init__(cfg, chunks, forward_step)

    def schedule_shape(self, first: dict) -> dict:
        """Each stage's payload shape for megatron's schedule (``payload.schedule_shape_kwargs``):
        the hidden states plus the neighbour context up to the last retrieval layer, checked
        against the config first."""
        from megatron_retro.models.retro.payload import schedule_shape_kwargs

        mbs, ns = first["tokens"].shape
        _, l, k, r = first["neighbours"].shape
        retro = self.cfg.retro
        if (k, r) != (retro.num_neighbours, retro.neighbour_length) or l * retro.chunk_length != ns:
            raise ValueError(f"neighbours: shape {tuple(first['neighbours'].shape)} does not match "
                             f"ns={ns}, retro.chunk_length={retro.chunk_length}, "
                             f"k={retro.num_neighbours}, r={retro.neighbour_length}")
        return schedule_shape_kwargs(self.chunks, ns, mbs)
