"""``train.lr_mult``: per-parameter learning-rate multipliers, as megatron-core optimizer overrides.

Each entry ``SUBSTR=M`` multiplies the peak and final learning rate (``train.lr``, ``train.min_lr``)
of every trainable parameter whose name (as megatron-core names it, e.g.
``module.decoder.layers.1.self_attention.linear_proj.weight``) contains ``SUBSTR``; when several
entries match one parameter the last one wins, so ``[linear_proj=0.1, layers.0.=1]`` slows the
attention output projections of every layer but the first.  The multipliers reach the optimizer as
``get_megatron_optimizer(..., config_overrides={ParamKey(name=...): {"max_lr", "min_lr"}})`` on top
of megatron's standard overrides (no weight decay on biases and norms), so the LR scheduler decays
each group between its own bounds.
"""
from __future__ import annotations

from typing import Optional

import torch.distributed as dist

from megatron_retro.config.train import lr_mult_of, parse_lr_mult
from megatron_retro.errors import UserError


def lr_mult_overrides(specs: list[str], chunks: list, opt_config) -> Optional[dict]:
    """megatron ``config_overrides`` for ``train.lr_mult`` over the (DDP-wrapped) ``chunks``, or None
    when no multiplier is set.  Raises UserError naming a pattern that matches no trainable parameter
    on any rank."""
    if not specs:
        return None
    from megatron.core.optimizer import ParamKey, get_standard_config_overrides

    rules = parse_lr_mult(specs)
    matched: set[str] = set()
    names_by_mult: dict[float, list[str]] = {}
    for chunk in chunks:
        for name, param in chunk.named_parameters():
            if not param.requires_grad:
                continue
            matched.update(pattern for pattern, _ in rules if pattern in name)
            mult = lr_mult_of(name, rules)                        # last match wins
            if mult is not None and mult != 1.0:
                names_by_mult.setdefault(mult, []).append(name)
    if dist.is_initialized() and dist.get_world_size() > 1:      # pipeline stages hold different layers
        seen: list = [None] * dist.get_world_size()
        dist.all_gather_object(seen, sorted(matched))
        matched = set().union(*map(set, seen))
    for pattern, _ in rules:
        if pattern not in matched:
            raise UserError(f"train.lr_mult: pattern {pattern!r} matches no trainable parameter "
                            f"(a substring of a name such as 'decoder.layers.0.self_attention.linear_proj.weight')")
    overrides = dict(get_standard_config_overrides(opt_config))
    for mult, names in sorted(names_by_mult.items()):
        overrides[ParamKey(name=tuple(names))] = {"max_lr": opt_config.lr * mult,
                                                  "min_lr": opt_config.min_lr * mult}
    return overrides
