"""Typed settings of an experiment grid (``configs/experiments/*.yaml``), validated at file:line.

A grid is model x PEFT method x seed on one QA task; each model entry names a run config
(``configs/models/*.yaml``; its size is its parameter count) and either a pretrained base
checkpoint or the pretraining steps to run here.  ``zero-shot`` evaluates the base as it is
(greedy decoding is deterministic, so it runs once per model whatever the seeds).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any, List, Optional

from megatron_retro.config import ConfigError, build_item, cfg, load_config, load_dataclass, require

METHODS = ("zero-shot", "none", "lora", "adapter", "parallel_adapter", "ptuning", "prompt", "prefix", "ia3",
           "qlora")
SUITES = ("rag",)

PHASES = ("retrieval", "pretrain", "cells", "perplexity")


@dataclass
class ExperimentModel:
    """One base model of the grid."""

    name: str = cfg("", "label in tables and directory names, e.g. gpt-tiny")
    config: str = cfg("", "run config YAML of the model (relative to the experiment file)")
    checkpoint: Optional[str] = cfg(None, "pretrained base checkpoint (iter_* directory); None = pretrain here")
    pretrain_steps: int = cfg(0, "pretraining steps run here when no checkpoint is given")
    init_from: Optional[str] = cfg(None, "RETRO: name of a GPT model of this grid whose base initialises the "
                                         "decoder (retro-fitting); its checkpoint at the same number of steps")
    init_from_step: Optional[int] = cfg(None, "the step of init_from's checkpoint to start from (None = its "
                                              "last); that checkpoint must be kept (checkpoint.save_interval)")
    overrides: List[str] = cfg([], "section.key=value overrides of this model's runs (pretraining, zero-shot and "
                                   "fine-tuning: model.*, data.tokenizer, qa.seq_length, qa.eval_examples ...)")
    finetune_overrides: List[str] = cfg([], "section.key=value overrides of this model's fine-tuning runs, after "
                                            "the grid's finetune_overrides (its own train.steps, batch, lr ...)")
    method_overrides: List[str] = cfg([], "method:section.key=value overrides of one PEFT method's fine-tuning "
                                          "runs of this model, after the grid's method_overrides")

    def __post_init__(self) -> None:
        require(bool(self.name) and "/" not in self.name, f"models.name={self.name!r}: a non-empty label without '/'")
        require(bool(self.config), f"models.config: required (model {self.name})")
        require(self.pretrain_steps >= 0, f"models.pretrain_steps={self.pretrain_steps}: must be >= 0")
        require(bool(self.checkpoint) or self.pretrain_steps > 0,
                 f"models.pretrain_steps={self.pretrain_steps}: model {self.name} needs a checkpoint or "
                 f"pretrain_steps > 0")
        for item in self.finetune_overrides:
            require("=" in str(item) and ":" not in str(item).partition("=")[0],
                     f"models.finetune_overrides: {item!r} is not section.key=value (model {self.name})")
        check_method_overrides(self.method_overrides, "models.method_overrides", f" (model {self.name})")

    def overrides_of(self, method: str) -> List[str]:
        """This model's method_overrides of ``method`` (section.key=value), in file order."""
        return _of_method(self.method_overrides, method)


def check_method_overrides(items: List[str], field: str, where: str = "") -> None:
    """Each item is method:section.key=value with a known method."""
    for item in items:
        method, _, override = str(item).partition(":")
        require(method in METHODS and "=" in override,
                 f"{field}: {item!r} is not method:section.key=value with method one of {', '.join(METHODS)}"
                 f"{where}")


def _of_method(items: List[str], method: str) -> List[str]:
    return [item.partition(":")[2] for item in items if item.partition(":")[0] == method]


