"""Kernel tests run the Triton kernels on CPU through Triton's interpreter.

Triton picks compile-or-interpret when a @triton.jit function is defined, including its own
library helpers (tl.sum, tl.cdiv, tl.rand, ...) which are defined when triton is first imported.
So TRITON_INTERPRET=1 must be set before triton is imported.  Best: tests/conftest.py sets it
before anything imports megatron.core (which imports triton).  If triton was nevertheless
imported in compiled mode earlier in this session (e.g. by tests collected before these), its
pure-Python modules and this package's kernels are dropped from sys.modules here so that they
are re-imported in interpreter mode; modules that already hold the old triton keep it (only
their GPU kernels would use it).  On a CUDA machine nothing is changed: the same tests run the
compiled kernels.
"""
import os
import sys

import torch


def _switch_to_interpreter() -> None:
    os.environ["TRITON_INTERPRET"] = "1"
    triton_lang = sys.modules.get("triton.language")
    if triton_lang is None or type(triton_lang.sum).__name__ == "InterpretedFunction":
        return  # triton not imported yet, or already in interpreter mode
    for name in list(sys.modules):
        stale_triton = (name == "triton" or name.startswith("triton.")) and \
            not name.startswith("triton._C")
        if stale_triton or name.startswith("megatron_retro.kernels"):
            del sys.modules[name]
    mod = sys.modules.get("megatron_retro")
    if mod is not None and hasattr(mod, "kernels"):
        delattr(mod, "kernels")


def _round_bf16_to_nearest_in_interpreter() -> None:
    """Triton's interpreter casts fp32 -> bf16 by truncating the mantissa (triton 3.9: ~50% of
    values differ from round-to-nearest-even, mean relative bias -0.28% per cast; its own "rtne"
    path drops the carry).  A GPU rounds to nearest even, and the kernel tests bound errors by the
    dtype's unit roundoff, so here that one cast goes through torch's correct rounding."""
    import numpy as np
    import triton.language as tl
    from triton.runtime import interpreter

    builder = interpreter.InterpreterBuilder
    if getattr(builder, "_bf16_rne_patched", False):
        return

    def to_bf16(src):
        data = np.asarray(src.data, dtype=np.float32)
        bits = torch.from_numpy(data.reshape(-1).copy()).to(torch.bfloat16).view(torch.int16).numpy()
        return interpreter.TensorHandle(bits.view(np.uint16).reshape(data.shape), tl.bfloat16)

    def wrap(original):
        def method(self, src, dst_type, *args):
            if src.dtype.scalar == tl.float32 and dst_type.scalar == tl.bfloat16:
                return to_bf16(src)
            return original(self, src, dst_type, *args)
        return method
    builder.cast_impl = wrap(builder.cast_impl)
    builder.create_fp_to_fp = wrap(builder.create_fp_to_fp)
    builder._bf16_rne_patched = True


if not torch.cuda.is_available():
    _switch_to_interpreter()
    _round_bf16_to_nearest_in_interpreter()
