"""Run megatron-core on a CPU-only torch build: the one place that redirects its CUDA assumptions.

megatron-core 0.16.1 calls CUDA in a handful of places even when every tensor lives on the CPU
(see shared/notes/megatron-core-on-cpu.md for the measured list).  :func:`apply` makes them work:

* ``torch.cuda.current_device()`` returns the CPU device (GlobalMemoryBuffer, TP mappings);
* the CUDA RNG (``torch.cuda.{get,set}_rng_state, manual_seed`` and megatron's
  ``_{get,set}_cuda_rng_state``) is routed to the CPU generator, so megatron's RNG tracker forks
  per-rank dropout streams exactly as on a GPU;
* synchronize / streams / events / empty_cache / nvtx become no-ops;
* a process-wide :class:`CudaToCpuMode` maps ``device="cuda"`` factory arguments, ``.cuda()``
  and ``.to("cuda")`` to the CPU, and reports CPU tensors' ``.type()`` under the CUDA name that
  megatron's optimizer asserts on (clip_grads.py, distrib_optimizer.py).

A TorchFunctionMode costs a Python call on every torch call made while it is active.  Our own hot
tensor code (the autograd Functions' forward and backward: LoRA, attention, RoPE, norms, SwiGLU,
output loss) never names a CUDA device, so :func:`outside_redirect` runs it with torch-function
dispatch off while the redirect is the only mode on the thread (same ops, same results; ~2% of a
LoRA step at bench_peft's shape, one thread).

It is applied only when CUDA is absent (:func:`apply_if_needed`) and can be undone (:func:`remove`).
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Any, Callable, Optional

import torch
from torch.overrides import TorchFunctionMode

_CPU = torch.device("cpu")
_state_lock = threading.Lock()
_saved: dict[tuple[Any, str], Any] = {}
_mode: Optional["CudaToCpuMode"] = None


def _is_cuda_device(device: Any) -> bool:
    if isinstance(device, torch.device):
        return device.type == "cuda"
    if isinstance(device, str):
        return device.startswith("cuda")
    return isinstance(device, int) and not isinstance(device, bool)  # an int device means cuda:N


class CudaToCpuMode(TorchFunctionMode):
    """Maps CUDA device requests to the CPU for every torch call made while the mode is active."""

    _CUDA_TYPE_NAMES = {"torch.FloatTensor": "torch.cuda.FloatTensor",
                        "torch.HalfTensor": "torch.cuda.HalfTensor",
                        "torch.BFloat16Tensor": "torch.cuda.BFloat16Tensor"}

    def __torch_function__(self, func: Callable, types: Any, args: tuple = (), kwargs: Optional[dict] = None):
        kwargs = kwargs or {}
        if func is torch.Tensor.cuda:
            return args[0]
        if func is torch.Tensor.type and len(args) == 1 and not kwargs:
            name = func(*args)
            return self._CUDA_TYPE_NAMES.get(name, name)
        if func is torch.Tensor.to:
            args, kwargs = self._strip_to_device(args, kwargs)
            if len(args) == 1 and not kwargs:
                return args[0]
        elif "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs = dict(kwargs, device=_CPU)
        return func(*args, **kwargs)

    @staticmethod
    def _strip_to_device(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        if "device" in kwargs and _is_cuda_device(kwargs["device"]):
            kwargs = {k: v for k, v in kwargs.items() if k != "device"}
        if len(args) >= 2 and (isinstance(args[1], (str, torch.device)) or type(args[1]) is int):
            if _is_cuda_device(args[1]):
                args = (args[0],) + args[2:]
        return args, kwargs


class _NullEvent:
    """Stand-in for torch.cuda.Event: timing calls succeed and measure nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def record(self, stream: Any = None) -> None:
        pass

    def wait(self, stream: Any = None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def query(self) -> bool:
        return True

    def elapsed_time(self, other: Any) -> float:
        return 0.0


class _NullStream(_NullEvent):
    """Stand-in for torch.cuda.Stream: work is already ordered on the CPU."""

    def wait_stream(self, other: Any) -> None:
        pass

    def wait_event(self, event: Any) -> None:
        pass


_NULL_STREAM = _NullStream()


def _cpu_rng_get(device: Any = "cuda", clone: bool = False, graph_safe: bool = False) -> torch.Tensor:
    return torch.get_rng_state()


def _cpu_rng_set(new_state: torch.Tensor, device: Any = -1, graph_safe: bool = False) -> None:
    torch.set_rng_state(new_state)


def _patch(owner: Any, name: str, value: Any) -> None:
    key = (owner, name)
    if key not in _saved:
        _saved[key] = getattr(owner, name, None)
    setattr(owner, name, value)


# False: outside_redirect leaves dispatch alone (benchmarks/ab_step.py's plain side)
SKIP_REDIRECT_IN_HOT_PATHS = True


def _only_redirect_active(args: tuple) -> bool:
    """The thread's torch-function modes are all redirect modes (none of a user's, e.g. a
    ``torch.device`` context), and no tensor argument is a subclass with its own dispatch."""
    n = torch._C._len_torch_function_stack()
    if n == 0 or not all(isinstance(torch._C._get_function_stack_at(i), CudaToCpuMode) for i in range(n)):
        return False
    return all(type(a) in (torch.Tensor, torch.nn.Parameter) for a in args if isinstance(a, torch.Tensor))


def outside_redirect(fn: Callable) -> Callable:
    """Run ``fn`` (tensor code that never asks for a CUDA device) with torch-function dispatch off
    when only the redirect mode would see its calls (module docstring); otherwise as it is."""
    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        if SKIP_REDIRECT_IN_HOT_PATHS and _only_redirect_active(args):
            with torch._C.DisableTorchFunction():
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)
    return run


