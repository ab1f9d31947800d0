"""GPT layer specs: which megatron-core (or Transformer Engine) module fills each slot of a layer.

Tensor parallelism is chosen here, by picking Column/Row-parallel linear types, never inside a
forward.  RETRO reuses these specs and only fills the ``cross_attention`` slot.
"""
from __future__ import annotations

from megatron_retro.config import ModelConfig


def transformer_engine_available() -> bool:
    try:
        import transformer_engine  # noqa: F401
    except Exception:
        return False
    return True


def resolve_attention_backend(model: ModelConfig) -> str:
    """'auto' = Transformer Engine when it imports (GPU clusters), torch SDPA otherwise."""
    if model.attention_backend == "auto":
        return "te" if transformer_engine_available() else "sdpa"
    if model.attention_backend == "te" and not transformer_engine_available():
        from megatron_retro.errors import UserError

        raise UserError("model.attention_backend=te: transformer_engine is not importable here")
    return model.attention_backend


def get_gpt_layer_local_spec(model: ModelConfig, core_attention: str = "sdpa"):
    """megatron-core modules only (runs everywhere): local linears, SP-aware torch norms."""
    from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.attention import SelfAttention, SelfAttentionSubmodules
    from megatron.core.transformer.dot_product_attention import DotProductAttention
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.identity_op import IdentityOp
    from megatron.core.transformer.mlp import MLP, MLPSubmodules
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_layer import TransformerLayer, TransformerLayerSubmodules

    from megatron_retro.models.norm import SequenceParallelNorm
    from megatron_retro.models.sdpa_attention import SDPAttention

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
            mlp=ModuleSpec(module=MLP, submodules=MLPSubmodules(
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


def get_gpt_layer_spec(model: ModelConfig):
    backend = resolve_attention_backend(model)
    if model.family == "gemma3" or model.sliding_window:
        if backend == "te":
            from megatron_retro.errors import UserError

            raise UserError("model.family=gemma3 / model.sliding_window: the Transformer Engine spec is not "
                            "built yet; set model.attention_backend=sdpa")
        from megatron_retro.models.gemma3_spec import get_gemma3_layer_local_spec

        if model.family == "gemma3":
            return get_gemma3_layer_local_spec(model)
        return get_gpt_layer_local_spec(model, core_attention="sdpa")
    if backend == "te":
        return get_gpt_layer_te_spec(model)
    return get_gpt_layer_local_spec(model, core_attention=backend)


def get_gpt_block_spec(model: ModelConfig, config, vp_stage=None):
    """The layers this pipeline stage (and virtual stage) builds, plus the block's final norm."""
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build

    num_layers = get_num_layers_to_build(config, vp_stage=vp_stage)
    if resolve_attention_backend(model) == "te":
        from megatron.core.extensions.transformer_engine import TENorm

        layer_norm = TENorm
    else:
        from megatron_retro.models.norm import SequenceParallelNorm

        layer_norm = SequenceParallelNorm
    return TransformerBlockSubmodules(layer_specs=[get_gpt_layer_spec(model)] * num_layers,
                                      layer_norm=layer_norm)
