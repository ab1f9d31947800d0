"""The pieces every config section is made of: :class:`ConfigError`, the ``cfg`` field with a help
string, ``require`` (one constraint, one line) and ``note`` (a value adjusted to fit another)."""
from __future__ import annotations

import os
from dataclasses import field
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing, malformed or violates a constraint."""


def note(message: str) -> None:
    """Tell the user that a value was adjusted to fit another one (e.g. warm-up clamped to a short
    run): one ``megatron-retro: note:`` line on stderr, from rank 0 only."""
    import sys

    if os.environ.get("RANK", "0") == "0":
        print(f"megatron-retro: note: {message}", file=sys.stderr)


def cfg(default: Any, help: str, **kwargs: Any) -> Any:
    """A dataclass field with a help string (listed by ``megatron-retro config --fields``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help}, **kwargs)
    return field(default=default, metadata={"help": help}, **kwargs)


def require(ok: bool, message: str) -> None:
    """Raise :class:`ConfigError` with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)