@dataclass
class ExperimentConfig:
    """model x method x seed on one task, with the shared fine-tuning and evaluation settings."""

    name: str = cfg("experiment", "experiment name")
    out_dir: str = cfg("runs/experiment", "directory of every run, the score rows, the table and the plots")
    models: List[Any] = cfg([], "base models: list of {name, config, checkpoint | pretrain_steps, init_from, "
                                "overrides, finetune_overrides, method_overrides}")
    methods: List[str] = cfg(["zero-shot", "lora", "adapter", "ptuning"], "zero-shot and/or PEFT methods "
                             "('none' = full fine-tuning)")
    peft_configs: List[str] = cfg([], "method=path overrides of configs/peft/<method>.yaml")
    method_overrides: List[str] = cfg([], "method:section.key=value overrides of one PEFT method's fine-tuning "
                                          "runs, after finetune_overrides (e.g. a learning rate per method: "
                                          "ptuning:train.lr=1e-2)")
    seeds: List[int] = cfg([1, 2, 3], "fine-tuning seeds (adapter init, dropout, data order)")
    common_overrides: List[str] = cfg([], "overrides of every run (data.*, qa.*)")
    pretrain_overrides: List[str] = cfg([], "overrides of pretraining runs")
    finetune_overrides: List[str] = cfg([], "overrides of fine-tuning runs (train.steps, train.lr, ...)")
    retrieval_shards: int = cfg(2, "shards of the retrieval service started for the task corpus (0 = search "
                                   "in-process, no service)")
    retrieval_replicas: int = cfg(1, "replicas per shard")
    spread: str = cfg("std", "spread shown next to each mean: std (sample std over seeds) or minmax")
    suites: List[str] = cfg([], "extra evaluation suites of every cell: rag (context relevance, faithfulness, "
                                "answer relevance; noise, negative rejection, two-hop and counterfactual splits)")
    suite_examples: int = cfg(50, "rag suite: base questions per split")

    floor_f1: float = cfg(0.05, "a cell whose mean F1 (a fraction) is below this is at the floor; a finding "
                                "with both cells at the floor reads 'no signal'")
    expected_minutes: List[str] = cfg([], "phase=minutes measured on an idle 2-core machine (phases: retrieval, "
                                          "pretrain, cells), printed with the plan before the first long step")
    perplexity_pairs: List[str] = cfg([], "gpt:retro model-name pairs whose held-out perplexity is compared at "
                                          "equal steps and equal compute, pretrained from scratch per seed")
    perplexity_steps: int = cfg(0, "N: pretraining steps of both models (equal steps); GPT's equal-compute run "
                                   "gets the steps whose FLOPs equal RETRO's N")
    perplexity_seeds: List[int] = cfg([], "seeds of the perplexity study (empty = no perplexity study)")
    degenerate_share: float = cfg(0.5, "a cell where some seed gives one answer to at least this share of the "
                                        "questions is degenerate (at the floor)")

    def __post_init__(self) -> None:
        require(bool(self.methods), "methods: name at least one")
        for m in self.methods:
            require(m in METHODS, f"methods: {m!r} is not one of {', '.join(METHODS)}")
        require(len(set(self.seeds)) == len(self.seeds) and len(self.seeds) >= 1, f"seeds={self.seeds}: distinct, >= 1")
        require(self.retrieval_shards >= 0 and self.retrieval_replicas >= 1,
                 f"retrieval_shards={self.retrieval_shards}/retrieval_replicas={self.retrieval_replicas}: "
                 f"shards >= 0, replicas >= 1")
        require(self.spread in ("std", "minmax"), f"spread={self.spread!r}: std or minmax")
        for suite in self.suites:
            require(suite in SUITES, f"suites: {suite!r} is not one of {', '.join(SUITES)}")
        require(self.suite_examples >= 1, f"suite_examples={self.suite_examples}: must be >= 1")

        require(0 <= self.floor_f1 <= 1, f"floor_f1={self.floor_f1}: a fraction in [0, 1]")
        require(0 < self.degenerate_share <= 1, f"degenerate_share={self.degenerate_share}: in (0, 1]")
        for item in self.peft_configs:
            require("=" in item, f"peft_configs: {item!r} is not method=path")
        self.phase_minutes()
        check_method_overrides(self.method_overrides, "method_overrides")
        for item in self.perplexity_pairs:
            require(str(item).count(":") == 1, f"perplexity_pairs: {item!r} is not gpt_name:retro_name")
        require(not (self.perplexity_pairs and self.perplexity_seeds) or self.perplexity_steps > 0,
                 f"perplexity_steps={self.perplexity_steps}: must be > 0 with perplexity_pairs and seeds")
        require(len(set(self.perplexity_seeds)) == len(self.perplexity_seeds),
                 f"perplexity_seeds={self.perplexity_seeds}: distinct")

    def phase_minutes(self) -> dict:
        """expected_minutes as {phase: minutes}."""
        out = {}
        for item in self.expected_minutes:
            phase, _, value = str(item).partition("=")
            try:
                minutes = float(value)
            except ValueError:
                minutes = -1.0
            require(phase in PHASES and minutes >= 0, f"expected_minutes: {item!r} is not phase=minutes with "
                                                       f"phase one of {', '.join(PHASES)} and minutes >= 0")
            out[phase] = minutes
        return out

    def overrides_of(self, method: str) -> List[str]:
        """The method_overrides of ``method`` (section.key=value), in file order."""
        return _of_method(self.method_overrides, method)

    def finetune_overrides_of(self, model: ExperimentModel, method: str) -> List[str]:
        """The fine-tuning overrides of ``model``'s ``method`` cells, in the order they apply: the grid's
        finetune_overrides, the model's, the grid's method_overrides of ``method``, the model's."""
        return [*self.finetune_overrides, *model.finetune_overrides, *self.overrides_of(method),
                *model.overrides_of(method)]

    def run_overrides(self, model: ExperimentModel, *extra: str) -> List[str]:
        """common_overrides, the model's overrides, then ``extra`` (``{out_dir}`` = the experiment's)."""
        return [o.replace("{out_dir}", self.out_dir) for o in (*self.common_overrides, *model.overrides, *extra)]

    def peft_config_path(self, method: str) -> str:
        for item in self.peft_configs:
            name, path = item.split("=", 1)
            if name == method:
                return self.resolve(path)
        return os.path.join(_CONFIGS, "peft", f"{method}.yaml")

    def resolve(self, path: str) -> str:
        """A path of the experiment file, relative to that file."""
        return path if os.path.isabs(path) else os.path.normpath(os.path.join(self.base_dir, path))


