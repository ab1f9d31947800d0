"""CLI: `megatron-retro pretrain --config C [--tp T --pp P --steps N --out DIR] [key=value ...]`."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    from megatron_retro.config.args import add_run_config_args

    p = subparsers.add_parser("pretrain", help="pretrain a GPT (single process or under torchrun/Slurm/mpirun)")
    add_run_config_args(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=_pretrain)


def _pretrain(args: argparse.Namespace) -> int:
    import json

    from megatron_retro.config.args import run_config_from_args
    from megatron_retro.parallel.initialize import destroy_parallel
    from megatron_retro.training.pretrain import pretrain

    cfg = run_config_from_args(args)
    try:
        if cfg.model.arch == "retro":
            from megatron_retro.training.retro_pretrain import pretrain_retro

            result = pretrain_retro(cfg, progress=not args.no_progress)
        else:
            result = pretrain(cfg, progress=not args.no_progress)
    finally:
        destroy_parallel()
    if result.logging_rank:
        summary = {"final_step": result.final_step, "train_loss": result.last_loss,
                   "valid_loss": result.valid_loss, "checkpoint": result.checkpoint,
                   "metrics": f"{cfg.out_dir}/metrics.jsonl"}
        if result.retrieval_wait_share is not None:  # share of step time spent waiting on neighbours
            summary["retrieval_wait_share"] = round(result.retrieval_wait_share, 4)
        print(json.dumps(summary))
    return 0
