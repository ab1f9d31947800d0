"""A pretraining run killed with SIGKILL (between steps, or while writing a checkpoint) resumes
from the last complete checkpoint and produces the losses of an uninterrupted run."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def tiny_args(data_dir, out):
    return ["pretrain", "--no-progress", "--out", out, "--steps", "6",
            "model.num_layers=2", "model.hidden_size=64", "model.num_attention_heads=4",
            "model.seq_length=64", "train.micro_batch_size=2", "train.global_batch_size=4",
            "train.lr_warmup_steps=1", "train.eval_interval=0", "train.eval_iters=1",
            "checkpoint.save_interval=2", "checkpoint.keep_last=3",
            f"data.dir={data_dir}", "data.num_entities=60", "data.vocab_size=512", "data.seed=3",
            "data.split=90,10,0"]


def losses(out):
    with open(os.path.join(out, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [(r["step"], r["loss"]) for r in rows]


@pytest.fixture(scope="module")
def reference(small_data_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ref"))
    run_cli(tiny_args(small_data_dir, out))
    got = losses(out)
    assert [s for s, _ in got] == [1, 2, 3, 4, 5, 6]
    assert os.path.isfile(os.path.join(out, "loss_curve.png"))
    assert os.path.isdir(os.path.join(out, "tensorboard"))
    return got


def test_sigkill_between_steps_then_resume(small_data_dir, tmp_path, reference):
    out = str(tmp_path / "run")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "megatron_retro.cli", *tiny_args(small_data_dir, out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            start_new_session=True)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if os.path.isfile(metrics) and len(losses(out)) >= 3:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)  # the whole job, as a scheduler kills it
    proc.wait()
    killed_at = len(losses(out))
    assert killed_at < 6
    run_cli(tiny_args(small_data_dir, out))
    assert losses(out) == reference


def test_sigkill_while_writing_a_checkpoint_then_resume(small_data_dir, tmp_path, reference):
    out = str(tmp_path / "run")
    proc = run_cli(tiny_args(small_data_dir, out), env={"MEGATRON_RETRO_FAULT_KILL_IN_SAVE": "4"}, check=False)
    assert proc.returncode == -signal.SIGKILL
    ckpt = os.path.join(out, "checkpoints")
    assert sorted(os.listdir(ckpt)) == ["iter_0000002", "iter_0000004.tmp", "latest"]
    run_cli(tiny_args(small_data_dir, out))
    assert losses(out) == reference
    assert "iter_0000006" in os.listdir(ckpt) and "iter_0000004.tmp" not in os.listdir(ckpt)
