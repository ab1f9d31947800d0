"""Building RETRO: this rank's model chunks (one per virtual pipeline stage) from the configs.

``build_retro_chunk`` picks the architecture, ours (``model.RetroModel`` with the specs of
``spec.py``) or megatron-core 0.15's layout (``retro.megatron_compat``: ``mcore_spec.py``);
``build_retro_model`` builds every chunk of this rank through GPT's chunk loop
(``gpt.build_model_chunks``, constructor arguments ``gpt.chunk_arguments``);
``retro_chunk_builder`` gives the planner a GPT-shaped ``build_chunk``.
"""
from __future__ import annotations

from typing import Optional

from megatron_retro.config import ModelConfig, ParallelConfig, RetroConfig
from megatron_retro.models.gpt import build_model_chunks, chunk_arguments, drop_final_norm
from megatron_retro.models.retro.model import RetroModel


def build_retro_chunk(model: ModelConfig, retro: RetroConfig, config, vocab_size: int, pre_process: bool,
                      post_process: bool, vp_stage: Optional[int] = None, backend=None) -> RetroModel:
    """One RetroModel holding this stage's layers (embedding on the first, output on the last)."""
    from megatron_retro.models.retro.spec import get_retro_decoder_block_spec

    if retro.megatron_compat:
        from megatron_retro.models.retro.mcore_spec import build_mcore_retro_chunk

        return build_mcore_retro_chunk(model, retro, config, vocab_size, pre_process, post_process, vp_stage)

    chunk = RetroModel(
        transformer_layer_spec=get_retro_decoder_block_spec(model, retro, config, vp_stage=vp_stage,
                                                            backend=backend),
        retro=retro, **chunk_arguments(model, config, vocab_size, pre_process, post_process, vp_stage))
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
    """This rank's RETRO model chunks (one per virtual pipeline stage), by GPT's chunk loop."""
    def build_chunk(config, padded: int, pre_process: bool, post_process: bool, vp_stage: Optional[int]):
        return build_retro_chunk(model, retro, config, padded, pre_process, post_process, vp_stage=vp_stage,
                                 backend=backend)

    return build_model_chunks(model, parallel, vocab_size, build_chunk, precision, recompute)
