"""`megatron-retro <subcommand>`: parses arguments, builds the config, calls the library.

Each subsystem registers its own subcommands from a small ``commands.py`` module exposing
``register(subparsers)``; those modules import heavy dependencies (torch, faiss, grpc) only
inside their handlers so that ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional, Sequence

from megatron_retro.config.args import add_run_config_args, run_config_from_args
from megatron_retro.errors import describe_failure

DEBUG_ENV = "MEGATRON_RETRO_DEBUG"  # =1: the same as --debug (e.g. for torchrun workers)


class Parser(argparse.ArgumentParser):
    """argparse with exact option names (``--step`` is not ``--steps``); subparsers inherit it."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

# Modules that register subcommands, in the order they appear in --help.
COMMAND_MODULES = [
    "megatron_retro.data.commands",
    "megatron_retro.training.commands",
    "megatron_retro.planning.commands",
    "megatron_retro.retrieval.commands",
    "megatron_retro.training.precompute_commands",  # adds `index precompute` (needs `index` above)
    "megatron_retro.data.tasks.commands",
    "megatron_retro.peft.commands",
    "megatron_retro.evaluation.commands",
    "megatron_retro.training.hf_commands",
    "megatron_retro.training.retro_commands",
]


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
    parser = Parser(prog="megatron-retro", description=__doc__.splitlines()[0])
    parser.add_argument("--debug", action="store_true",
                        help=f"show the full traceback of a failure (or set {DEBUG_ENV}=1)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    p = subparsers.add_parser("config", help="show the resolved run config, or all fields with help")
    add_run_config_args(p)
    p.add_argument("--fields", action="store_true", help="list every field with its help and default")
    p.set_defaults(handler=_config_command)
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def chosen_parsers(parser: argparse.ArgumentParser, args: argparse.Namespace) -> list[argparse.ArgumentParser]:
    """The parser and the sub(-sub)parsers that ``args`` went through, outermost first."""
    chain = [parser]
    while True:
        subs = [a for a in chain[-1]._actions if isinstance(a, argparse._SubParsersAction)]
        name = getattr(args, subs[0].dest, None) if subs else None
        if name is None or name not in subs[0].choices:
            return chain
        chain.append(subs[0].choices[name])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run one command; any failure becomes ``megatron-retro <cmd>: error: <one line>``, exit 2 for
    bad input and 1 for a runtime failure (tracebacks only with --debug)."""
    from megatron_retro.quiet import quiet_known_warnings

    quiet_known_warnings()
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    command = chosen_parsers(parser, args)[-1]
    if extras:  # reported by the subcommand that got them, with its own usage
        command.error(f"unrecognized arguments: {' '.join(extras)}")
    try:
        result = args.handler(args)
    except (SystemExit, GeneratorExit):
        raise
    except KeyboardInterrupt:
        print(f"{command.prog}: interrupted", file=sys.stderr)
        return 130
    except BaseException as e:  # torch's CheckpointException derives from BaseException
        if args.debug or os.environ.get(DEBUG_ENV) == "1":
            raise
        code, message = describe_failure(e)
        print(f"{command.prog}: error: {message}", file=sys.stderr)
        return code
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
