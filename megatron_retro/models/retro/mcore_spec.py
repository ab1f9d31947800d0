"""``retro.megatron_compat: true``: megatron-core 0.15's RetroModel, built from our GPT specs.

Same slots and parameter names as megatron-core 0.15 (``megatron/core/models/retro``), so its
``torch_dist`` checkpoints load key for key (training/mcore_import.py):

    decoder.layers.{i}.pre_cross_attn_layernorm             retrieval layers' pre-CCA norm
    decoder.layers.{i}.cross_attention.attn.linear_{q,kv,proj}
    decoder.layers.{first}.cross_attention.encoder.layers.{e}.*   the encoder (first retrieval layer)
    (no decoder.final_layernorm, no encoder final norm)

Per-layer checkpoint keys (``non_homogeneous_layers``, as megatron-core's RetroModel), so the
checkpoint does not depend on which layers hold cross-attention.  The maths is in
mcore_attention.py; docs/megatron-retro-compat.md lists what differs from our RETRO.
Tensor parallelism only: megatron-core 0.15 RETRO asserted PP=1 and did not support sequence
parallelism, and its layouts (a context that changes shape at the first retrieval layer) are
not the ones our pipeline payload carries.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import torch

from megatron_retro.config import ModelConfig, RetroConfig
from megatron_retro.models.retro.model import RetroModel


def _cross_attention_submodules():
    from megatron.core.tensor_parallel import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.attention import CrossAttentionSubmodules
    from megatron.core.transformer.dot_product_attention import DotProductAttention

    return CrossAttentionSubmodules(linear_q=ColumnParallelLinear, linear_kv=ColumnParallelLinear,
                                    core_attention=DotProductAttention, linear_proj=RowParallelLinear)


def get_mcore_encoder_block_spec(model: ModelConfig, retro: RetroConfig):
    """Bidirectional layers; only the first cross-attends to the chunk states; no final norm."""
    from megatron.core.transformer.enums import AttnMaskType
    from megatron.core.transformer.spec_utils import ModuleSpec
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

    from megatron_retro.models.gpt_local_spec import get_gpt_layer_local_spec
    from megatron_retro.models.norm import SequenceParallelNorm
    from megatron_retro.models.retro.mcore_attention import (
        McoreEncoderCrossAttention,
        McoreEncoderNorm,
        mcore_encoder_bda,
    )

    backend = "unfused" if model.attention_backend == "unfused" else "sdpa"
    gpt = get_gpt_layer_local_spec(model, core_attention=backend, smear_keys=False)   # bidirectional encoder
    self_attention = dataclasses.replace(gpt.submodules.self_attention,
                                         params={"attn_mask_type": AttnMaskType.no_mask})
    plain = dataclasses.replace(gpt, submodules=dataclasses.replace(gpt.submodules, self_attention=self_attention))
    first = dataclasses.replace(plain, submodules=dataclasses.replace(
        plain.submodules, pre_cross_attn_layernorm=SequenceParallelNorm,
        cross_attention=ModuleSpec(module=McoreEncoderCrossAttention, params={"num_neighbours": retro.num_neighbours},
                                   submodules=_cross_attention_submodules()),
        cross_attn_bda=mcore_encoder_bda,
        pre_mlp_layernorm=ModuleSpec(module=McoreEncoderNorm, submodules=SequenceParallelNorm),
        sharded_state_dict_keys_map={"input_layernorm.": "self_attention.linear_qkv.layer_norm_"}))
    return TransformerBlockSubmodules(layer_specs=[first] + [plain] * (retro.encoder_num_layers - 1),
                                      layer_norm=None)


def get_mcore_retro_layer_spec(model: ModelConfig, retro: RetroConfig, config, with_encoder: bool):
    """A GPT layer with a pre-CCA norm and megatron-core 0.15's chunked cross-attention."""
    from megatron.core.transformer.spec_utils import ModuleSpec

    from megatron_retro.models.gpt_spec import get_gpt_layer_spec
    from megatron_retro.models.norm import SequenceParallelNorm
    from megatron_retro.models.retro.mcore_attention import McoreDecoderCrossAttention, mcore_decoder_bda
    from megatron_retro.models.retro.spec import encoder_transformer_config

    params = {"chunk_length": retro.chunk_length}
    if with_encoder:
        params.update(encoder=get_mcore_encoder_block_spec(model, retro),
                      encoder_config=encoder_transformer_config(config, retro))
    gpt = get_gpt_layer_spec(model)
    return dataclasses.replace(gpt, submodules=dataclasses.replace(
        gpt.submodules, pre_cross_attn_layernorm=SequenceParallelNorm,
        cross_attention=ModuleSpec(module=McoreDecoderCrossAttention, params=params,
                                   submodules=_cross_attention_submodules()),
        cross_attn_bda=mcore_decoder_bda))


def get_mcore_decoder_block_spec(model: ModelConfig, retro: RetroConfig, config):
    """GPT layers, retrieval layers every 3rd from 6 (9 past 15 layers), and no final norm."""
    from megatron.core.transformer.transformer_block import TransformerBlockSubmodules

    from megatron_retro.models.gpt_spec import get_gpt_layer_spec

    retrieval = retro.layer_numbers(model.num_layers)
    if not retrieval:
        from megatron_retro.errors import UserError

        raise UserError(f"model.num_layers={model.num_layers}: megatron-core 0.15 RETRO needs >= 6 layers "
                        "(its first retrieval layer is 6)")
    specs = [get_mcore_retro_layer_spec(model, retro, config, with_encoder=n == retrieval[0]) if n in retrieval
             else get_gpt_layer_spec(model) for n in range(1, model.num_layers + 1)]
    return TransformerBlockSubmodules(layer_specs=specs, layer_norm=None)


class McoreRetroModel(RetroModel):
    """Our RetroModel with megatron-core 0.15's neighbour layout and per-layer checkpoint keys."""

    supports_kv_cache = False  # generation recomputes the whole sequence (megatron-core 0.15 had no RETRO cache)

    def embed_neighbours(self, neighbours: torch.Tensor) -> torch.Tensor:
        """int64 [bs, l, k, r] -> [r, bs·l·k, d], columns ordered (bs, l, k) as megatron-core's."""
        bs, l, k, r = self._check_neighbours(neighbours)
        return self._embed_neighbour_rows(neighbours.reshape(bs * l * k, r))

    def sharded_state_dict(self, prefix: str = "", sharded_offsets: tuple = (), metadata: Optional[dict] = None):
        metadata = dict(metadata or {}, non_homogeneous_layers=True)
        return super().sharded_state_dict(prefix, sharded_offsets, metadata)


def build_mcore_retro_chunk(model: ModelConfig, retro: RetroConfig, config, vocab_size: int, pre_process: bool,
                            post_process: bool, vp_stage: Optional[int] = None) -> McoreRetroModel:
    """The whole model (TP only): PP and sequence parallelism are refused with one line."""
    from megatron_retro.errors import UserError

    if config.pipeline_model_parallel_size > 1 or vp_stage is not None:
        raise UserError(f"parallel.pp={config.pipeline_model_parallel_size}: retro.megatron_compat=true runs with "
                        "tensor parallelism only (megatron-core 0.15 RETRO had no pipeline parallelism)")
    if config.sequence_parallel:
        raise UserError("parallel.sequence_parallel: not supported with retro.megatron_compat=true")
    from megatron_retro.models.gpt import chunk_arguments

    return McoreRetroModel(transformer_layer_spec=get_mcore_decoder_block_spec(model, retro, config), retro=retro,
                           **chunk_arguments(model, config, vocab_size, pre_process, post_process))
