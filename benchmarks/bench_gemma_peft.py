"""Gemma 3 270M LoRA step: ours (megatron-core, Gemma 3 spec) vs transformers + peft, side by side.

Shape of configs/models/gemma3-270m.yaml (18 layers, hidden 640, 4 query heads / 1 KV head of 256,
GeGLU 2048, tied 262,144-row embedding), seq 384, micro-batch 4, fp32, AdamW/Adam, LoRA r16
alpha 32, loss on the last ``--answer`` tokens of each row (a QA sample's answer):
    hf-peft-all-logits      Gemma3ForCausalLM + peft LoRA on all 7 projections, ``labels=`` (logits
                            at every position: the [4, 384, 262144] tensor dominates)
    hf-peft-answer-logits   the same model; the decoder's hidden states, then the tied output layer
                            and cross-entropy only at the answer positions (the best HF does)
    ours-lora               our GPT with model.family=gemma3, LoRA on the 4 fused linears, the
                            chunked output layer + cross-entropy only where the loss mask is set
Weights are random (speed does not depend on their values; ``--gguf`` loads the real ones into
both). Each variant runs in its own process (peak RSS = its ru_maxrss, default glibc allocator);
median step time over the timed steps; tokens/s counts every input token (batch x seq).

    python benchmarks/bench_gemma_peft.py [--steps 4] [--warmup 1] [--threads 2]
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from common import options, run_variant

CONFIG = os.path.join(os.path.dirname(__file__), "..", "configs", "models", "gemma3-270m.yaml")
VARIANTS = ("hf-peft-all-logits", "hf-peft-answer-logits", "ours-lora")
HF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def batch(seq: int, bs: int, answer: int, vocab: int) -> dict:
    """Random tokens [bs, seq] with the loss on each row's last ``answer`` positions."""
    import torch

    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(3, vocab, (bs, seq + 1), generator=g)
    mask = torch.zeros(bs, seq)
    mask[:, -answer:] = 1.0
    return {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": mask,
            "position_ids": torch.arange(seq)[None].expand(bs, -1)}


def build_ours(args):
    import torch  # noqa: F401

    from megatron_retro.config import load_config
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.peft import apply_peft, install_peft_grad_reduction, make_peft_config
    from megatron_retro.training.engine import Engine
    from megatron_retro.training.gpt_step import gpt_forward_step

    cfg = load_config(CONFIG, [f"model.seq_length={args.seq}", f"model.num_layers={args.layers}",
                               f"train.micro_batch_size={args.batch}",
                               f"train.global_batch_size={args.batch}", "train.clip_grad=0", "train.lr_warmup_steps=0",
                               "train.precision=fp32"])
    vocab = cfg.model.vocab_size
    initialize_parallel(cfg.parallel, seed=1)
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=vocab, precision="fp32")
    if args.gguf:
        from megatron_retro.training.hf_convert import fill_from_hf, open_source

        src, family = open_source(gguf=args.gguf)
        fill_from_hf(chunks, src, cfg.model, vocab, family.tensor_for)
    apply_peft(chunks, make_peft_config("lora", {"rank": 16, "alpha": 32.0}))
    engine = Engine(cfg, chunks, gpt_forward_step)
    install_peft_grad_reduction(engine)
    data = batch(args.seq, args.batch, args.answer, vocab)
    return lambda: engine.train_step([data]).loss


def build_hf(args, answer_only: bool):
    import torch
    import yaml
    from peft import LoraConfig, get_peft_model
    from transformers import Gemma3ForCausalLM

    from megatron_retro.config import ModelConfig
    from megatron_retro.models.hf_gemma3 import gemma3_config

    if args.gguf:
        model = Gemma3ForCausalLM.from_pretrained(os.path.dirname(args.gguf), gguf_file=os.path.basename(args.gguf),
                                                  dtype=torch.float32)
    else:
        with open(CONFIG, encoding="utf-8") as f:
            model_cfg = ModelConfig(**dict(yaml.safe_load(f)["model"], num_layers=args.layers))
        config = gemma3_config(model_cfg, model_cfg.vocab_size)
        config._attn_implementation = "sdpa"
        model = Gemma3ForCausalLM(config)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=HF_TARGETS))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    data = batch(args.seq, args.batch, args.answer, model.config.vocab_size)
    tokens, mask = data["tokens"], data["loss_mask"].bool()
    labels = torch.where(mask, data["labels"], torch.full_like(data["labels"], -100))
    model.train()
    inner = model.base_model.model  # Gemma3ForCausalLM with LoRA layers

    def step():
        opt.zero_grad(set_to_none=True)
        if answer_only:  # hidden states [b, s, d] -> the answer rows [n, d] -> logits [n, V]
            hidden = inner.model(input_ids=tokens).last_hidden_state
            logits = inner.lm_head(hidden[mask])
            loss = torch.nn.functional.cross_entropy(logits.float(), data["labels"][mask])
        else:  # logits [b, s, V] at every position; HF shifts labels itself
            loss = model(input_ids=tokens, labels=torch.cat([labels[:, :1], labels[:, :-1]], 1)).loss
        loss.backward()
        opt.step()
        return loss.item()
    return step


def child(variant: str, args) -> None:
    import torch

    torch.set_num_threads(args.threads)
    step = build_ours(args) if variant == "ours-lora" else build_hf(args, variant == "hf-peft-answer-logits")
    times, losses = [], []
    for i in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        losses.append(step())
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"variant": variant, "step_s": statistics.median(times), "peak_rss_mb": peak_mb,
                                  "first_loss": losses[0]}), flush=True)


def main() -> None:
    ap = options(__doc__, steps=4, warmup=1, seq=384, batch=4, answer=(16, "loss positions at the end of each row"),
                 threads=2, layers=(18, "fewer layers: a smoke run (random weights only)"))
    ap.add_argument("--gguf", help="load the real weights from this GGUF into every variant")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        return child(args.variant, args)
    rows = {}
    for variant in VARIANTS:
        rows[variant] = run_variant(__file__, variant, sys.argv[1:], args.threads)
    tokens = args.batch * args.seq
    best = max(VARIANTS[:2], key=lambda v: tokens / rows[v]["step_s"])
    print(f"seq {args.seq}, batch {args.batch}, loss on the last {args.answer} tokens/row, fp32, "
          f"{args.threads} threads, {'GGUF weights' if args.gguf else 'random weights'}; "
          f"median of {args.steps} steps after {args.warmup} warm-up")
    print("| variant | step s | tokens/s | vs best HF tokens/s | peak RSS MB | vs best HF RSS |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['step_s']:.2f} | {tokens / r['step_s']:.0f} | "
              f"{rows[best]['step_s'] / r['step_s']:.2f}x | {r['peak_rss_mb']:.0f} | "
              f"{r['peak_rss_mb'] / rows[best]['peak_rss_mb']:.2f}x |")
    print("RESULT " + json.dumps({"best_hf": best, "rows": rows}))


if __name__ == "__main__":
    main()
