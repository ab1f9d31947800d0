"""Shared dispatch helpers: Triton vs torch-reference decisions (with reasons) and kernel launch.

Every op in this package picks its path with `choose_path(...)`:

- ``backend="auto"`` (default): the Triton kernel when the tensors live on a CUDA device and the
  op's own `can_use_triton` check passes; otherwise the torch reference, never an error.
- ``backend="triton"``: the Triton kernel or a ValueError carrying the reason it cannot run.
  On CPU this needs ``TRITON_INTERPRET=1`` (Triton's interpreter; slow, used by the tests).
- ``backend="torch"``: the torch reference.

Triton decides between compiling and interpreting when a ``@triton.jit`` function is defined
(its own helpers such as ``tl.rand`` are defined when triton is imported), so TRITON_INTERPRET=1
must be set before triton is first imported (megatron.core imports it).  `device_check` reports
the case where it was set too late instead of launching a kernel that cannot run.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import torch

BACKENDS = ("auto", "triton", "torch")
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class Dispatch(NamedTuple):
    """The path an op takes and a one-line reason for the choice."""

    use_triton: bool
    reason: str


def interpreter_active() -> bool:
    """True when Triton's CPU interpreter is switched on (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "yes", "on")


def kernel_is_interpreted(kernel) -> bool:
    """True if this @triton.jit function was defined while TRITON_INTERPRET=1 was set."""
    return type(kernel).__name__ == "InterpretedFunction"


def device_check(kernel, *tensors: torch.Tensor | None) -> Dispatch:
    """Common checks: one device, and CUDA or (CPU and `kernel` defined in interpreter mode)."""
    devices = {t.device for t in tensors if t is not None}
    if len(devices) != 1:
        return Dispatch(False, f"tensors on several devices {sorted(str(d) for d in devices)}")
    device = devices.pop()
    if device.type == "cuda":
        return Dispatch(True, "CUDA tensors")
    if device.type == "cpu" and interpreter_active():
        import triton.language as tl  # the helpers kernels call must be interpreted too

        if kernel_is_interpreted(kernel) and kernel_is_interpreted(tl.sum):
            return Dispatch(True, "CPU tensors under TRITON_INTERPRET=1 (Triton interpreter)")
        return Dispatch(False, "TRITON_INTERPRET=1 was set after triton was imported (the kernels "
                               "are compiled-mode); set it before importing triton/megatron.core")
    return Dispatch(False,
                    f"{device.type} tensors: Triton needs CUDA (or TRITON_INTERPRET=1 on CPU)")


def dtype_name(dtype: torch.dtype) -> str:
    """Short dtype name for messages (fp32, bf16, ...)."""
    return {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
            torch.float64: "fp64"}.get(dtype, str(dtype).replace("torch.", ""))


def choose_path(backend: str, device: torch.device, check: Dispatch, op: str) -> Dispatch:
    """Resolve `backend` into a Dispatch for an op whose own check gave `check`.

    `device` is the device of the op's main input; `op` names the op in messages.
    """
    if backend not in BACKENDS:
        raise ValueError(f"{op}: backend={backend!r} is not one of {BACKENDS}")
    if backend == "torch":
        return Dispatch(False, "backend='torch' requested: torch reference")
    if backend == "triton":
        if not check.use_triton:
            raise ValueError(f"{op}: backend='triton' requested but unsupported: {check.reason}")
        return Dispatch(True, f"backend='triton' requested: {check.reason}")
    # auto: never the interpreter (orders of magnitude slower than the torch reference)
    if device.type != "cuda":
        return Dispatch(False, f"{device.type} tensors: torch reference (Triton kernels need CUDA)")
    if not check.use_triton:
        return Dispatch(False, f"torch reference fallback: {check.reason}")
    return Dispatch(True, check.reason)


SEED_RANGE = 2**31 - 1


def dropout_seed(device: torch.device) -> int:
    """The Philox seed of one dropout call, drawn from ``device``'s default generator.

    megatron's ``get_cuda_rng_tracker().fork()`` swaps exactly that generator's state (the CUDA
    generator on a GPU; megatron_retro.parallel.cpu_compat routes it to the CPU generator on CPU),
    so a call made inside ``fork()`` draws from the model-parallel stream: a different seed per TP
    rank (the tracker is seeded with seed + 2718 + tp_rank), per call (every draw advances the
    state: per layer, per micro-batch), the same on a rerun with the same seed, and the same again
    when activation recompute replays the forward (it restores the tracker states).
    """
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return philox_seed(torch.cuda.default_generators[index])
    return int(torch.randint(0, SEED_RANGE, (1,), device="cpu").item())


def philox_seed(gen) -> int:
    """A seed from a Philox generator's (seed, offset), read on the host with no device sync; the
    offset advances by 4, as one draw of 4 values would, so the next call gets a new seed."""
    offset = gen.get_offset()
    gen.set_offset(offset + 4)
    return (gen.initial_seed() * 2654435761 + offset // 4) % SEED_RANGE


def triton_launch(kernel, grid, *args, **kwargs) -> None:
    """Launch `kernel[grid](*args, **kwargs)` (one place to hook launches, e.g. for profiling)."""
    kernel[grid](*args, **kwargs)


def empty(shape, dtype, device) -> torch.Tensor:
    """Uninitialised output buffer for a kernel (tests patch this to poison buffers with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)


def empty_like(t: torch.Tensor) -> torch.Tensor:
    """Uninitialised buffer with t's shape, dtype and (dense) strides; tests poison it too."""
    return torch.empty_like(t)


def dot_precision(dtype: torch.dtype) -> str:
    """tl.dot input_precision matching torch's matmul for `dtype` (TF32 only if torch allows it)."""
    if dtype == torch.float32 and not torch.backends.cuda.matmul.allow_tf32:
        return "ieee"
    return "tf32"


def next_pow2(n: int, floor: int = 16) -> int:
    """Smallest power of two >= max(n, floor) (tl.dot needs every block dim >= 16)."""
    p = floor
    while p < n:
        p *= 2
    return p
