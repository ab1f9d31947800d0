"""An experiment grid with `suites: [rag]` end to end (demo-quick's models + a tiny Gemma 3 built from
gemma3-270m.yaml's model entry), then `experiment --suites-only rag` on its finished cells: the suite
re-scored from each cell's saved base + adapter equals the one the grid scored on the fine-tuned model
in memory, and rag_suite.md averages every model's seeds (the Gemma its own row)."""
import json
import os
import shutil

import pytest
import yaml

from conftest import run_cli

pytestmark = pytest.mark.slow

EXPERIMENTS = os.path.join(os.path.dirname(__file__), "..", "..", "configs", "experiments")
GEMMA_TINY = ["model.num_layers=2", "model.hidden_size=64", "model.num_attention_heads=4", "model.kv_channels=16",
              "model.ffn_hidden_size=96", "model.softmax_scale=0.25", "model.sliding_window=16",
              "model.global_attn_every=2", "model.vocab_size=null", "model.make_vocab_size_divisible_by=128"]


def _experiment(tmp_path, data_dir) -> str:
    """demo-quick.yaml cut down (zero-shot + LoRA, 2 seeds, no service) with the Gemma model of
    gemma3-270m.yaml, pretrained here at toy size instead of read from its imported checkpoint."""
    def load(name):
        with open(os.path.join(EXPERIMENTS, name)) as f:
            return yaml.safe_load(f)

    exp, gemma = load("demo-quick.yaml"), load("gemma3-270m.yaml")["models"][0]
    models = exp["models"] + [{"name": gemma["name"], "config": gemma["config"], "pretrain_steps": 2,
                               "overrides": GEMMA_TINY}]
    for m in models:
        m["config"] = os.path.normpath(os.path.join(EXPERIMENTS, m["config"]))
    models[0]["pretrain_steps"], models[1]["pretrain_steps"] = 2, 1
    models[1]["overrides"] = [o.replace("{out_dir}/data/qa_db-m64-r128-minilm", f"{data_dir}/qa_db-m64-r128-hash64")
                              for o in models[1]["overrides"]]           # the task DB, as in the demo
    exp.update(models=models, methods=["zero-shot", "lora"], suites=["rag"], suite_examples=2, retrieval_shards=0,
               out_dir=str(tmp_path / "exp"),
               peft_configs=[f"lora={os.path.normpath(os.path.join(EXPERIMENTS, '../peft/lora_all.yaml'))}"])
    exp["common_overrides"] = [o for o in exp["common_overrides"] if not o.startswith(("data.dir", "qa.train_ex"))]
    exp["common_overrides"] += [f"data.dir={data_dir}", "data.seed=3", "qa.embedder=hash:64", "retrieval.embedder=hash:64",
                                 "qa.train_examples=16"]
    exp["finetune_overrides"] += ["train.lr=1e-2"]          # the adapters move the answers off the base's
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return str(path)


def _predictions(cell):
    return [json.loads(x)["prediction"] for x in open(os.path.join(cell, "rag_predictions.jsonl"))]


def test_grid_with_rag_suite_then_suites_only_from_saved_adapters(small_data_dir, tmp_path):
    config = _experiment(tmp_path, small_data_dir)
    out = str(tmp_path / "exp")
    proc = run_cli(["experiment", "--config", config, "--no-progress"], timeout=900)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["cells"] == summary["total_cells"] == 3 * (1 + 2)
    assert os.path.join(out, "rag_suite.md") in summary["report"]
    cells = os.path.join(out, "cells")
    models = ("gpt-micro", "retro-micro", "gemma3-270m")
    in_memory = {}
    for model in models:
        record = json.load(open(os.path.join(cells, model, "lora", "seed1", "result.json")))
        assert set(record["rag"]) == {"retrieved", "noise-0", "noise-1", "negative", "integration",
                                      "counterfactual"}
        for seed in (1, 2):
            cell = os.path.join(cells, model, "lora", f"seed{seed}")
            stored = json.load(open(os.path.join(cell, "rag_suite.json")))
            assert stored["adapter"] == os.path.join(cell, "adapter") and stored["examples"] == 2
            in_memory[cell] = (stored["splits"], _predictions(cell))
            os.remove(os.path.join(cell, "rag_suite.json"))                  # scored again below, from disk
        assert in_memory[cell][1] != _predictions(os.path.join(cells, model, "zero-shot", "seed0"))
    zero_shot = os.path.join(cells, "gemma3-270m", "zero-shot", "seed0", "rag_suite.json")
    kept = os.path.getmtime(zero_shot)
    shutil.rmtree(os.path.join(cells, "retro-micro", "lora", "seed2"))  # an unfinished cell is left out

    proc = run_cli(["experiment", "--config", config, "--no-progress", "--suites-only", "rag"], timeout=900)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (summary["cells"], summary["scored"], summary["unfinished"]) == (8, 5, 1)
    assert os.path.getmtime(zero_shot) == kept                               # a current suite is not redone
    for cell, (splits, predictions) in in_memory.items():
        if os.path.isdir(cell):
            assert _predictions(cell) == predictions, cell
            assert json.load(open(os.path.join(cell, "rag_suite.json")))["splits"] == splits, cell
    table = open(os.path.join(out, "rag_suite.md")).read()
    assert table.strip() in proc.stdout                                       # the table is printed
    for label in ("gpt-micro lora (2 seeds)", "gemma3-270m lora (2 seeds)", "retro-micro lora (1 seed)",
                  "gemma3-270m zero-shot (1 seed)"):
        assert table.count(f"| {label} |") == 6, label
    assert "| gpt-micro lora (2 seeds) | negative | 4 |" in table
    assert os.path.getsize(os.path.join(out, "rag_noise.png")) > 1000
    assert "1 cell(s) not finished, left out: retro-micro/lora/seed2" in proc.stdout
