"""QLoRA (Dettmers et al. 2023): LoRA on frozen base linears stored as 4-bit NF4 with
double-quantised scales, dequantised on the fly.

Notation: W [N_local, K_local] one rank's shard of a targeted linear's weight, n = N_local·K_local,
b the NF4 block size (64), c the scale block size (256), nb = ceil(n / b) blocks.

Storage per targeted linear (buffers, not Parameters; non-persistent: the base checkpoint holds
the full-precision weights, QLoRA re-quantises them whenever it is applied):

    qlora_packed       uint8 [ceil(n / b)·b / 2]   two NF4 codes per byte (kernels/nf4.py layout)
    double_quant=True  (QLoRA's double quantisation of the absmax scales):
      qlora_absmax_q   int8  [ceil(nb / c)·c]      (absmax - mean) / s2 · 127, rounded
      qlora_absmax_s2  fp32  [ceil(nb / c)]        per scale-block max |absmax - mean|
      qlora_absmax_mean fp32 [1]                   the mean subtracted before quantising
    double_quant=False:
      qlora_absmax     fp32  [nb]

so a weight costs 4 + 8/b + 32/(b·c) bits (4.127 at b=64, c=256) instead of 32 (fp32) or 16.
The second level is a symmetric linear 8-bit code of the centred scales per block of c, with an
fp32 scale per block: |error| <= s2 / 254 per absmax (the paper uses an 8-bit float code; the
mean-centring and block size are the paper's).

Under TP each rank quantises its own shard (the sharding rule of tp_rule.py is unchanged: LoRA's
A and B are laid out from the shard's shape exactly as for plain LoRA).  The full-precision
weight Parameter is dropped (``module.weight`` becomes None) and freed.  The LoRA forwards of
:mod:`megatron_retro.peft.lora` run unchanged; they read the base weight through
``_peft_base_weight``, which dequantises through ``megatron_retro.kernels.nf4_dequantize``
(Triton on CUDA, torch reference on CPU).  A saved-tensor hook replaces the dequantised weight
that autograd would keep for the input gradient by a marker and dequantises again in backward,
so no full-precision copy of a frozen weight outlives its layer's forward.

Merging (``merge_peft``) dequantises and adds s·B·A: the merged linear holds an ordinary
full-precision weight again (re-quantising the sum would throw the adapter's precision away).
"""
from __future__ import annotations

import logging
import types
from dataclasses import dataclass, field
from typing import ClassVar, Optional

import torch

from megatron_retro.errors import UserError
from megatron_retro.peft.lora import LoraConfig, apply_lora, lora_param_count, remove_lora
from megatron_retro.peft.options import check_count
from megatron_retro.peft.registry import PeftMethod, register_peft_method

log = logging.getLogger(__name__)
_BUFFERS = ("qlora_packed", "qlora_absmax", "qlora_absmax_q", "qlora_absmax_s2", "qlora_absmax_mean")