def _noop(*args: Any, **kwargs: Any) -> None:
    return None


def is_applied() -> bool:
    return _mode is not None


def apply() -> None:
    """Install the redirects (idempotent). Call before building any megatron-core object."""
    global _mode
    with _state_lock:
        if _mode is not None:
            return
        cuda = torch.cuda
        _patch(cuda, "current_device", lambda: _CPU)
        _patch(cuda, "synchronize", _noop)
        _patch(cuda, "empty_cache", _noop)
        _patch(cuda, "Event", _NullEvent)
        _patch(cuda, "Stream", _NullStream)
        _patch(cuda, "current_stream", lambda device=None: _NULL_STREAM)
        _patch(cuda, "default_stream", lambda device=None: _NULL_STREAM)
        _patch(cuda, "stream", lambda stream=None: contextlib.nullcontext())
        _patch(cuda, "set_stream", _noop)
        _patch(cuda, "get_rng_state", lambda device="cuda": torch.get_rng_state())
        _patch(cuda, "set_rng_state", lambda new_state, device="cuda": torch.set_rng_state(new_state))
        _patch(cuda, "manual_seed", lambda seed: torch.manual_seed(seed))
        _patch(cuda.nvtx, "range_push", _noop)
        _patch(cuda.nvtx, "range_pop", _noop)
        from megatron.core.tensor_parallel import random as mc_random

        _patch(mc_random, "_get_cuda_rng_state", _cpu_rng_get)
        _patch(mc_random, "_set_cuda_rng_state", _cpu_rng_set)
        _mode = CudaToCpuMode()
        _mode.__enter__()


def remove() -> None:
    """Undo :func:`apply` (used by tests)."""
    global _mode
    with _state_lock:
        if _mode is None:
            return
        _mode.__exit__(None, None, None)
        _mode = None
        for (owner, name), value in _saved.items():
            setattr(owner, name, value)
        _saved.clear()


def apply_if_needed() -> bool:
    """Apply the redirects when this torch has no usable CUDA device; return whether applied."""
    if torch.cuda.is_available():
        return False
    apply()
    return True


@contextlib.contextmanager
def on_this_thread():
    """Enter the device-redirect mode on a worker thread (a TorchFunctionMode is per thread)."""
    if _mode is None:
        yield
        return
    with CudaToCpuMode():
        yield
