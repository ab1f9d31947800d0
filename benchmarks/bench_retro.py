"""RETRO on CPU, two measurements (single process, fp32):

``--what step``: forward+backward time of RETRO over the same-size GPT (same decoder, same
weights of the shared parts, same tokens), side by side in one process, alternating runs; and
the share of the RETRO step spent in chunked cross-attention (the CCA op, fwd+bwd, timed alone
at the model's shapes, times the number of retrieval layers) and in the encoder.

``--what perplexity``: pretrain gpt-tiny and retro-tiny on the bundled corpus with the same
steps, batch, data order and learning-rate schedule, then report held-out perplexity on the same
held-out samples (RETRO with neighbours retrieved from the training documents), plus the wall
time of each run (retrieval time is inside RETRO's, neighbours are fetched on the fly).

    python benchmarks/bench_retro.py --what step
    python benchmarks/bench_retro.py --what perplexity --entities 300 --steps 300

Prints JSON lines; BENCHMARKS.md (## RETRO) holds the figures and the exact commands.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import time
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402


def _median_time(fn, iters: int) -> float:
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_step(args) -> dict:
    from megatron_retro.config import load_config
    from megatron_retro.kernels import chunked_cross_attention
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.models.retro import build_retro_model
    from megatron_retro.parallel.initialize import initialize_parallel

    torch.set_num_threads(args.threads)
    root = os.path.join(os.path.dirname(__file__), "..", "configs", "models")
    over = [f"model.seq_length={args.seq}", "retro.attention_gate=false"]
    rcfg = load_config(os.path.join(root, "retro-tiny.yaml"), over)
    gcfg = load_config(os.path.join(root, "gpt-tiny.yaml"), over)
    initialize_parallel(rcfg.parallel, seed=0)
    vocab = 4096
    gpt = build_gpt_model(gcfg.model, gcfg.parallel, vocab_size=vocab)[0]
    retro = build_retro_model(rcfg.model, rcfg.retro, rcfg.parallel, vocab_size=vocab)[0]
    init_by_global_name([gpt], seed=1)
    init_by_global_name([retro], seed=1)
    m, k, r = rcfg.retro.chunk_length, rcfg.retro.num_neighbours, rcfg.retro.neighbour_length
    bs, ns = args.batch, args.seq
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, vocab, (bs, ns), generator=g)
    labels = torch.randint(0, vocab, (bs, ns), generator=g)
    neighbours = torch.randint(0, vocab, (bs, ns // m, k, r), generator=g)
    pos = torch.arange(ns).expand(bs, ns)

    def step_gpt():
        gpt.zero_grad(set_to_none=True)
        gpt(tokens, pos, None, labels=labels).mean().backward()

    def step_retro():
        retro.zero_grad(set_to_none=True)
        retro(tokens, pos, None, labels=labels, neighbours=neighbours).mean().backward()

    h, hd = rcfg.model.num_attention_heads, rcfg.model.head_dim
    q = torch.randn(ns, bs, h, hd, requires_grad=True)
    kv = torch.randn(bs, ns // m, k * r, h, 2, hd, requires_grad=True)

    def step_cca():
        q.grad = kv.grad = None
        chunked_cross_attention(q, kv[..., 0, :], kv[..., 1, :], chunk_length=m).sum().backward()

    ca = retro.decoder.layers[rcfg.retro.layer_numbers(rcfg.model.num_layers)[0] - 1].cross_attention
    enc_in = torch.randn(r, k * (ns // m) * bs, rcfg.model.hidden_size, requires_grad=True)
    states = torch.randn(ns, bs, rcfg.model.hidden_size, requires_grad=True)

    def step_encoder():
        enc_in.grad = states.grad = None
        ca.run_encoder(states, enc_in).sum().backward()

    for fn in (step_gpt, step_retro, step_cca, step_encoder):
        fn()  # warm-up
    t = {"gpt": [], "retro": [], "cca": [], "encoder": []}
    for _ in range(args.iters):  # alternate so machine noise hits both alike
        t["gpt"].append(_median_time(step_gpt, 1))
        t["retro"].append(_median_time(step_retro, 1))
        t["cca"].append(_median_time(step_cca, 1))
        t["encoder"].append(_median_time(step_encoder, 1))
    med = {key: statistics.median(v) for key, v in t.items()}
    n_layers = len(rcfg.retro.layer_numbers(rcfg.model.num_layers))
    return {"what": "step", "shape": {"layers": rcfg.model.num_layers, "d": rcfg.model.hidden_size, "heads": h,
                                      "seq": ns, "batch": bs, "m": m, "k": k, "r": r, "retrieval_layers": n_layers,
                                      "encoder_layers": rcfg.retro.encoder_num_layers, "threads": args.threads},
            "gpt_fwd_bwd_s": med["gpt"], "retro_fwd_bwd_s": med["retro"],
            "retro_over_gpt": med["retro"] / med["gpt"],
            "cca_share_of_retro_step": n_layers * med["cca"] / med["retro"],
            "encoder_share_of_retro_step": med["encoder"] / med["retro"],
            "cca_path": str(_dispatch(q, kv, m))}


def _dispatch(q, kv, m):
    from megatron_retro.kernels import chunked_cross_attention_dispatch

    return chunked_cross_attention_dispatch(q, kv[..., 0, :], kv[..., 1, :], m, 0.0, "auto").reason


def bench_perplexity(args) -> list[dict]:
    import math

    from megatron_retro.config import load_config
    from megatron_retro.parallel.initialize import destroy_parallel
    from megatron_retro.training.pretrain import pretrain
    from megatron_retro.training.retro_pretrain import pretrain_retro

    torch.set_num_threads(args.threads)
    root = os.path.join(os.path.dirname(__file__), "..", "configs", "models")
    common = [f"data.dir={args.data_dir}", f"data.num_entities={args.entities}", "data.split=90,10,0",
              f"train.steps={args.steps}", f"train.micro_batch_size={args.batch}", f"train.eval_iters={args.eval_iters}",
              "train.eval_interval=0", f"train.lr_warmup_steps={max(1, args.steps // 20)}",
              f"checkpoint.save_interval={args.steps}", "checkpoint.resume=false", f"model.seq_length={args.seq}"]
    rows = []
    for name in args.models.split(","):
        out = os.path.join(args.out, name)
        cfg = load_config(os.path.join(root, f"{name}.yaml"), common + list(args.override) + [f"out_dir={out}"])
        t0 = time.perf_counter()
        run = pretrain_retro if cfg.model.arch == "retro" else pretrain
        result = run(cfg, progress=False)
        wall = time.perf_counter() - t0
        destroy_parallel()
        row = {"what": "perplexity", "model": name, "overrides": list(args.override), "steps": args.steps, "batch": args.batch, "seq": args.seq,
               "entities": args.entities, "train_loss": result.last_loss, "valid_loss": result.valid_loss,
               "valid_ppl": math.exp(result.valid_loss), "wall_s": wall}
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--what", choices=["step", "perplexity"], default="step")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seq", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--iters", type=int, default=5, help="timed repetitions (step)")
    p.add_argument("--steps", type=int, default=300, help="optimizer steps per model (perplexity)")
    p.add_argument("--entities", type=int, default=300, help="bundled corpus size (perplexity)")
    p.add_argument("--eval-iters", type=int, default=16, help="held-out micro-batches (perplexity)")
    p.add_argument("--models", default="gpt-tiny,retro-tiny")
    p.add_argument("--data-dir", default="runs/bench_retro/data")
    p.add_argument("--out", default="runs/bench_retro")
    p.add_argument("--override", nargs="*", default=[], help="config overrides for both models (perplexity)")
    args = p.parse_args()
    if args.what == "step":
        print(json.dumps(bench_step(args)), flush=True)
    else:
        bench_perplexity(args)


if __name__ == "__main__":
    main()