@dataclass
class QLoraConfig(LoraConfig):
    """LoRA hyper-parameters and targets, plus the NF4 storage of the targeted base weights."""

    method: ClassVar[str] = "qlora"
    block_size: int = field(default=64, metadata={"help": "weights per NF4 block (one absmax scale each)"})
    double_quant: bool = field(default=True, metadata={
        "help": "quantise the absmax scales to 8 bit (QLoRA's double quantisation)"})
    scale_block_size: int = field(default=256, metadata={
        "help": "absmax scales per 8-bit block of the double quantisation (one fp32 scale each)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.block_size, int) or self.block_size < 2 or self.block_size % 2:
            raise UserError(f"peft.block_size={self.block_size}: must be an even integer >= 2")
        check_count(self, "scale_block_size")
        if not isinstance(self.double_quant, bool):
            raise UserError(f"peft.double_quant={self.double_quant!r}: must be true or false")


@dataclass(frozen=True)
class NF4Layout:
    """What a quantised weight needs to be rebuilt: shape, dtype and block sizes."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    block_size: int
    double_quant: bool
    scale_block_size: int

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def _ceil_to(n: int, m: int) -> int:
    return -(-n // m) * m


def quantized_nbytes(numel: int, block_size: int = 64, double_quant: bool = True,
                     scale_block_size: int = 256) -> int:
    """Bytes of the NF4 storage of a weight of ``numel`` values (the formula of the module doc)."""
    padded = _ceil_to(numel, block_size)
    blocks = padded // block_size
    if not double_quant:
        return padded // 2 + 4 * blocks
    return padded // 2 + _ceil_to(blocks, scale_block_size) + 4 * (-(-blocks // scale_block_size)) + 4


# --------------------------------------------------------------------------------------------
# Double quantisation of the absmax scales
# --------------------------------------------------------------------------------------------
def double_quantize(absmax: torch.Tensor, block: int = 256):
    """fp32 [nb] -> (int8 [ceil(nb / c)·c], fp32 s2 [ceil(nb / c)], fp32 mean [1])."""
    mean = absmax.mean().reshape(1)
    centred = absmax - mean
    centred = torch.nn.functional.pad(centred, (0, _ceil_to(centred.numel(), block) - centred.numel()))
    blocks = centred.view(-1, block)                                   # [nb2, c]
    s2 = blocks.abs().amax(1)                                          # [nb2]
    q = torch.round(blocks / s2.clamp_min(torch.finfo(torch.float32).tiny)[:, None] * 127.0)
    return q.to(torch.int8).reshape(-1), s2, mean


def double_dequantize(q: torch.Tensor, s2: torch.Tensor, mean: torch.Tensor, count: int) -> torch.Tensor:
    """Inverse of :func:`double_quantize`: the first ``count`` absmax values, fp32."""
    blocks = q.view(s2.numel(), -1).float() * (s2[:, None] / 127.0)   # [nb2, c]
    return blocks.reshape(-1)[:count] + mean


# --------------------------------------------------------------------------------------------
# One weight: quantise into buffers, dequantise
# --------------------------------------------------------------------------------------------
def quantize_into(module: torch.nn.Module, weight: torch.Tensor, cfg: QLoraConfig) -> NF4Layout:
    """Store ``weight`` on ``module`` as NF4 buffers; returns the layout to dequantise it."""
    from megatron_retro.kernels import nf4_quantize

    layout = NF4Layout(tuple(weight.shape), weight.dtype, cfg.block_size, cfg.double_quant, cfg.scale_block_size)
    flat = weight.detach().reshape(-1)
    flat = torch.nn.functional.pad(flat, (0, _ceil_to(flat.numel(), cfg.block_size) - flat.numel()))
    packed, absmax = nf4_quantize(flat, cfg.block_size)               # [n_pad / 2] uint8, [nb] fp32
    module.register_buffer("qlora_packed", packed, persistent=False)
    if cfg.double_quant:
        q, s2, mean = double_quantize(absmax, cfg.scale_block_size)
        module.register_buffer("qlora_absmax_q", q, persistent=False)
        module.register_buffer("qlora_absmax_s2", s2, persistent=False)
        module.register_buffer("qlora_absmax_mean", mean, persistent=False)
    else:
        module.register_buffer("qlora_absmax", absmax, persistent=False)
    return layout


def absmax_of(module: torch.nn.Module) -> torch.Tensor:
    """fp32 [nb] per-block absmax of a quantised module (double-dequantised if needed)."""
    layout: NF4Layout = module._qlora_layout
    if not layout.double_quant:
        return module.qlora_absmax
    blocks = module.qlora_packed.numel() * 2 // layout.block_size
    return double_dequantize(module.qlora_absmax_q, module.qlora_absmax_s2, module.qlora_absmax_mean, blocks)


def dequantized_weight(module: torch.nn.Module) -> torch.Tensor:
    """The base weight [N_local, K_local] in its original dtype, rebuilt from the NF4 buffers."""
    from megatron_retro.kernels import nf4_dequantize

    layout: NF4Layout = module._qlora_layout
    packed = module.qlora_packed
    flat = nf4_dequantize(packed, absmax_of(module), (packed.numel() * 2,), layout.dtype, layout.block_size)
    return flat[:layout.numel].view(layout.shape)


# --------------------------------------------------------------------------------------------
# The forward wrapper: dequantise in forward, again in backward
# --------------------------------------------------------------------------------------------
def _base_weight_getter(module):
    def get():
        w = dequantized_weight(module)
        module._qlora_live = w  # the tensor the saved-tensor hook recognises (this forward only)
        return w
    return get


def _pack(module):
    def pack(t: torch.Tensor):
        live = getattr(module, "_qlora_live", None)
        if live is not None and t.device == live.device and \
                t.untyped_storage().data_ptr() == live.untyped_storage().data_ptr():
            return ("nf4", tuple(t.shape), tuple(t.stride()), t.storage_offset())  # a marker, no data
        return t
    return pack


def _unpack(module):
    def unpack(saved):
        if isinstance(saved, tuple):
            _, shape, stride, offset = saved
            return dequantized_weight(module).as_strided(shape, stride, offset)
        return saved
    return unpack


def _qlora_forward(self, *args, **kwargs):
    """The LoRA forward with the dequantised base weight kept out of autograd's saved tensors."""
    with torch.autograd.graph.saved_tensors_hooks(_pack(self), _unpack(self)):
        try:
            return self._qlora_lora_forward(*args, **kwargs)
        finally:
            self._qlora_live = None


# --------------------------------------------------------------------------------------------
# Apply, count, merge, memory
# --------------------------------------------------------------------------------------------
def quantize_module(module: torch.nn.Module, cfg: QLoraConfig) -> None:
    """Replace ``module.weight`` by NF4 buffers; the Parameter is dropped (freed if unreferenced)."""
    if getattr(module, "_qlora_layout", None) is not None:
        raise UserError(f"{type(module).__name__}: QLoRA is already applied")
    weight = module.weight
    if weight is None:
        raise UserError(f"{type(module).__name__}: has no weight to quantise")
    module._qlora_layout = quantize_into(module, weight, cfg)
    module._qlora_weight_bytes = weight.numel() * weight.element_size()
    module.register_parameter("weight", None)  # the only reference megatron keeps
    del weight
    module._peft_base_weight = _base_weight_getter(module)


def release_freed_heap() -> bool:
    """Hand the freed full-precision weights back to the OS (glibc ``malloc_trim``).

    The dropped weights and the quantiser's temporaries are freed into glibc's heap, which keeps
    them mapped: without this, a QLoRA process held ~90 MB more RSS than LoRA's right after
    ``apply`` at bench_peft's shape, and its training peak did not fall below LoRA's although its
    base weights are 8x smaller.  Returns whether malloc_trim ran (False without glibc).
    """
    from megatron_retro.glibc import libc_function

    trim = libc_function("malloc_trim")
    if trim is None:
        return False
    trim(0)
    return True


def apply_qlora(chunks: list, cfg: QLoraConfig, tf_config) -> list:
    """Quantise the base weight of every LoRA target, then inject LoRA exactly as ``lora`` does."""
    from megatron_retro.peft.targets import find_linear_targets

    for chunk in chunks:
        for _, module, _ in list(find_linear_targets(chunk, cfg.targets, cfg.exclude)):
            quantize_module(module, cfg)
    found = apply_lora(chunks, cfg, tf_config)
    for module in found:
        module._qlora_lora_forward = module.forward
        module.forward = types.MethodType(_qlora_forward, module)
    release_freed_heap()
    log.info("qlora: %s", qlora_memory(chunks).as_dict())  # this rank's base-weight bytes before/after
    return found


def _quantized_modules(chunks: list):
    for chunk in chunks:
        for module in chunk.modules():
            if getattr(module, "_qlora_layout", None) is not None:
                yield module


def _drop_quantized_state(module: torch.nn.Module) -> None:
    for name in _BUFFERS:
        module._buffers.pop(name, None)
    for attr in ("_qlora_layout", "_qlora_weight_bytes", "_qlora_live", "_qlora_lora_forward",
                 "_peft_base_weight"):
        if attr in module.__dict__:
            delattr(module, attr)


@torch.no_grad()
def merge_qlora(chunks: list) -> int:
    """W_local = dequant(NF4) + s·B_local·A_local as a full-precision Parameter; un-inject."""
    merged = 0
    for module in list(_quantized_modules(chunks)):
        w = dequantized_weight(module)
        if "lora_a" in module._parameters:
            delta = module._lora_scale * (module.lora_b.double() @ module.lora_a.double())  # [N_local, K_local]
            w = (w.double() + delta).to(w.dtype)
            del module.forward  # the QLoRA wrapper; remove_lora deletes LoRA's forward below
            module.forward = module._qlora_lora_forward
            remove_lora(module)
        module.register_parameter("weight", torch.nn.Parameter(w.contiguous(), requires_grad=False))
        _drop_quantized_state(module)
        merged += 1
    return merged


@dataclass(frozen=True)
class QLoraMemory:
    """Bytes of the targeted base weights on this rank (or summed over the model-parallel group)."""

    modules: int
    before_bytes: int   # the full-precision weights that were freed
    after_bytes: int    # their NF4 storage (packed codes + scales)

    @property
    def saved_bytes(self) -> int:
        return self.before_bytes - self.after_bytes

    def as_dict(self) -> dict:
        return {"qlora_modules": self.modules, "base_weight_bytes_before": self.before_bytes,
                "base_weight_bytes_after": self.after_bytes, "base_weight_bytes_saved": self.saved_bytes}


def qlora_memory(chunks: list, reduce: bool = False) -> QLoraMemory:
    """Memory of the quantised base weights: this rank's, or (``reduce``, collective) the sum
    over the tensor- and pipeline-parallel ranks of this model replica."""
    from megatron_retro.peft.api import unwrap

    modules = list(_quantized_modules([unwrap(c) for c in chunks]))
    after = sum(getattr(m, name).numel() * getattr(m, name).element_size()
                for m in modules for name in _BUFFERS if getattr(m, name, None) is not None)
    totals = torch.tensor([len(modules), sum(m._qlora_weight_bytes for m in modules), after], dtype=torch.int64)
    if reduce and torch.distributed.is_initialized():
        from megatron.core import parallel_state

        torch.distributed.all_reduce(totals, group=parallel_state.get_model_parallel_group())
    return QLoraMemory(int(totals[0]), int(totals[1]), int(totals[2]))


def qlora_dispatch(module: torch.nn.Module, dtype: Optional[torch.dtype] = None):
    """The path (`Dispatch(use_triton, reason)`) the module's NF4 dequantisation takes."""
    from megatron_retro.kernels import nf4_dispatch

    layout: NF4Layout = module._qlora_layout
    packed = module.qlora_packed
    return nf4_dispatch(packed, absmax_of(module), (packed.numel() * 2,), dtype or layout.dtype, layout.block_size)


register_peft_method(PeftMethod(name="qlora", prefix="lora_", config_cls=QLoraConfig, apply=apply_qlora,
                                count=lora_param_count, merge=merge_qlora))
