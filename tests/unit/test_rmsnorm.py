"""The one-op RMSNorm (models/rmsnorm.py) equals torch's F.rms_norm forward and backward (odd
sizes, a strided input, frozen and trained weight), and the local spec's norms are FastRMSNorm."""
import pytest
import torch
import torch.nn.functional as F

from megatron_retro.models.rmsnorm import FastRMSNorm


@pytest.mark.parametrize("shape", [(9, 3, 41), (5, 7)])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-12), (torch.float32, 2e-6)])
@pytest.mark.parametrize("train_weight", [True, False])
def test_matches_torch_rms_norm_forward_and_backward(shape, dtype, tol, train_weight):
    g = torch.Generator().manual_seed(0)
    base = torch.randn(*shape[:-1], shape[-1] + 2, generator=g, dtype=dtype) * 3 + 0.5   # x: strided slice
    w = (torch.rand(shape[-1], generator=g, dtype=dtype) + 0.5).requires_grad_(train_weight)
    dy = torch.randn(*shape, generator=g, dtype=dtype)
    norm = FastRMSNorm(shape[-1], eps=1e-5, dtype=dtype)
    norm.weight = torch.nn.Parameter(w.detach().clone(), requires_grad=train_weight)
    outs = []
    for fn in (lambda x: F.rms_norm(x, (shape[-1],), w, 1e-5), norm):
        b = base.clone().requires_grad_()
        y = fn(b[..., 1:1 + shape[-1]])
        y.backward(dy)
        wgrad = (w.grad if fn is not norm else norm.weight.grad)
        outs.append((y.detach(), b.grad, wgrad))
    (y0, dx0, dw0), (y1, dx1, dw1) = outs
    torch.testing.assert_close(y1, y0, rtol=tol, atol=tol)
    torch.testing.assert_close(dx1, dx0, rtol=tol, atol=tol)
    if train_weight:
        torch.testing.assert_close(dw1, dw0, rtol=tol, atol=tol)
    else:
        assert dw1 is None


def test_local_spec_norms_are_fast_and_other_dtypes_keep_torch(monkeypatch):
    from megatron_retro.config import load_config
    from megatron_retro.models.gpt import build_gpt_model
    import megatron_retro.models.rmsnorm as rn
    from megatron_retro.parallel.initialize import initialize_parallel

    cfg = load_config(None, ["model.num_layers=1", "model.hidden_size=32", "model.num_attention_heads=2",
                             "model.ffn_hidden_size=24", "model.seq_length=8", "model.attention_backend=sdpa"])
    initialize_parallel(cfg.parallel, seed=1)
    layer = build_gpt_model(cfg.model, cfg.parallel, vocab_size=64, precision="fp32")[0].decoder.layers[0]
    assert isinstance(layer.input_layernorm, FastRMSNorm) and isinstance(layer.pre_mlp_layernorm, FastRMSNorm)
    calls = []
    monkeypatch.setattr(rn.RMSNormFunction, "apply", lambda *a: calls.append(1) or F.rms_norm(
        a[0], (a[0].shape[-1],), a[1], a[2]))
    layer.input_layernorm(torch.randn(4, 2, 32))
    assert calls == [1]
    layer.input_layernorm.to(torch.bfloat16)(torch.randn(4, 2, 32, dtype=torch.bfloat16))
    assert calls == [1]
