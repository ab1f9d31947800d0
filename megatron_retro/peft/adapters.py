"""Bottleneck adapters (Houlsby et al. 2019): serial after attention and MLP, or parallel to them.

    serial:   out = f(x) + adapter(f(x))          parallel:  out = f(x) + adapter(x)
    adapter(h) = W_up · act(W_down · h),  W_down [r, d], W_up [d, r] (zero-initialised: identity)

TP-sharded with megatron's own layers: W_down is a ColumnParallelLinear (bottleneck split over
TP; under SP it all-gathers the sequence), W_up a RowParallelLinear (input split, output summed
by its all-reduce / reduce-scattered under SP).  So each adapter costs the collectives of one
column/row pair (unlike LoRA, a bottleneck with a non-linearity cannot join the base layer's
reduction), and megatron computes complete gradients for both factors.  fp32 parameters.

Adapters live on the adapted sub-layer (``self_attention.adapter_attn``, ``mlp.adapter_mlp``;
RETRO's ``cross_attention`` is selected by the same patterns) and run from a forward hook.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import torch

from megatron_retro.errors import UserError
from megatron_retro.peft.options import check_count
from megatron_retro.peft.registry import PeftMethod, register_peft_method
from megatron_retro.peft.targets import find_modules

ACTIVATIONS = {"gelu": torch.nn.functional.gelu, "relu": torch.nn.functional.relu,
               "silu": torch.nn.functional.silu}


@dataclass
class AdapterConfig:
    """Houlsby serial adapters after the targeted sub-layers."""

    method: ClassVar[str] = "adapter"
    dim: int = field(default=32, metadata={"help": "bottleneck width r"})
    activation: str = field(default="gelu", metadata={"help": "gelu | relu | silu"})
    targets: list = field(default_factory=lambda: ["self_attention", "mlp"], metadata={
        "help": "sub-layers to adapt (module names / path globs; RETRO: add 'cross_attention')"})
    exclude: list = field(default_factory=list, metadata={"help": "path globs to leave out"})

    def __post_init__(self) -> None:
        check_count(self, "dim")
        if self.activation not in ACTIVATIONS:
            raise UserError(f"peft.activation={self.activation!r}: must be one of {', '.join(ACTIVATIONS)}")
        if not self.targets:
            raise UserError("peft.targets: must name at least one sub-layer")


@dataclass
class ParallelAdapterConfig(AdapterConfig):
    """Adapters parallel to the targeted sub-layers (He et al. 2022)."""

    method: ClassVar[str] = "parallel_adapter"


_ADAPTER_CLASS = None


def bottleneck_adapter_class() -> type:
    """The adapter module class, defined on first use: it derives from megatron-core's
    ``MegatronModule`` (so adapters take part in sharded checkpoints), whose import costs seconds
    that `megatron-retro peft methods` and ``--help`` do not need to pay."""
    global _ADAPTER_CLASS
    if _ADAPTER_CLASS is None:
        from megatron.core.transformer.module import MegatronModule

        class BottleneckAdapter(MegatronModule):
            """[s(/tp), b, d] -> [s(/tp), b, d]: W_up · act(W_down · h), TP-sharded on the bottleneck."""

            def __init__(self, tf_config, dim: int, activation: str):
                super().__init__(config=tf_config)
                from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear

                d = tf_config.hidden_size
                self.linear_in = ColumnParallelLinear(d, dim, config=tf_config, init_method=tf_config.init_method,
                                                      bias=False, gather_output=False, skip_bias_add=True)
                self.linear_out = RowParallelLinear(dim, d, config=tf_config, init_method=torch.nn.init.zeros_,
                                                    bias=False, input_is_parallel=True, skip_bias_add=True)
                self.act = ACTIVATIONS[activation]
                self.float()  # adapter parameters stay fp32
                torch.nn.init.zeros_(self.linear_out.weight)

            def forward(self, h: torch.Tensor) -> torch.Tensor:
                z, _ = self.linear_in(h.to(self.linear_in.weight.dtype))   # [s, b, r/tp]
                out, _ = self.linear_out(self.act(z))                        # [s(/tp), b, d]
                return out.to(h.dtype)

        _ADAPTER_CLASS = BottleneckAdapter
    return _ADAPTER_CLASS


def __getattr__(name: str):
    if name == "BottleneckAdapter":  # the public name, as before
        return bottleneck_adapter_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _with_output(output, change):
    """Apply ``change(y, bias) -> (y, bias)`` to a sub-layer's ``(y, bias)`` output; RETRO's chunked
    cross-attention returns ``{"output": (y, bias), "context": ...}``."""
    if isinstance(output, dict):
        return {**output, "output": change(*output["output"])}
    return change(*output)


def _serial_hook(adapter):
    def hook(module, args, output):
        def change(y, bias):
            h = y + bias if bias is not None else y
            return y + adapter(h), bias
        return _with_output(output, change)
    return hook


def _parallel_hook(adapter):
    def hook(module, args, kwargs, output):
        x = args[0] if args else kwargs["hidden_states"]
        return _with_output(output, lambda y, bias: (y + adapter(x), bias))
    return hook


def apply_adapters(chunks: list, cfg: AdapterConfig, tf_config) -> list:
    parallel = isinstance(cfg, ParallelAdapterConfig)
    found = []
    for chunk in chunks:
        for path, module in list(find_modules(chunk, cfg.targets, cfg.exclude)):
            name = "adapter_" + path.rsplit(".", 1)[-1]
            if hasattr(module, name):
                raise UserError(f"{path}: an adapter is already applied")
            adapter = bottleneck_adapter_class()(tf_config, cfg.dim, cfg.activation)
            adapter.to(next(module.parameters()).device)
            module.add_module(name, adapter)
            if parallel:
                module.register_forward_hook(_parallel_hook(adapter), with_kwargs=True)
            else:
                module.register_forward_hook(_serial_hook(adapter))
            found.append(adapter)
    return found


def adapter_param_count(cfg: AdapterConfig, model_cfg, retro_cfg=None) -> int:
    """2·d·r per adapter, one per targeted sub-layer (GPT or RETRO, see peft/model_shapes.py)."""
    from megatron_retro.peft.model_shapes import selected_modules

    return 2 * model_cfg.hidden_size * cfg.dim * len(selected_modules(model_cfg, retro_cfg, cfg.targets, cfg.exclude))


register_peft_method(PeftMethod(name="adapter", prefix="adapter_", config_cls=AdapterConfig,
                                apply=apply_adapters, count=adapter_param_count))
register_peft_method(PeftMethod(name="parallel_adapter", prefix="adapter_", config_cls=ParallelAdapterConfig,
                                apply=apply_adapters, count=adapter_param_count))
