"""`megatron-retro pretrain --config configs/models/retro-tiny.yaml` end to end (small): the
retrieval database is built from the training documents, training and evaluation run with
neighbours, a checkpoint is written, and a second call resumes from it."""
import json
import os

from conftest import run_cli

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def test_retro_pretrain_cli(small_data_dir, tmp_path):
    out = tmp_path / "run"
    args = ["pretrain", "--config", os.path.join(ROOT, "configs", "models", "retro-tiny.yaml"), "--no-progress",
            f"data.dir={small_data_dir}", "data.num_entities=60", "data.vocab_size=512", "data.seed=3",
            "data.split=90,10,0", "model.seq_length=128", "model.hidden_size=64", "model.ffn_hidden_size=128",
            "retro.embedder=hash:64", "train.micro_batch_size=2", "train.eval_iters=1", "train.lr_warmup_steps=1",
            f"out_dir={out}"]
    first = run_cli(args + ["train.steps=2"])
    summary = json.loads(first.stdout.strip().splitlines()[-1])
    assert summary["final_step"] == 2 and summary["valid_loss"] > 0
    assert 0 <= summary["retrieval_wait_share"] < 1
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    # every step: 2 samples x 2 chunks queried (a row searched deeper for same-document hits counts again)
    assert all(r["retrieval_queries"] >= 4 and r["retrieval_wait_s"] >= 0 for r in rows)
    assert os.path.isdir(os.path.join(small_data_dir, "retro_db-m64-r128-hash64", "index"))
    second = run_cli(args + ["train.steps=3"])
    assert json.loads(second.stdout.strip().splitlines()[-1])["final_step"] == 3
    steps = [json.loads(line)["step"] for line in open(out / "metrics.jsonl")]
    assert steps == [1, 2, 3]
