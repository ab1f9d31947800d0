"""Dispatch decisions and fallback reasons of the kernels, checked on CPU (no kernel launches)."""
import os
import subprocess
import sys
import textwrap

import pytest
import torch

from megatron_retro.kernels import fused_lora as fl


def lora_args(dtype=torch.float32, r=4):
    return (torch.randn(5, 8, dtype=dtype), torch.randn(6, 8, dtype=dtype),
            torch.randn(r, 8), torch.randn(6, r))


def test_auto_on_cpu_uses_reference_even_with_interpreter():
    path = fl.fused_lora_dispatch(*lora_args())
    assert not path.use_triton and "cpu tensors: torch reference" in path.reason


def test_triton_on_cpu_needs_interpreter(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    ok, reason = fl.fused_lora_can_use_triton(*lora_args())
    assert not ok and "Triton needs CUDA" in reason
    with pytest.raises(ValueError, match="backend='triton' requested but unsupported"):
        fl.fused_lora_dispatch(*lora_args(), backend="triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert fl.fused_lora_can_use_triton(*lora_args()).use_triton


@pytest.mark.parametrize("case,needle", [
    ("fp64", "input dtype fp64"),
    ("weight_dtype", "weight dtype fp16 != input dtype fp32"),
    ("trainable_weight", "no dW"),
    ("rank", "rank 200 > 128"),
])
def test_unsupported_cases_give_reasons(monkeypatch, case, needle):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    x, w, a, b = lora_args(r=200 if case == "rank" else 4)
    if case == "fp64":
        x, w = x.double(), w.double()
    elif case == "weight_dtype":
        w = w.half()
    elif case == "trainable_weight":
        w.requires_grad_()
    ok, reason = fl.fused_lora_can_use_triton(x, w, a, b)
    assert not ok and needle in reason, reason
    # auto falls back to the reference (on CPU for the device reason) and still computes
    y = fl.fused_lora_linear(x, w, a, b, 0.5)
    ref = fl.fused_lora_reference(x, w, a, b, 0.5)
    torch.testing.assert_close(y, ref)


def test_auto_on_cuda_device_falls_back_with_reason(monkeypatch):
    """The auto rule on a CUDA device, with the device check simulated (no GPU here)."""
    from megatron_retro.kernels import _dispatch

    cuda = torch.device("cuda")
    ok = _dispatch.Dispatch(True, "CUDA tensors, bf16, rank 8: Triton fused kernels")
    assert _dispatch.choose_path("auto", cuda, ok, "op") == ok
    bad = _dispatch.Dispatch(False, "LoRA rank 200 > 128")
    path = _dispatch.choose_path("auto", cuda, bad, "op")
    assert not path.use_triton and path.reason == "torch reference fallback: LoRA rank 200 > 128"
    assert not _dispatch.choose_path("torch", cuda, ok, "op").use_triton
    with pytest.raises(ValueError, match="backend='bogus' is not one of"):
        _dispatch.choose_path("bogus", cuda, ok, "op")


@pytest.mark.parametrize("bad,msg", [
    ("x", r"in-features mismatch: x\[..., 9\]"),
    ("b", r"lora_b must be \[out=6, r=4\]"),
    ("bias", r"bias must be \[6\]"),
    ("p", r"dropout_p must be in \[0, 1\)"),
])
def test_bad_shapes_raise_on_every_path(bad, msg):
    x, w, a, b = lora_args()
    bias, p = None, 0.0
    if bad == "x":
        x = torch.randn(5, 9)
    elif bad == "b":
        b = torch.randn(4, 6)
    elif bad == "bias":
        bias = torch.randn(7)
    else:
        p = 1.0
    with pytest.raises(ValueError, match=msg):
        fl.fused_lora_linear(x, w, a, b, 1.0, bias, p, backend="torch")


def test_import_without_interpreter():
    """Imported with TRITON_INTERPRET unset, the reference path works; setting the variable
    after triton was imported gives a reason instead of launching kernels that cannot run."""
    code = textwrap.dedent("""
        import os, torch
        from megatron_retro.kernels.fused_lora import (fused_lora_can_use_triton,
                                                       fused_lora_linear, fused_lora_reference)
        x, w, a, b = torch.randn(5, 8), torch.randn(6, 8), torch.randn(2, 8), torch.randn(6, 2)
        y = fused_lora_linear(x, w, a, b, 0.5)
        assert torch.allclose(y, fused_lora_reference(x, w, a, b, 0.5))
        print(fused_lora_can_use_triton(x, w, a, b).reason)
        os.environ["TRITON_INTERPRET"] = "1"
        print(fused_lora_can_use_triton(x, w, a, b).reason)
    """)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    first, second = out.stdout.strip().splitlines()
    assert "Triton needs CUDA" in first
    assert "set after triton was imported" in second


def test_cca_and_nf4_auto_on_cpu_use_reference():
    import importlib

    cca = importlib.import_module("megatron_retro.kernels.chunked_cross_attention")
    from megatron_retro.kernels import nf4

    q, k = torch.randn(20, 1, 2, 8), torch.randn(1, 2, 5, 2, 8)
    path = cca.chunked_cross_attention_dispatch(q, k, k, 16)
    assert not path.use_triton and "cpu tensors: torch reference" in path.reason
    assert cca.chunked_cross_attention_can_use_triton(q, k, k, 16).use_triton  # interpreter
    packed, absmax = nf4.nf4_quantize(torch.randn(2, 64))
    assert not nf4.nf4_dispatch(packed, absmax, (2, 64)).use_triton


# -- the shape rule of backend="auto" on CUDA (kernels/lora_floor.py) -------------------------------
def _cuda_like(monkeypatch):
    """choose_path as on CUDA for supported inputs (no GPU here): the shape rule then decides."""
    from megatron_retro.kernels._dispatch import Dispatch

    real = fl.choose_path
    monkeypatch.setattr(fl, "choose_path", lambda backend, device, check, op:
                        Dispatch(True, "CUDA tensors") if backend == "auto" else real(backend, device, check, op))


def test_floor_rule_prefers_the_cublas_chain_where_compute_bound_and_triton_where_bytes_dominate():
    from megatron_retro.kernels.lora_floor import LoraShape, shape_rule

    # the BENCHMARKS shapes (4k tokens): Triton's floor is above the chain's -> cuBLAS chain
    for M, K, N in ((4096, 1024, 3072), (4096, 4096, 12288), (4096, 8192, 3072), (512, 1024, 3072)):
        d = shape_rule(M, K, N, 32, torch.bfloat16, backward=True)
        fused, chain = LoraShape("s", M, K, N, 32).floors_us(torch.bfloat16, True)
        assert not d.use_triton and fused >= chain and "cuBLAS chain" in d.reason
    # few tokens, wide layer: memory-bound, the chain's extra [M, N] passes cost more -> Triton
    d = shape_rule(64, 1024, 8192, 8, torch.bfloat16, backward=False)
    assert d.use_triton and "Triton fused kernels" in d.reason


def test_auto_dispatch_follows_the_rule_and_the_overrides(monkeypatch):
    _cuda_like(monkeypatch)
    big = (torch.randn(4096, 1024, dtype=torch.bfloat16), torch.randn(3072, 1024, dtype=torch.bfloat16),
           torch.randn(32, 1024), torch.randn(3072, 32))
    small = (torch.randn(64, 1024, dtype=torch.bfloat16), torch.randn(8192, 1024, dtype=torch.bfloat16),
             torch.randn(8, 1024), torch.randn(8192, 8))
    assert not fl.fused_lora_dispatch(*big).use_triton
    assert fl.fused_lora_dispatch(*small).use_triton
    # a refit efficiency moves the boundary
    monkeypatch.setenv("MEGATRON_RETRO_FUSED_LORA_EFFICIENCY", "2.0")
    assert fl.fused_lora_dispatch(*big).use_triton
    monkeypatch.setenv("MEGATRON_RETRO_FUSED_LORA_EFFICIENCY", "0")
    with pytest.raises(ValueError, match="MEGATRON_RETRO_FUSED_LORA_EFFICIENCY"):
        fl.fused_lora_dispatch(*big)
    monkeypatch.delenv("MEGATRON_RETRO_FUSED_LORA_EFFICIENCY")
    # the env override of "auto", and per-call backends beat both
    monkeypatch.setenv("MEGATRON_RETRO_FUSED_LORA", "torch")
    assert not fl.fused_lora_dispatch(*small).use_triton
    assert fl.fused_lora_dispatch(*big, backend="triton").use_triton
    monkeypatch.setenv("MEGATRON_RETRO_FUSED_LORA", "triton")
    assert fl.fused_lora_dispatch(*big).use_triton
    monkeypatch.setenv("MEGATRON_RETRO_FUSED_LORA", "fast")
    with pytest.raises(ValueError, match="MEGATRON_RETRO_FUSED_LORA='fast'"):
        fl.fused_lora_dispatch(*big)
