"""Shared helpers for the kernel tests: NaN-poisoned output buffers and tolerance tables."""
import torch

# absolute/relative tolerances per dtype, for outputs and gradients of O(1) magnitude
TOL = {
    torch.float32: dict(atol=1e-4, rtol=1e-4),
    torch.float16: dict(atol=2e-2, rtol=2e-2),
    torch.bfloat16: dict(atol=1e-1, rtol=5e-2),
}


def poisoned_empty(shape, dtype, device):
    """Like torch.empty, but float buffers are filled with NaN so unwritten tiles show up."""
    if dtype.is_floating_point:
        return torch.full(shape, float("nan"), dtype=dtype, device=device)
    return torch.randint(0, 2, shape, device=device).to(dtype)


def poisoned_empty_like(t):
    """Like torch.empty_like (strides kept), filled with NaN."""
    return torch.empty_like(t).fill_(float("nan"))


def assert_close(actual, expected, dtype, scale=1.0, what=""):
    """Compare in float64 with the dtype's tolerance scaled by the reference's magnitude."""
    actual = actual.double()
    expected = expected.double()
    assert torch.isfinite(actual).all(), f"{what}: non-finite values (unwritten tile?)"
    tol = TOL[dtype]
    mag = max(1.0, expected.abs().max().item()) * scale
    torch.testing.assert_close(actual, expected, atol=tol["atol"] * mag, rtol=tol["rtol"],
                               msg=lambda m: f"{what}: {m}")
