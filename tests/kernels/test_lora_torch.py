"""Both torch paths of the LoRA linear (kernels/lora_torch.py: accumulating, and folded into the
frozen GEMMs) equal the plain reference chain: output and every gradient, odd shapes, with and
without bias, fp32 and bf16; which path runs when; fused_lora_linear takes them on CPU when there
is no dropout."""
import pytest
import torch

from megatron_retro.kernels import fused_lora_linear, fused_lora_reference
from megatron_retro.kernels import lora_torch


def _case(dtype, bias, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(9, 5, 41, generator=g).to(dtype)                  # [.., M, K]
    w = (torch.randn(37, 41, generator=g) * 0.1).to(dtype)            # [N, K]
    a = torch.randn(3, 41, generator=g) * 0.1                          # [R, K] fp32 adapters
    b = torch.randn(37, 3, generator=g) * 0.1                          # [N, R]
    bb = torch.randn(37, generator=g).to(dtype) if bias else None
    dy = torch.randn(9, 5, 37, generator=g).to(dtype)
    return x, w, a, b, bb, dy


def _run(fn, x, w, a, b, bb, dy):
    leaves = [t.clone().requires_grad_() for t in (x, a, b)] + ([bb.clone().requires_grad_()] if bb is not None else [])
    y = fn(leaves[0], w, leaves[1], leaves[2], 1.7, leaves[3] if bb is not None else None)
    y.backward(dy)
    return [y.detach()] + [t.grad for t in leaves]


PATHS = {"folded": (0.0, lora_torch.LoRAFoldedLinearFunction), "accumulating": (1e9, lora_torch.LoRALinearTorchFunction)}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)], ids=["fp32", "bf16"])
@pytest.mark.parametrize("bias", [False, True], ids=["nobias", "bias"])
@pytest.mark.parametrize("stored", [False, True], ids=["temp_w", "param_w"])
def test_matches_reference_chain(monkeypatch, path, dtype, tol, bias, stored):
    """``stored``: W an nn.Parameter (LoRA: the folded path keeps its stacked buffer for backward)
    or a plain tensor (QLoRA's dequantised W: rebuilt in backward)."""
    threshold, fn = PATHS[path]
    monkeypatch.setattr(lora_torch, "FOLD_MIN_TOKENS_PER_IN_FEATURE", threshold)
    calls = []
    monkeypatch.setattr(fn, "apply", lambda *a, real=fn.apply: calls.append(1) or real(*a))
    x, w, *rest = _case(dtype, bias)
    if stored:
        w = torch.nn.Parameter(w, requires_grad=False)
    got = _run(lora_torch.lora_linear_torch, x, w, *rest)
    assert calls == [1], path
    ref = _run(fused_lora_reference, x, w.detach(), *rest)
    for name, g, r in zip(["y", "dx", "da", "db", "dbias"], got, ref):
        assert g.dtype == r.dtype, name
        torch.testing.assert_close(g.float(), r.float(), rtol=tol, atol=tol * r.float().abs().max().item(), msg=name)


def test_folds_only_when_dx_is_wanted_and_tokens_outnumber_in_features():
    w = torch.zeros(37, 41)
    assert lora_torch.use_folded(torch.zeros(41, 41, requires_grad=True), w)       # M = K
    assert not lora_torch.use_folded(torch.zeros(40, 41, requires_grad=True), w)   # M < K
    assert not lora_torch.use_folded(torch.zeros(41, 41), w)                       # frozen input: no dX
    with torch.no_grad():
        assert not lora_torch.use_folded(torch.zeros(41, 41, requires_grad=True), w)


def test_folded_path_saves_no_merged_weight_for_a_temporary_w():
    """A plain-tensor W (QLoRA's dequantised one): only X, H, W and the factors are saved (QLoRA's
    hook then swaps W for a marker), no merged full-precision copy."""
    x, w, a, b, _, _ = _case(torch.float32, False)
    x.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        lora_torch.LoRAFoldedLinearFunction.apply(x, w, a, b, None, 1.7)
    assert sorted(tuple(t.shape) for t in saved) == sorted([(45, 41), (45, 3), (37, 41), (3, 41), (37, 3)])
    assert any(t is w for t in saved)


def test_folded_path_keeps_the_stacked_buffer_for_a_parameter_w():
    """A stored W (nn.Parameter): the merged [W + s·B·A | s·B] of the forward is saved instead of W
    (built once a step) and equals the backward's rebuild."""
    x, w, a, b, _, _ = _case(torch.float32, False)
    x.requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        lora_torch.LoRAFoldedLinearFunction.apply(x, torch.nn.Parameter(w, requires_grad=False), a, b, None, 1.7)
    assert sorted(tuple(t.shape) for t in saved) == sorted([(45, 41), (45, 3), (37, 44), (3, 41), (37, 3)])
    kept = next(t for t in saved if tuple(t.shape) == (37, 44))
    torch.testing.assert_close(kept, lora_torch.folded_weight(w, a, b, 1.7, torch.float32))


def test_fused_lora_linear_takes_it_on_cpu_without_dropout(monkeypatch):
    calls = []
    monkeypatch.setattr(lora_torch, "FOLD_MIN_TOKENS_PER_IN_FEATURE", 1e9)
    real = lora_torch.LoRALinearTorchFunction.apply
    monkeypatch.setattr(lora_torch.LoRALinearTorchFunction, "apply", lambda *a: calls.append(1) or real(*a))
    x, w, a, b, _, _ = _case(torch.float32, False)
    fused_lora_linear(x, w, a, b, 2.0)
    assert calls == [1]
    fused_lora_linear(x, w, a, b, 2.0, dropout_p=0.1)   # dropout: the reference chain
    assert calls == [1]


def test_folded_output_takes_in_place_ops(monkeypatch):
    """Y is a strided alias of the wide [Y | H] output, not a view: in-place ops on it are allowed
    and the gradients stay right."""
    monkeypatch.setattr(lora_torch, "FOLD_MIN_TOKENS_PER_IN_FEATURE", 0.0)
    args = _case(torch.float32, False)

    got = _run(lambda *a: lora_torch.lora_linear_torch(*a).mul_(2.0), *args)
    ref = _run(lambda *a: fused_lora_reference(*a) * 2.0, *args)
    for name, g, r in zip(["y", "dx", "da", "db"], got, ref):
        torch.testing.assert_close(g, r, rtol=1e-5, atol=1e-5 * r.abs().max().item(), msg=name)
