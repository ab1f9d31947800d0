"""Which parts of a layer each PEFT method reaches, and so which layer backend fine-tuning builds.

PEFT wraps megatron's local Column/RowParallelLinear (peft/tp_rule.py refuses TE's linears), and
TE's layer-norm-fused linears hide the normed input a parallel adapter or a LoRA branch would
need.  So a method that reaches the linears or a sub-layer's input/output gets local linears and
torch norms; prefix tuning patches the core attention and gets SDPA; P-/prompt tuning only touch
the embeddings and keep the full TE spec.  The decision itself is
:func:`megatron_retro.models.gpt_spec.resolve_layer_backend`; this module only states the reach.
"""
from __future__ import annotations

from typing import Optional

from megatron_retro.models.gpt_spec import CORE_ATTENTION, LINEARS, LayerBackend, resolve_layer_backend

REACH = {
    "lora": frozenset({LINEARS}),
    "qlora": frozenset({LINEARS}),
    "ia3": frozenset({LINEARS}),
    "adapter": frozenset({LINEARS}),           # hooks the sub-layer output (local norms keep it the same)
    "parallel_adapter": frozenset({LINEARS}),  # needs the normed sub-layer input, hidden by TE's fused norm
    "prefix": frozenset({CORE_ATTENTION}),
    "prompt": frozenset(),
    "ptuning": frozenset(),
}


def peft_reach(method: Optional[str]) -> frozenset:
    """What ``method`` patches (None = no PEFT); an unknown method is assumed to reach everything."""
    if method is None:
        return frozenset()
    return REACH.get(method, frozenset({LINEARS, CORE_ATTENTION}))


def peft_layer_backend(attention_backend: str, method: Optional[str], te_available: Optional[bool] = None) -> LayerBackend:
    """The layer backend for fine-tuning with ``method`` (TE presence probed unless given)."""
    if te_available is None:
        from megatron_retro.models.gpt_spec import transformer_engine_available

        te_available = transformer_engine_available()
    return resolve_layer_backend(attention_backend, te_available, peft_reach(method))
