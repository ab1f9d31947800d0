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


if not torch.cuda.is_available():
    _switch_to_interpreter()
