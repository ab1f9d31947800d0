"""End to end: pretrain a tiny base, `finetune --peft lora` on it, `peft merge` the adapter."""
import json
import os

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow


def common(data_dir):
    return ["model.num_layers=2", "model.hidden_size=64", "model.num_attention_heads=4", "model.seq_length=64",
            "train.micro_batch_size=2", "train.global_batch_size=4", "train.lr_warmup_steps=0",
            "train.eval_interval=0", "train.eval_iters=1", f"data.dir={data_dir}", "data.num_entities=60",
            "data.vocab_size=512", "data.seed=3", "data.split=90,10,0"]


QA = ["qa.embedder=hash:64", "qa.seq_length=288", "qa.train_examples=32", "qa.max_answer_tokens=8"]


def test_finetune_lora_then_merge(small_data_dir, tmp_path):
    base_out = str(tmp_path / "base")
    run_cli(["pretrain", "--no-progress", "--out", base_out, "--steps", "2", *common(small_data_dir)])
    base = os.path.join(base_out, "checkpoints", "iter_0000002")
    assert os.path.isdir(base), os.listdir(os.path.join(base_out, "checkpoints"))

    ft_out = str(tmp_path / "ft")
    proc = run_cli(["finetune", "--no-progress", "--peft-config", "configs/peft/lora_all.yaml",
                    "--peft-opt", "rank=4", "--peft-opt", "alpha=8",
                    "--base", base, "--out", ft_out, "--steps", "4", "train.lr=5e-3", *common(small_data_dir), *QA])
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["model"] == "gpt" and summary["data"]["train"]["examples"] == 32
    assert 0 < summary["trainable_params"] < summary["total_params"] / 10
    # r·(K + N) for qkv, proj, fc1 (SwiGLU: 2·ffn out), fc2; d 64, ffn 192, 2 layers
    assert summary["trainable_params"] == 2 * 4 * ((64 + 192) + (64 + 64) + (64 + 2 * 192) + (192 + 64))
    adapter = summary["adapter"]
    with open(os.path.join(adapter, "adapter_config.json")) as f:
        meta = json.load(f)
    assert meta["peft"]["method"] == "lora" and meta["peft"]["rank"] == 4
    assert os.path.isfile(os.path.join(adapter, "adapter_model.safetensors"))

    ev_out = str(tmp_path / "eval")
    proc = run_cli(["evaluate", "--no-progress", "--load", base, "--adapter", adapter, "--out", ev_out,
                    "qa.eval_examples=5", *common(small_data_dir), *QA])
    scored = json.loads(proc.stdout.strip().splitlines()[-1])
    assert scored["count"] == 5 and set(scored["scores"]) == {"em", "f1", "rougeL"}
    preds = [json.loads(line) for line in open(os.path.join(ev_out, "predictions.jsonl"))]
    assert len(preds) == 5 and {"prediction", "answers", "em", "f1", "rougeL"} <= set(preds[0])
    with open(os.path.join(ev_out, "scores.json")) as f:
        assert json.load(f)["adapter"] == adapter

    merged = str(tmp_path / "merged")
    proc = run_cli(["peft", "merge", "--base", base, "--adapter", adapter, "--merged-out", merged,
                    *common(small_data_dir)])
    path = json.loads(proc.stdout.strip().splitlines()[-1])["merged_checkpoint"]
    assert os.path.isfile(os.path.join(path, ".metadata"))

    hf = str(tmp_path / "hf")
    proc = run_cli(["peft", "export-hf", "--base", base, "--adapter", adapter, "--hf-out", hf,
                    *common(small_data_dir)])
    exported = json.loads(proc.stdout.strip().splitlines()[-1])
    assert exported["lora_modules"] == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                               "down_proj"])
    assert os.path.isfile(os.path.join(hf, "adapter", "adapter_config.json"))

    bad = run_cli(["finetune", "--peft", "lora", "--peft-opt", "rank=0", "--out", ft_out, *common(small_data_dir)],
                  check=False)
    assert bad.returncode == 2 and "peft.rank=0" in bad.stderr
