"""Bad inputs beyond the config file: each gives a one-line error naming file, field or constraint.

(Config-file errors are in test_config.py, data-file errors in test_data_*.py.)
"""
import json
import os
import pickle
import shutil
import subprocess
import sys

import pytest
import torch

from megatron_retro.config import ParallelConfig, load_config
from megatron_retro.errors import UserError


def one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text, text
    return text


def test_world_size_not_divisible_by_tp_times_pp():
    from megatron_retro.parallel.initialize import initialize_parallel

    with pytest.raises(Exception) as info:
        initialize_parallel(ParallelConfig(tp=2, pp=2), seed=0, env={"RANK": "0", "WORLD_SIZE": "6"})
    assert "world size 6 is not divisible by parallel.tp*parallel.pp=2*2=4" in one_line(info)


def test_nccl_requested_without_cuda():
    from megatron_retro.parallel.initialize import choose_backend

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(UserError) as info:
        choose_backend("nccl")
    assert "parallel.backend=nccl: needs CUDA" in one_line(info)


@pytest.fixture(scope="module")
def saved_checkpoint(tmp_path_factory):
    """A real checkpoint of a tiny GPT (world size 1)."""
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.checkpointing import save_checkpoint
    from megatron_retro.training.engine import Engine
    from megatron_retro.training.gpt_step import gpt_forward_step
    from megatron_retro.training.pretrain import model_record

    cfg = load_config(None, ["model.num_layers=2", "model.hidden_size=32", "model.num_attention_heads=2",
                             "model.seq_length=16"])
    initialize_parallel(cfg.parallel, seed=0)
    engine = Engine(cfg, build_gpt_model(cfg.model, cfg.parallel, vocab_size=64), gpt_forward_step)
    t = torch.randint(0, 64, (2, 17))
    engine.train_step([{"tokens": t[:, :-1], "labels": t[:, 1:], "loss_mask": torch.ones(2, 16),
                        "position_ids": torch.arange(16).expand(2, 16)}])  # creates the Adam state
    root = tmp_path_factory.mktemp("ckpt")
    path = save_checkpoint(str(root), 1, engine, {"model": model_record(cfg, 64)})
    return cfg, engine, path


def copy_ckpt(src, tmp_path):
    dst = tmp_path / "iter_0000001"
    shutil.copytree(src, dst)
    return str(dst)


def test_checkpoint_from_another_model(saved_checkpoint):
    from megatron_retro.training.checkpointing import load_checkpoint
    from megatron_retro.training.pretrain import model_record

    cfg, engine, path = saved_checkpoint
    other = load_config(None, ["model.num_layers=2", "model.hidden_size=48", "model.num_attention_heads=2"])
    with pytest.raises(UserError) as info:
        load_checkpoint(path, engine, model_record(other, 64))
    assert "checkpoint is for another model: model.hidden_size=32 there, 48 in this run" in one_line(info)


def test_checkpoint_loads_back(saved_checkpoint):
    from megatron_retro.training.checkpointing import load_checkpoint
    from megatron_retro.training.pretrain import model_record

    cfg, engine, path = saved_checkpoint
    assert load_checkpoint(path, engine, model_record(cfg, 64)).step == 1


def test_incomplete_checkpoint_without_state(saved_checkpoint, tmp_path):
    from megatron_retro.training.checkpointing import read_state

    path = copy_ckpt(saved_checkpoint[2], tmp_path)
    os.remove(os.path.join(path, "state.json"))
    with pytest.raises(UserError) as info:
        read_state(path)
    assert "not a complete checkpoint (no state.json)" in one_line(info)


def test_corrupt_state_json_names_line(saved_checkpoint, tmp_path):
    from megatron_retro.training.checkpointing import read_state

    path = copy_ckpt(saved_checkpoint[2], tmp_path)
    with open(os.path.join(path, "state.json"), "w") as f:
        f.write('{\n "step": 3,\n oops\n}')
    with pytest.raises(UserError) as info:
        read_state(path)
    assert "state.json:3: corrupt checkpoint state" in one_line(info)


def test_missing_metadata(saved_checkpoint, tmp_path):
    from megatron_retro.training.checkpointing import load_checkpoint
    from megatron_retro.training.pretrain import model_record

    cfg, engine, src = saved_checkpoint
    path = copy_ckpt(src, tmp_path)
    os.remove(os.path.join(path, ".metadata"))
    with pytest.raises(UserError) as info:
        load_checkpoint(path, engine, model_record(cfg, 64))
    assert "corrupt checkpoint (missing .metadata)" in one_line(info)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


def test_code_executing_pickle_is_refused(saved_checkpoint, tmp_path):
    from megatron_retro.training.checkpointing import verify_metadata_pickle

    path = copy_ckpt(saved_checkpoint[2], tmp_path)
    verify_metadata_pickle(os.path.join(path, ".metadata"))  # the real one passes
    with open(os.path.join(path, ".metadata"), "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(UserError) as info:
        verify_metadata_pickle(os.path.join(path, ".metadata"))
    assert "refusing to load: the pickle references posix.system" in one_line(info)


def test_truncated_metadata(saved_checkpoint, tmp_path):
    from megatron_retro.training.checkpointing import verify_metadata_pickle

    path = copy_ckpt(saved_checkpoint[2], tmp_path)
    meta = os.path.join(path, ".metadata")
    data = open(meta, "rb").read()
    open(meta, "wb").write(data[: len(data) // 2])
    with pytest.raises(UserError) as info:
        verify_metadata_pickle(meta)
    assert "corrupt checkpoint metadata" in one_line(info)


def test_cli_reports_config_errors_in_one_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  num_layers: 0\n")
    proc = subprocess.run([sys.executable, "-m", "megatron_retro.cli", "pretrain", "--config", str(bad)],
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONWARNINGS="ignore"))
    assert proc.returncode == 2
    last = [line for line in proc.stderr.splitlines() if line.strip()][-1]
    assert last == f"megatron-retro pretrain: error: {bad}:2: model.num_layers=0: must be >= 1"


def test_adapter_for_another_shape_is_refused_before_any_model_is_built(saved_checkpoint, tmp_path, monkeypatch):
    """The stored things (base checkpoint record, adapter record) are checked before the work."""
    from megatron_retro.peft.checkpoint import CONFIG, FORMAT_VERSION
    from megatron_retro.training import finetune
    from megatron_retro.training.pretrain import model_record

    cfg, _, path = saved_checkpoint
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / CONFIG).write_text(json.dumps({"format_version": FORMAT_VERSION, "peft": {"method": "lora"},
                                              "model": dict(model_record(cfg, 64), hidden_size=48)}))

    def no_build(*args, **kwargs):
        raise AssertionError("the model was built before the adapter was checked")

    monkeypatch.setattr(finetune, "build_model", no_build)
    with pytest.raises(UserError) as info:
        finetune.load_model(cfg, 64, path, adapter=str(adapter))
    assert one_line(info) == f"{adapter}: adapter was trained for model.hidden_size=48, this base has 32"
