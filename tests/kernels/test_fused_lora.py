"""Fused LoRA Triton kernels (run by Triton's interpreter on CPU) vs the plain-torch reference."""
import pytest
import torch

from megatron_retro.kernels import fused_lora as fl

from kernel_test_utils import assert_close, poisoned_empty


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(fl, "empty", poisoned_empty)


def make(M, K, N, R, dtype, bias=True, adapter_dtype=torch.float32, lead=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    shape = (*lead, K) if lead else (M, K)
    x = torch.randn(shape, generator=g).to(dtype)
    w = (torch.randn(N, K, generator=g) / K**0.5).to(dtype)
    a = (torch.randn(R, K, generator=g) / K**0.5).to(adapter_dtype)
    b = torch.randn(N, R, generator=g).to(adapter_dtype)
    bb = torch.randn(N, generator=g).to(dtype) if bias else None
    return x, w, a, b, bb


def run_triton(x, w, a, b, bias, scale, p=0.0, dy=None):
    x = x.clone().requires_grad_()
    a = a.clone().requires_grad_()
    b = b.clone().requires_grad_()
    y = fl.fused_lora_linear(x, w, a, b, scale, bias, p, backend="triton")
    dy = torch.randn_like(y) if dy is None else dy
    return (y, *torch.autograd.grad(y, (x, a, b), dy)), dy


def run_reference(x, w, a, b, bias, scale, dy, dtype=torch.float64, p=0.0, mask=None):
    x = x.detach().to(dtype).requires_grad_()
    a = a.detach().to(dtype).requires_grad_()
    b = b.detach().to(dtype).requires_grad_()
    bias = None if bias is None else bias.to(dtype)
    y = fl.fused_lora_reference(x, w.to(dtype), a, b, scale, bias, p, keep_mask=mask)
    return (y, *torch.autograd.grad(y, (x, a, b), dy.to(dtype)))


@pytest.mark.parametrize("M,K,N,R,bias", [(9, 41, 341, 3, True), (70, 130, 40, 16, False)])
def test_fp32_matches_float64_reference(M, K, N, R, bias):
    x, w, a, b, bb = make(M, K, N, R, torch.float32, bias)
    got, dy = run_triton(x, w, a, b, bb, 0.5)
    want = run_reference(x, w, a, b, bb, 0.5, dy)
    for g, e, name in zip(got, want, ("y", "dx", "da", "db")):
        assert g.dtype == torch.float32
        assert_close(g, e, torch.float32, what=name)



def test_dropout_mask_regenerated_in_backward():
    p = 0.25
    x, w, a, b, bb = make(20, 50, 60, 4, torch.float32)
    torch.manual_seed(123)
    got, dy = run_triton(x, w, a, b, bb, 0.5, p=p)
    torch.manual_seed(123)  # the launcher draws its Philox seed from torch's generator
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    mask = fl.lora_dropout_mask((20, 50), p, seed, "cpu")
    kept = mask.float().mean().item()
    assert abs(kept - (1 - p)) < 0.06, kept
    want = run_reference(x, w, a, b, bb, 0.5, dy, p=p, mask=mask)
    for g, e, name in zip(got, want, ("y", "dx", "da", "db")):
        assert_close(g, e, torch.float32, what=name)
    # and dropout really changes the LoRA term
    nodrop = run_reference(x, w, a, b, bb, 0.5, dy)
    assert (got[0].double() - nodrop[0]).abs().max() > 1e-2


def test_leading_dims_and_strided_input():
    # x as [s, b, K] built from a transposed [b, s, K] tensor (non-contiguous)
    x, w, a, b, bb = make(0, 24, 40, 2, torch.float32, lead=(3, 5))
    xt = x.transpose(0, 1).contiguous().transpose(0, 1)
    assert not xt.is_contiguous()
    got, dy = run_triton(xt, w, a, b, bb, 1.0)
    assert got[0].shape == (3, 5, 40) and got[1].shape == (3, 5, 24)
    want = run_reference(x, w, a, b, bb, 1.0, dy)
    for g, e, name in zip(got, want, ("y", "dx", "da", "db")):
        assert_close(g, e, torch.float32, what=name)


def test_column_and_row_parallel_shards_compose_to_full_layer():
    """TP=2 shard shapes: column shards concatenate, row shards' partial sums add up."""
    tp, M, K, N, R = 2, 12, 64, 48, 4
    x, w, a, b, bb = make(M, K, N, R, torch.float32)
    full = fl.fused_lora_reference(x.double(), w.double(), a.double(), b.double(), 0.5,
                                   bb.double())
    # column-parallel: W and B split on the output dim, A replicated
    cols = [fl.fused_lora_linear(x, ws, a, bs, 0.5, bs_, backend="triton")
            for ws, bs, bs_ in zip(w.chunk(tp, 0), b.chunk(tp, 0), bb.chunk(tp, 0))]
    assert_close(torch.cat(cols, -1), full, torch.float32, what="column")
    # row-parallel: X, W, A split on the input dim, B replicated, bias after the all-reduce
    rows = [fl.fused_lora_linear(xs, ws, as_, b, 0.5, None, backend="triton")
            for xs, ws, as_ in zip(x.chunk(tp, 1), w.chunk(tp, 1), a.chunk(tp, 1))]
    assert_close(sum(rows) + bb, full, torch.float32, what="row")


def test_only_requested_gradients_are_computed():
    x, w, a, b, bb = make(10, 20, 30, 2, torch.float32)
    a = a.requires_grad_()
    y = fl.fused_lora_linear(x, w, a, b, 1.0, bb, backend="triton")  # x, b need no grad
    (da,) = torch.autograd.grad(y.sum(), (a,))
    xr, ar = x.double(), a.detach().double().requires_grad_()
    yr = fl.fused_lora_reference(xr, w.double(), ar, b.double(), 1.0, bb.double())
    (dar,) = torch.autograd.grad(yr.sum(), (ar,))
    assert_close(da, dar, torch.float32, what="da")


@pytest.mark.parametrize("group", [1, 2, 3])
def test_column_groups_cover_every_tile(group):
    """Programs own `group` column tiles (H / dH computed on the first, reused on the rest):
    ragged groups (3 tiles in groups of 2) and several row tiles, with dropout."""
    M, K, N, R, p, seed = 70, 300, 341, 5, 0.1, 99
    x, w, a, b, bb = make(M, K, N, R, torch.float32)
    y, h = fl.fused_lora_forward(x, w, a, b, 0.5, bb, p, seed, group=group)
    dy = torch.randn_like(y)
    dx, da, db = fl.fused_lora_backward(dy, x, w, a, b, h, 0.5, p, seed, True, True, group=group)
    mask = fl.lora_dropout_mask((M, K), p, seed, "cpu")
    want = run_reference(x, w, a, b, bb, 0.5, dy, p=p, mask=mask)
    for g, e, name in zip((y, dx, da, db), want, ("y", "dx", "da", "db")):
        assert_close(g, e, torch.float32, what=f"{name} (group {group})")
