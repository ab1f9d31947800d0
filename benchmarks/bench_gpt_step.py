"""GPT training step at TP=1 on CPU: megatron_retro (megatron-core GPTModel + our spec) vs a plain
PyTorch model of identical shape and math, side by side in one process, same weights and data.

Both models: vocab V, hidden d, L layers, heads h, SwiGLU width f, RMSNorm, RoPE, untied
embeddings, no bias, fused QKV in megatron's grouped layout, fp32, Adam(W) with the same
hyper-parameters and grad clipping.  The step-0 losses are printed to show the math matches.
Two plain twins (same weights): "plain" steps with torch's default AdamW (the per-tensor loop on
CPU), "plain-fused" with ``AdamW(fused=True)`` (torch's fused CPU kernel, what our Engine uses):
the fair comparison of the model code; the first also counts our optimizer choice.

    python benchmarks/bench_gpt_step.py            # defaults: V=8192 d=512 L=8 h=8 f=1408 s=512 b=4
    python benchmarks/bench_gpt_step.py --steps 10 --threads 2

Prints one JSON line with the median step times and their ratio (megatron / plain).
"""
from __future__ import annotations

import json
import math
import statistics
import time
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from common import options  # noqa: E402


class PlainGPT(torch.nn.Module):
    """The same network written directly in PyTorch (SDPA attention)."""

    def __init__(self, vocab, d, layers, heads, ffn, seq, rotary_base=10000):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.embed = torch.nn.Embedding(vocab, d)
        self.layers = torch.nn.ModuleList()
        for _ in range(layers):
            block = torch.nn.Module()
            block.norm1 = torch.nn.RMSNorm(d, eps=1e-5)
            block.qkv = torch.nn.Linear(d, 3 * d, bias=False)
            block.proj = torch.nn.Linear(d, d, bias=False)
            block.norm2 = torch.nn.RMSNorm(d, eps=1e-5)
            block.fc1 = torch.nn.Linear(d, 2 * ffn, bias=False)
            block.fc2 = torch.nn.Linear(ffn, d, bias=False)
            self.layers.append(block)
        self.final_norm = torch.nn.RMSNorm(d, eps=1e-5)
        self.output = torch.nn.Linear(d, vocab, bias=False)
        inv = 1.0 / (rotary_base ** (torch.arange(0, self.hd, 2, dtype=torch.float32) / self.hd))
        freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv)
        emb = torch.cat([freqs, freqs], dim=-1)  # [s, hd]
        self.register_buffer("cos", emb.cos(), persistent=False)
        self.register_buffer("sin", emb.sin(), persistent=False)

    def rope(self, x):  # x [b, h, s, hd]
        x1, x2 = x.chunk(2, dim=-1)
        return x * self.cos + torch.cat([-x2, x1], dim=-1) * self.sin

    def forward(self, tokens, labels):
        b, s = tokens.shape
        x = self.embed(tokens)  # [b, s, d]
        for blk in self.layers:
            h = blk.qkv(blk.norm1(x)).view(b, s, self.heads, 3 * self.hd)  # megatron's grouped layout
            q, k, v = h.split(self.hd, dim=-1)
            q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # [b, h, s, hd]
            a = F.scaled_dot_product_attention(self.rope(q), self.rope(k), v, is_causal=True)
            x = x + blk.proj(a.transpose(1, 2).reshape(b, s, -1))
            gate, up = blk.fc1(blk.norm2(x)).chunk(2, dim=-1)
            x = x + blk.fc2(F.silu(gate) * up)
        logits = self.output(self.final_norm(x))
        return F.cross_entropy(logits.float().view(-1, logits.shape[-1]), labels.reshape(-1))


def copy_weights(plain: PlainGPT, mc) -> None:
    """megatron GPTModel -> PlainGPT (names differ, layouts are the same)."""
    with torch.no_grad():
        plain.embed.weight.copy_(mc.embedding.word_embeddings.weight)
        for blk, layer in zip(plain.layers, mc.decoder.layers):
            blk.norm1.weight.copy_(layer.input_layernorm.weight)
            blk.qkv.weight.copy_(layer.self_attention.linear_qkv.weight)
            blk.proj.weight.copy_(layer.self_attention.linear_proj.weight)
            blk.norm2.weight.copy_(layer.pre_mlp_layernorm.weight)
            blk.fc1.weight.copy_(layer.mlp.linear_fc1.weight)
            blk.fc2.weight.copy_(layer.mlp.linear_fc2.weight)
        plain.final_norm.weight.copy_(mc.decoder.final_layernorm.weight)
        plain.output.weight.copy_(mc.output_layer.weight)


