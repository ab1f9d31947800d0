"""LoRA and QLoRA fine-tuning steps vs full fine-tuning (ours, megatron-core) vs HF transformers + peft LoRA.

Same Llama-shaped model for all three (default: vocab 8192, hidden 512, 8 layers, 8 heads,
SwiGLU 1408, RMSNorm, RoPE, untied, no bias, seq 512, micro-batch 4, fp32, Adam, 2 threads):
    ours-lora   megatron GPT (local spec, SDPA core attention, one-pass RoPE, chunked output layer +
                cross-entropy), LoRA r16 on the 4 fused linears (kernels/lora_torch.py on CPU)
    ours-full   the same model, every parameter trained
    ours-qlora  ours-lora with the 4 fused linears' base weights stored as NF4 (block 64,
                double-quantised scales), dequantised in forward and again in backward
    hf-peft     transformers LlamaForCausalLM + peft LoRA r16 on all 7 projections
Each variant runs in its own process (peak RSS = ru_maxrss of that process, default glibc
allocator), median step time over the timed steps.  FLOPs are counted analytically per step:
forward F (matmuls incl. attention scores and the output layer); full step 3F; LoRA floor 2F
(forward + input gradients, no weight gradients for the frozen base) plus LoRA's own small terms.

    python benchmarks/bench_peft.py [--steps 6] [--warmup 2] [--small]
    python benchmarks/bench_peft.py --override model.recompute_modules=[mlp]   # ours-* with overrides
    python benchmarks/bench_peft.py --threads 1       # one thread per variant (a one-core lane)
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import time

from common import run_variant

SHAPE = dict(vocab=8192, hidden=512, layers=8, heads=8, ffn=1408, seq=512, batch=4, rank=16)
SMALL = dict(vocab=1024, hidden=128, layers=2, heads=4, ffn=352, seq=128, batch=2, rank=8)


def flops(s: dict) -> dict:
    """Matmul FLOPs of one forward over the micro-batch, and of the step variants."""
    t = s["seq"] * s["batch"]
    d, f, v, L = s["hidden"], s["ffn"], s["vocab"], s["layers"]
    per_layer = 2 * t * (d * 3 * d + d * d + d * 2 * f + f * d) + 2 * 2 * t * s["seq"] * d  # linears + QK^T, PV
    fwd = L * per_layer + 2 * t * d * v
    r = s["rank"]
    lora_fwd = L * 2 * t * r * ((d + 3 * d) + (d + d) + (d + 2 * f) + (f + d))
    return {"forward": fwd, "full_step": 3 * fwd, "lora_floor": 2 * fwd + 3 * lora_fwd}


def build_ours(s: dict, method, overrides: tuple = ()):
    """(engine, batch, extra): our GPT at shape ``s`` with ``method`` (None = full fine-tuning)."""
    import torch

    from megatron_retro.config import load_config
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.peft import apply_peft, install_peft_grad_reduction, make_peft_config
    from megatron_retro.training.engine import Engine
    from megatron_retro.training.gpt_step import gpt_forward_step

    cfg = load_config(None, [
        f"model.num_layers={s['layers']}", f"model.hidden_size={s['hidden']}",
        f"model.num_attention_heads={s['heads']}", f"model.ffn_hidden_size={s['ffn']}",
        f"model.seq_length={s['seq']}", "model.attention_backend=sdpa", "model.make_vocab_size_divisible_by=128",
        f"train.micro_batch_size={s['batch']}", f"train.global_batch_size={s['batch']}", "train.clip_grad=0",
        "train.lr_warmup_steps=0", "train.precision=fp32", *overrides])
    initialize_parallel(cfg.parallel, seed=1)
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=s["vocab"], precision="fp32")
    extra = {}
    if method:
        apply_peft(chunks, make_peft_config(method, {"rank": s["rank"], "alpha": 2.0 * s["rank"]}))
    if method == "qlora":
        from megatron_retro.peft.qlora import qlora_memory

        extra = qlora_memory(chunks).as_dict()
    engine = Engine(cfg, chunks, gpt_forward_step)
    if method:
        install_peft_grad_reduction(engine)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, s["vocab"], (s["batch"], s["seq"] + 1), generator=g)
    batch = {"tokens": tokens[:, :-1], "labels": tokens[:, 1:], "loss_mask": torch.ones(s["batch"], s["seq"]),
             "position_ids": torch.arange(s["seq"])[None].expand(s["batch"], -1)}
    return engine, batch, extra


def run_ours(s: dict, method, steps: int, warmup: int, overrides: tuple = ()) -> tuple[list[float], dict]:
    engine, batch, extra = build_ours(s, method, overrides)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        engine.train_step([batch])
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times, extra


def build_hf(s: dict):
    """A function running one HF transformers + peft LoRA step at shape ``s``."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=s["vocab"], hidden_size=s["hidden"], intermediate_size=s["ffn"],
                         num_hidden_layers=s["layers"], num_attention_heads=s["heads"],
                         num_key_value_heads=s["heads"], max_position_embeddings=s["seq"],
                         tie_word_embeddings=False, attention_bias=False, mlp_bias=False)
    config._attn_implementation = "sdpa"
    model = LlamaForCausalLM(config)
    model = get_peft_model(model, LoraConfig(r=s["rank"], lora_alpha=2 * s["rank"], lora_dropout=0.0,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                             "up_proj", "down_proj"]))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, s["vocab"], (s["batch"], s["seq"]), generator=g)
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        model(input_ids=tokens, labels=tokens).loss.backward()
        opt.step()
    return step


