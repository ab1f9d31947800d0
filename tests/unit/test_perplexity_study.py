"""The perplexity study's arithmetic: equal-compute steps from the FLOP counts, and the verdict of
"RETRO perplexity < GPT" over seeds per regime, from synthetic run records."""
import math
import os

import pytest

from megatron_retro.evaluation.experiment_config import load_experiment
from megatron_retro.evaluation.perplexity_study import (compute_steps, perplexity_findings,
                                                        perplexity_markdown, runs)

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def rec(arch, regime, seed, ppl, steps):
    return {"pair": "g:r", "model": arch[0], "arch": arch, "regime": regime, "seed": seed, "steps": steps,
            "valid_loss": math.log(ppl), "perplexity": ppl}


def test_verdicts_per_regime():
    records = ([rec("gpt", "equal-steps", s, p, 100) for s, p in zip((1, 2, 3), (30.0, 31.0, 32.0))]
               + [rec("retro", "equal-steps", s, p, 100) for s, p in zip((1, 2, 3), (20.0, 21.0, 22.0))]
               + [rec("gpt", "equal-compute", s, p, 250) for s, p in zip((1, 2, 3), (19.0, 21.0, 23.0))])
    found = {f["regime"]: f for f in perplexity_findings(records)}
    # equal steps: GPT 31 ± 1 lies above RETRO 21 ± 1 -> RETRO's perplexity is lower: holds
    assert found["equal-steps"]["verdict"] == "holds"
    assert found["equal-steps"]["gpt"].mean["ppl"] == pytest.approx(31.0)
    assert found["equal-steps"]["gpt"].std["ppl"] == pytest.approx(1.0)
    # equal compute: GPT 21 ± 2 overlaps RETRO 21 ± 1 -> inconclusive; RETRO's N-step runs reused
    assert found["equal-compute"]["verdict"] == "inconclusive"
    assert found["equal-compute"]["steps"] == {"gpt": 250, "retro": 100}
    md = perplexity_markdown(list(found.values()))
    assert "| g:r | equal-steps | 100 | 100 | 31.00 ± 1.00 | 21.00 ± 1.00 | 3/3 | holds |" in md
    worse = [dict(r, perplexity=r["perplexity"] + 20) if r["arch"] == "retro" else r for r in records]
    assert {f["regime"]: f["verdict"] for f in perplexity_findings(worse)}["equal-steps"] == "reversed"


def test_study_config_parses_and_equal_compute_gives_gpt_more_steps():
    exp = load_experiment(os.path.join(ROOT, "configs", "experiments", "study-cpu.yaml"))
    from megatron_retro.evaluation.grid_runs import grid, model_config

    assert len({m.name for m in exp.models}) == 5 and len(exp.seeds) == 3 and len(exp.perplexity_seeds) == 3
    assert set(exp.methods) == {"zero-shot", "lora", "adapter", "ptuning"}
    assert len(grid(exp)) == 5 * (1 + 3 * 3)                # GPT/RETRO at two sizes + the Gemma arm
    assert len(runs(exp)) == 3 * 3 * len(exp.perplexity_pairs)
    models = {m.name: m for m in exp.models}
    gpt, retro = exp.perplexity_pairs[0].split(":")
    n_c = compute_steps(exp, model_config(exp, models[gpt]), model_config(exp, models[retro]), 4096)
    assert n_c > exp.perplexity_steps                       # RETRO costs more per token
