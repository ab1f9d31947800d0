"""RETRO counterparts of the paper grid: exact counts (meta-device builds) = closed form = file name."""
import glob
import os

import pytest

from megatron_retro.config import load_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
GRID = sorted(glob.glob(os.path.join(ROOT, "configs", "models", "retro-*[0-9][mb].yaml")))


def sig3(n: float) -> str:
    value, unit = (n / 1e9, "b") if n >= 1e9 else (n / 1e6, "m")
    return f"{float(f'{value:.3g}'):g}{unit}"


def closed_form_retro_extra(cfg) -> int:
    """Parameters RETRO adds to the GPT: per retrieval layer a pre-norm + q/kv/out projections
    (+ gate); once, the encoder (GPT-like layers + a cross-attention each) and its final norm."""
    m, retro = cfg.model, cfg.retro
    d, f, hd = m.hidden_size, m.ffn_size, m.head_dim
    q = m.num_attention_heads * hd
    kv_self = (m.num_query_groups or m.num_attention_heads) * hd
    norm = d if m.normalization == "RMSNorm" else 2 * d
    bias = m.add_bias_linear
    cross = d * q + d * 2 * q + q * d + ((q + 2 * q + d) if bias else 0)
    fc1 = 2 * f if m.activation == "swiglu" else f
    self_attn = d * (q + 2 * kv_self) + q * d + ((q + 2 * kv_self + d) if bias else 0)
    mlp = d * fc1 + f * d + ((fc1 + d) if bias else 0)
    encoder_layer = self_attn + cross + mlp + 3 * norm
    per_retrieval = norm + cross + (1 if retro.attention_gate else 0)
    layers = len(retro.layer_numbers(m.num_layers))
    return layers * per_retrieval + retro.encoder_num_layers * encoder_layer + norm


def test_grid_is_there():
    assert len(GRID) == 5, GRID


@pytest.mark.parametrize("path", GRID, ids=os.path.basename)
def test_counts(path):
    from megatron_retro.models.retro.builder import retro_chunk_builder
    from megatron_retro.planning.param_count import closed_form_gpt_params, count_parameters

    cfg = load_config(path)
    assert cfg.model.arch == "retro"
    counts = count_parameters(cfg.model, 1, 1, cfg.model.vocab_size, build_chunk=retro_chunk_builder(cfg.retro))
    assert counts.total == closed_form_gpt_params(cfg.model, counts.vocab_size) + closed_form_retro_extra(cfg)
    assert os.path.basename(path) == f"retro-{sig3(counts.total)}.yaml"


def test_plan_uses_the_retro_builder():
    from megatron_retro.planning.plan import make_plan

    path = GRID[0]
    cfg = load_config(path)
    gpt = load_config(path, ["model.arch=gpt"])
    assert make_plan(cfg, 2, 2, cfg.model.vocab_size)["params_total"] > make_plan(gpt, 2, 2, gpt.model.vocab_size)["params_total"]