def run_hf(s: dict, steps: int, warmup: int) -> list[float]:
    step = build_hf(s)
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return times


def child(variant: str, s: dict, steps: int, warmup: int, overrides: tuple = (), threads: int = 2) -> None:
    import torch

    torch.set_num_threads(threads)
    method = {"ours-full": None, "ours-lora": "lora", "ours-qlora": "qlora"}.get(variant)
    if variant == "hf-peft":
        times, extra = run_hf(s, steps, warmup), {}
    else:
        times, extra = run_ours(s, method, steps, warmup, overrides)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps({"variant": variant, "step_s": statistics.median(times), "peak_rss_mb": peak_mb,
                                  **extra}), flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--small", action="store_true", help="a tiny shape (smoke run)")
    ap.add_argument("--override", nargs="*", default=[], help="config overrides for the ours-* variants")
    ap.add_argument("--json", action="store_true", help="also print one RESULT line (for run_all.py)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads per variant (1 on a one-core lane)")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    args = ap.parse_args()
    s = SMALL if args.small else SHAPE
    if args.variant:
        return child(args.variant, s, args.steps, args.warmup, tuple(args.override), args.threads)
    rows = {}
    for variant in ("hf-peft", "ours-full", "ours-lora", "ours-qlora"):
        argv = ["--steps", str(args.steps), "--warmup", str(args.warmup), "--threads", str(args.threads)]
        argv += ["--small"] if args.small else []
        argv += ["--override", *args.override] if args.override else []
        rows[variant] = run_variant(__file__, variant, argv, args.threads)
    f = flops(s)
    tokens = s["batch"] * s["seq"]
    hf = rows["hf-peft"]
    if args.json:
        print("RESULT " + json.dumps({"shape": s, "tokens": tokens, "flops": f, "rows": rows}), flush=True)
    print(f"shape {s}")
    print(f"FLOPs/step: forward {f['forward'] / 1e9:.1f} G, full step {f['full_step'] / 1e9:.1f} G, "
          f"LoRA floor {f['lora_floor'] / 1e9:.1f} G ({f['lora_floor'] / f['full_step']:.2f}x full)")
    print("| variant | step s | tokens/s | vs HF peft tokens/s | peak RSS MB | vs HF peft memory |")
    print("|---|---|---|---|---|---|")
    for name, r in rows.items():
        print(f"| {name} | {r['step_s']:.3f} | {tokens / r['step_s']:.0f} | {hf['step_s'] / r['step_s']:.2f}x | "
              f"{r['peak_rss_mb']:.0f} | {r['peak_rss_mb'] / hf['peak_rss_mb']:.2f}x |")
    lora, full = rows["ours-lora"], rows["ours-full"]
    floor_time = full["step_s"] * f["lora_floor"] / f["full_step"]
    print(f"ours-lora / ours-full step time: {lora['step_s'] / full['step_s']:.2f} "
          f"(FLOP floor {f['lora_floor'] / f['full_step']:.2f}); ours-lora runs at "
          f"{floor_time / lora['step_s']:.2f} of the floor speed implied by ours-full's FLOP rate "
          f"({f['full_step'] / full['step_s'] / 1e9:.1f} GFLOP/s full, "
          f"{f['lora_floor'] / lora['step_s'] / 1e9:.1f} GFLOP/s useful in LoRA)")
    q = rows["ours-qlora"]
    mb = 1024 * 1024
    print(f"ours-qlora: targeted base weights {q['base_weight_bytes_before'] / mb:.1f} MB fp32 -> "
          f"{q['base_weight_bytes_after'] / mb:.1f} MB NF4 ({q['qlora_modules']} linears, "
          f"{q['base_weight_bytes_saved'] / mb:.1f} MB saved); step time {q['step_s'] / lora['step_s']:.2f}x "
          f"ours-lora, peak RSS {q['peak_rss_mb'] - lora['peak_rss_mb']:+.0f} MB vs ours-lora")


if __name__ == "__main__":
    main()
