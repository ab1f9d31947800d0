"""Interleaved A/B of one training step in ONE process: the optimised paths vs the plain ones.

Both variants run on the same engine (same weights, same batch), alternating step by step, so
machine load hits them alike; the ratio of medians is robust to load, absolute times are not.
"plain" = megatron's output layer + vocab-parallel cross-entropy (model.fused_output_loss=false),
megatron's unfused RoPE, the reference LoRA chain (kernels.fused_lora_reference), megatron's
unfused gated MLP, torch's composite RMSNorm, LoRA's accumulating torch path instead of the folded one, the folded path's stacked weight rebuilt in backward instead of kept from forward, torch's fused SDPA kernel instead of the blocked causal attention (models/block_attention.py), dW added to main_grad by DDP's hook and torch's per-tensor Adam loop, our autograd Functions' torch calls through the CPU redirect mode (parallel/cpu_compat.py outside_redirect), the blocked attention's dQ written into q's layout block by block (B GEMMs each) instead of block-major, its non-last blocks' dK / dV accumulated into the key slice (B GEMMs each) instead of one batched GEMM and an add; "ours" =
the defaults (models/output_loss.py, models/rope.py, kernels/lora_torch.py, models/swiglu.py,
training/cpu_fast_paths.py, models/rmsnorm.py).  ``--parts`` picks which of them the plain side undoes.  Before
timing, both variants' losses and gradients on the same weights are compared.

    python benchmarks/ab_step.py --method lora [--steps 6] [--small]
    python benchmarks/ab_step.py --method none        # full fine-tuning
    python benchmarks/ab_step.py --method lora --against hf   # ours vs HF transformers + peft LoRA

``--against hf`` alternates our step with bench_peft's HF peft step instead (timing only; peak
memory needs separate processes: bench_peft.py).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
import warnings

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


PARTS = ("loss", "rope", "lora", "fold", "keep", "attn", "swiglu", "wgrad", "adam", "norm", "redirect", "dq", "dkv")


@contextlib.contextmanager
def plain_paths(engine, parts=PARTS):
    """The unoptimised ``parts`` (output loss, RoPE, LoRA chain) for the duration of the block."""
    import torch
    from megatron.core.transformer import attention
    from megatron.core.transformer.mlp import MLP

    import megatron_retro.kernels.fused_lora as fl
    from megatron_retro.kernels import lora_torch
    from megatron_retro.models import block_attention, rope
    from megatron_retro.models.rmsnorm import FastRMSNorm
    from megatron_retro.models.sdpa_attention import SDPAttention
    from megatron_retro.models.swiglu import SwiGLUMLP
    from megatron_retro.parallel import cpu_compat

    saved = fl.lora_linear_torch, attention.apply_rotary_pos_emb
    fold_threshold, keeps = lora_torch.FOLD_MIN_TOKENS_PER_IN_FEATURE, lora_torch.keeps_folded_weight
    if "fold" in parts:   # LoRA's accumulating torch path instead of the folded one
        lora_torch.FOLD_MIN_TOKENS_PER_IN_FEATURE = float("inf")
    if "keep" in parts:   # the folded path rebuilds its stacked weight in backward (as for QLoRA)
        lora_torch.keeps_folded_weight = lambda weight: False
    swiglu_forward, norm_forward = SwiGLUMLP.forward, FastRMSNorm.forward
    block_path = SDPAttention._block_path
    if "attn" in parts:   # torch's fused SDPA kernel instead of the blocked causal attention
        SDPAttention._block_path = lambda *a: False
    if "norm" in parts:
        FastRMSNorm.forward = torch.nn.RMSNorm.forward
    if "redirect" in parts:   # every torch call in our Functions through the redirect mode again
        cpu_compat.SKIP_REDIRECT_IN_HOT_PATHS = False
    if "dq" in parts:   # the blocked attention's dQ into q's layout (a strided slice: B GEMMs a block)
        block_attention.DQ_BLOCK_MAJOR = False
    if "dkv" in parts:   # each non-last block's dK / dV accumulated into the key slice (B GEMMs a block)
        block_attention.DKV_SHARES_BATCHED = False
    fused_linears = [m for c in engine.chunks for m in c.modules() if getattr(m, "gradient_accumulation_fusion", False)]
    groups = [g for o in getattr(engine.optimizer, "chained_optimizers", [engine.optimizer])
              for g in o.optimizer.param_groups if g.get("fused")]
    if "swiglu" in parts:
        SwiGLUMLP.forward = MLP.forward
    if "wgrad" in parts:
        for m in fused_linears:
            m.gradient_accumulation_fusion = False
    if "adam" in parts:
        for g in groups:
            g["fused"] = False
    if "lora" in parts:
        fl.lora_linear_torch = lambda x, w, a, b, s, bias=None: fl.fused_lora_reference(x, w, a, b, s, bias)
    if "rope" in parts:
        attention.apply_rotary_pos_emb = rope._MEGATRON["apply_rotary_pos_emb"]
    for c in engine.chunks:
        c.module.fused_output_loss = "loss" not in parts
    try:
        yield
    finally:
        fl.lora_linear_torch, attention.apply_rotary_pos_emb = saved
        lora_torch.FOLD_MIN_TOKENS_PER_IN_FEATURE, lora_torch.keeps_folded_weight = fold_threshold, keeps
        SwiGLUMLP.forward, FastRMSNorm.forward = swiglu_forward, norm_forward
        SDPAttention._block_path = block_path
        cpu_compat.SKIP_REDIRECT_IN_HOT_PATHS = True
        block_attention.DQ_BLOCK_MAJOR = True
        block_attention.DKV_SHARES_BATCHED = True
        for m in fused_linears:
            m.gradient_accumulation_fusion = True
        for g in groups:
            g["fused"] = True
        for c in engine.chunks:
            c.module.fused_output_loss = True


def grads(engine, batch):
    loss, _ = engine.forward_backward([batch])
    return loss, [p.main_grad.clone() for c in engine.chunks for p in c.module.parameters() if p.requires_grad]


def main() -> None:
    import torch

    from bench_peft import SHAPE, SMALL, build_ours

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="lora", help="lora, qlora or none (full fine-tuning)")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--against", choices=["plain", "hf"], default="plain")
    ap.add_argument("--parts", default=",".join(PARTS), help="what the plain variant un-optimises: "
                    "comma-separated subset of " + ",".join(PARTS))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    s = SMALL if args.small else SHAPE
    engine, batch, _ = build_ours(s, None if args.method == "none" else args.method)
    if args.against == "hf":
        return against_hf(args, s, engine, batch)
    for c in engine.chunks:
        c.zero_grad_buffer()
    loss_ours, g_ours = grads(engine, batch)
    for c in engine.chunks:
        c.zero_grad_buffer()
    parts = tuple(args.parts.split(","))
    with plain_paths(engine, parts):
        loss_plain, g_plain = grads(engine, batch)
    grad_err = max(((a - b).abs().max() / b.abs().max().clamp_min(1e-30)).item() for a, b in zip(g_ours, g_plain))
    times = {"ours": [], "plain": []}
    for i in range(args.steps + 1):
        for name in ("ours", "plain"):
            ctx = plain_paths(engine, parts) if name == "plain" else contextlib.nullcontext()
            with ctx:
                t0 = time.perf_counter()
                engine.train_step([batch])
                dt = time.perf_counter() - t0
            if i:
                times[name].append(dt)
    med = {k: statistics.median(v) for k, v in times.items()}
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(json.dumps({"method": args.method, "plain_parts": parts, "loss_ours": loss_ours, "loss_plain": loss_plain,
                      "max_rel_grad_diff": grad_err, "median_step_s": med,
                      "ratio_ours_over_plain": med["ours"] / med["plain"], "loadavg_end": load}))


def against_hf(args, s, engine, batch) -> None:
    from bench_peft import build_hf

    hf_step = build_hf(s)
    times = {"ours": [], "hf": []}
    for i in range(args.steps + 1):
        for name, fn in (("ours", lambda: engine.train_step([batch])), ("hf", hf_step)):
            t0 = time.perf_counter()
            fn()
            if i:
                times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    print(json.dumps({"method": args.method, "median_step_s": med, "hf_over_ours_speed": med["hf"] / med["ours"],
                      "loadavg_end": load}))


if __name__ == "__main__":
    main()
