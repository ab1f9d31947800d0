"""NF4 (QLoRA) quantisation round trip and the Triton dequantisation kernel vs the reference."""
import pytest
import torch

from megatron_retro.kernels import nf4

from kernel_test_utils import poisoned_empty


@pytest.fixture(autouse=True)
def poison(monkeypatch):
    monkeypatch.setattr(nf4, "empty", poisoned_empty)


def test_codebook_values_are_recovered_exactly():
    code = torch.tensor(nf4.NF4_CODEBOOK)
    w = torch.cat([code * 3.0, code.flip(0) * 0.5]).reshape(2, 16)  # two blocks of 16
    packed, absmax = nf4.nf4_quantize(w, block_size=16)
    assert packed.dtype == torch.uint8 and packed.numel() == 16
    assert packed[0].item() == (0 << 4) | 1  # first pair: codes 0 and 1, high nibble first
    torch.testing.assert_close(absmax, torch.tensor([3.0, 0.5]))
    torch.testing.assert_close(nf4.nf4_dequantize_reference(packed, absmax, w.shape,
                                                            torch.float32, 16), w)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_triton_dequant_matches_reference(dtype):
    w = torch.randn(48, 80, generator=torch.Generator().manual_seed(0))  # 3840 = 60 blocks
    packed, absmax = nf4.nf4_quantize(w)
    ref = nf4.nf4_dequantize_reference(packed, absmax, w.shape, dtype)
    got = nf4.nf4_dequantize(packed, absmax, w.shape, dtype, backend="triton")
    assert got.dtype == dtype and got.shape == w.shape
    # exact, except that the interpreter's fp32 -> bf16 cast may differ by one bf16 ulp
    ulp = 2.0**-7 if dtype == torch.bfloat16 else 0.0
    torch.testing.assert_close(got, ref, atol=0, rtol=ulp)
    # quantisation error is at most half the widest codebook gap times the block absmax
    code = torch.tensor(nf4.NF4_CODEBOOK)
    half_gap = (code[1:] - code[:-1]).max() / 2
    err = (ref.float() - w).abs().reshape(-1, 64).amax(1)
    assert (err <= (half_gap + 1e-2) * absmax).all()
    # re-quantising the dequantised weights gives the same codes
    packed2, _ = nf4.nf4_quantize(ref.float())
    assert torch.equal(packed2, packed) or dtype != torch.float32


def test_dispatch_and_bad_input():
    packed, absmax = nf4.nf4_quantize(torch.randn(4, 64))
    path = nf4.nf4_dispatch(packed, absmax, (4, 64))
    assert not path.use_triton and "torch reference" in path.reason
    ok, reason = nf4.nf4_can_use_triton(packed, absmax, torch.float64)
    assert not ok and "fp64" in reason
    with pytest.raises(ValueError, match="absmax must have 4 values"):
        nf4.nf4_dequantize(packed, absmax[:3], (4, 64))
    with pytest.raises(ValueError, match="not a multiple of block_size 64"):
        nf4.nf4_quantize(torch.randn(3, 10))
