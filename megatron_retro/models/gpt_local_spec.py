"""The local GPT layer spec: megatron-core modules only (runs everywhere, no Transformer Engine).

The base every other spec extends: Gemma 3 (gemma3_spec.py) swaps the layer and attention
modules, RETRO (retro/spec.py, retro/mcore_spec.py) fills the ``cross_attention`` slot;
gpt_spec.py picks between this, TE and those variants.
"""
from __future__ import annotations

from typing import Optional

from megatron_retro.config import ModelConfig


def get_gpt_layer_local_spec(model: ModelConfig, core_attention: str = "sdpa", smear_keys: Optional[bool] = None):
    """megatron-core modules only (runs everywhere): local linears, SP-aware torch norms.

    ``smear_keys`` (default ``model.smear_keys``; RETRO's bidirectional encoder passes False) mixes
    each self-attention key with the previous position's (SDPA core attention only)."""
    from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.identity_op import IdentityOp
    from megatron.core.transformer.mlp import MLPSubmodules
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

    from megatron_retro.errors import UserError
    from megatron_retro.models.norm import SequenceParallelNorm
    from megatron_retro.models.sdpa_attention import SDPAttention
    from megatron_retro.models.swiglu import SwiGLUMLP

    if core_attention == "te":
        from megatron.core.extensions.transformer_engine import TEDotProductAttention as attention_cls
    else:
        attention_cls = SDPAttention if core_attention == "sdpa" else DotProductAttention
    if model.smear_keys if smear_keys is None else smear_keys:
        if core_attention != "sdpa":
            raise UserError(f"model.smear_keys=true: needs the SDPA core attention (model.attention_backend=sdpa "
                            f"or auto without Transformer Engine), this layer would use {core_attention!r}")
        attention_cls = ModuleSpec(module=SDPAttention, params={"smear_keys": True})
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
