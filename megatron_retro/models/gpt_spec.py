"""GPT layer specs: which megatron-core (or Transformer Engine) module fills each slot of a layer.

Tensor parallelism is chosen here, by picking Column/Row-parallel linear types, never inside a
forward.  RETRO reuses these specs and only fills the ``cross_attention`` slot.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from megatron_retro.config import ModelConfig

LINEARS, CORE_ATTENTION = "linears", "core_attention"   # what a PEFT method reaches (peft/reach.py)


@dataclass(frozen=True)
class LayerBackend:
    """Which implementation fills a layer's slots: linears (+ their norms) and core attention.

    ``linears``: "te" = TE's layer-norm-fused linears and TENorm; "local" = megatron's
    Column/RowParallelLinear and torch norms.  ``core_attention``: "te" (TEDotProductAttention),
    "sdpa" or "unfused".  ``why`` says how it was decided (logged by finetune).
    """

    linears: str
    core_attention: str
    why: str = ""


def resolve_layer_backend(requested: str, te_available: bool, peft_reaches: frozenset = frozenset()) -> LayerBackend:
    """THE rule for which backend a layer uses (pure: TE presence and PEFT's reach are inputs).

    * no PEFT: ``auto`` = full TE spec when TE imports, else local linears + SDPA; ``te`` needs TE.
    * PEFT wraps megatron's local linears only, so any PEFT that reaches the linears (LoRA, QLoRA,
      IA3, adapters) gets local linears and torch norms; TE stays where PEFT does not reach: the
      core attention is TE's (``auto``/``te`` with TE present) unless the method patches the core
      attention itself (prefix tuning needs SDPA).  So ``finetune`` never fails because TE imports.
    * ``sdpa`` / ``unfused`` are honoured as asked.
    """
    if requested not in ("auto", "sdpa", "unfused", "te"):
        raise ValueError(f"model.attention_backend={requested!r}: unknown")
    if requested == "te" and not te_available:
        from megatron_retro.errors import UserError

        raise UserError("model.attention_backend=te: transformer_engine is not importable here")
    use_te = requested == "te" or (requested == "auto" and te_available)
    if not use_te:
        core = "unfused" if requested == "unfused" else "sdpa"
        return LayerBackend("local", core, f"attention_backend={requested}, TE {'present' if te_available else 'absent'}")
    if not peft_reaches:
        return LayerBackend("te", "te", f"attention_backend={requested}, TE present, no PEFT")
    core = "sdpa" if CORE_ATTENTION in peft_reaches else "te"
    return LayerBackend("local", core, f"attention_backend={requested}, TE present, PEFT reaches "
                        f"{sorted(peft_reaches)}: local linears, core attention {core}")


def transformer_engine_available() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except Exception:
        return False
    return True


def resolve_attention_backend(model: ModelConfig) -> str:
    """'auto' = Transformer Engine when it imports (GPU clusters), torch SDPA otherwise."""
    return resolve_layer_backend(model.attention_backend, transformer_engine_available()).core_attention


def layer_backend(model: ModelConfig, backend: Optional[LayerBackend] = None) -> LayerBackend:
    """``backend`` if given (finetune resolves it with PEFT's reach), else the no-PEFT rule."""
    return backend or resolve_layer_backend(model.attention_backend, transformer_engine_available())


def get_gpt_layer_local_spec(model: ModelConfig, core_attention: str = "sdpa"):
    """megatron-core modules only (runs everywhere): local linears, SP-aware torch norms."""
    from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.identity_op import IdentityOp
    from megatron.core.transformer.mlp import MLPSubmodules
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

    from megatron_retro.models.norm import SequenceParallelNorm
    from megatron_retro.models.sdpa_attention import SDPAttention
    from megatron_retro.models.swiglu import SwiGLUMLP

    if core_attention == "te":
        from megatron.core.extensions.transformer_engine import TEDotProductAttention as attention_cls
    else:
        attention_cls = SDPAttention if core_attention == "sdpa" else DotProductAttention
    return ModuleSpec(
        module=TransformerLayer,
        submodules=TransformerLayerSubmodules(
            input_layernorm=SequenceParallelNorm,
            self_attention=ModuleSpec(
                module=SelfAttention,
                params={"attn_mask_type": AttnMaskType.causal},
                submodules=SelfAttentionSubmodules(
                    linear_qkv=ColumnParallelLinear,
                    core_attention=attention_cls,
                    linear_proj=RowParallelLinear,
                    q_layernorm=IdentityOp,
                    k_layernorm=IdentityOp,
                ),
            ),
            self_attn_bda=get_bias_dropout_add,
            pre_mlp_layernorm=SequenceParallelNorm,
            mlp=ModuleSpec(module=SwiGLUMLP, submodules=MLPSubmodules(
                linear_fc1=ColumnParallelLinear, linear_fc2=RowParallelLinear)),
            mlp_bda=get_bias_dropout_add,
            sharded_state_dict_keys_map={
                "input_layernorm.": "self_attention.linear_qkv.layer_norm_",
                "pre_mlp_layernorm.": "mlp.linear_fc1.layer_norm_",
            },
        ),
    )


def get_gpt_layer_te_spec(model: ModelConfig):
    """Transformer Engine modules (fused layernorm-linear, TE attention) for GPU clusters."""
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec

    return get_gpt_layer_with_transformer_engine_spec()


def get_gpt_layer_spec(model: ModelConfig, backend: Optional[LayerBackend] = None):
    if model.family == "gemma3" or model.sliding_window:
        # Gemma 3 / sliding-window layers are built on megatron's local modules (no TE spec for them yet)
        if model.attention_backend == "te":
            from megatron_retro.errors import UserError

            raise UserError("model.family=gemma3 / model.sliding_window: the Transformer Engine spec is not "
                            "built yet; set model.attention_backend=sdpa (or auto)")
        from megatron_retro.models.gemma3_spec import get_gemma3_layer_local_spec

        if model.family == "gemma3":
            return get_gemma3_layer_local_spec(model)
        return get_gpt_layer_local_spec(model, core_attention="sdpa")
    backend = layer_backend(model, backend)
    if backend.linears == "te":
        return get_gpt_layer_te_spec(model)
    return get_gpt_layer_local_spec(model, core_attention=backend.core_attention)


def get_gpt_block_spec(model: ModelConfig, config, vp_stage=None, backend: Optional[LayerBackend] = None):
    """The layers this pipeline stage (and virtual stage) builds, plus the block's final norm."""
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

    num_layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    backend = layer_backend(model, backend)
    if backend.linears == "te":
        from megatron.core.extensions.transformer_engine import TENorm

        layer_norm = TENorm
    else:
        from megatron_retro.models.norm import SequenceParallelNorm

        layer_norm = SequenceParallelNorm
    return TransformerBlockSubmodules(layer_specs=[get_gpt_layer_spec(model, backend)] * num_layers,
                                      layer_norm=layer_norm)
