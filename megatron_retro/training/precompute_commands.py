"""CLI: `megatron-retro index precompute --config RUN.yaml [--dp N] [key=value ...]` (training/precompute.py).

Registered after ``retrieval.commands`` (which creates ``megatron-retro index``): the step needs a
run config and the training data plan, which the retrieval package must not import.
"""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add ``precompute`` to the steps of the existing ``megatron-retro index`` command."""
    from megatron_retro.config.args import add_run_config_args

    index = subparsers.choices["index"]
    steps = next(a for a in index._actions if isinstance(a, argparse._SubParsersAction))
    p = steps.add_parser("precompute", help="write the neighbours of every chunk a RETRO run trains on "
                                            "(for retrieval.mode=precomputed; under torchrun: a slice per rank)")
    add_run_config_args(p)
    p.add_argument("--dp", type=int, default=1, help="data-parallel size of the training run (its global batch "
                                                      "when train.global_batch_size is unset)")
    p.add_argument("--precomputed-out", help="output directory (default retrieval.precomputed, else "
                                             "<retrieval db>/precomputed)")
    p.set_defaults(handler=_precompute)


def _precompute(args: argparse.Namespace) -> int:
    import json

    from megatron_retro.config.args import run_config_from_args
    from megatron_retro.training.precompute import precompute_run

    meta = precompute_run(run_config_from_args(args), dp=args.dp, out=args.precomputed_out)
    print(json.dumps({k: meta[k] for k in ("num_chunks", "k", "r", "batches")}))
    return 0
