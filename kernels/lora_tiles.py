"""Tile sizes (``lora_blocks``) and column groups (``column_group``) of the fused LoRA kernels.

Shared by the launchers (fused_lora.py) and the floor model that picks the path (lora_floor.py).
"""
from __future__ import annotations

import torch
import triton

from ._dispatch import interpreter_active, next_pow2


def lora_blocks(M: int, N: int, K: int, R: int, dtype: torch.dtype, kernel: str, gpu: bool = False) -> dict:
    """Tile sizes of `kernel` ("fwd", "dx", "da", "db").  Large tiles under the interpreter (its
    cost is per tile) unless ``gpu``; on GPUs, choices checked with gpu_compile_check (sm_80/90,
    every rank class and dtype): no register spills, shared memory well under 99 KiB."""
    br = next_pow2(R)
    if interpreter_active() and not gpu:
        return dict(BLOCK_M=min(next_pow2(M), 64), BLOCK_N=min(next_pow2(N), 128),
                    BLOCK_K=min(next_pow2(K), 128), BLOCK_R=br, num_warps=4)
    fp32 = dtype == torch.float32
    cfg = {
        "fwd": dict(BLOCK_M=32 if fp32 else 64, BLOCK_N=64 if (fp32 or br > 64) else 128,
                    BLOCK_K=32, num_warps=8, num_stages=2 if fp32 else 3),
        "dx": dict(BLOCK_M=32 if fp32 else 64, BLOCK_N=32 if fp32 else 64,
                   BLOCK_K=32 if fp32 else 64, num_warps=8, num_stages=2 if fp32 else 3),
        "da": dict(BLOCK_M=64, BLOCK_K=32 if fp32 else 64, num_warps=8, num_stages=2),
        "db": dict(BLOCK_M=64, BLOCK_N=64, num_warps=8, num_stages=2),
    }[kernel]
    cfg["BLOCK_R"] = br
    return cfg


def column_group(row_tiles: int, col_tiles: int, device, group: int | None = None, gpu: bool = False) -> int:
    """Column tiles per program in the forward and dX kernels.  The LoRA rank product (H or dH)
    is computed once per program and reused for its GROUP tiles, so larger groups waste fewer
    FLOPs (R/(BLOCK·GROUP) of the base GEMM) but give fewer programs: aim for ~4 per SM.
    ``gpu``: as on a GPU even under the interpreter (the floor model; 108 SMs without CUDA)."""
    if group is not None:
        return max(1, min(int(group), col_tiles))
    if interpreter_active() and not gpu:  # two groups: exercises the peeled tile and the reuse loop
        return max(1, triton.cdiv(col_tiles, 2))
    sms = 108
    if device.type == "cuda":
        sms = torch.cuda.get_device_properties(device).multi_processor_count
    return max(1, min(col_tiles, (row_tiles * col_tiles) // (4 * sms)))
