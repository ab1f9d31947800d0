"""CLI: `megatron-retro plan --config C --tp T --pp P [--json]`."""
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
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="config overrides")
    p.set_defaults(handler=_plan)


def _plan(args: argparse.Namespace) -> int:
    from megatron_retro.config import load_config
    from megatron_retro.errors import UserError
    from megatron_retro.planning.plan import format_plan, make_plan

    cfg = load_config(args.config, list(args.overrides) + [f"parallel.tp={args.tp}", f"parallel.pp={args.pp}"])
    vocab = args.vocab_size or cfg.model.vocab_size
    if vocab is None:
        raise UserError(f"{args.config}: model.vocab_size is not set (pass --vocab-size)")
    plan = make_plan(cfg, args.tp, args.pp, vocab, dp=args.dp, micro_batch=args.micro_batch)
    print(json.dumps(plan, indent=1) if args.json else format_plan(plan))
    return 0
