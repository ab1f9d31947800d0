"""Build megatron-core GPTModel chunks for this rank (one per virtual pipeline stage).

Also the one chunk builder RETRO reuses (``models/retro/builder.py``): ``chunk_arguments`` (the
GPTModel constructor arguments) and ``build_model_chunks`` (the per-stage loop)."""
from __future__ import annotations

from typing import Callable, Optional

from megatron_retro.config import ModelConfig, ParallelConfig


def padded_vocab_size(vocab_size: int, divisible_by: int, tp: int) -> int:
    """Megatron pads the embedding table so every TP shard has the same, aligned size."""
    multiple = divisible_by * tp
    return ((vocab_size + multiple - 1) // multiple) * multiple


def chunk_arguments(model: ModelConfig, config, vocab_size: int, pre_process: bool, post_process: bool,
                    vp_stage: Optional[int] = None) -> dict:
    """The GPTModel constructor arguments every chunk shares, GPT and RETRO alike (one rule for the
    vocabulary, positions, tied embeddings and the stage's ends)."""
    return dict(config=config, vocab_size=vocab_size, max_sequence_length=model.seq_length,
                pre_process=pre_process, post_process=post_process, parallel_output=True,
                share_embeddings_and_output_weights=not model.untie_embeddings,
                position_embedding_type=model.position_embedding, rotary_percent=model.rotary_percent,
                rotary_base=model.rotary_base, vp_stage=vp_stage)


def build_gpt_chunk(model: ModelConfig, config, vocab_size: int, pre_process: bool, post_process: bool,
                    vp_stage: Optional[int] = None, backend=None):
    """One GPTModel holding this stage's layers (embedding on the first, output on the last)."""
    from megatron_retro.models.fused_loss import FusedLossGPTModel
    from megatron_retro.models.gpt_spec import get_gpt_block_spec

    chunk = FusedLossGPTModel(
        transformer_layer_spec=get_gpt_block_spec(model, config, vp_stage=vp_stage, backend=backend),
        **chunk_arguments(model, config, vocab_size, pre_process, post_process, vp_stage))
    chunk.fused_output_loss = model.fused_output_loss
    drop_final_norm(chunk, model)
    return chunk


def drop_final_norm(chunk, model: ModelConfig) -> None:
    """``model.final_norm=false``: the last stage feeds its residual stream straight to the output
    layer (megatron's decoder skips a ``final_layernorm`` that is None)."""
    if not model.final_norm and getattr(chunk.decoder, "final_layernorm", None) is not None:
        chunk.decoder.final_layernorm = None


def check_vocab_size(model: ModelConfig, vocab_size: int) -> None:
    """``model.vocab_size``, when set, is a promise about the tokenizer: refuse a tokenizer of
    another size instead of silently ignoring the field."""
    if model.vocab_size is not None and model.vocab_size != vocab_size:
        from megatron_retro.errors import UserError

        raise UserError(f"model.vocab_size={model.vocab_size}: the tokenizer of this run has {vocab_size} tokens "
                        "(leave model.vocab_size unset to take it from the tokenizer)")


def build_gpt_model(model: ModelConfig, parallel: ParallelConfig, vocab_size: int, precision: str = "auto",
                    recompute: "bool | str" = False, backend=None) -> list:
    """This rank's model chunks (a list of length vpp, or 1), on the current device.

    ``backend``: a ``gpt_spec.LayerBackend`` (finetune passes PEFT's); None = the no-PEFT rule.

    ``vocab_size`` is the tokenizer's; it is padded here for TP.  Requires parallel_state to be
    initialised (world size 1 is fine).
    """
    def build_chunk(config, padded: int, pre_process: bool, post_process: bool, vp_stage: Optional[int]):
        return build_gpt_chunk(model, config, padded, pre_process, post_process, vp_stage=vp_stage,
                               backend=backend)

    return build_model_chunks(model, parallel, vocab_size, build_chunk, precision, recompute)


def build_model_chunks(model: ModelConfig, parallel: ParallelConfig, vocab_size: int, build_chunk: Callable,
                       precision: str = "auto", recompute: "bool | str" = False) -> list:
    """The one chunk loop of GPT and RETRO: this rank's chunks (one per virtual pipeline stage),
    each ``build_chunk(config, padded_vocab, pre_process, post_process, vp_stage)``, then scaled
    embeddings (Gemma 3: decoder tokens and RETRO neighbours alike), device and model type."""
    import torch
    from megatron.core import parallel_state

    from megatron_retro.models.transformer_config import make_transformer_config

    check_vocab_size(model, vocab_size)
    config = make_transformer_config(model, parallel, precision, recompute=recompute)
    padded = padded_vocab_size(vocab_size, model.make_vocab_size_divisible_by, parallel.tp)
    chunks = []
    for vp_stage in range(parallel.vpp or 1):
        stage = vp_stage if parallel.vpp else None
        chunk = build_chunk(
            config, padded,
            parallel_state.is_pipeline_first_stage(ignore_virtual=False, vp_stage=stage),
            parallel_state.is_pipeline_last_stage(ignore_virtual=False, vp_stage=stage),
            stage)
        if model.family == "gemma3":
            from megatron_retro.models.gemma3_spec import scale_embeddings

            scale_embeddings(chunk, model)
        if torch.cuda.is_available():
            chunk.cuda(torch.cuda.current_device())
        chunk.model_type = _encoder_or_decoder()
        chunks.append(chunk)
    return chunks


def _encoder_or_decoder():
    from megatron.core.enums import ModelType

    return ModelType.encoder_or_decoder
