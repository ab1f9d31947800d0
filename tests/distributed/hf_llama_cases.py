"""A tiny randomly initialised HF Llama (GQA, SwiGLU) saved with save_pretrained, and its logits:
shared by the single-process and the torchrun HF import/export tests (no download)."""
from __future__ import annotations

import torch

VOCAB = 320  # not a multiple of 128: exercises the TP-independent vocabulary divisor
SEQ = 24
LAYERS = 4   # PP2 holds 2 each


def make_hf_llama(directory: str, tied: bool = False, max_shard_size: str | None = None, seed: int = 0) -> None:
    """Write a LlamaForCausalLM with GQA (8 heads, 2 kv groups), SwiGLU, RoPE theta 5e5."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=LAYERS,
                         num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=64,
                         rms_norm_eps=1e-5, rope_theta=500000.0, initializer_range=0.2,
                         tie_word_embeddings=tied)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1 so a swapped norm shows in the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.copy_(1.0 + 0.3 * torch.randn_like(p))
    kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
    model.save_pretrained(directory, **kwargs)


def fixed_tokens(batch: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, VOCAB, (batch, SEQ), generator=g)


@torch.no_grad()
def hf_logits(directory: str, tokens: torch.Tensor) -> torch.Tensor:
    """[b, s, V] float32 logits of the HF model saved in ``directory``."""
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(directory, torch_dtype=torch.float32).eval()
    return model(input_ids=tokens).logits.float()


def relative_error(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()
