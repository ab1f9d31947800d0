"""Experiment grid files: the bundled ones load; mistakes stop with file:line and the field."""
import os

import pytest

from megatron_retro.config import ConfigError
from megatron_retro.evaluation.grid_runs import grid
from megatron_retro.evaluation.experiment_config import load_experiment

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


@pytest.mark.parametrize("name", ["demo.yaml", "demo-quick.yaml", "study-cpu.yaml", "gemma3-270m.yaml"])
def test_bundled_experiments_load(name):
    exp = load_experiment(os.path.join(ROOT, "configs", "experiments", name))
    cells = grid(exp)
    zero = [c for c in cells if c[1] == "zero-shot"]
    assert len(zero) == len(exp.models)                       # deterministic: once per model
    assert len(cells) == len(exp.models) * (1 + (len(exp.methods) - 1) * len(exp.seeds))
    assert all(os.path.isfile(exp.resolve(m.config)) for m in exp.models)
    assert os.path.isfile(exp.peft_config_path("lora")) and os.path.isfile(exp.peft_config_path("ptuning"))


def write(tmp_path, text):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return str(path)


GOOD_MODEL = f"  - name: g\n    config: {os.path.abspath(os.path.join(ROOT, 'configs', 'models', 'gpt-tiny.yaml'))}\n"


@pytest.mark.parametrize("text, message", [
    ("models:\n" + GOOD_MODEL + "methods: [zero-shot, lorra]\n", r"exp.yaml:\d+: .*methods: 'lorra' is not one of"),
    ("models:\n" + GOOD_MODEL + "    pretrain_steps: 0\n", r"exp.yaml:4: .*needs a checkpoint or pretrain_steps > 0"),
    ("models:\n  - name: g\n    config: nowhere.yaml\n    pretrain_steps: 2\n",
     r"exp.yaml:3: models.config=nowhere.yaml: no such file"),
    ("models:\n" + GOOD_MODEL + "    pretrain_steps: 2\n    init_from: other\n",
     r"exp.yaml:5: models.init_from='other': must name an earlier model"),
    ("models:\n" + GOOD_MODEL + "    pretrain_steps: 2\n" + GOOD_MODEL + "    pretrain_steps: 2\n",
     r"models: names must be distinct"),
    ("models:\n" + GOOD_MODEL + "    pretrain_steps: 2\nseeds: [1, 1]\n", r"exp.yaml:\d+: .*seeds=\[1, 1\]: distinct"),
    ("models:\n" + GOOD_MODEL + "    pretrain_steps: 2\n    steps: 3\n", r"exp.yaml:5: models.0.steps: unknown key"),
    ("models: []\n", r"models: name at least one base model"),
    ("models:\n" + GOOD_MODEL + "    pretrain_steps: 2\nexpected_minutes: [train=3]\n",
     r"exp.yaml:\d+: .*expected_minutes: 'train=3' is not phase=minutes"),
    ("models:\n" + GOOD_MODEL + "    pretrain_steps: 2\nmethod_overrides: [lora=train.lr=1]\n",
     r"exp.yaml:\d+: .*method_overrides: 'lora=train.lr=1' is not method:section.key=value"),
    ("models:\n" + GOOD_MODEL + "    pretrain_steps: 2\nfloor_f1: 5\n", r"exp.yaml:\d+: .*floor_f1=5.0: a fraction"),
])
def test_bad_experiment_files_name_file_line_and_field(tmp_path, text, message):
    with pytest.raises(ConfigError, match=message):
        load_experiment(write(tmp_path, text))


def test_demo_plan_names_phases_and_minutes():
    from megatron_retro.evaluation.experiment import plan_lines

    exp = load_experiment(os.path.join(ROOT, "configs", "experiments", "demo.yaml"), ["out_dir=/nonexistent"])
    lines = plan_lines(exp)
    assert lines[1].startswith("1. retrieval database") and "2-shard retrieval service" in lines[1]
    assert "retro-tiny: 50 steps from gpt-tiny step 250" in lines[2]
    assert lines[3].startswith(f"3. {len(grid(exp))} cells") and "0 already done" in lines[3]
    minutes = exp.phase_minutes()
    assert set(minutes) == {"retrieval", "pretrain", "cells"} and all(f"(~{minutes[p]:g} min)" in
                                                                      "".join(lines) for p in minutes)
    assert lines[-1].startswith(f"expected total ~{sum(minutes.values()):g} min")


def test_method_overrides_reach_that_method_only(tmp_path):
    from megatron_retro.evaluation.grid_runs import model_config

    exp = load_experiment(write(tmp_path, "models:\n" + GOOD_MODEL + "    pretrain_steps: 2\n"
                                "finetune_overrides: [train.lr=1.0e-3]\n"
                                "method_overrides: ['ptuning:train.lr=2.0e-2', 'ptuning:train.steps=70']\n"))
    assert exp.overrides_of("ptuning") == ["train.lr=2.0e-2", "train.steps=70"] and exp.overrides_of("lora") == []
    cfg = model_config(exp, exp.models[0], *exp.finetune_overrides, *exp.overrides_of("ptuning"))
    assert (cfg.train.lr, cfg.train.steps) == (2.0e-2, 70)


