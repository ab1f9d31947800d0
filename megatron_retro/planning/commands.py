"""CLI: `megatron-retro plan --config C --tp T --pp P [--json]` and
`megatron-retro plan --config C --recommend --gpus N [--method M]` (layout recommendation)."""
from __future__ import annotations

import argparse
import json


def register(subparsers) -> None:
    p = subparsers.add_parser("plan", help="parameter counts and per-GPU memory of a config (meta device)")
    p.add_argument("--config", required=True, help="model/run config YAML")
    p.add_argument("--tp", type=int, default=1, help="tensor parallel size to plan for")
    p.add_argument("--pp", type=int, default=1, help="pipeline parallel size to plan for")
    p.add_argument("--dp", type=int, default=1, help="data parallel size (distributed optimizer share)")
    p.add_argument("--micro-batch", type=int, default=1, help="micro-batch size for activations")
    p.add_argument("--vocab-size", type=int, help="tokenizer vocabulary (default: model.vocab_size)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--recommend", action="store_true",
                   help="recommend TP/PP/DP, micro-batch and recomputation for --gpus N x 80 GB GPUs")
    p.add_argument("--gpus", type=int, help="number of GPUs to recommend a layout for (with --recommend)")
    p.add_argument("--method", choices=["full", "lora", "adapter", "ptuning", "all"], default="all",
                   help="training method to recommend for (PEFT trainable counts are formula-based)")
    p.add_argument("--global-batch", type=int, default=128, help="sequences per optimizer step (recommend)")
    p.add_argument("--gpu-memory-gb", type=float, default=80.0, help="memory of one GPU, GB (recommend)")
    p.add_argument("--mfu", type=float, default=0.40, help="model FLOPs utilisation for the step time")
    p.add_argument("--peak-tflops", type=float, default=312.0, help="dense bf16 peak of one GPU (A100: 312)")
    p.add_argument("--distributed-optimizer", action="store_true",
                   help="shard optimizer state over DP (the training engine does not yet)")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.set_defaults(handler=_plan)


def _plan(args: argparse.Namespace) -> int:
    from megatron_retro.config import load_config
    from megatron_retro.errors import UserError
    from megatron_retro.planning.plan import format_plan, make_plan

    if args.recommend:
        return _recommend(args)
    cfg = load_config(args.config, list(args.overrides) + [f"parallel.tp={args.tp}", f"parallel.pp={args.pp}"])
    vocab = args.vocab_size or cfg.model.vocab_size
    if vocab is None:
        raise UserError(f"{args.config}: model.vocab_size is not set (pass --vocab-size)")
    plan = make_plan(cfg, args.tp, args.pp, vocab, dp=args.dp, micro_batch=args.micro_batch)
    print(json.dumps(plan, indent=1) if args.json else format_plan(plan))
    return 0


def _recommend(args: argparse.Namespace) -> int:
    from megatron_retro.config import load_config
    from megatron_retro.errors import UserError
    from megatron_retro.planning.peft_counts import METHODS
    from megatron_retro.planning.recommend import format_recommendation, recommend

    if not args.gpus or args.gpus < 1:
        raise UserError("plan --recommend: --gpus N (N >= 1) is required")
    if not 0 < args.mfu <= 1:
        raise UserError(f"plan --recommend: --mfu={args.mfu}: must be in (0, 1]")
    cfg = load_config(args.config, list(args.overrides))
    vocab = args.vocab_size or cfg.model.vocab_size
    if vocab is None:
        raise UserError(f"{args.config}: model.vocab_size is not set (pass --vocab-size)")
    precision = "fp32" if cfg.train.precision == "fp32" else "bf16"
    methods = METHODS if args.method == "all" else (args.method,)
    rows = []
    for method in methods:
        plan = recommend(cfg.model, vocab, method, args.gpus, precision=precision, global_batch=args.global_batch,
                         distributed_optimizer=args.distributed_optimizer, gpu_memory_gb=args.gpu_memory_gb,
                         peak_tflops=args.peak_tflops, mfu=args.mfu, retro=cfg.retro)
        rows.append((method, plan))
    if args.json:
        print(json.dumps([{"method": m, "plan": None if p is None else p.as_dict()} for m, p in rows], indent=1))
    else:
        for method, plan in rows:
            print(format_recommendation(args.config, plan, method, args.gpus))
    return 0
