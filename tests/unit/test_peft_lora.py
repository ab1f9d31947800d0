"""LoRA specifics in one process: the TP sharding rule, the kernel dispatch of the LoRA linear,
rsLoRA scaling, target patterns, named adapters switching, and one-line config errors."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "distributed"))
from peft_cases import MODEL_OVERRIDES, SEQ, VOCAB  # noqa: E402

from megatron_retro.config import load_config  # noqa: E402
from megatron_retro.errors import UserError  # noqa: E402


@pytest.fixture(scope="module")
def run_cfg():
    from megatron_retro.parallel.initialize import initialize_parallel

    cfg = load_config(None, MODEL_OVERRIDES)
    initialize_parallel(cfg.parallel, seed=3)
    return cfg


def build(cfg, method=None, options=None):
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.peft import apply_peft, make_peft_config

    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB)
    init_by_global_name(chunks, seed=11)
    peft_cfg = make_peft_config(method, options) if method else None
    if peft_cfg:
        apply_peft(chunks, peft_cfg)
    return chunks, peft_cfg


def logits(chunks):
    torch.manual_seed(0)
    tokens = torch.randint(0, VOCAB, (2, SEQ))
    chunks[0].eval()
    with torch.no_grad():
        return chunks[0](tokens, torch.arange(SEQ)[None].expand(2, -1), None)


def test_sharding_rule():
    from megatron_retro.peft.tp_rule import COLUMN, ROW, lora_layout

    col = lora_layout(COLUMN, (96, 64), 4)   # W [N/tp, K]
    assert (col.a_shape, col.b_shape, col.a_axis, col.b_axis, col.partial_grad) == ((4, 64), (96, 4), None, 0, "a")
    row = lora_layout(ROW, (64, 32), 4)      # W [N, K/tp]
    assert (row.a_shape, row.b_shape, row.a_axis, row.b_axis, row.partial_grad) == ((4, 32), (64, 4), 1, None, "b")


def test_lora_linear_goes_through_fused_lora_and_says_why(run_cfg, monkeypatch):
    import megatron_retro.kernels as kernels
    from megatron_retro.peft.lora import lora_dispatch

    chunks, _ = build(run_cfg, "lora", {"rank": 4})
    calls = []
    real = kernels.fused_lora_linear
    monkeypatch.setattr(kernels, "fused_lora_linear", lambda *a, **k: calls.append(a[2].shape) or real(*a, **k))
    logits(chunks)
    assert len(calls) == 4 * 4  # four linears x four layers
    qkv = chunks[0].decoder.layers[0].self_attention.linear_qkv
    decision = lora_dispatch(qkv, torch.randn(SEQ, 2, 64))
    assert not decision.use_triton and "torch reference" in decision.reason and "CUDA" in decision.reason


def test_rslora_scale_and_zero_init_keeps_base_logits(run_cfg):
    base, _ = build(run_cfg)
    chunks, cfg = build(run_cfg, "lora", {"rank": 4, "alpha": 8.0, "rslora": True})
    assert cfg.scale == pytest.approx(8.0 / 2.0)
    assert chunks[0].decoder.layers[0].mlp.linear_fc2._lora_scale == pytest.approx(4.0)
    torch.testing.assert_close(logits(chunks), logits(base))  # B = 0 at init


def test_target_patterns_select_by_path_and_type(run_cfg):
    chunks, _ = build(run_cfg, "lora", {"rank": 2, "targets": ["decoder.layers.1.self_attention.linear_qkv", "linear_fc2"],
                                        "exclude": ["decoder.layers.3.*"]})
    names = sorted(n for n, p in chunks[0].named_parameters() if p.requires_grad)
    assert names == sorted(["decoder.layers.1.self_attention.linear_qkv.lora_a",
                            "decoder.layers.1.self_attention.linear_qkv.lora_b"] +
                           [f"decoder.layers.{i}.mlp.linear_fc2.lora_{x}" for i in range(3) for x in "ab"])
    with pytest.raises(UserError, match="no parallel linear"):
        build(run_cfg, "lora", {"targets": ["linear_nothing"]})


def test_named_adapters_switch_and_restore_logits(run_cfg, tmp_path):
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.peft import load_peft_state_dict, peft_state_dict
    from megatron_retro.peft.checkpoint import save_adapter
    from megatron_retro.peft.multi import AdapterBank

    chunks, cfg = build(run_cfg, "lora", {"rank": 4})
    init_by_global_name(chunks, seed=21)
    logits_a = logits(chunks)
    save_adapter(str(tmp_path / "a"), chunks, cfg)
    state_b = {k: (-2.0 * v if k.endswith("lora_b") else v) for k, v in peft_state_dict(chunks).items()}
    load_peft_state_dict(chunks, state_b)  # a second adapter on the same base
    logits_b = logits(chunks)
    bank = AdapterBank(chunks, cfg)
    bank.add("b")
    bank.add_from_dir("a", str(tmp_path / "a"))
    assert not torch.allclose(logits_a, logits_b)
    for name, expected in (("a", logits_a), ("b", logits_b), ("a", logits_a)):
        bank.activate(name)
        torch.testing.assert_close(logits(chunks), expected, rtol=0, atol=0)
    with pytest.raises(UserError, match="not in the bank"):
        bank.activate("c")


@pytest.mark.parametrize("method,options,message", [
    ("lora", {"rank": 0}, "peft.rank=0: must be an integer >= 1"),
    ("lora", {"dropout": 1.5}, "peft.dropout=1.5"),
    ("lora", {"bogus": 1}, "peft.bogus: unknown option"),
    ("adapter", {"activation": "tanh"}, "peft.activation='tanh'"),
    ("ptuning", {"encoder": "gru"}, "peft.encoder='gru'"),
    ("nope", {}, "peft.method='nope': unknown PEFT method"),
])
def test_bad_peft_options_are_one_line_errors(method, options, message):
    from megatron_retro.peft import make_peft_config

    with pytest.raises(UserError) as err:
        make_peft_config(method, options)
    assert message in str(err.value) and "\n" not in str(err.value)
