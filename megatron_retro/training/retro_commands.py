"""CLI: `megatron-retro retro import-mcore --load DIR --out OUT [--tp T] [--config YAML]`."""
from __future__ import annotations

import argparse


def register(subparsers) -> None:
    retro = subparsers.add_parser("retro", help="RETRO checkpoints from elsewhere")
    sub = retro.add_subparsers(dest="retro_command", required=True, metavar="<retro command>")
    imp = sub.add_parser(
        "import-mcore", help="megatron-core 0.15 RetroModel torch_dist checkpoint -> our checkpoint "
                             "(<out>/iter_0000000, retro.megatron_compat=true); run with T processes for --tp T")
    imp.add_argument("--load", required=True, help="Megatron-LM save directory (latest_checkpointed_iteration.txt) "
                                                   "or one torch_dist checkpoint directory")
    imp.add_argument("--out", required=True, help="checkpoints directory to write (iter_0000000 + model.yaml)")
    imp.add_argument("--tp", type=int, default=1, help="tensor parallel size of the conversion (default 1)")
    imp.add_argument("--config", help="run config YAML whose model/retro sections describe the checkpoint "
                                      "(default: Megatron-LM's args saved in common.pt)")
    imp.set_defaults(handler=_import_mcore)


def _import_mcore(args: argparse.Namespace) -> int:
    from megatron_retro.config import ParallelConfig
    from megatron_retro.training.hf_commands import run_and_report
    from megatron_retro.training.mcore_import import import_mcore

    return run_and_report(import_mcore, args.load, args.out, ParallelConfig(tp=args.tp), config_path=args.config)
