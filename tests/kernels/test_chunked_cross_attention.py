"""Chunked cross-attention Triton kernels (Triton interpreter on CPU) vs the torch reference."""
import importlib
import math

import pytest
import torch

# the package's `chunked_cross_attention` attribute is the function; fetch the module itself
cca = importlib.import_module("megatron_retro.kernels.chunked_cross_attention")

from kernel_test_utils import assert_close, poisoned_empty, poisoned_empty_like


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(cca, "empty", poisoned_empty)
    monkeypatch.setattr(cca, "empty_like", poisoned_empty_like)


def make(ns, m, nk, bs, h, hd, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    l = cca.num_chunks(ns, m)
    q = torch.randn(ns, bs, h, hd, generator=g).to(dtype)
    k = torch.randn(bs, l, nk, h, hd, generator=g).to(dtype)
    v = torch.randn(bs, l, nk, h, hd, generator=g).to(dtype)
    return q, k, v


def run_triton(q, k, v, m, p=0.0, do=None):
    q, k, v = (t.detach().clone().requires_grad_() for t in (q, k, v))
    out = cca.chunked_cross_attention(q, k, v, m, dropout_p=p, backend="triton")
    do = torch.randn_like(out) if do is None else do
    return (out, *torch.autograd.grad(out, (q, k, v), do)), do


def run_reference(q, k, v, m, do, p=0.0, mask=None, dtype=torch.float64):
    q, k, v = (t.detach().to(dtype).requires_grad_() for t in (q, k, v))
    out = cca.chunked_cross_attention_reference(q, k, v, m, dropout_p=p, keep_mask=mask)
    return (out, *torch.autograd.grad(out, (q, k, v), do.to(dtype)))


def naive_cca(q, k, v, m):
    """Token-by-token definition: token t >= pad attends to the neighbours of chunk (t-pad)//m."""
    ns, bs, h, hd = q.shape
    pad = (ns - 1) % m
    out = torch.zeros_like(q)
    for t in range(pad, ns):
        c = (t - pad) // m
        for b in range(bs):
            for hh in range(h):
                s = k[b, c, :, hh] @ q[t, b, hh] / math.sqrt(hd)  # [nk]
                out[t, b, hh] = torch.softmax(s, 0) @ v[b, c, :, hh]
    return out


@pytest.mark.parametrize("ns", [32, 33, 45])  # pad = m-1, pad = 0, pad = 12
def test_reference_matches_token_by_token_definition(ns):
    q, k, v = make(ns, 16, 5, 2, 2, 4, torch.float64)
    for impl in ("sdpa", "math"):
        got = cca.chunked_cross_attention_reference(q, k, v, 16, impl=impl)
        torch.testing.assert_close(got, naive_cca(q, k, v, 16))


def test_retro_shift_examples():
    """ns = 64, m = 64: only the last token sees chunk 0's neighbours; ns = 65: tokens 0 and
    64 are the last tokens of chunks 0 and 1 (l = 2)."""
    assert (cca.chunk_pad(64, 64), cca.num_chunks(64, 64)) == (63, 1)
    assert (cca.chunk_pad(65, 64), cca.num_chunks(65, 64)) == (0, 2)
    q, k, v = make(65, 64, 3, 1, 1, 4, torch.float64)
    out = cca.chunked_cross_attention_reference(q, k, v, 64)
    want0 = torch.softmax(k[0, 0, :, 0] @ q[0, 0, 0] / 2, 0) @ v[0, 0, :, 0]
    want64 = torch.softmax(k[0, 1, :, 0] @ q[64, 0, 0] / 2, 0) @ v[0, 1, :, 0]
    torch.testing.assert_close(out[0, 0, 0], want0)
    torch.testing.assert_close(out[64, 0, 0], want64)


@pytest.mark.parametrize("ns,m,nk,bs,h,hd", [
    (40, 16, 24, 2, 2, 8),   # pad 7, partial last chunk
    (32, 16, 300, 1, 3, 12),  # pad 15, nk over two key tiles with a ragged tail, hd not pow2
    (33, 16, 7, 2, 1, 16),   # pad 0
])
def test_fp32_matches_float64_reference(ns, m, nk, bs, h, hd):
    q, k, v = make(ns, m, nk, bs, h, hd)
    got, do = run_triton(q, k, v, m)
    want = run_reference(q, k, v, m, do)
    for g, e, name in zip(got, want, ("out", "dq", "dk", "dv")):
        assert g.dtype == torch.float32
        assert_close(g, e, torch.float32, what=name)
    pad = cca.chunk_pad(ns, m)
    assert (got[0][:pad] == 0).all() and (got[1][:pad] == 0).all()



def test_strided_views_from_fused_projections():
    """q sliced from a fused [ns, bs, h, 3·hd] projection, k/v viewed from megatron's neighbour
    layout [r, k·bs·l, h, hd] by neighbours_as_kv (no copies); dk/dv keep k/v's dimension order."""
    ns, m, bs, h, hd, r, kn = 24, 8, 2, 2, 8, 6, 2
    l = cca.num_chunks(ns, m)
    g = torch.Generator().manual_seed(1)
    qkv = torch.randn(ns, bs, h, 3 * hd, generator=g)
    q = qkv[..., :hd]
    kv_raw = torch.randn(r, kn * bs * l, h, 2 * hd, generator=g)
    k = cca.neighbours_as_kv(kv_raw[..., :hd], bs, l)
    v = cca.neighbours_as_kv(kv_raw[..., hd:], bs, l)
    assert k.shape == (bs, l, r * kn, h, hd) and k.data_ptr() == kv_raw.data_ptr()
    # chunk (b, c) holds exactly the rows of megatron's column j·bs·l + b·l + c, for each j < k
    cols = [j * bs * l + 1 * l + 2 for j in range(kn)]
    assert torch.equal(k[1, 2].sort(0).values,
                       kv_raw[:, cols, :, :hd].reshape(r * kn, h, hd).sort(0).values)
    got, do = run_triton(q, k, v, m)
    want = run_reference(q, k, v, m, do)
    for a, e, name in zip(got, want, ("out", "dq", "dk", "dv")):
        assert_close(a, e, torch.float32, what=name)
    # dense, in k's dimension order (no transposing copy when autograd hands it back)
    order = lambda t: sorted(range(t.dim()), key=t.stride)  # noqa: E731
    assert order(got[2]) == order(k) and got[2].is_contiguous() is False


def test_attention_dropout_mask_regenerated_in_backward():
    p, ns, m, nk, bs, h, hd = 0.2, 24, 16, 20, 1, 2, 8
    q, k, v = make(ns, m, nk, bs, h, hd)
    torch.manual_seed(7)
    got, do = run_triton(q, k, v, m, p=p)
    torch.manual_seed(7)
    seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
    mask = cca.cca_dropout_mask(bs, h, cca.num_chunks(ns, m), m, nk, p, seed, "cpu")
    assert abs(mask.float().mean().item() - (1 - p)) < 0.05
    want = run_reference(q, k, v, m, do, p=p, mask=mask)
    for g, e, name in zip(got, want, ("out", "dq", "dk", "dv")):
        assert_close(g, e, torch.float32, what=name)
    nodrop = run_reference(q, k, v, m, do)
    assert (got[0].double() - nodrop[0]).abs().max() > 1e-2


@pytest.mark.parametrize("case,needle", [
    ("hd", "head dim 320 > 256"),
    ("chunk", "chunk length 256 > 128"),
    ("dtype", "q, k, v dtypes differ (fp32, fp16, fp32)"),
    ("fp64", "dtype fp64 not in"),
    ("gqa", "grouped-query attention (2 query heads, 1 key/value heads)"),
])
def test_unsupported_cases_give_reasons_and_fall_back(case, needle):
    ns, m, hd = 20, 8, 4
    if case == "hd":
        hd = 320
    if case == "chunk":
        ns, m = 300, 256
    q, k, v = make(ns, m, 3, 1, 2, hd)
    if case == "gqa":
        k, v = k[:, :, :, :1], v[:, :, :, :1]
    if case == "dtype":
        k = k.half()
    if case == "fp64":
        q, k, v = q.double(), k.double(), v.double()
    ok, reason = cca.chunked_cross_attention_can_use_triton(q, k, v, m)
    assert not ok and needle in reason, reason
    if case == "dtype":  # not just unsupported by the kernel: bad input for every path
        with pytest.raises(ValueError, match="dtypes differ"):
            cca.chunked_cross_attention(q, k, v, m, backend="torch")
        return
    path = cca.chunked_cross_attention_dispatch(q, k, v, m)
    assert not path.use_triton
    with pytest.raises(ValueError, match="unsupported"):
        cca.chunked_cross_attention_dispatch(q, k, v, m, backend="triton")
    out = cca.chunked_cross_attention(q, k, v, m)  # auto: falls back, still computes
    torch.testing.assert_close(out, cca.chunked_cross_attention_reference(q, k, v, m))
    if case == "gqa":  # the reference's grouped heads equal repeated heads
        rep = cca.chunked_cross_attention_reference(q, k.expand(-1, -1, -1, 2, -1),
                                                    v.expand(-1, -1, -1, 2, -1), m)
        torch.testing.assert_close(out, rep)


def test_bad_shapes_raise():
    q, k, v = make(40, 16, 5, 2, 2, 4)
    with pytest.raises(ValueError, match=r"k and v must be \[bs=2, l=3, nk, h_kv, hd=4\]"):
        cca.chunked_cross_attention(q, k[:, :2], v[:, :2], 16)
    with pytest.raises(ValueError, match="q must be"):
        cca.chunked_cross_attention(q[0], k, v, 16)
    with pytest.raises(ValueError, match=r"dropout_p must be in \[0, 1\)"):
        cca.chunked_cross_attention(q, k, v, 16, dropout_p=1.5)