GEMMA = os.path.abspath(os.path.join(ROOT, "configs", "models", "gemma3-270m.yaml"))
TWO_MODELS = ("models:\n" + GOOD_MODEL + "    pretrain_steps: 2\n"
              f"  - name: gemma\n    config: {GEMMA}\n    checkpoint: base/iter_0000000\n"
              "    overrides: [data.tokenizer=base/tokenizer, model.seq_length=384, qa.seq_length=384, "
              "qa.eval_examples=32]\n"
              "    finetune_overrides: [train.steps=20, train.micro_batch_size=4, train.global_batch_size=4, "
              "train.lr=2.0e-4]\n"
              "    method_overrides: ['ptuning:train.lr=3.0e-3']\n"
              "methods: [zero-shot, lora, ptuning]\n"
              "common_overrides: [qa.seq_length=320, qa.eval_examples=100]\n"
              "finetune_overrides: [train.steps=25, train.micro_batch_size=8, train.global_batch_size=8, "
              "train.lr=2.0e-3, train.min_lr=2.0e-4]\n"
              "method_overrides: ['ptuning:train.lr=1.0e-2', 'ptuning:train.steps=40']\n")


def test_each_model_gets_its_own_finetune_overrides_in_its_cells(tmp_path):
    """The grid's finetune_overrides, then the model's, then the grid's method_overrides, then the
    model's: the Gemma arm keeps its own steps/batch/lr/seq length next to the tiny model, and each
    cell's recorded settings (result.json) say so."""
    from megatron_retro.evaluation.experiment_retrieval import qa_data_key
    from megatron_retro.evaluation.grid_runs import cell_config, cell_settings

    exp = load_experiment(write(tmp_path, TWO_MODELS))
    got = {(m.name, x): cell_settings(cell_config(exp, m, "ck", x, 1), x) for m, x, _ in grid(exp)}
    tiny = dict(tokenizer=None, seq_length=320, eval_examples=100, micro_batch_size=8, global_batch_size=8,
                min_lr=2.0e-4, train_examples=got[("g", "lora")]["train_examples"])
    gemma = dict(tokenizer="base/tokenizer", seq_length=384, eval_examples=32, micro_batch_size=4,
                 global_batch_size=4, min_lr=2.0e-4, train_examples=tiny["train_examples"])
    assert got[("g", "lora")] == dict(tiny, steps=25, lr=2.0e-3)
    assert got[("g", "ptuning")] == dict(tiny, steps=40, lr=1.0e-2)          # the grid's method override
    assert got[("gemma", "lora")] == dict(gemma, steps=20, lr=2.0e-4)        # the model's, after the grid's
    assert got[("gemma", "ptuning")] == dict(gemma, steps=40, lr=3.0e-3)     # grid method, then model method
    assert got[("g", "zero-shot")] == {"tokenizer": None, "seq_length": 320, "eval_examples": 100}
    assert got[("gemma", "zero-shot")] == {"tokenizer": "base/tokenizer", "seq_length": 384, "eval_examples": 32}
    assert exp.finetune_overrides_of(exp.models[1], "ptuning")[-2:] == ["train.steps=40", "train.lr=3.0e-3"]
    # its own tokenizer: its own QA database and question caches; the tiny model's settings share one
    keys = {m.name: qa_data_key(cell_config(exp, m, "ck", x, 1)) for m, x, _ in grid(exp)}
    assert keys["g"] != keys["gemma"]
    assert len({qa_data_key(cell_config(exp, exp.models[0], "ck", x, 1)) for x in exp.methods}) == 1


@pytest.mark.parametrize("item, line, message", [
    ("    finetune_overrides: [train.steps=-1]\n", 5,
     r"models.finetune_overrides 'train.steps=-1' \(model g, lora cells\): train.steps=-1: must be >= 1"),
    ("    finetune_overrides:\n      - train.lr=1e-3\n      - train.stepz=3\n", 7,
     r"models.finetune_overrides 'train.stepz=3' \(model g, lora cells\): train.stepz: unknown key"),
    ("    method_overrides: ['lora:train.lr=abc']\n", 5,
     r"models.method_overrides 'train.lr=abc' \(model g, lora cells\): train.lr: expected a number"),
    ("    finetune_overrides: ['lora:train.lr=1']\n", 5, r"models.finetune_overrides: 'lora:train.lr=1' is not "
                                                        r"section.key=value"),
    ("    method_overrides: [train.lr=1]\n", 5, r"models.method_overrides: 'train.lr=1' is not "
                                              r"method:section.key=value.* \(model g\)"),
    ("    overrides: [qa.seq_length=8]\n", 5, r"models.overrides 'qa.seq_length=8' \(model g\): qa.seq_length=8: "
                                             r"must be >= 16"),
])
def test_bad_model_overrides_stop_at_their_file_line(tmp_path, item, line, message):
    text = "models:\n" + GOOD_MODEL + "    pretrain_steps: 2\n" + item + "methods: [zero-shot, lora]\n"
    with pytest.raises(ConfigError, match=rf"exp.yaml:{line}: .*{message}"):
        load_experiment(write(tmp_path, text))