_CONFIGS = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "configs"))


def load_experiment(path: str, overrides: Optional[list] = None) -> ExperimentConfig:
    exp = load_dataclass(ExperimentConfig, path, overrides)
    exp.base_dir = os.path.dirname(os.path.abspath(path))
    marks = exp._marks
    exp.models = [build_item(ExperimentModel, m, ("models", str(i)), marks) for i, m in enumerate(exp.models)]
    names = [m.name for m in exp.models]
    where = marks.get(("models",), path)
    if not names:
        raise ConfigError(f"{where}: models: name at least one base model")
    if len(set(names)) != len(names):
        raise ConfigError(f"{where}: models: names must be distinct, got {names}")
    for i, m in enumerate(exp.models):
        if m.init_from is not None and m.init_from not in names[:i]:
            raise ConfigError(f"{marks.get(('models', str(i), 'init_from'), where)}: models.init_from="
                              f"{m.init_from!r}: must name an earlier model of the grid ({names[:i]})")
        if not os.path.isfile(exp.resolve(m.config)):
            raise ConfigError(f"{marks.get(('models', str(i), 'config'), where)}: models.config={m.config}: "
                              f"no such file ({exp.resolve(m.config)})")
    for pair in exp.perplexity_pairs:
        unknown = [n for n in pair.split(":") if n not in names]
        if unknown:
            raise ConfigError(f"{marks.get(('perplexity_pairs',), where)}: perplexity_pairs={pair!r}: {unknown} "
                              f"not among the models {names}")
    _check_run_configs(exp, marks, where)
    return exp


def _check_run_configs(exp: ExperimentConfig, marks: dict, where: str) -> None:
    """Every model's base run config and each of its fine-tuning methods' builds: a bad value stops
    here, at the file:line of the override item that set it, not hours into the grid."""
    tuned = [m for m in exp.methods if m != "zero-shot"]
    for i, model in enumerate(exp.models):
        sources = _override_sources(exp, i, marks)
        for method in [None, *tuned]:
            extra = exp.finetune_overrides_of(model, method) if method else []
            try:
                load_config(exp.resolve(model.config), exp.run_overrides(model, *extra))
            except ConfigError as e:
                found = re.match(r"^override '(.*?)': (.*)$", str(e))
                hit = sources.get(found.group(1)) if found else None
                cell = f"model {model.name}" + (f", {method} cells" if method else "")
                if hit is None:
                    raise ConfigError(f"{marks.get(('models', str(i), 'config'), where)}: {cell}: {e}") from None
                raise ConfigError(f"{hit[0]}: {hit[1]} {found.group(1)!r} ({cell}): {found.group(2)}") from None


def _override_sources(exp: ExperimentConfig, i: int, marks: dict) -> dict:
    """override text -> (file:line, field) of the item of the experiment file that gives it (the
    last applied when several do)."""
    out = {}
    lists = [(("common_overrides",), exp.common_overrides), (("models", str(i), "overrides"), exp.models[i].overrides),
             (("finetune_overrides",), exp.finetune_overrides),
             (("models", str(i), "finetune_overrides"), exp.models[i].finetune_overrides),
             (("method_overrides",), exp.method_overrides),
             (("models", str(i), "method_overrides"), exp.models[i].method_overrides)]
    for path, items in lists:
        field = ".".join(p for p in path if not p.isdigit())
        for j, item in enumerate(items):
            text = item.partition(":")[2] if path[-1] == "method_overrides" else item
            out[text.replace("{out_dir}", exp.out_dir)] = (marks.get(path + (str(j),), marks.get(path, "?")), field)
    return out
