"""Where a training step's time goes: torch.profiler per-op totals of our GPT step (bench_peft's shape).

Relative shares are robust to a loaded machine (every op is slowed alike); absolute times are not.

    python benchmarks/profile_step.py --method lora [--steps 2] [--top 30] [--small]
    python benchmarks/profile_step.py --method none       # full fine-tuning
    python benchmarks/profile_step.py --method hf         # HF transformers + peft LoRA (bench_peft's)
    python benchmarks/profile_step.py --threads 1         # one thread (a one-core lane)
"""
from __future__ import annotations

import argparse
import os
import sys
import warnings

warnings.filterwarnings("ignore")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from bench_peft import SHAPE, SMALL, build_hf, build_ours

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="lora", help="lora, qlora, none (full fine-tuning) or hf (HF peft LoRA)")
    ap.add_argument("--steps", type=int, default=2, help="profiled steps (after the warm-up steps)")
    ap.add_argument("--warmup", type=int, default=3, help="unprofiled steps first: the heap reaches its "
                    "steady state (no page faults) only from the 3rd step on")
    ap.add_argument("--top", type=int, default=30)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--override", nargs="*", default=[], help="config overrides (e.g. train.recompute=true)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    s = SMALL if args.small else SHAPE
    if args.method == "hf":
        step = build_hf(s)
    else:
        engine, batch, _ = build_ours(s, None if args.method == "none" else args.method, tuple(args.override))
        step = lambda: engine.train_step([batch])  # noqa: E731
    for _ in range(args.warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for _ in range(args.steps):
            step()
    table = prof.key_averages(group_by_input_shape=True)
    print(table.table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40,
                      max_shapes_column_width=70))


if __name__ == "__main__":
    main()
