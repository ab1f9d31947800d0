"""RETRO forward step for megatron's pipeline schedules, and an Engine declaring the payload shape.

A RETRO micro-batch is a GPT micro-batch plus ``neighbours`` int64 [mbs, l, k, r] (l = ns / m).
Every stage's forward step reads the same micro-batch; the first stage embeds the neighbours and
later stages receive them (embedded, or encoded) inside the inter-stage payload, whose declared
length ``payload_length(ns)`` is what :class:`RetroEngine` hands the schedule.
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

    def payload_length(self, first: dict) -> int:
        """The RETRO payload's length for ns tokens and neighbours [mbs, l, k, r] (checked against the config)."""
        from megatron_retro.models.retro.payload import payload_length

        ns = first["tokens"].shape[1]
        _, l, k, r = first["neighbours"].shape
        retro = self.cfg.retro
        if (k, r) != (retro.num_neighbours, retro.neighbour_length) or l * retro.chunk_length != ns:
            raise ValueError(f"neighbours: shape {tuple(first['neighbours'].shape)} does not match "
                             f"ns={ns}, retro.chunk_length={retro.chunk_length}, "
                             f"k={retro.num_neighbours}, r={retro.neighbour_length}")
        return payload_length(ns, retro.chunk_length, k, r)
