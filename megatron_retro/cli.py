"""`megatron-retro <subcommand>`: parses arguments, builds the config, calls the library.

Each subsystem registers its own subcommands from a small ``commands.py`` module exposing
``register(subparsers)``; those modules import heavy dependencies (torch, faiss, grpc) only
inside their handlers so that ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from megatron_retro.config import ConfigError, RunConfig, load_config
from megatron_retro.errors import UserError

# Modules that register subcommands, in the order they appear in --help.
COMMAND_MODULES = [
    "megatron_retro.data.commands",
    "megatron_retro.training.commands",
    "megatron_retro.planning.commands",
    "megatron_retro.retrieval.commands",
    "megatron_retro.data.tasks.commands",
    "megatron_retro.peft.commands",
    "megatron_retro.evaluation.commands",
    "megatron_retro.training.hf_commands",
    "megatron_retro.training.retro_commands",
]


def add_run_config_args(parser: argparse.ArgumentParser) -> None:
    """The small shared surface: a YAML file, the common overrides, and generic key=value ones."""
    parser.add_argument("--config", help="run config YAML (configs/...)")
    parser.add_argument("--tp", type=int, help="override parallel.tp")
    parser.add_argument("--pp", type=int, help="override parallel.pp")
    parser.add_argument("--steps", type=int, help="override train.steps")
    parser.add_argument("--out", help="override out_dir")
    parser.add_argument("overrides", nargs="*", metavar="section.key=value",
                        help="any other field, e.g. train.lr=3e-4 model.num_layers=4")


def run_config_from_args(args: argparse.Namespace) -> RunConfig:
    overrides = list(args.overrides or [])
    for flag, key in (("tp", "parallel.tp"), ("pp", "parallel.pp"), ("steps", "train.steps"),
                      ("out", "out_dir")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(args.config, overrides)


def _config_command(args: argparse.Namespace) -> int:
    """Print the resolved config as YAML, or every field with its help string."""
    import yaml

    from megatron_retro.config import field_help

    if args.fields:
        for name, help_text, default in field_help():
            print(f"{name:<40} {help_text} (default: {default!r})")
        return 0
    print(yaml.safe_dump(run_config_from_args(args).to_dict(), sort_keys=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="megatron-retro", description=__doc__.splitlines()[0])
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    p = subparsers.add_parser("config", help="show the resolved run config, or all fields with help")
    add_run_config_args(p)
    p.add_argument("--fields", action="store_true", help="list every field with its help and default")
    p.set_defaults(handler=_config_command)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.handler(args)
    except (ConfigError, UserError) as e:
        print(f"megatron-retro {args.command}: error: {e}", file=sys.stderr)
        return 2
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
