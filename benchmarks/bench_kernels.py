"""Benchmark the Triton kernels against their torch paths, with FLOP and byte floors per shape.

    python benchmarks/bench_kernels.py [--dtype bf16] [--markdown]

For each shape it prints the FLOPs (the math's, and what the Triton kernels execute including
recomputation), the minimum HBM bytes of the fused kernel and of the torch
path it replaces, and the resulting time floor on a reference GPU (A100-SXM: 312 TFLOP/s dense
bf16/fp16 tensor core, 2.0 TB/s HBM; floor = max(FLOPs/peak, bytes/bandwidth), with the
kernel's FLOPs for the fused column).  On a CUDA machine
it also times, with triton.testing.do_bench (median ms), forward and forward+backward of
  - fused LoRA (Triton) vs the cuBLAS chain x·Wᵀ, x·Aᵀ, ·Bᵀ, add (the torch reference),
  - chunked cross-attention (Triton) vs megatron's pad/permute formulation with an unfused
    softmax (materialised scores) and with torch SDPA,
and reports the speed-up ratios side by side, then refits the fused-LoRA dispatch rule
(kernels/lora_floor.py: the efficiency of the Triton kernels relative to the cuBLAS chain).  Without CUDA, timings are skipped (they need a
GPU: Triton's CPU interpreter measures nothing useful).
"""
from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass

import torch

from megatron_retro.kernels import fused_lora as fl
from megatron_retro.kernels.lora_floor import PEAK_BW, PEAK_FLOPS, LoraShape

cca = importlib.import_module("megatron_retro.kernels.chunked_cross_attention")

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass
class CcaShape:
    """One CCA call: ns tokens, bs batch, h heads of hd, chunk m, k neighbours of r tokens."""

    name: str
    ns: int
    bs: int
    h: int
    hd: int
    k: int
    r: int = 128
    m: int = 64

    @property
    def l(self) -> int:
        return cca.num_chunks(self.ns, self.m)

    @property
    def nk(self) -> int:
        return self.k * self.r

    def kernel_flops(self, dtype, backward: bool) -> float:
        return self.flops(backward)  # nothing recomputed beyond the flash backward's S

    def flops(self, backward: bool) -> float:
        per = 4 * self.m * self.nk * self.hd * self.l * self.bs * self.h  # QKᵀ and PV
        return per * (3.5 if backward else 1.0)  # bwd: recompute S, dV, dP, dQ, dK

    def _qo(self, e):
        return e * self.ns * self.bs * self.h * self.hd

    def _kv(self, e):
        return e * self.bs * self.l * self.nk * self.h * self.hd

    def bytes_fused(self, e: int, backward: bool) -> float:
        lse = 4 * self.bs * self.h * self.l * self.m
        fwd = 2 * self._qo(e) + 2 * self._kv(e) + lse
        bwd = 4 * self._qo(e) + 4 * self._kv(e) + lse  # read q, o, dO, k, v; write dq, dk, dv
        return fwd + (bwd if backward else 0)

    def bytes_unfused(self, e: int, backward: bool) -> float:
        scores = e * self.bs * self.l * self.h * self.m * self.nk
        # pad+permute copy of q (read+write), S write, softmax read+write, P read, output
        # permute back + zero-pad copy (read+write twice)
        fwd = 2 * self._qo(e) + 2 * self._kv(e) + 4 * scores + 4 * self._qo(e)
        bwd = 6 * self._qo(e) + 4 * self._kv(e) + 6 * scores
        return fwd + (bwd if backward else 0)


LORA_SHAPES = [
    LoraShape("843M QKV, 512 tokens (short prompts)", 512, 1024, 3072),
    LoraShape("843M QKV (d 1024, tp 1, 4k tokens)", 4096, 1024, 3072),
    LoraShape("8B QKV (d 4096, tp 1, 4k tokens)", 4096, 4096, 12288),
    LoraShape("43B QKV column shard (d 8192, tp 8)", 4096, 8192, 3072),
    LoraShape("43B proj row shard (d 8192, tp 8)", 4096, 1024, 8192),
]
CCA_SHAPES = [
    CcaShape("843M, k=2 (pretraining)", 4096, 1, 16, 64, 2),
    CcaShape("843M, k=5 (fine-tuning)", 4096, 1, 16, 64, 5),
    CcaShape("48B-class, 8 heads/rank (tp 8), k=5", 4096, 1, 8, 128, 5),
]


def floors(dtype) -> list[dict]:
    e = torch.finfo(dtype).bits // 8
    rows = []
    for kind, shapes in (("fused_lora", LORA_SHAPES), ("cca", CCA_SHAPES)):
        for s in shapes:
            for bwd in (False, True):
                f, bf, bu = s.flops(bwd), s.bytes_fused(e, bwd), s.bytes_unfused(e, bwd)
                fk = s.kernel_flops(dtype, bwd)
                t_fused = max(fk / PEAK_FLOPS[dtype], bf / PEAK_BW)
                t_unfused = max(f / PEAK_FLOPS[dtype], bu / PEAK_BW)
                rows.append(dict(op=kind, shape=s.name, pass_="fwd+bwd" if bwd else "fwd",
                                 gflop=f / 1e9, gflop_kernel=fk / 1e9, mb_fused=bf / 1e6,
                                 mb_unfused=bu / 1e6,
                                 floor_us_fused=t_fused * 1e6, floor_us_unfused=t_unfused * 1e6,
                                 shape_obj=s))
    return rows


