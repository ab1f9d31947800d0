"""Typed config: YAML loading, inheritance, overrides, and one-line errors naming field and line."""
import pytest

from megatron_retro.config import ConfigError, ParallelConfig, TrainConfig, field_help, load_config


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_defaults_validate_and_overrides_apply():
    cfg = load_config(None, ["model.hidden_size=64", "parallel.tp=2", "train.lr=3e-4", "out_dir=/tmp/x"])
    assert cfg.model.hidden_size == 64 and cfg.parallel.tp == 2
    assert cfg.train.lr == pytest.approx(3e-4) and cfg.out_dir == "/tmp/x"


def test_inherit_merges_sections(tmp_path):
    write(tmp_path, "base.yaml", "model:\n  num_layers: 6\n  hidden_size: 96\ntrain:\n  steps: 7\n  lr_warmup_steps: 2\n")
    child = write(tmp_path, "child.yaml", "inherit: base.yaml\nmodel:\n  hidden_size: 128\n")
    cfg = load_config(child)
    assert (cfg.model.num_layers, cfg.model.hidden_size, cfg.train.steps) == (6, 128, 7)


def test_int_is_accepted_for_float_but_not_bool_for_int(tmp_path):
    assert load_config(None, ["train.lr=1"]).train.lr == 1.0
    with pytest.raises(ConfigError, match="train.steps.*expected an integer"):
        load_config(None, ["train.steps=true"])


def test_every_field_has_help():
    rows = field_help()
    assert len(rows) > 40
    assert all(help_text for _, help_text, _ in rows), [name for name, h, _ in rows if not h]


def test_swiglu_ffn_default_rounds_to_64():
    cfg = load_config(None, ["model.hidden_size=1024", "model.num_attention_heads=16"])
    assert cfg.model.ffn_size == 2752


def test_world_size_and_microbatch_arithmetic():
    assert ParallelConfig(tp=2, pp=2).check_world(8) == 2
    with pytest.raises(ConfigError, match=r"world size 6 is not divisible by parallel.tp\*parallel.pp=2\*2=4"):
        ParallelConfig(tp=2, pp=2).check_world(6)
    assert TrainConfig(micro_batch_size=2, global_batch_size=16).num_microbatches(dp=2) == 4
    with pytest.raises(ConfigError, match="train.global_batch_size=10: must be divisible"):
        TrainConfig(micro_batch_size=2, global_batch_size=10).num_microbatches(dp=3)


BAD_YAML = [
    ("model:\n  hidden_size: 100\n  num_attention_heads: 16\n", r"bad.yaml:2: model.hidden_size=100: must be divisible by model.num_attention_heads=16"),
    ("model:\n  num_layers: 5\nparallel:\n  pp: 2\n", r"model.num_layers=5: must be divisible by parallel.pp\*vpp=2"),
    ("model:\n  num_attention_heads: 4\nparallel:\n  tp: 8\n", r"model.num_attention_heads=4: must be divisible by parallel.tp=8"),
    ("model:\n  hidden_sise: 64\n", r"bad.yaml:2: model.hidden_sise: unknown key"),
    ("trian:\n  steps: 3\n", r"bad.yaml:1: trian: unknown key"),
    ("train:\n  steps: many\n", r"bad.yaml:2: train.steps: expected an integer, got str 'many'"),
    ("model:\n  activation: relu6\n", r"model.activation: 'relu6' is not one of"),
    ("model:\n  hidden_size: [1, 2\n", r"bad.yaml:\d+: malformed YAML"),
    ("- just\n- a list\n", r"bad.yaml:1: the top level must be a mapping"),
    ("parallel:\n  sequence_parallel: true\n", r"parallel.sequence_parallel=true: needs parallel.tp > 1"),
    ("parallel:\n  vpp: 2\n", r"parallel.vpp=2: needs vpp >= 2 and parallel.pp >= 2"),
    ("data:\n  split: '98,2'\n", r"data.split='98,2': must be three non-negative weights"),
    ("data:\n  source: indexed\n", r"data.prefix: required when data.source=indexed"),
    ("train:\n  lr_warmup_steps: -1\n", r"bad.yaml:2: train.lr_warmup_steps=-1: must be >= 0"),
    ("model:\n  rotary_percent: 1.5\n", r"model.rotary_percent=1.5: must be in \(0, 1\]"),
    ("model:\n  num_query_groups: 3\n", r"model.num_query_groups=3: must divide model.num_attention_heads=4"),
    ("model:\n  hidden_dropout: 1.0\n", r"model.hidden_dropout=1.0: must be in \[0, 1\)"),
    ("train:\n  min_lr: 0.5\n", r"train.min_lr=0.5: must be in \[0, train.lr=0.001\]"),
    ("model: 3\n", r"bad.yaml:1: model: expected a mapping, got int 3"),
]


@pytest.mark.parametrize("text,message", BAD_YAML, ids=[m[:40] for _, m in BAD_YAML])
def test_bad_config_gives_one_line_error_naming_the_problem(tmp_path, text, message):
    path = write(tmp_path, "bad.yaml", text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    text = str(info.value)
    assert "\n" not in text
    import re
    assert re.search(message, text), text


def test_missing_file_and_bad_override():
    with pytest.raises(ConfigError, match="nope.yaml: config file not found"):
        load_config("nope.yaml")
    with pytest.raises(ConfigError, match="override 'model.hidden_size': expected section.key=value"):
        load_config(None, ["model.hidden_size"])
    with pytest.raises(ConfigError, match="override 'model.hidden_size=65'"):
        load_config(None, ["model.hidden_size=65"])


def test_config_command_prints_resolved_yaml_and_fields(capsys):
    import yaml

    from megatron_retro.cli import main

    assert main(["config", "--tp", "2", "model.num_layers=6"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["parallel"]["tp"] == 2 and shown["model"]["num_layers"] == 6
    assert main(["config", "--fields"]) == 0
    out = capsys.readouterr().out
    assert "train.lr" in out and "peak learning rate" in out
