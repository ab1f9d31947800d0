"""`plan`: exact parameter counts from meta-device builds, per-rank consistency, file names."""
import glob
import os

import pytest

from megatron_retro.config import load_config
from megatron_retro.models.gpt import padded_vocab_size
from megatron_retro.planning.param_count import closed_form_gpt_params, count_parameters
from megatron_retro.planning.plan import make_plan

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
PAPER = sorted(glob.glob(os.path.join(ROOT, "configs", "models", "gpt-*[0-9][mb].yaml")),
               key=lambda p: float(os.path.basename(p)[4:-6]) * (1e9 if p.endswith("b.yaml") else 1e6))


def sig3(n: float) -> str:
    value, unit = (n / 1e9, "b") if n >= 1e9 else (n / 1e6, "m")
    return f"{float(f'{value:.3g}'):g}{unit}"


def test_the_paper_grid_is_there():
    names = [os.path.basename(p) for p in PAPER]
    assert len(names) == 5, names


@pytest.mark.parametrize("path", PAPER, ids=os.path.basename)
def test_counts_match_closed_form_and_file_name(path):
    cfg = load_config(path)
    counts = count_parameters(cfg.model, tp=1, pp=1, vocab_size=cfg.model.vocab_size)
    assert counts.total == closed_form_gpt_params(cfg.model, counts.vocab_size)
    assert os.path.basename(path) == f"gpt-{sig3(counts.total)}.yaml"


@pytest.mark.parametrize("activation", ["swiglu", "gelu", "geglu_tanh"])
def test_closed_form_and_layer_count_follow_the_mlp_kind(activation):
    """A gated MLP (SwiGLU, Gemma's GeGLU) has a 2*ffn-wide fc1: the closed form and the planner's
    per-layer count agree with a meta-device build for every activation."""
    from megatron_retro.planning.recommend import layer_params

    cfg = load_config(os.path.join(ROOT, "configs", "models", "gpt-tiny.yaml"), [f"model.activation={activation}"])
    counts = count_parameters(cfg.model, tp=1, pp=1, vocab_size=cfg.data.vocab_size)
    assert counts.total == closed_form_gpt_params(cfg.model, counts.vocab_size)
    m = cfg.model
    embeddings = counts.vocab_size * m.hidden_size * (2 if m.untie_embeddings else 1)
    final_norm = m.hidden_size if m.normalization == "RMSNorm" else 2 * m.hidden_size
    assert counts.total == embeddings + m.num_layers * layer_params(m, 1) + final_norm


@pytest.mark.parametrize("path,tp,pp", [(PAPER[0], 2, 2), (PAPER[-1], 8, 4), (PAPER[-1], 4, 8)],
                         ids=lambda v: os.path.basename(v) if isinstance(v, str) else str(v))
def test_per_rank_counts_add_up(path, tp, pp):
    cfg = load_config(path)
    counts = count_parameters(cfg.model, tp=tp, pp=pp, vocab_size=cfg.model.vocab_size)
    assert counts.vocab_size == padded_vocab_size(cfg.model.vocab_size, 128, tp)
    assert counts.total == closed_form_gpt_params(cfg.model, counts.vocab_size)
    assert sum(s.layers for s in counts.stages) == cfg.model.num_layers
    per_rank = counts.per_rank()
    assert len(per_rank) == tp * pp
    # Sharded parameters add up to their full size; replicated ones (norms) sit on every TP rank.
    replicated = sum(s.replicated for s in counts.stages)
    assert sum(r["params"] for r in per_rank) == counts.total + (tp - 1) * replicated
    d = cfg.model.hidden_size
    norms_per_layer = 4 * d if cfg.model.normalization == "LayerNorm" else 2 * d
    final_norm = norms_per_layer // 2
    assert replicated == cfg.model.num_layers * norms_per_layer + final_norm


def test_plan_json_fields_and_memory_ordering():
    cfg = load_config(PAPER[-1])
    plan = make_plan(cfg, tp=8, pp=4, vocab_size=cfg.model.vocab_size, dp=4)
    assert plan["params_total"] == count_parameters(cfg.model, 8, 4, cfg.model.vocab_size).total
    assert {"tp_rank", "pp_rank", "params"} <= set(plan["params_per_rank"][0])
    for stage in plan["stages"]:
        full, lora = stage["memory_gib"]["full"], stage["memory_gib"]["peft_lora_r32_qkv"]
        assert lora["optimizer"] < full["optimizer"] / 100
        assert lora["total"] < full["total"]
