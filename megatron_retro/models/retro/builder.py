"""Building RETRO: this rank's model chunks (one per virtual pipeline stage) from the configs.

``build_retro_chunk`` picks the architecture, ours (``model.RetroModel`` with the specs of
``spec.py``) or megatron-core 0.15's layout (``retro.megatron_compat``: ``mcore_spec.py``);
``build_retro_model`` builds every chunk of this rank (like ``gpt.build_gpt_model``);
``retro_chunk_builder`` gives the planner a GPT-shaped ``build_chunk``.
"""
from __future__ import annotations

from typing import Optional

import torch
from megatron.core import parallel_state

from megatron_retro.config import ModelConfig, ParallelConfig, RetroConfig
from megatron_retro.models.gpt import drop_final_norm
from megatron_retro.models.retro.model import RetroModel


def build_retro_chunk(model: ModelConfig, retro: RetroConfig, config, vocab_size: int, pre_process: bool,
                      post_process: bool, vp_stage: Optional[int] = None, backend=None) -> RetroModel:
    """One RetroModel holding this stage's layers (embedding on the first, output on the last)."""
    from megatron_retro.models.retro.spec import get_retro_decoder_block_spec

    if retro.megatron_compat:
        from megatron_retro.models.retro.mcore_spec import build_mcore_retro_chunk

        return build_mcore_retro_chunk(model, retro, config, vocab_size, pre_process, post_process, vp_stage)

    chunk = RetroModel(
        config=config,
        transformer_layer_spec=get_retro_decoder_block_spec(model, retro, config, vp_stage=vp_stage,
                                                            backend=backend),
        vocab_size=vocab_size, max_sequence_length=model.seq_length, pre_process=pre_process,
        post_process=post_process, parallel_output=True,
        share_embeddings_and_output_weights=not model.untie_embeddings,
        position_embedding_type=model.position_embedding, rotary_percent=model.rotary_percent,
        rotary_base=model.rotary_base, vp_stage=vp_stage, retro=retro)
    chunk.fused_output_loss = model.fused_output_loss
    drop_final_norm(chunk, model)
    return chunk


def retro_chunk_builder(retro: RetroConfig):
    """``build_chunk(model, config, vocab, pre_process, post_process)`` for the planner's counts."""
    def build(model: ModelConfig, config, vocab_size: int, pre_process: bool, post_process: bool, vp_stage=None):
        return build_retro_chunk(model, retro, config, vocab_size, pre_process, post_process, vp_stage)
    return build


def build_retro_model(model: ModelConfig, retro: RetroConfig, parallel: ParallelConfig, vocab_size: int,
                      precision: str = "auto", recompute: bool = False, backend=None) -> list:
    """This rank's RETRO model chunks (one per virtual pipeline stage), like ``build_gpt_model``."""
    from megatron.core.enums import ModelType

    from megatron_retro.models.gpt import check_vocab_size, padded_vocab_size
    from megatron_retro.models.transformer_config import make_transformer_config

    config = make_transformer_config(model, parallel, precision, recompute=recompute)
    check_vocab_size(model, vocab_size)
    padded = padded_vocab_size(vocab_size, model.make_vocab_size_divisible_by, parallel.tp)
    chunks = []
    for vp_stage in range(parallel.vpp or 1):
        stage = vp_stage if parallel.vpp else None
        chunk = build_retro_chunk(
            model, retro, config, padded,
            pre_process=parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage),
            post_process=parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage),
            vp_stage=stage, backend=backend)
        if model.family == "gemma3":  # sqrt(d)-scaled embeddings: decoder tokens and neighbours alike
            from megatron_retro.models.gemma3_spec import scale_embeddings

            scale_embeddings(chunk, model)
        if torch.cuda.is_available():
            chunk.cuda(torch.cuda.current_device())
        chunk.model_type = ModelType.encoder_or_decoder
        chunks.append(chunk)
    return chunks
