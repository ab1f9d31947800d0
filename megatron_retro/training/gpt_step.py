"""The GPT forward step handed to megatron's pipeline schedules, and its per-token loss.

Losses are summed over tokens and divided once by the total number of loss tokens of the
global batch (``calculate_per_token_loss``), so TP / PP / DP splits give the same gradients.
"""
from __future__ import annotations

from functools import partial

import torch


def masked_token_loss(loss_mask: torch.Tensor, output: torch.Tensor):
    """output: per-token losses [mbs, ns]; returns (sum, token count, {'lm loss': [sum, count]})."""
    losses = output.float().reshape(-1)
    mask = loss_mask.float().reshape(-1)
    loss_sum = torch.sum(losses * mask)
    num_tokens = mask.sum().to(torch.int)
    report = torch.stack([loss_sum.detach(), mask.sum().detach()])
    return loss_sum, num_tokens, {"lm loss": report}


def gpt_forward_step(data_iterator, model):
    """Read one micro-batch and run the model; the schedule calls the returned loss function."""
    batch = next(data_iterator)
    device = next(model.parameters()).device
    tokens = batch["tokens"].to(device)
    labels = batch["labels"].to(device)
    position_ids = batch["position_ids"].to(device)
    loss_mask = batch["loss_mask"].to(device)
    # [mbs, ns] per-token losses; the model takes logits only where loss_mask != 0
    output = model(tokens, position_ids, None, labels=labels, loss_mask=loss_mask)
    return output, partial(masked_token_loss, loss_mask)
