"""RETRO layer specs: the GPT layer spec with the ``cross_attention`` slot filled on retrieval layers.

Retrieval layers are 1-based global decoder layer numbers (``RetroConfig.layer_numbers``: every
3rd from 6, or from 9 with more than 15 layers, unless configured).  The first one owns the
neighbour encoder: ``encoder_num_layers`` bidirectional layers whose cross-attention attends from
the neighbours to the decoder's chunk states.  Each pipeline stage builds only its own layers, so
the encoder lives on the stage holding the first retrieval layer.
"""
from __future__ import annotations

import dataclasses

from megatron_retro.config import ModelConfig, RetroConfig


def _projections():
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear

    from megatron_retro.models.norm import SequenceParallelNorm
    from megatron_retro.models.retro.cross_attention import RetroCrossAttentionSubmodules

    return RetroCrossAttentionSubmodules(linear_q=ColumnParallelLinear, linear_kv=ColumnParallelLinear,
                                         linear_proj=RowParallelLinear, pre_norm=SequenceParallelNorm)


def encoder_transformer_config(config, retro: RetroConfig):
    """The decoder's TransformerConfig with the encoder's depth and dropouts, outside the pipeline.

    pipeline size 1: the encoder is built whole on one stage and its layer numbers (hence its
    checkpoint keys) do not depend on the pipeline layout.
    """
    return dataclasses.replace(
        config, num_layers=retro.encoder_num_layers, pipeline_model_parallel_size=1,
        virtual_pipeline_model_parallel_size=None, hidden_dropout=retro.encoder_hidden_dropout,
        attention_dropout=retro.encoder_attention_dropout,
        num_layers_in_first_pipeline_stage=None, num_layers_in_last_pipeline_stage=None,
        recompute_granularity=None, recompute_method=None, recompute_num_layers=None)


def get_retro_encoder_block_spec(model: ModelConfig, retro: RetroConfig):
    """Bidirectional layers; every layer's cross-attention attends to the decoder's chunk states."""
    from megatron.core.fusions.fused_bias_dropout import get_bias_dropout_add
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

    from megatron_retro.models.gpt_local_spec import get_gpt_layer_local_spec
    from megatron_retro.models.norm import SequenceParallelNorm
    from megatron_retro.models.retro.cross_attention import RetroEncoderCrossAttention

    backend = "unfused" if model.attention_backend == "unfused" else "sdpa"
    layer = get_gpt_layer_local_spec(model, core_attention=backend, smear_keys=False)   # bidirectional
    self_attention = dataclasses.replace(layer.submodules.self_attention,
                                         params={"attn_mask_type": AttnMaskType.no_mask})
    submodules = dataclasses.replace(
        layer.submodules, self_attention=self_attention, pre_cross_attn_layernorm=SequenceParallelNorm,
        cross_attention=ModuleSpec(module=RetroEncoderCrossAttention, submodules=_projections()),
        cross_attn_bda=get_bias_dropout_add)
    layer = dataclasses.replace(layer, submodules=submodules)
    return TransformerBlockSubmodules(layer_specs=[layer] * retro.encoder_num_layers,
                                      layer_norm=SequenceParallelNorm)


def get_retro_layer_spec(model: ModelConfig, retro: RetroConfig, config, with_encoder: bool, backend=None):
    """One retrieval layer: the GPT layer with chunked cross-attention (and the encoder if first)."""
    from megatron.core.transformer.spec_utils import ModuleSpec

    from megatron_retro.models.gpt_spec import get_gpt_layer_spec
    from megatron_retro.models.retro.cross_attention import (
        RetroChunkedCrossAttention,
        get_retro_bias_dropout_add,
    )

    params = {"chunk_length": retro.chunk_length, "attention_gate": retro.attention_gate}
    if with_encoder:
        params["encoder"] = get_retro_encoder_block_spec(model, retro)
        params["encoder_config"] = encoder_transformer_config(config, retro)
        if model.position_embedding == "rope":
            params["rotary"] = {"rotary_percent": model.rotary_percent, "rotary_base": model.rotary_base}
    gpt = get_gpt_layer_spec(model, backend)
    submodules = dataclasses.replace(
        gpt.submodules,
        cross_attention=ModuleSpec(module=RetroChunkedCrossAttention, params=params, submodules=_projections()),
        cross_attn_bda=get_retro_bias_dropout_add)
    return dataclasses.replace(gpt, submodules=submodules)


def get_retro_decoder_block_spec(model: ModelConfig, retro: RetroConfig, config, vp_stage=None, backend=None):
    """This (virtual) pipeline stage's decoder layers: GPT layers, retrieval layers where configured."""
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules, get_num_layers_to_build
    from megatron.core.transformer.transformer_layer import get_transformer_layer_offset

    from megatron_retro.models.gpt_spec import get_gpt_block_spec, get_gpt_layer_spec

    gpt_block = get_gpt_block_spec(model, config, vp_stage=vp_stage, backend=backend)
    retrieval = retro.layer_numbers(model.num_layers)
    first = retrieval[0]
    offset = get_transformer_layer_offset(config, vp_stage=vp_stage)
    specs = []
    for i in range(get_num_layers_to_build(config, vp_stage=vp_stage)):
        number = offset + i + 1
        if number in retrieval:
            specs.append(get_retro_layer_spec(model, retro, config, with_encoder=number == first, backend=backend))
        else:
            specs.append(get_gpt_layer_spec(model, backend))
    return TransformerBlockSubmodules(layer_specs=specs, layer_norm=gpt_block.layer_norm)