def _bench_lora(s: LoraShape, dtype, backward: bool) -> dict:
    from triton.testing import do_bench

    dev = "cuda"
    x = torch.randn(s.M, s.K, device=dev, dtype=dtype, requires_grad=backward)
    w = torch.randn(s.N, s.K, device=dev, dtype=dtype) / s.K**0.5
    a = (torch.randn(s.R, s.K, device=dev) / s.K**0.5).requires_grad_(backward)
    b = torch.randn(s.N, s.R, device=dev).requires_grad_(backward)
    dy = torch.randn(s.M, s.N, device=dev, dtype=dtype)

    def run(backend):
        def step():
            y = fl.fused_lora_linear(x, w, a, b, 1.0, backend=backend)
            if backward:
                torch.autograd.backward(y, dy, inputs=[x, a, b])
        return step

    return {name: do_bench(run(be))
            for name, be in (("triton", "triton"), ("cublas_chain", "torch"))}


def _bench_cca(s: CcaShape, dtype, backward: bool) -> dict:
    from triton.testing import do_bench

    dev = "cuda"
    q = torch.randn(s.ns, s.bs, s.h, s.hd, device=dev, dtype=dtype, requires_grad=backward)
    k = torch.randn(s.bs, s.l, s.nk, s.h, s.hd, device=dev, dtype=dtype, requires_grad=backward)
    v = torch.randn_like(k, requires_grad=backward)
    do = torch.randn(s.ns, s.bs, s.h, s.hd, device=dev, dtype=dtype)

    def run(fn):
        def step():
            o = fn()
            if backward:
                torch.autograd.backward(o, do, inputs=[q, k, v])
        return step

    fns = {
        "triton": lambda: cca.chunked_cross_attention(q, k, v, s.m, backend="triton"),
        "unfused": lambda: cca.chunked_cross_attention_reference(q, k, v, s.m, impl="math"),
        "sdpa": lambda: cca.chunked_cross_attention_reference(q, k, v, s.m, impl="sdpa"),
    }
    return {name: do_bench(run(fn)) for name, fn in fns.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", default="bf16", choices=sorted(DTYPES))
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args(argv)
    dtype = DTYPES[args.dtype]
    rows = floors(dtype)
    gpu = torch.cuda.is_available()
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = dtype == torch.float32
        for row in rows:
            bench = _bench_lora if row["op"] == "fused_lora" else _bench_cca
            row["ms"] = bench(row["shape_obj"], dtype, row["pass_"] == "fwd+bwd")
    sep = " | " if args.markdown else "  "
    head = ["op", "shape", "pass", "GFLOP", "GFLOP kernel", "MB fused", "MB torch",
            "floor µs fused", "floor µs torch"]
    if gpu:
        head += ["ms triton", "ms torch", "ms sdpa", "speed-up vs torch", "% of fused floor"]
    print(f"dtype {args.dtype}; floors on A100-SXM ({PEAK_FLOPS[dtype] / 1e12:.0f} TFLOP/s, "
          f"{PEAK_BW / 1e12:.1f} TB/s)" + ("" if gpu else "; timings need a GPU (no CUDA here)"))
    if args.markdown:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
    else:
        print(sep.join(head))
    for r in rows:
        cells = [r["op"], r["shape"], r["pass_"], f"{r['gflop']:.1f}", f"{r['gflop_kernel']:.1f}",
                 f"{r['mb_fused']:.1f}",
                 f"{r['mb_unfused']:.1f}", f"{r['floor_us_fused']:.0f}",
                 f"{r['floor_us_unfused']:.0f}"]
        if gpu:
            ms = r["ms"]
            torch_ms = ms.get("cublas_chain", ms.get("unfused"))
            cells += [f"{ms['triton']:.3f}", f"{torch_ms:.3f}",
                      f"{ms['sdpa']:.3f}" if "sdpa" in ms else "-",
                      f"{torch_ms / ms['triton']:.2f}x",
                      f"{100 * r['floor_us_fused'] / 1e3 / ms['triton']:.0f}%"]
        print(("| " + " | ".join(cells) + " |") if args.markdown else sep.join(cells))
    if gpu:
        print(fit_efficiency(rows))


def fit_efficiency(rows: list[dict]) -> str:
    """The fused-LoRA dispatch refit (kernels/lora_floor.py): median over the timed LoRA rows of
    (floor_triton / t_triton) / (floor_chain / t_chain), printed as the setting that applies it."""
    import statistics

    ratios = [(r["floor_us_fused"] / r["ms"]["triton"]) / (r["floor_us_unfused"] / r["ms"]["cublas_chain"])
              for r in rows if r["op"] == "fused_lora"]
    x = statistics.median(ratios)
    return (f"fused-LoRA dispatch refit from {len(ratios)} timed rows: efficiency {x:.3f} "
            f"(per row {', '.join(f'{v:.2f}' for v in ratios)})\n"
            f"  export MEGATRON_RETRO_FUSED_LORA_EFFICIENCY={x:.3f}   # or EFFICIENCY in kernels/lora_floor.py")


if __name__ == "__main__":
    main()
