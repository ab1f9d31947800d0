"""Shared helpers for the kernel tests: NaN-poisoned output buffers and tolerance tables."""
import torch

# absolute/relative tolerances of the fp32 comparisons (half precisions: the roundoff bounds below)
TOL = {
    torch.float32: dict(atol=1e-4, rtol=1e-4),
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


# -- error bounds derived from the dtype ------------------------------------------------------------
# unit roundoff u = 2^-(mantissa bits + 1): the largest relative error of one rounding to nearest
UNIT_ROUNDOFF = {torch.float32: 2.0 ** -24, torch.float16: 2.0 ** -11, torch.bfloat16: 2.0 ** -8}
ROUNDOFF_C = 1.5   # "a small multiple": measured 0.4-0.7 for correct kernels, >= 2.5 for a 1% scale error in bf16


def roundoff_ratio(actual, expected, dtype, n_reduce, magnitude):
    """‖actual − expected‖_F / bound, bound = u·‖expected‖_F + √n·u_fp32·magnitude.

    ``dtype`` is the compute dtype of the kernel's operands (its u bounds each rounding of an
    output or an intermediate stored in it, relative to the result); ``n_reduce`` is the
    reduction length of the fp32 accumulation, whose error grows like √n·u_fp32 (probabilistic
    bound) times ``magnitude``, the Frobenius norm of the product of the operands' magnitudes
    (e.g. ‖X‖·‖W‖).  The reference must be computed in float64 from the operands as the kernel
    sees them (already rounded to ``dtype`` where the kernel rounds them).
    """
    actual, expected = actual.double(), expected.double()
    assert torch.isfinite(actual).all(), "non-finite values (unwritten tile?)"
    u, u_acc = UNIT_ROUNDOFF[dtype], UNIT_ROUNDOFF[torch.float32]
    bound = u * expected.norm().item() + (n_reduce ** 0.5) * u_acc * magnitude
    return (actual - expected).norm().item() / bound


def assert_within_roundoff(actual, expected, dtype, n_reduce, magnitude, what="", c=ROUNDOFF_C):
    """Normwise: ratio <= c; elementwise, loose (catches a wrong tile, not a rounding pattern):
    |err| <= 32c·u·(|ref| + rms(ref))."""
    ratio = roundoff_ratio(actual, expected, dtype, n_reduce, magnitude)
    assert ratio <= c, f"{what}: error {ratio:.2f} x the roundoff bound (allowed {c}) for {dtype}"
    a, e = actual.double(), expected.double()
    rms = e.pow(2).mean().sqrt().item()
    local = (a - e).abs() / (32 * c * UNIT_ROUNDOFF[dtype] * (e.abs() + rms) + 1e-300)
    assert local.max().item() <= 1.0 + (n_reduce ** 0.5) * UNIT_ROUNDOFF[torch.float32] / UNIT_ROUNDOFF[dtype], \
        f"{what}: an element is {local.max().item():.1f} x its elementwise bound"
