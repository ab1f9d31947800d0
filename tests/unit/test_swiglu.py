"""The one-op SwiGLU (models/swiglu.py) equals megatron's unfused gated MLP activation forward and
backward (odd sizes, a strided input), and the local spec's MLP runs it only in the plain case."""
import pytest
import torch
import torch.nn.functional as F

from megatron_retro.models.swiglu import SwiGLUMLP, swiglu


def _megatron_glu(x):   # megatron-core mlp.py's unfused glu with glu_linear_offset = 0
    gate, up = torch.chunk(x, 2, dim=-1)
    return F.silu(gate) * (up + 0.0)


@pytest.mark.parametrize("shape", [(9, 3, 2 * 41), (5, 2 * 7)])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
def test_matches_megatron_glu_forward_and_backward(shape, dtype, tol):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(*shape[:-1], shape[-1] + 3, generator=g, dtype=dtype) * 3   # x is a strided slice
    dy = torch.randn(*shape[:-1], shape[-1] // 2, generator=g, dtype=dtype)
    outs = []
    for fn in (_megatron_glu, swiglu):
        b = base.clone().requires_grad_()
        y = fn(b[..., 1:1 + shape[-1]])
        y.backward(dy)
        outs.append((y.detach(), b.grad))
    torch.testing.assert_close(outs[1][0], outs[0][0], rtol=tol, atol=tol)
    torch.testing.assert_close(outs[1][1], outs[0][1], rtol=tol, atol=tol)


def test_gpt_local_spec_mlp_takes_it_only_in_the_plain_case(monkeypatch):
    from megatron_retro.config import load_config
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel
    import megatron_retro.models.swiglu as sw

    cfg = load_config(None, ["model.num_layers=1", "model.hidden_size=32", "model.num_attention_heads=2",
                             "model.ffn_hidden_size=24", "model.seq_length=8", "model.attention_backend=sdpa"])
    initialize_parallel(cfg.parallel, seed=1)
    mlp = build_gpt_model(cfg.model, cfg.parallel, vocab_size=64, precision="fp32")[0].decoder.layers[0].mlp
    assert isinstance(mlp, SwiGLUMLP)
    x = torch.randn(8, 2, 32, dtype=torch.float32)
    calls = []
    monkeypatch.setattr(sw, "swiglu", lambda h: calls.append(1) or sw.GatedActFunction.apply(h, "silu"))
    ours = mlp(x)[0]
    assert calls == [1]
    monkeypatch.setattr(mlp.config, "glu_linear_offset", 0.5)   # megatron's own path, not ours
    other = mlp(x)[0]
    assert calls == [1]
    monkeypatch.setattr(mlp.config, "glu_linear_offset", 0.0)
    torch.testing.assert_close(ours, mlp(x)[0])
    ref = mlp.linear_fc2(_megatron_glu(mlp.linear_fc1(x)[0]))[0]
    torch.testing.assert_close(ours, ref, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(other, ours)
