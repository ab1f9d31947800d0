"""PEFT vs Transformer Engine: the layer-backend rule (models/gpt_spec.resolve_layer_backend) and
the finetune build path under a simulated TE (TE presence is an input, TE is never imported)."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "distributed"))
from peft_cases import METHOD_CASES, MODEL_OVERRIDES, VOCAB  # noqa: E402

from megatron_retro.config import load_config  # noqa: E402
from megatron_retro.errors import UserError  # noqa: E402
from megatron_retro.models.gpt_spec import LayerBackend, resolve_layer_backend  # noqa: E402
from megatron_retro.peft.reach import peft_layer_backend  # noqa: E402

L, C = "linears", "core_attention"


@pytest.mark.parametrize("requested,te,reach,want", [
    ("auto", False, frozenset(), ("local", "sdpa")),
    ("auto", True, frozenset(), ("te", "te")),          # pretraining on the GPU image: full TE
    ("te", True, frozenset(), ("te", "te")),
    ("auto", True, frozenset({L}), ("local", "te")),     # LoRA on the GPU image: TE only in core attention
    ("te", True, frozenset({L}), ("local", "te")),
    ("auto", True, frozenset({C}), ("local", "sdpa")),   # prefix patches the core attention
    ("auto", True, frozenset({L, C}), ("local", "sdpa")),
    ("sdpa", True, frozenset({L}), ("local", "sdpa")),
    ("unfused", True, frozenset(), ("local", "unfused")),
    ("unfused", False, frozenset({L}), ("local", "unfused")),
])
def test_rule(requested, te, reach, want):
    got = resolve_layer_backend(requested, te, reach)
    assert (got.linears, got.core_attention) == want and got.why


def test_te_requested_without_te_is_one_line_error():
    with pytest.raises(UserError, match="attention_backend=te: transformer_engine is not importable"):
        resolve_layer_backend("te", False)


@pytest.mark.parametrize("method", sorted(METHOD_CASES))
def test_every_registered_method_has_a_stated_reach(method):
    from megatron_retro.peft.reach import REACH

    assert method in REACH
    b = peft_layer_backend("auto", method, te_available=True)
    # anything that patches layers gets megatron's local linears; only embedding methods keep TE's
    assert b.linears == ("te" if method in ("prompt", "ptuning") else "local")


@pytest.fixture
def fake_te(monkeypatch):
    """TE 'present': the probe says so and TE's core attention is a stand-in (SDPA under TE's name)."""
    import megatron_retro.models.gpt_spec as gpt_spec
    from megatron_retro.models.sdpa_attention import SDPAttention

    import megatron.core.extensions.transformer_engine as te_ext

    te_attention = type("TEDotProductAttention", (SDPAttention,), {})

    def no_te_linears(model):
        raise AssertionError("the TE linear spec was built for a PEFT run")
    monkeypatch.setattr(gpt_spec, "transformer_engine_available", lambda: True)
    monkeypatch.setattr(gpt_spec, "get_gpt_layer_te_spec", no_te_linears)
    monkeypatch.setattr(te_ext, "TEDotProductAttention", te_attention)
    return te_attention


@pytest.mark.parametrize("method", ["lora", "prefix"])
def test_finetune_build_under_te_wraps_local_linears(fake_te, method):
    """The path finetune takes (training.finetune.build_model + apply_peft) with TE present and
    model.attention_backend=auto: builds, applies the method and runs a forward."""
    from megatron.core.tensor_parallel import ColumnParallelLinear

    from megatron_retro.models.sdpa_attention import SDPAttention
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.peft import apply_peft, make_peft_config
    from megatron_retro.training.finetune import build_model

    overrides = [o for o in MODEL_OVERRIDES if "attention_backend" not in o] + ["model.attention_backend=auto"]
    cfg = load_config(None, overrides)
    initialize_parallel(cfg.parallel, seed=3)
    chunks = build_model(cfg, VOCAB, precision="fp32", peft_method=method)
    attn = chunks[0].decoder.layers[0].self_attention
    assert type(attn.linear_qkv) is ColumnParallelLinear
    want = fake_te if method == "lora" else SDPAttention
    assert type(attn.core_attention) is want
    apply_peft(chunks, make_peft_config(method, METHOD_CASES[method]))
    tokens = torch.randint(0, VOCAB, (2, 32))
    with torch.no_grad():
        out = chunks[0](tokens, torch.arange(32)[None].expand(2, -1), None)
    assert torch.isfinite(out).all()


def test_old_rule_would_fail(fake_te):
    """Control: had finetune built the no-PEFT spec under TE, the TE linear spec is what it asks for."""
    from megatron_retro.models.gpt_spec import get_gpt_layer_spec

    cfg = load_config(None, ["model.attention_backend=auto"])
    with pytest.raises(AssertionError, match="TE linear spec"):
        get_gpt_layer_spec(cfg.model)
    assert get_gpt_layer_spec(cfg.model, LayerBackend("local", "te")).submodules.self_attention \
        .submodules.core_attention is fake_te
