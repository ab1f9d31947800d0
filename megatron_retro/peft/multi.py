"""Several named adapters of one method on one base model, switchable in place.

The method is applied once (same targets, same shapes); each named adapter is a full,
layout-independent state dict (:func:`megatron_retro.peft.api.peft_state_dict` format, or an
adapter checkpoint directory), and :meth:`AdapterBank.activate` copies its slices into the
injected parameters.  Switching costs one copy of the adapter parameters, no rebuild.
"""
from __future__ import annotations

from typing import Optional

import torch

from megatron_retro.errors import UserError
from megatron_retro.peft.api import config_to_dict, load_peft_state_dict, peft_state_dict


class AdapterBank:
    def __init__(self, chunks: list, peft_cfg):
        self.chunks, self.peft_cfg = chunks, peft_cfg
        self.adapters: dict[str, dict[str, torch.Tensor]] = {}
        self.active: Optional[str] = None

    def add(self, name: str, state: Optional[dict] = None) -> None:
        """Register ``state`` (default: the model's current adapter values, collective) as ``name``."""
        self.adapters[name] = {k: v.clone() for k, v in (state if state is not None
                                                          else peft_state_dict(self.chunks)).items()}

    def add_from_dir(self, name: str, directory: str) -> None:
        from megatron_retro.peft.checkpoint import read_adapter_config, read_adapter_tensors

        saved = read_adapter_config(directory)["peft"]
        if saved != config_to_dict(self.peft_cfg):
            raise UserError(f"{directory}: adapter {name!r} was trained with {saved}, the bank holds "
                            f"{config_to_dict(self.peft_cfg)}")
        self.adapters[name] = read_adapter_tensors(directory)

    def activate(self, name: str) -> None:
        """Collective: load adapter ``name`` into the model."""
        if name not in self.adapters:
            raise UserError(f"adapter {name!r}: not in the bank (have: {', '.join(sorted(self.adapters))})")
        load_peft_state_dict(self.chunks, self.adapters[name], source=f"adapter {name!r}")
        self.active = name
