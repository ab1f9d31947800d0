"""Translate our typed ModelConfig + ParallelConfig into megatron-core's TransformerConfig."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from megatron_retro.config import ModelConfig, ParallelConfig


def resolve_precision(precision: str) -> str:
    """'auto' = bf16 on CUDA, fp32 on CPU."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return precision


def make_transformer_config(model: ModelConfig, parallel: ParallelConfig, precision: str = "auto",
                            recompute: "bool | str" = False, **extra):
    """A TransformerConfig for the GPT decoder (RETRO adds its fields through ``extra``)."""
    from megatron.core.activations import squared_relu
    from megatron.core.transformer.transformer_config import TransformerConfig

    precision = resolve_precision(precision)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    on_gpu = torch.cuda.is_available()
    activation = {"swiglu": F.silu, "gelu": F.gelu, "squared_relu": squared_relu}[model.activation]
    kwargs = dict(
        num_layers=model.num_layers,
        hidden_size=model.hidden_size,
        num_attention_heads=model.num_attention_heads,
        num_query_groups=model.num_query_groups,
        ffn_hidden_size=model.ffn_size,
        kv_channels=model.head_dim,
        activation_func=activation,
        gated_linear_unit=model.activation == "swiglu",
        normalization=model.normalization,
        layernorm_epsilon=model.norm_epsilon,
        add_bias_linear=model.add_bias_linear,
        hidden_dropout=model.hidden_dropout,
        attention_dropout=model.attention_dropout,
        init_method_std=model.init_method_std,
        tensor_model_parallel_size=parallel.tp,
        pipeline_model_parallel_size=parallel.pp,
        virtual_pipeline_model_parallel_size=parallel.vpp,
        sequence_parallel=parallel.sequence_parallel,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # CPU builds have no apex / fused CUDA kernels; keep the fusions for GPUs.
        use_cpu_initialization=not on_gpu,
        gradient_accumulation_fusion=False,
        bias_activation_fusion=on_gpu and model.activation == "swiglu" and not model.add_bias_linear,
        masked_softmax_fusion=on_gpu,
        bias_dropout_fusion=on_gpu,
        apply_rope_fusion=False,
        persist_layer_norm=False,
        cross_entropy_loss_fusion=False,
        batch_p2p_sync=on_gpu,  # the batched p2p sync path assumes CUDA
        batch_p2p_comm=on_gpu,  # gloo: batched isend/irecv pairs mismatch in the interleaved schedule
        deallocate_pipeline_outputs=True,
    )
    if recompute == "selective":   # megatron re-runs each core attention in backward
        kwargs.update(recompute_granularity="selective")
    elif recompute:                # "full" / True: every layer keeps only its input
        kwargs.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    kwargs.update(extra)
    return TransformerConfig(**kwargs)
