"""Typed run configuration: dataclasses validated once, loaded from YAML with file:line errors.

A run config is a YAML file with one mapping per section (``model``, ``parallel``, ``data``,
``train``, ``checkpoint``, ``retro``, ``qa``, ``retrieval``) plus ``out_dir``.  ``inherit:
other.yaml`` (relative to the file) merges another file underneath.  Every field carries a help
string; every constraint is checked once, in ``__post_init__``, and a broken one raises
:class:`ConfigError` naming the field, the value and the constraint (and the YAML file and line
when the value came from a file).

One module per section (``model``, ``parallel``, ``data``, ``train`` with ``checkpoint``,
``retro``, ``retrieval``, ``qa``), ``run`` for the whole run and its cross-section checks,
``base`` for the field helpers, ``yaml_files`` and ``loader`` for reading, ``args`` for the
command-line surface every run-config subcommand shares.  This package is a
leaf: it imports only the standard library and PyYAML.

Public API (``from megatron_retro.config import ...``):

- sections: ``RunConfig``, ``ModelConfig``, ``ParallelConfig``, ``DataConfig``, ``TrainConfig``,
  ``CheckpointConfig``, ``RetroConfig``, ``RetrievalConfig``, ``QAConfig``
- loading: ``load_config``, ``config_from_dict``, ``apply_overrides``, ``parse_override``,
  ``field_help``; any dataclass: ``load_dataclass``, ``build_item``; any YAML file:
  ``load_yaml_file``, ``load_yaml_text``
- the command line: ``add_run_config_args``, ``run_config_from_args``
- building new config dataclasses: ``ConfigError``, ``cfg``, ``require``, ``note``
"""
from megatron_retro.config.args import add_run_config_args, run_config_from_args
from megatron_retro.config.base import ConfigError, cfg, note, require
from megatron_retro.config.data import DataConfig
from megatron_retro.config.loader import (apply_overrides, build_item, config_from_dict, field_help, load_config,
                                          load_dataclass, parse_override)
from megatron_retro.config.model import ModelConfig
from megatron_retro.config.parallel import ParallelConfig
from megatron_retro.config.qa import QAConfig
from megatron_retro.config.retrieval import RetrievalConfig
from megatron_retro.config.retro import RetroConfig
from megatron_retro.config.run import RunConfig
from megatron_retro.config.train import CheckpointConfig, TrainConfig
from megatron_retro.config.yaml_files import load_yaml_file, load_yaml_text

__all__ = ["RunConfig", "ModelConfig", "ParallelConfig", "DataConfig", "TrainConfig", "CheckpointConfig",
           "RetroConfig", "RetrievalConfig", "QAConfig", "load_config", "config_from_dict", "apply_overrides",
           "parse_override", "field_help", "load_dataclass", "build_item", "load_yaml_file", "load_yaml_text",
           "add_run_config_args", "run_config_from_args", "ConfigError", "cfg", "require", "note"]
