"""Compile every Triton kernel of this package for an NVIDIA GPU target without a GPU.

The launchers are called with CPU tensors while `triton_launch` is swapped for a recorder, so the
exact argument types, constexprs, num_warps and num_stages a CUDA launch would use are compiled
ahead of time (Triton → TTIR → TTGIR → LLVM IR → PTX → cubin with the bundled ptxas).  This
catches GPU-only compile errors (type mismatches, unsupported ops, shared-memory overflow) that
Triton's interpreter does not see.  Must run in a process where TRITON_INTERPRET is unset.

    python -m megatron_retro.kernels.gpu_compile_check [--capability 80] [--dtype bf16]
"""
from __future__ import annotations

import argparse
import importlib
import os
import re
import subprocess
import tempfile
import time
from contextlib import contextmanager

import torch

from . import fused_lora as fl
from . import nf4
from ._dispatch import interpreter_active

# the package exports the function chunked_cross_attention, which shadows the module attribute
cca = importlib.import_module(__package__ + ".chunked_cross_attention")

_TRITON_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                 torch.bool: "i1", torch.uint8: "u8", torch.int64: "i64", torch.int32: "i32"}


@contextmanager
def _recording(calls: list):
    def record(kernel, grid, *args, **kwargs):
        calls.append((kernel, grid, args, kwargs))

    modules = (fl, cca, nf4)
    saved = [m.triton_launch for m in modules]
    for m in modules:
        m.triton_launch = record
    try:
        yield
    finally:
        for m, launch in zip(modules, saved):
            m.triton_launch = launch


def _compile(kernel, args, kwargs, capability: int):
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, compile

    options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages") if k in kwargs}
    names = kernel.arg_names
    signature, constexprs = {}, {}
    for name, value in zip(names, args):
        if isinstance(value, torch.Tensor):
            signature[name] = "*" + _TRITON_TYPES[value.dtype]
        elif isinstance(value, bool):
            signature[name] = "i1"
        elif isinstance(value, int):
            signature[name] = "i64" if abs(value) >= 2**31 else "i32"
        elif isinstance(value, float):
            signature[name] = "fp32"
        else:
            raise TypeError(f"{kernel.__name__}: unsupported argument {name}={value!r}")
    for name, value in kwargs.items():
        signature[name] = "constexpr"
        constexprs[name] = value
    if "seed" in signature:  # the seed is a 31-bit int but launches pass Python ints: keep i64
        signature["seed"] = "i64"
    missing = [n for n in names if n not in signature]
    if missing:
        raise TypeError(f"{kernel.__name__}: arguments not recorded: {missing}")
    src = ASTSource(kernel, {n: signature[n] for n in names}, constexprs)
    return compile(src, target=GPUTarget("cuda", capability, 32), options=options)


def resource_usage(cubin: bytes) -> dict:
    """Registers per thread and stack bytes (spills) of a cubin, via the bundled cuobjdump."""
    import triton

    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    with tempfile.NamedTemporaryFile(suffix=".cubin") as f:
        f.write(cubin)
        f.flush()
        text = subprocess.run([tool, "--dump-resource-usage", f.name], capture_output=True,
                              text=True, check=True).stdout
    found = re.search(r"REG:(\d+) STACK:(\d+)", text)
    if not found:
        raise RuntimeError(f"cuobjdump printed no resource usage: {text[-300:]}")
    return dict(regs=int(found.group(1)), stack_bytes=int(found.group(2)))


def _workloads(dtype: torch.dtype, all_variants: bool = False):
    """Representative launches: LoRA r=32 with dropout, CCA with hd=64, m=64, k·r=256, NF4.

    ``all_variants``: every variant ``backend="auto"`` can launch on CUDA for ``dtype``: LoRA with
    and without bias and dropout, both rank classes of the tile table (r <= 64 and up to
    MAX_RANK), both gradient sets; CCA with and without dropout (identical launches are compiled
    once, see compile_all)."""
    w = torch.randn(384, 512, dtype=dtype)
    ranks = (32, fl.MAX_RANK) if all_variants else (32,)
    flags = ((True, 0.1), (False, 0.0), (True, 0.0), (False, 0.1)) if all_variants else ((True, 0.1),)
    for r in ranks:
        for has_bias, p in flags:
            x = torch.randn(256, 512, dtype=dtype)
            a, b = torch.randn(r, 512), torch.randn(384, r)  # fp32 adapters
            bias = torch.randn(384, dtype=dtype) if has_bias else None
            y, h = fl.fused_lora_forward(x, w, a, b, 2.0, bias, p, 1234)
            fl.fused_lora_backward(torch.randn_like(y), x, w, a, b, h, 2.0, p, 1234, True, True)
    q = torch.randn(128, 2, 4, 64, dtype=dtype)
    k = torch.randn(2, 2, 256, 4, 64, dtype=dtype)
    for p in ((0.1, 0.0) if all_variants else (0.1,)):
        out, lse = cca.cca_forward(q, k, k, 64, 0.125, p, 1234)
        cca.cca_backward(torch.randn_like(out), q, k, k, out, lse, 64, 0.125, p, 1234)
    packed, absmax = nf4.nf4_quantize(w)
    nf4.nf4_dequantize_triton(packed, absmax, w.shape, dtype, 64)


def _launch_key(kernel, args, kwargs) -> tuple:
    """What the compiler sees of a launch: argument types (ints by width) and constexprs."""
    def kind(v):
        if isinstance(v, torch.Tensor):
            return str(v.dtype)
        if isinstance(v, bool):
            return "i1"
        if isinstance(v, int):
            return "i64" if abs(v) >= 2**31 else "i32"
        return type(v).__name__
    return (kernel.__name__, tuple(kind(v) for v in args), tuple(sorted(kwargs.items())))


def compile_all(dtype: torch.dtype = torch.bfloat16, capability: int = 80, all_variants: bool = False) -> list[dict]:
    """Compile each kernel as launched for `dtype`; returns one row per distinct launch."""
    if interpreter_active():
        raise RuntimeError("unset TRITON_INTERPRET: the interpreter replaces the compiler")
    calls: list = []
    with _recording(calls):
        _workloads(dtype, all_variants)
    rows, seen = [], set()
    for kernel, _grid, args, kwargs in calls:
        key = _launch_key(kernel, args, kwargs)
        if key in seen:
            continue
        seen.add(key)
        t0 = time.perf_counter()
        compiled = _compile(kernel, args, dict(kwargs), capability)
        rows.append(dict(kernel=kernel.__name__, dtype=str(dtype).replace("torch.", ""), capability=capability,
                         constexprs={k: v for k, v in kwargs.items() if k.isupper()},
                         seconds=round(time.perf_counter() - t0, 2),
                         num_warps=compiled.metadata.num_warps,
                         shared_bytes=compiled.metadata.shared,
                         **resource_usage(compiled.asm["cubin"])))
    return rows


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--capability", type=int, default=80, help="sm_XX target, e.g. 80, 90")
    parser.add_argument("--dtype", default="bf16", choices=("fp32", "fp16", "bf16"))
    parser.add_argument("--all-variants", action="store_true",
                        help="every launch variant backend='auto' can pick (bias, dropout, rank class)")
    args = parser.parse_args(argv)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]
    for row in compile_all(dtype, args.capability, args.all_variants):
        print(row)


if __name__ == "__main__":
    main()
