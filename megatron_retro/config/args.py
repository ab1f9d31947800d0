"""The run config on the command line: the small shared surface every run-config subcommand adds
(``--config``, ``--tp --pp --steps --out`` and generic ``section.key=value`` overrides) and the
:class:`RunConfig` those arguments resolve to.  Command modules import it from here, below ``cli``."""
from __future__ import annotations

import argparse

from megatron_retro.config.loader import load_config
from megatron_retro.config.run import RunConfig


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
    """The validated RunConfig of ``args``: the YAML file, then the shortcut flags and overrides."""
    overrides = list(args.overrides or [])
    for flag, key in (("tp", "parallel.tp"), ("pp", "parallel.pp"), ("steps", "train.steps"),
                      ("out", "out_dir")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides.append(f"{key}={value}")
    return load_config(args.config, overrides)
