"""The registry of PEFT methods: one module per method registers a name, a config class and an
apply function; freezing and adapter-only checkpoints work by the method's parameter prefix.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from megatron_retro.errors import UserError


@dataclass(frozen=True)
class PeftMethod:
    name: str                 # CLI / config name, e.g. "lora"
    prefix: str               # every injected parameter's own name starts with it, e.g. "lora_"
    config_cls: type          # the method's config dataclass
    apply: Callable           # apply(chunks, cfg, tf_config) -> list of injected modules
    count: Callable           # count(cfg, model_cfg, retro_cfg=None) -> trainable parameter count (global)
    merge: Optional[Callable] = None   # merge(chunks) folds the method into the base weights


_METHODS: dict[str, PeftMethod] = {}
_BUILTIN = ("lora", "qlora", "adapter", "parallel_adapter", "ptuning", "prompt", "prefix", "ia3")
_MODULES = {"lora": "lora", "qlora": "qlora", "adapter": "adapters", "parallel_adapter": "adapters",
            "ptuning": "ptuning", "prompt": "ptuning", "prefix": "prefix", "ia3": "ia3"}


def register_peft_method(method: PeftMethod) -> PeftMethod:
    if method.name in _METHODS and _METHODS[method.name] is not method:
        raise ValueError(f"PEFT method {method.name!r} registered twice")
    _METHODS[method.name] = method
    return method


def get_method(name: str) -> PeftMethod:
    """The registered method ``name`` (importing its module on first use)."""
    if name not in _METHODS and name in _MODULES:
        import importlib

        importlib.import_module(f"megatron_retro.peft.{_MODULES[name]}")
    if name not in _METHODS:
        raise UserError(f"peft.method={name!r}: unknown PEFT method (known: {', '.join(method_names())})")
    return _METHODS[name]


def method_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_METHODS))


# Prefixes of the built-in methods (QLoRA reuses lora_), plus those of registered extensions.
_PREFIXES = ("lora_", "adapter_", "ptuning_", "prompt_", "prefix_", "ia3_")


def all_prefixes() -> tuple[str, ...]:
    return tuple(sorted(set(_PREFIXES) | {m.prefix for m in _METHODS.values()}))


def is_peft_param_name(name: str, prefixes: Optional[tuple[str, ...]] = None) -> bool:
    """True when a segment of the dotted name starts with a PEFT prefix (lora_, adapter_, ...)."""
    prefixes = prefixes or all_prefixes()
    return any(part.startswith(prefixes) for part in name.split("."))
