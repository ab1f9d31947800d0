"""Fixtures for the ops tests: this folder on sys.path (slurm_cluster), a small bundled data set."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@pytest.fixture(scope="session")
def ops_data_dir(tmp_path_factory):
    from megatron_retro.data.prepare import prepare_bundled_data

    d = tmp_path_factory.mktemp("opsdata") / "bundled"
    prepare_bundled_data(str(d), num_entities=60, vocab_size=512, seed=3, split="90,10,0", progress=False)
    return str(d)


def tiny_pretrain_args(data_dir: str, steps: int = 3) -> list[str]:
    """`megatron-retro pretrain` arguments of a seconds-long run on the small data set."""
    return ["--steps", str(steps),
            "model.num_layers=2", "model.hidden_size=64", "model.num_attention_heads=4",
            "model.seq_length=64", "train.micro_batch_size=2", "train.global_batch_size=4",
            "train.lr_warmup_steps=1", "train.eval_interval=0", "train.eval_iters=1",
            "checkpoint.save_interval=0", f"data.dir={data_dir}", "data.num_entities=60",
            "data.vocab_size=512", "data.seed=3", "data.split=90,10,0"]
