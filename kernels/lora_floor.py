"""Which path ``fused_lora_linear(backend="auto")`` takes on CUDA, by shape: the floor model.

Notation: M tokens, K in, N out, R rank, e bytes per activation element.  For one call the
floor of a path is max(FLOPs / peak, HBM bytes / bandwidth) on a reference GPU (A100-SXM:
312 TFLOP/s dense bf16/fp16, 19.5 fp32, 2.0 TB/s), with
  * Triton fused kernels: the FLOPs they execute (H = Xd·Aᵀ recomputed once per group of output
    tiles) and their bytes (each operand read once, each result written once);
  * the cuBLAS chain x·Wᵀ, x·Aᵀ, ·Bᵀ, add (the torch reference): the math's FLOPs and the
    chain's bytes (X read twice, the [M, N] base and LoRA products written and read back).
The rule: Triton iff  floor_triton / EFFICIENCY  <  floor_chain, where EFFICIENCY is how close
the Triton kernels get to their floor relative to how close cuBLAS gets to its own
(1.0 = equally close).  At compute-bound shapes (the BENCHMARKS table: 4k tokens) the Triton
floor is at or above the chain's (it executes more FLOPs), so the chain is chosen; Triton wins
only where the bytes it saves dominate (few tokens per call, small hidden sizes).

Overrides: per call ``backend="triton"|"torch"``; per process MEGATRON_RETRO_FUSED_LORA=
auto|triton|torch (applies when a call says "auto") and MEGATRON_RETRO_FUSED_LORA_EFFICIENCY=<x>.
Refit on the first GPU run: ``python benchmarks/bench_kernels.py --fit`` times both paths on the
BENCHMARKS shapes and prints x = median over shapes of (floor_triton / t_triton) /
(floor_chain / t_chain); set it in the env variable, or as EFFICIENCY here with the table.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from ._dispatch import Dispatch
from .lora_tiles import column_group, lora_blocks

PEAK_FLOPS = {torch.bfloat16: 312e12, torch.float16: 312e12, torch.float32: 19.5e12}
PEAK_BW = 2.0e12
EFFICIENCY = 1.0   # not yet fitted: no GPU timings exist (BENCHMARKS.md, Kernels)
ENV_BACKEND, ENV_EFFICIENCY = "MEGATRON_RETRO_FUSED_LORA", "MEGATRON_RETRO_FUSED_LORA_EFFICIENCY"


@dataclass
class LoraShape:
    """One LoRA linear call: M tokens, K in, N out, rank R (adapters fp32, no dropout)."""

    name: str
    M: int
    K: int
    N: int
    R: int = 32

    def flops(self, backward: bool) -> float:
        M, K, N, R = self.M, self.K, self.N, self.R
        fwd = 2 * M * K * N + 2 * M * K * R + 2 * M * R * N
        # dX = dY·W + (dY·B)·A ; dA = dHᵀ·Xd ; dB = dYᵀ·H   (no dW: W frozen)
        bwd = 2 * M * N * K + 2 * M * N * R + 2 * M * R * K + 2 * M * R * K + 2 * M * N * R
        return fwd + (bwd if backward else 0)

    def kernel_flops(self, dtype, backward: bool, device=None) -> float:
        """FLOPs the Triton kernels execute: H = Xd·Aᵀ is computed once per program, i.e. per
        group of G output column tiles (forward), and dH = dY·B once per group of dX tiles."""
        M, K, N, R = self.M, self.K, self.N, self.R
        dev = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        redo = []
        for kind, cols, blk in (("fwd", N, "BLOCK_N"), ("dx", K, "BLOCK_K")):
            cfg = lora_blocks(M, N, K, R, dtype, kind, gpu=True)
            rows, tiles = -(-M // cfg["BLOCK_M"]), -(-cols // cfg[blk])
            redo.append(-(-tiles // column_group(rows, tiles, dev, gpu=True)))  # programs per row
        fwd = 2 * M * K * N + 2 * M * K * R * redo[0] + 2 * M * R * N
        bwd = 2 * M * N * K + 2 * M * N * R * redo[1] + 2 * M * R * K \
            + 2 * M * R * K + 2 * M * N * R
        return fwd + (bwd if backward else 0)

    def bytes_fused(self, e: int, backward: bool) -> float:
        M, K, N, R = self.M, self.K, self.N, self.R
        fwd = e * (M * K + N * K + M * N) + 4 * (R * K + N * R) + 4 * M * R  # + H saved
        # dx kernel: read dY, W, write dX, dH; dA: read X, dH; dB: read dY, H
        bwd = e * (M * N + N * K + M * K) + 4 * M * R + e * M * K + 4 * M * R + e * M * N \
            + 4 * M * R + 4 * (R * K + N * R)
        return fwd + (bwd if backward else 0)

    def bytes_unfused(self, e: int, backward: bool) -> float:
        M, K, N, R = self.M, self.K, self.N, self.R
        # Y0 = X·Wᵀ (read X, W, write Y0); H = X·Aᵀ (read X again); T = H·Bᵀ (write T [M, N]);
        # Y = Y0 + s·T (read Y0, T, write Y); adapters cast to the activation dtype first
        fwd = e * (M * K + N * K + M * N) + e * (M * K + M * R) + e * (M * R + M * N) \
            + 3 * e * M * N + (4 + e) * (R * K + N * R)
        # autograd: dT = s·dY (read, write M·N), dH = dT·B, dB = dTᵀ·H, dX = dY·W + dH·A (+ add)
        bwd = 2 * e * M * N + e * (M * N + M * R) + e * (M * N + M * R) \
            + e * (M * N + N * K + M * K) + e * (M * R + M * K) + 3 * e * M * K \
            + e * (M * R + M * K)
        return fwd + (bwd if backward else 0)

    def floors_us(self, dtype, backward: bool, device=None) -> tuple[float, float]:
        """(Triton floor, cuBLAS-chain floor) in µs on the reference GPU."""
        e = torch.finfo(dtype).bits // 8
        fused = max(self.kernel_flops(dtype, backward, device) / PEAK_FLOPS[dtype],
                    self.bytes_fused(e, backward) / PEAK_BW)
        chain = max(self.flops(backward) / PEAK_FLOPS[dtype], self.bytes_unfused(e, backward) / PEAK_BW)
        return fused * 1e6, chain * 1e6


def efficiency() -> float:
    raw = os.environ.get(ENV_EFFICIENCY)
    if raw is None:
        return EFFICIENCY
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise ValueError(f"{ENV_EFFICIENCY}={raw!r}: must be a positive number")
    return value


def env_backend() -> str:
    value = os.environ.get(ENV_BACKEND, "auto").strip().lower() or "auto"
    if value not in ("auto", "triton", "torch"):
        raise ValueError(f"{ENV_BACKEND}={value!r}: must be auto, triton or torch")
    return value


def shape_rule(M: int, K: int, N: int, R: int, dtype, backward: bool, device=None) -> Dispatch:
    """The auto choice for supported CUDA inputs of this shape (see the module docstring)."""
    fused, chain = LoraShape("call", M, K, N, R).floors_us(dtype, backward, device)
    eff = efficiency()
    use = fused / eff < chain
    return Dispatch(use, f"floor model (M={M}, K={K}, N={N}, r={R}, {'fwd+bwd' if backward else 'fwd'}): "
                         f"Triton {fused:.1f} µs / efficiency {eff:g} vs cuBLAS chain {chain:.1f} µs -> "
                         f"{'Triton fused kernels' if use else 'cuBLAS chain (torch reference)'}")
