"""Checkpoint failures end in one line and lose nothing: a full disk (a real small tmpfs), a
truncated shard file, an unwritable directory.  The previous checkpoint stays byte-identical,
``latest`` still names it, and no ``iter_*.tmp`` directory is left behind."""
import os

import pytest
import torch

from megatron_retro.config import load_config
from megatron_retro.errors import RuntimeFailure, UserError, describe_failure
from hardening_testlib import fill_disk, small_tmpfs, tree_digest

TINY = ["model.num_layers=2", "model.hidden_size=32", "model.num_attention_heads=2", "model.seq_length=16"]


@pytest.fixture(scope="module")
def engine():
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.engine import Engine
    from megatron_retro.training.gpt_step import gpt_forward_step

    cfg = load_config(None, TINY + ["train.lr_warmup_steps=0"])
    initialize_parallel(cfg.parallel, seed=0)
    eng = Engine(cfg, build_gpt_model(cfg.model, cfg.parallel, vocab_size=64), gpt_forward_step)
    t = torch.randint(0, 64, (2, 17))
    eng.train_step([{"tokens": t[:, :-1], "labels": t[:, 1:], "loss_mask": torch.ones(2, 16),
                     "position_ids": torch.arange(16).expand(2, 16)}])
    return cfg, eng


def _record(cfg):
    from megatron_retro.training.pretrain import model_record

    return {"model": model_record(cfg, 64)}


@pytest.fixture
def tmpfs(tmp_path):
    with small_tmpfs(tmp_path / "full") as mount:
        yield mount


def test_full_disk_keeps_previous_checkpoint_and_leaves_no_tmp(engine, tmpfs):
    from megatron_retro.training.checkpointing import newest_checkpoint, save_checkpoint

    cfg, eng = engine
    ckpts = tmpfs / "ckpts"
    first = save_checkpoint(str(ckpts), 1, eng, _record(cfg))
    before = tree_digest(ckpts)
    used = sum(os.path.getsize(os.path.join(first, p)) for p in tree_digest(first))
    fill_disk(tmpfs, used // 2)  # less than half a checkpoint fits
    with pytest.raises(RuntimeFailure) as info:
        save_checkpoint(str(ckpts), 2, eng, _record(cfg))
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{ckpts}: cannot save checkpoint iter_0000002: no space left on device"), message
    assert describe_failure(info.value) == (1, message)
    assert sorted(os.listdir(ckpts)) == ["iter_0000001", "latest"]  # no iter_0000002.tmp, no latest.tmp*
    assert tree_digest(ckpts) == before
    assert newest_checkpoint(str(ckpts)) == first


def test_truncated_shard_is_one_line(engine, tmp_path):
    from megatron_retro.training.checkpointing import load_checkpoint, save_checkpoint
    from megatron_retro.training.pretrain import model_record

    cfg, eng = engine
    path = save_checkpoint(str(tmp_path / "c"), 1, eng, _record(cfg))
    shards = sorted(p for p in os.listdir(path) if p.endswith(".distcp"))
    assert shards, os.listdir(path)
    shard = os.path.join(path, shards[0])
    data = open(shard, "rb").read()
    open(shard, "wb").write(data[: len(data) // 3])
    with pytest.raises(UserError) as info:
        load_checkpoint(path, eng, model_record(cfg, 64))
    message = str(info.value)
    assert message == f"{path}: cannot load checkpoint: EOFError: unexpected end of file (a file of the " \
                      "checkpoint is truncated)", message


def test_unwritable_checkpoint_dir_is_one_line(engine, tmp_path):
    from megatron_retro.training.checkpointing import save_checkpoint

    cfg, eng = engine
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(RuntimeFailure) as info:
        save_checkpoint(str(blocker / "ckpts"), 1, eng, _record(cfg))
    assert "\n" not in str(info.value) and str(info.value).startswith(f"{blocker / 'ckpts'}: cannot save checkpoint")
    assert blocker.read_text() == "not a directory"


def test_full_disk_keeps_previous_adapter(engine, tmpfs):
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.peft import apply_peft, make_peft_config
    from megatron_retro.peft.checkpoint import save_adapter

    cfg, _ = engine
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=64)
    apply_peft(chunks, make_peft_config("lora", {"rank": 4}))
    adapter = tmpfs / "adapter"
    save_adapter(str(adapter), chunks, make_peft_config("lora", {"rank": 4}))
    before = tree_digest(adapter)
    fill_disk(tmpfs, 4096)
    with pytest.raises(RuntimeFailure) as info:
        save_adapter(str(adapter), chunks, make_peft_config("lora", {"rank": 4}))
    assert str(info.value) == f"{adapter}: cannot save adapter: no space left on device"
    assert tree_digest(adapter) == before  # the previous adapter, and no .tmp file
