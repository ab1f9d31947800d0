"""Translate our typed ModelConfig + ParallelConfig into megatron-core's TransformerConfig."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from megatron_retro.config import ModelConfig, ParallelConfig


# TransformerConfig field <- ModelConfig / ParallelConfig attribute, copied as they are.
MODEL_FIELDS = {
    "num_layers": "num_layers", "hidden_size": "hidden_size", "num_attention_heads": "num_attention_heads",
    "num_query_groups": "num_query_groups", "ffn_hidden_size": "ffn_size", "kv_channels": "head_dim",
    "gated_linear_unit": "gated_mlp", "normalization": "normalization", "layernorm_epsilon": "norm_epsilon",
    "add_bias_linear": "add_bias_linear", "hidden_dropout": "hidden_dropout",
    "attention_dropout": "attention_dropout", "init_method_std": "init_method_std",
}
PARALLEL_FIELDS = {
    "tensor_model_parallel_size": "tp", "pipeline_model_parallel_size": "pp",
    "virtual_pipeline_model_parallel_size": "vpp", "sequence_parallel": "sequence_parallel",
}


def resolve_precision(precision: str) -> str:
    """'auto' = bf16 on CUDA, fp32 on CPU."""
    if precision == "auto":
        return "bf16" if torch.cuda.is_available() else "fp32"
    return precision


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (Gemma's ``gelu_pytorch_tanh``)."""
    return F.gelu(x, approximate="tanh")


def local_attention_fields(model: ModelConfig) -> dict:
    """Gemma 3 / sliding-window fields of TransformerConfig (megatron's own where they exist).

    megatron's ``window_size=(left, right)`` counts the *other* tokens a query may see; our
    ``model.sliding_window`` counts the query too (HF's convention), hence ``- 1``."""
    out = {}
    if model.sliding_window:
        out.update(window_size=(model.sliding_window - 1, 0), window_attn_skip_freq=model.global_attn_every)
    if model.family == "gemma3":
        out.update(qk_layernorm=True, layernorm_zero_centered_gamma=True)
    if model.softmax_scale is not None:
        out.update(softmax_scale=model.softmax_scale)
    return out


def make_transformer_config(model: ModelConfig, parallel: ParallelConfig, precision: str = "auto",
                            recompute: bool = False, **extra):
    """A TransformerConfig for the GPT decoder (RETRO adds its fields through ``extra``)."""
    from megatron.core.activations import squared_relu
    from megatron.core.transformer.transformer_config import TransformerConfig

    from megatron_retro.models import rope

    rope.install()   # megatron attention's RoPE in one pass each way (same values)
    precision = resolve_precision(precision)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    on_gpu = torch.cuda.is_available()
    activation = {"swiglu": F.silu, "gelu": F.gelu, "squared_relu": squared_relu,
                  "geglu_tanh": gelu_tanh}[model.activation]
    kwargs = {field: getattr(model, name) for field, name in MODEL_FIELDS.items()}
    kwargs.update({field: getattr(parallel, name) for field, name in PARALLEL_FIELDS.items()})
    kwargs.update(
        activation_func=activation,
        params_dtype=dtype,
        pipeline_dtype=dtype,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        # CPU builds have no apex / fused CUDA kernels; keep the fusions for GPUs.
        use_cpu_initialization=not on_gpu,
        bias_activation_fusion=on_gpu and model.activation == "swiglu" and not model.add_bias_linear,
        masked_softmax_fusion=on_gpu,
        bias_dropout_fusion=on_gpu,
        batch_p2p_sync=on_gpu,  # the batched p2p sync path assumes CUDA
        batch_p2p_comm=on_gpu,  # gloo: batched isend/irecv pairs mismatch in the interleaved schedule
        **dict.fromkeys(("gradient_accumulation_fusion", "apply_rope_fusion", "persist_layer_norm",
                         "cross_entropy_loss_fusion"), False),
        deallocate_pipeline_outputs=True,
    )
    kwargs.update(local_attention_fields(model))

    if recompute and model.recompute_modules:
        from megatron_retro.errors import UserError

        raise UserError(f"train.recompute=true with model.recompute_modules={model.recompute_modules}: "
                        "choose whole-layer or selective recompute")
    if recompute:                   # full: every layer keeps only its input
        kwargs.update(recompute_granularity="full", recompute_method="uniform", recompute_num_layers=1)
    elif model.recompute_modules:   # selective: these parts' activations are recomputed in backward
        kwargs.update(recompute_granularity="selective", recompute_modules=list(model.recompute_modules))
    kwargs.update(extra)
    return TransformerConfig(**kwargs)
