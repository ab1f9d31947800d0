"""Smeared keys (Olsson et al. 2022, "In-context Learning and Induction Heads"): each key/value
group's key at position t becomes ``sigmoid(a_g)·k_t + (1 - sigmoid(a_g))·k_{t-1}`` (k_{-1} = 0),
with one learned logit ``a_g`` per group.

A key then carries the token before it, so a single attention layer can find "the position after
an earlier occurrence of the current token" (an induction head) by content; without it that needs
a previous-token head in one layer feeding a second.  Used by
:class:`~megatron_retro.models.sdpa_attention.SDPAttention` when ``model.smear_keys`` is set.
Notation: sk key positions (the whole prefix from position 0), b micro-batch, ng key/value groups
on this TP rank, hn head width.
"""
from __future__ import annotations

import torch


def smear_keys(key: torch.Tensor, logit: torch.Tensor) -> torch.Tensor:
    """key [sk, b, ng, hn], logit [ng] -> smeared key [sk, b, ng, hn]."""
    w = torch.sigmoid(logit).to(key.dtype)[:, None]            # [ng, 1]
    prev = torch.nn.functional.pad(key, (0, 0, 0, 0, 0, 0, 1, 0))[:-1]   # [sk, b, ng, hn]: k_{t-1}, 0 at t=0
    return w * key + (1 - w) * prev