def main() -> None:
    ap = options(__doc__, vocab=8192, hidden=512, layers=8, heads=8, ffn=1408, seq=512, batch=4,
                 steps=(10, "timed steps per model (after 2 warm-up steps)"), threads=2)
    ap.add_argument("--attention", default="sdpa", choices=["sdpa", "unfused"],
                    help="megatron side core attention: ours (sdpa) or megatron's DotProductAttention")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from megatron_retro.config import load_config
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.engine import Engine
    from megatron_retro.training.gpt_step import gpt_forward_step

    cfg = load_config(None, [
        f"model.num_layers={args.layers}", f"model.hidden_size={args.hidden}",
        f"model.num_attention_heads={args.heads}", f"model.ffn_hidden_size={args.ffn}",
        f"model.seq_length={args.seq}", "model.rotary_percent=1.0", f"model.attention_backend={args.attention}",
        "model.make_vocab_size_divisible_by=1", f"train.micro_batch_size={args.batch}",
        "train.precision=fp32", "train.lr=1e-4", "train.min_lr=1e-4", "train.lr_warmup_steps=0",
        "train.lr_decay_style=constant", "train.weight_decay=0.01", "train.clip_grad=1.0"])
    initialize_parallel(cfg.parallel, seed=1)
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=args.vocab, precision="fp32")
    plain = PlainGPT(args.vocab, args.hidden, args.layers, args.heads, args.ffn, args.seq)
    copy_weights(plain, chunks[0])
    plain_fused = PlainGPT(args.vocab, args.hidden, args.layers, args.heads, args.ffn, args.seq)
    plain_fused.load_state_dict(plain.state_dict())
    engine = Engine(cfg, chunks, gpt_forward_step)
    adam = dict(lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    opts = {"plain": (plain, torch.optim.AdamW(plain.parameters(), **adam)),
            "plain-fused": (plain_fused, torch.optim.AdamW(plain_fused.parameters(), fused=True, **adam))}

    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, args.vocab, (args.steps + 2, args.batch, args.seq + 1), generator=g)
    positions = torch.arange(args.seq).expand(args.batch, args.seq)

    def megatron_step(i):
        batch = {"tokens": data[i, :, :-1], "labels": data[i, :, 1:],
                 "loss_mask": torch.ones(args.batch, args.seq), "position_ids": positions}
        return engine.train_step([batch]).loss

    def plain_step(name, i):
        model, opt = opts[name]
        opt.zero_grad(set_to_none=True)
        loss = model(data[i, :, :-1], data[i, :, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.item()

    times = {"megatron": [], "plain": [], "plain-fused": []}
    first = {}
    steps = (("megatron", megatron_step), ("plain", lambda i: plain_step("plain", i)),
             ("plain-fused", lambda i: plain_step("plain-fused", i)))
    for i in range(args.steps + 2):  # interleaved, so all see the same machine state
        for name, fn in steps:
            t0 = time.perf_counter()
            loss = fn(i)
            dt = time.perf_counter() - t0
            first.setdefault(name, loss)
            if i >= 2:
                times[name].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    tokens = args.batch * args.seq
    print(json.dumps({
        "shape": {k: getattr(args, k) for k in ("vocab", "hidden", "layers", "heads", "ffn", "seq", "batch")},
        "threads": args.threads, "attention": args.attention,
        "step0_loss": first, "step0_loss_abs_diff": abs(first["megatron"] - first["plain"]),
        "median_step_s": {k: round(v, 4) for k, v in med.items()},
        "tokens_per_s": {k: round(tokens / v, 1) for k, v in med.items()},
        "ratio_megatron_over_plain": round(med["megatron"] / med["plain"], 4),
        "ratio_megatron_over_plain_fused": round(med["megatron"] / med["plain-fused"], 4),
        "ln_vocab": round(math.log(args.vocab), 4),
    }))


if __name__ == "__main__":
    main()
