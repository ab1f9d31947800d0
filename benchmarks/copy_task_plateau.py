"""How fast a model learns to copy: ours (megatron-core GPT from a model YAML) vs a plain PyTorch
causal transformer of the same width, depth, heads and FFN size, on the same synthetic task.

Task: a random sequence of L tokens (ids 100..599) repeated once, ``[eod] s s``; the loss on the
second copy falls to ~0 once the model has an induction (copy) circuit, and stays at the unigram
level, ln(500) = 6.21 nats, until then (``--ids`` sets the range; with all 4,000 pieces it stays
there far longer).  Same batches, same Adam (lr 1e-3 unless --lr), no schedule.

This isolates the study's question "can the tiny model read a passage at all?" (issue 13) from the
data: BENCHMARKS.md "Study" reports the step at which each model leaves the plateau.

    python benchmarks/copy_task_plateau.py --config configs/models/gpt-tiny.yaml --steps 400
    python benchmarks/copy_task_plateau.py --model plain --steps 400
    python benchmarks/copy_task_plateau.py --config configs/models/gpt-tiny.yaml model.rotary_percent=1.0
    python benchmarks/copy_task_plateau.py --model plain --plain-init-std 0.02 --plain-final-norm
    python benchmarks/copy_task_plateau.py model.final_norm=false
    python benchmarks/copy_task_plateau.py --min-length 4 --steps 800 model.final_norm=false
    python benchmarks/copy_task_plateau.py --min-length 4 --steps 300 model.smear_keys=true model.final_norm=false
    python benchmarks/copy_task_plateau.py --min-length 4 --steps 300 --lr-mult output_layer=10 --rms model.smear_keys=true

Levers for ours (BENCHMARKS "Study", smeared keys): ``--lr-mult SUBSTR=M`` (Adam lr x M for the
parameters whose name contains SUBSTR), ``--reinit SUBSTR=V`` (matrices re-drawn N(0, V), vectors
filled with V), ``--final-eps E`` (the final norm's epsilon), ``--curriculum N`` (with --min-length:
the first N steps are the fixed-offset task), ``--row-length N`` (with --min-length: rows of N
tokens, as the pretraining mix's 257-token copy samples), ``--rms`` (also print the rms of the last layer's
output, of layer 1's attention output and of the embeddings).
"""
from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch
import torch.nn as nn

from megatron_retro.config.train import lr_mult_of, parse_lr_mult
from megatron_retro.data.copy_mix import copy_tokens


