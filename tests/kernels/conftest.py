"""Kernel tests run the Triton kernels on CPU through Triton's interpreter.

TRITON_INTERPRET=1 has to be set before the @triton.jit functions are defined, so it is set here,
before any test module imports megatron_retro.kernels.  (If the package was imported earlier in
the session, its launcher switches to the interpreter at launch time; see kernels/_dispatch.py.)
On a CUDA machine the variable is left alone and the same tests run the compiled kernels.
"""
import os

import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"
