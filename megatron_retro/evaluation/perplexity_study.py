"""RETRO vs GPT held-out perplexity at equal steps and at equal compute, over seeds (resumable).

For every ``perplexity_pairs`` entry ``gpt:retro`` (two models of the experiment grid) and every
seed of ``perplexity_seeds``, three pretraining runs from scratch (``train.seed`` = the seed):

- GPT for N = ``perplexity_steps`` steps and RETRO for N steps: **equal steps**;
- GPT for N_c = ceil(N · F_retro / F_gpt) steps: **equal compute**, with F the executed training
  FLOPs per token of each model (``planning.recommend.flops_per_token``; RETRO's includes its
  neighbour encoder and chunked cross-attention; retrieval itself is not counted).

Each run's held-out loss (nats/token) at its last step gives perplexity = exp(loss); a finished run
is a ``result.json`` in ``<out_dir>/perplexity/<model>/<regime>/seed<s>/`` (written atomically, so
a killed study resumes and never reports half a run).  The verdict per regime is computed like
the grid's findings (``findings.band_verdict``, mean ± spread bands over seeds): "RETRO perplexity <
GPT" holds when GPT's band lies wholly above RETRO's, reversed when below, else inconclusive.
"""
from __future__ import annotations

import json
import math
import os
from typing import List

REGIMES = ("equal-steps", "equal-compute")


def compute_steps(exp, gpt_cfg, retro_cfg, vocab_size: int) -> int:
    """N_c: GPT steps whose training FLOPs equal RETRO's N steps (same batch and sequence)."""
    from megatron_retro.planning.recommend import flops_per_token

    f_gpt = flops_per_token(gpt_cfg.model, vocab_size, gpt_cfg.model.seq_length, "full", False)
    f_retro = flops_per_token(retro_cfg.model, vocab_size, retro_cfg.model.seq_length, "full", False,
                              retro=retro_cfg.retro)
    return int(math.ceil(exp.perplexity_steps * f_retro / f_gpt))


def runs(exp) -> List[tuple]:
    """(pair index, model name, regime, seed) of every run, in run order."""
    out = []
    for i, pair in enumerate(exp.perplexity_pairs):
        gpt, retro = pair.split(":")
        for seed in exp.perplexity_seeds:
            out += [(i, gpt, "equal-steps", seed), (i, retro, "equal-steps", seed), (i, gpt, "equal-compute", seed)]
    return out


def _held_out_loss(result, out_dir: str, steps: int):
    if result.valid_loss is not None:
        return result.valid_loss
    from megatron_retro.training.metrics import METRICS_FILE, read_metrics

    # resumed after the last checkpoint: the loss measured at that step is in metrics.jsonl
    rows = [r for r in read_metrics(os.path.join(out_dir, METRICS_FILE)) if r.get("step") == steps
            and r.get("valid_loss") is not None]
    return rows[-1]["valid_loss"] if rows else None


def run_one(exp, model, regime: str, seed: int, steps: int, log) -> dict:
    """Pretrain ``model`` from scratch for ``steps`` (resumed if interrupted); its held-out loss."""
    from megatron_retro.evaluation.grid_runs import is_writer, model_config, run_pretrain
    from megatron_retro.io_atomic import write_text_atomic

    out = os.path.join(exp.out_dir, "perplexity", model.name, regime, f"seed{seed}")
    done = os.path.join(out, "result.json")
    if os.path.isfile(done):
        with open(done, encoding="utf-8") as f:
            return json.load(f)
    cfg = model_config(exp, model, f"train.steps={steps}", f"train.seed={seed}", f"out_dir={out}",
                       *exp.pretrain_overrides)
    log(f"perplexity run {model.name} / {regime} / seed {seed}: {steps} steps ({cfg.model.arch})")
    result = run_pretrain(cfg, progress=False)
    loss = _held_out_loss(result, out, steps)
    record = {"model": model.name, "arch": cfg.model.arch, "regime": regime, "seed": seed, "steps": steps,
              "valid_loss": loss, "perplexity": math.exp(loss) if loss is not None else None}
    if is_writer() and loss is not None:
        write_text_atomic(done, json.dumps(record, indent=1))
    return record


def run_perplexity(exp, log) -> List[dict]:
    """Collective: every run of the perplexity study (finished ones read back)."""
    from megatron_retro.data.prepare import resolve_data
    from megatron_retro.data.tokenizer import load_tokenizer
    from megatron_retro.evaluation.grid_runs import model_config

    models = {m.name: m for m in exp.models}
    records = []
    for i, name, regime, seed in runs(exp):
        gpt, retro = exp.perplexity_pairs[i].split(":")
        steps = exp.perplexity_steps
        if regime == "equal-compute":
            gcfg, rcfg = model_config(exp, models[gpt]), model_config(exp, models[retro])
            vocab = load_tokenizer(resolve_data(gcfg.data).tokenizer).vocab_size
            steps = compute_steps(exp, gcfg, rcfg, vocab)
        records.append(dict(run_one(exp, models[name], regime, seed, steps, log), pair=exp.perplexity_pairs[i]))
    return records


def perplexity_findings(records: List[dict], spread: str = "std") -> List[dict]:
    """Per (pair, regime): GPT and RETRO perplexity over seeds (mean, std) and the verdict of
    "RETRO perplexity < GPT" (equal compute: GPT's longer run against RETRO's N-step run)."""
    from megatron_retro.evaluation.findings import band_verdict
    from megatron_retro.evaluation.score_cells import ScoreRow, aggregate

    out = []
    for pair in sorted({r["pair"] for r in records}):
        for regime in REGIMES:
            mine = [r for r in records if r["pair"] == pair and r["perplexity"] is not None
                    and (r["regime"] == regime or (r["arch"] == "retro" and r["regime"] == "equal-steps"))]
            rows = [ScoreRow(model=r["arch"], size=1.0, method=regime, seed=r["seed"],
                             scores={"ppl": r["perplexity"]}) for r in mine]
            cells = {c.model: c for c in aggregate(rows)}
            if {"gpt", "retro"} <= set(cells):
                g, t = cells["gpt"], cells["retro"]
                steps = {r["arch"]: r["steps"] for r in mine}
                out.append({"pair": pair, "regime": regime, "gpt": g, "retro": t, "steps": steps,
                            "verdict": band_verdict(g, t, "ppl", spread)})
    return out


def perplexity_markdown(found: List[dict]) -> str:
    def value(c):
        return f"{c.mean['ppl']:.2f}" if len(c.seeds) == 1 else f"{c.mean['ppl']:.2f} ± {c.std['ppl']:.2f}"

    lines = ["Held-out perplexity (mean ± sample std over seeds; lower is better). Claim \"RETRO perplexity "
             "< GPT\": 'holds' / 'reversed' when the bands do not overlap, else 'inconclusive'. Equal "
             "compute: GPT trained for the steps whose FLOPs equal RETRO's.", "",
             "| Pair | Regime | GPT steps | RETRO steps | GPT ppl | RETRO ppl | Seeds | Verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for f in found:
        lines.append(f"| {f['pair']} | {f['regime']} | {f['steps'].get('gpt')} | {f['steps'].get('retro')} | "
                     f"{value(f['gpt'])} | {value(f['retro'])} | {len(f['gpt'].seeds)}/{len(f['retro'].seeds)} | "
                     f"{f['verdict']} |")
    return "\n".join(lines) + "\n"
