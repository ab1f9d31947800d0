"""The one reader of PEFT option files (``configs/peft/*.yaml``): a mapping of method options,
and the checks every method's config shares (``check_count``, ``check_positive``).

``read_peft_yaml(path, source)`` is used by ``finetune --peft-config`` and by experiment grids
(``peft_configs``); ``source`` names where the path came from, so both say the same thing about a
missing file, a YAML error (file:line, from config.load_yaml_file) or a file that is not a mapping.
"""
from __future__ import annotations

import os

from megatron_retro.config import load_yaml_file
from megatron_retro.errors import UserError


def read_peft_yaml(path: str, source: str, hint: str = "") -> dict:
    """The options in ``path``; ``source`` (e.g. ``--peft-config``) and ``hint`` go into the missing-file error."""
    if not os.path.isfile(path):
        raise UserError(f"{source} {path}: no such file{hint}")
    data = load_yaml_file(path, "PEFT config") or {}
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a mapping of PEFT options")
    return data


def check_count(cfg, name: str, minimum: int = 1) -> None:
    """``peft.<name>`` must be an integer >= ``minimum``: one line naming the field otherwise."""
    value = getattr(cfg, name)
    if not isinstance(value, int) or value < minimum:
        raise UserError(f"peft.{name}={value}: must be an integer >= {minimum}")


def check_positive(cfg, name: str) -> None:
    """``peft.<name>`` must be > 0."""
    value = getattr(cfg, name)
    if value <= 0:
        raise UserError(f"peft.{name}={value}: must be > 0")
