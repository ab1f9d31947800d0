"""The PEFT test matrix shared by the in-process unit tests and the 4-rank torchrun worker:
one tiny GPT and one small config per method (every registered method runs the same checks)."""
import torch

MODEL_OVERRIDES = ["model.num_layers=4", "model.hidden_size=64", "model.num_attention_heads=8",
                   "model.num_query_groups=4", "model.ffn_hidden_size=128", "model.seq_length=32",
                   "model.rotary_percent=0.5", "model.attention_backend=sdpa"]
VOCAB, SEQ = 512, 32

METHOD_CASES = {
    "lora": {"rank": 4, "alpha": 8.0},
    # block 32 divides every shard's row at TP2 (linear_proj K/tp = 32): the blocks, hence the
    # dequantised weights, are the same at every layout; double quantisation's second level is
    # per shard (tests/unit/test_peft_qlora.py covers it)
    "qlora": {"rank": 4, "alpha": 8.0, "block_size": 32, "double_quant": False},
    "adapter": {"dim": 8},
    "parallel_adapter": {"dim": 8},
    "ptuning": {"num_virtual_tokens": 4, "encoder": "mlp", "encoder_hidden": 16},
    "prompt": {"num_virtual_tokens": 4},
    "prefix": {"num_prefix_tokens": 4},
    "ia3": {},
}


class RandomTokens:
    """Deterministic random token windows with a partially masked loss."""

    def __init__(self, n: int = 64, vocab: int = 500):
        self.n, self.vocab = n, vocab

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        t = torch.randint(0, self.vocab, (SEQ + 1,), generator=g)
        mask = torch.ones(SEQ)
        mask[: 4 + i % 3] = 0.0  # virtual-token positions carry no loss
        return {"tokens": t[:-1], "labels": t[1:], "loss_mask": mask, "position_ids": torch.arange(SEQ)}


class PatternTokens(RandomTokens):
    """A learnable task: each sequence repeats a short random motif."""

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i % 4)
        motif = torch.randint(0, self.vocab, (5,), generator=g)
        t = motif.repeat(SEQ // 5 + 2)[: SEQ + 1]
        mask = torch.ones(SEQ)
        mask[:4] = 0.0
        return {"tokens": t[:-1], "labels": t[1:], "loss_mask": mask, "position_ids": torch.arange(SEQ)}


# ---- RETRO: the same checks on a tiny RETRO (retrieval layers 2 and 4, a 2-layer encoder) ----
M, K, R = 8, 2, 16   # chunk length, neighbours per chunk, neighbour length
RETRO_OVERRIDES = ["model.arch=retro", "model.num_layers=4", "model.hidden_size=64", "model.num_attention_heads=4",
                   "model.ffn_hidden_size=128", f"model.seq_length={SEQ}", "model.rotary_percent=0.5",
                   "model.add_bias_linear=true", "model.attention_backend=sdpa",
                   f"retro.chunk_length={M}", f"retro.num_neighbours={K}", f"retro.neighbour_length={R}",
                   "retro.retrieval_layers=[2,4]", "retro.attention_gate=true"]

# RETRO's parts targeted separately (NeMo's encoder / pre-decoder / post-decoder split), by global
# path: so the selection is the same at every TP/PP layout (layers 0-1 live on PP stage 0).
RETRO_LORA_TARGETS = {
    "pre_decoder": ["decoder.layers.[0-1].self_attention.linear_qkv", "decoder.layers.[0-1].mlp.linear_fc2"],
    "post_decoder": ["decoder.layers.[2-3].mlp.linear_fc1"],
    "cross_attention": ["decoder.layers.*.cross_attention.linear_q", "decoder.layers.*.cross_attention.linear_kv"],
    "encoder": ["*.encoder.layers.*.linear_proj"],
}
RETRO_METHOD_CASES = dict(METHOD_CASES)
RETRO_METHOD_CASES["lora"] = {"rank": 4, "alpha": 8.0, "targets": [t for ts in RETRO_LORA_TARGETS.values() for t in ts],
                              "exclude": ["*.encoder.*.cross_attention.*"]}
RETRO_METHOD_CASES["qlora"] = dict(METHOD_CASES["qlora"], targets=["linear_qkv", "linear_proj", "linear_fc1",
                                                                   "linear_fc2", "linear_q", "linear_kv"])
RETRO_METHOD_CASES["adapter"] = {"dim": 8, "targets": ["self_attention", "mlp", "decoder.layers.*.cross_attention"],
                                 "exclude": ["*.encoder.*"]}


class RandomRetroTokens(RandomTokens):
    """RandomTokens plus random neighbours [l, k, r]."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        g = torch.Generator().manual_seed(10_000 + i)
        item["neighbours"] = torch.randint(0, self.vocab, (SEQ // M, K, R), generator=g)
        return item


class PatternRetroTokens(PatternTokens):
    """PatternTokens plus neighbours that hold the sequence's motif (a retrieval that helps)."""

    def __getitem__(self, i):
        item = super().__getitem__(i)
        motif = item["tokens"][:5]
        item["neighbours"] = motif.repeat(SEQ // M * K * R // 5 + 1)[: SEQ // M * K * R].view(SEQ // M, K, R)
        return item