class PlainCausalTransformer(nn.Module):
    """Pre-norm torch encoder layers with a causal mask, learned positions, untied output layer
    (no final norm unless ``final_norm``)."""

    def __init__(self, vocab: int, hidden: int, heads: int, ffn: int, layers: int, max_len: int = 512,
                 init_std: float = 0.0, final_norm: bool = False):
        super().__init__()
        self.embedding = nn.Embedding(vocab, hidden)
        self.position = nn.Embedding(max_len, hidden)
        layer = nn.TransformerEncoderLayer(hidden, heads, ffn, dropout=0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final = nn.LayerNorm(hidden) if final_norm else nn.Identity()   # ours has one (megatron's)
        self.output = nn.Linear(hidden, vocab)
        if init_std > 0:   # megatron-like: every matrix N(0, init_std)
            for p in self.parameters():
                if p.dim() == 2:
                    nn.init.normal_(p, std=init_std)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [b, s] -> logits [b, s, vocab]."""
        s = tokens.shape[1]
        h = self.embedding(tokens) + self.position(torch.arange(s))[None]     # [b, s, hidden]
        mask = nn.Transformer.generate_square_subsequent_mask(s)
        return self.output(self.final(self.layers(h, mask=mask, is_causal=True)))


def build(args):
    """A function tokens [b, s], labels [b, s] -> per-token loss [b, s], and its parameters."""
    if args.model == "plain":
        if args.lr_mult or args.reinit or args.final_eps or args.rms:
            raise SystemExit("--lr-mult / --reinit / --final-eps / --rms: for --model ours only")
        m = PlainCausalTransformer(args.vocab, args.hidden, args.heads, args.ffn, args.layers,
                                   init_std=args.plain_init_std, final_norm=args.plain_final_norm)

        def loss_fn(x, y):
            return nn.functional.cross_entropy(m(x).transpose(1, 2), y, reduction="none")
        return loss_fn, m.parameters()
    from megatron_retro.config import load_config
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.finetune import build_model

    cfg = load_config(args.config, args.overrides)
    initialize_parallel(cfg.parallel, seed=args.seed)
    m = build_model(cfg, args.vocab)[0]
    while hasattr(m, "module"):   # unwrap DDP / Float16Module
        m = m.module
    m.train()
    if args.ours_init_std > 0:   # re-draw every matrix N(0, std): megatron's scaled output-side init off
        for p in m.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=args.ours_init_std)

    def loss_fn(x, y):
        pos = torch.arange(x.shape[1])[None].expand_as(x)
        return m(x, pos, None, labels=y, loss_mask=torch.ones_like(x, dtype=torch.float))   # [b, s]
    return loss_fn, apply_levers(args, m)


def apply_levers(args, model) -> list:
    """Ours: re-inits, final-norm epsilon and rms hooks; returns Adam param groups (--lr-mult)."""
    named = list(model.named_parameters())
    for spec in args.reinit:
        pat, value = spec.split("=")
        with torch.no_grad():
            for name, p in named:
                if pat in name:
                    nn.init.normal_(p, std=float(value)) if p.dim() >= 2 else p.fill_(float(value))
    if args.final_eps:
        model.decoder.final_layernorm.eps = args.final_eps
    if args.rms:
        def keep(key, t):
            args.rms_seen[key] = t.pow(2).mean().sqrt().item()
        model.decoder.layers[-1].register_forward_hook(lambda m, i, o: keep("residual", o[0]))
        model.decoder.layers[0].self_attention.register_forward_hook(lambda m, i, o: keep("attn1", o[0]))
        model.embedding.register_forward_hook(lambda m, i, o: keep("emb", o))
    rules = parse_lr_mult(args.lr_mult)   # train.lr_mult's syntax and rule: the last match wins
    groups: dict = {}
    for name, p in named:
        groups.setdefault(lr_mult_of(name, rules) or 1.0, []).append(p)
    return [{"params": ps, "lr": args.lr * m} for m, ps in groups.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", choices=["ours", "plain"], default="ours")
    ap.add_argument("--config", default="configs/models/gpt-tiny.yaml", help="ours: the model YAML")
    ap.add_argument("overrides", nargs="*", help="ours: key=value overrides of the YAML")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--length", type=int, default=24, help="L, tokens per copy")
    ap.add_argument("--min-length", type=int, default=0,
                    help="M < L: samples of data.copy_share's format instead (megatron_retro/data/copy_mix.py: "
                         "spans of M..L tokens said 2-4 times, 2L+1 tokens), printing the mean loss of all tokens")
    ap.add_argument("--row-length", type=int, default=0,
                    help="with --min-length: samples of this many tokens (several segments, as the pretraining "
                         "mix's seq_length+1 rows) instead of 2L+1")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (constant)")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--ids", type=int, nargs=2, default=(100, 600), metavar=("LO", "HI"),
                    help="copied tokens are drawn from ids LO..HI-1 (the plateau is ln(HI-LO))")
    ap.add_argument("--hidden", type=int, default=256, help="plain: width (match the YAML)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ffn", type=int, default=704)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--plain-init-std", type=float, default=0.0, help="plain: N(0, std) matrices (0 = torch default)")
    ap.add_argument("--plain-final-norm", action="store_true",
                    help="plain: a LayerNorm before the output layer, as megatron's GPT has")
    ap.add_argument("--ours-init-std", type=float, default=0.0, help="ours: re-draw every matrix N(0, std) (0 = keep)")
    ap.add_argument("--lr-mult", action="append", default=[], metavar="SUBSTR=M", help="ours: lr x M for these")
    ap.add_argument("--reinit", action="append", default=[], metavar="SUBSTR=V", help="ours: re-draw N(0, V) / fill V")
    ap.add_argument("--final-eps", type=float, default=0.0, help="ours: the final norm's epsilon (0 = keep)")
    ap.add_argument("--curriculum", type=int, default=0, help="with --min-length: fixed offset for the first N steps")
    ap.add_argument("--rms", action="store_true", help="ours: print residual / layer-1 attention / embedding rms")
    args = ap.parse_args()
    args.rms_seen = {}
    torch.manual_seed(args.seed)
    loss_fn, params = build(args)
    opt = torch.optim.Adam(params, lr=args.lr)
    g = torch.Generator().manual_seed(0)
    L, t0, left = args.length, time.time(), None
    rng, ids = np.random.default_rng(0), np.arange(args.ids[0], args.ids[1])
    for step in range(args.steps):
        variable = 0 < args.min_length < L and step >= args.curriculum
        if variable:   # variable copy distance: only a content-matching circuit can copy
            seq = torch.from_numpy(np.stack([copy_tokens(rng, ids, args.row_length or 2 * L + 1, 0, args.min_length, L)
                                             for _ in range(args.batch)]))               # [b, row length]
        else:
            half = torch.randint(args.ids[0], args.ids[1], (args.batch, L), generator=g)
            seq = torch.cat([torch.zeros(args.batch, 1, dtype=torch.long), half, half], 1)   # [b, 2L+1]
        loss = loss_fn(seq[:, :-1], seq[:, 1:])                                          # [b, 2L]
        loss.mean().backward()
        opt.step()
        opt.zero_grad()
        rms = "".join(f"  {k} rms {v:.3f}" for k, v in args.rms_seen.items())
        if variable:
            if step % 50 == 0 or step == args.steps - 1:
                print(f"step {step:4d}  mean loss {loss.mean().item():.3f}{rms}  ({time.time() - t0:.0f} s)", flush=True)
            continue
        second = loss[:, L + 1:].mean().item()   # positions whose target is in the second copy (first excluded)
        if left is None and second < 0.5 * math.log(args.ids[1] - args.ids[0]):
            left = step
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:4d}  first copy {loss[:, :L].mean().item():.3f}  second copy {second:.3f}{rms}  "
                  f"({time.time() - t0:.0f} s)", flush=True)
    if not 0 < args.min_length < L:
        print(f"left the plateau (second-copy loss < half the unigram level) at step: {left}")


if __name__ == "__main__":
    main()
