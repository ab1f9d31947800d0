"""`plan --recommend`: layouts that fit, sensible trends, formula PEFT counts, CLI, docs table fresh."""
import json
import os
import subprocess
import sys

import pytest

from megatron_retro.config import load_config
from megatron_retro.planning import docs_table
from megatron_retro.planning.peft_counts import peft_trainable
from megatron_retro.planning.plan import lora_qkv_trainable
from megatron_retro.planning.recommend import plan_layout, recommend

from ops_testlib import REPO

CFG_43B = f"{REPO}/configs/models/gpt-42.7b.yaml"
CFG_843M = f"{REPO}/configs/models/gpt-843m.yaml"


def test_recommended_layout_fits_and_beats_every_other_fitting_layout():
    model = load_config(CFG_43B).model
    best = recommend(model, 256000, "full", 32)
    assert best is not None and best.tp * best.pp * best.dp == 32
    assert best.memory.total <= 80e9 * 0.9
    for tp, pp, mb in [(8, 1, 1), (8, 2, 1), (4, 4, 1), (8, 4, 1), (2, 8, 1)]:
        for rc in (False, True):
            other = plan_layout(model, 256000, "full", 32, tp, pp, mb, rc)
            if other.memory.total <= 80e9 * 0.9:
                assert best.step_time_s <= other.step_time_s + 1e-9


def test_trends_and_impossible_layouts():
    model = load_config(CFG_43B).model
    assert recommend(model, 256000, "full", 1) is None  # 43B x 18 bytes cannot sit on one GPU
    times = [recommend(model, 256000, "lora", n).step_time_s for n in (8, 16, 64)]
    assert times[0] > times[1] > times[2]
    one = plan_layout(model, 256000, "full", 16, 8, 2, 1, recompute=False)
    rc = plan_layout(model, 256000, "full", 16, 8, 2, 1, recompute=True)
    assert rc.activations_recompute < one.activations_no_recompute
    assert rc.step_time_s == pytest.approx(one.step_time_s * 4 / 3)  # one more forward of three passes
    lora = plan_layout(model, 256000, "lora", 16, 8, 2, 1, recompute=False)
    assert lora.memory.optimizer < 0.01 * one.memory.optimizer
    assert lora.step_time_s == pytest.approx(one.step_time_s * 2 / 3)


def test_formula_peft_counts():
    cfg = load_config(CFG_843M)
    m = cfg.model
    assert peft_trainable(m, "lora", 24, 2, True) == lora_qkv_trainable(cfg, 24, 2)
    assert peft_trainable(m, "lora", 24, 1, True) == 24 * 32 * (1024 + 3 * 1024)
    assert peft_trainable(m, "adapter", 24, 1, True) == 24 * 2 * (2 * 1024 * 32)
    assert peft_trainable(m, "ptuning", 24, 1, False) == 0
    assert peft_trainable(m, "ptuning", 24, 1, True) == 10 * 1024 + 2 * 1024 * 1024 + 1024 + 1024


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "megatron_retro.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=REPO)


def test_cli_recommend_json_and_error():
    proc = _cli("plan", "--config", CFG_843M, "--recommend", "--gpus", "8", "--method", "lora", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert [r["method"] for r in rows] == ["lora"]
    assert rows[0]["plan"]["tp"] * rows[0]["plan"]["pp"] * rows[0]["plan"]["dp"] == 8
    bad = _cli("plan", "--config", CFG_843M, "--recommend")
    assert bad.returncode == 2 and "--gpus" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_docs_table_is_up_to_date():
    with open(os.path.join(REPO, "docs", "planner.md")) as f:
        assert f.read() == docs_table.render([8, 16, 64], os.path.join(REPO, "configs", "models")), \
            "docs/planner.md is stale: run python -m megatron_retro.planning.docs_table"
