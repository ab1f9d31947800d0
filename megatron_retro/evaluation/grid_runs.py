"""The runs an experiment grid is made of, shared by its phases (cells, perplexity study).

``model_config``: a grid model's run config; ``run_pretrain``: one GPT or RETRO pretraining run;
``is_writer``: this rank writes the grid's files (rank 0, or no process group); ``log``: one
``[experiment]`` console line from that rank; ``barrier``;
``grid``: the (model, method, seed) cells in run order; ``cell_dir`` / ``cell_config``: one cell's
directory and run config (the grid runner and the suites-only runner read the same);
``cell_settings``: what of that config a cell's result.json records.
"""
from __future__ import annotations

import os
from typing import List

from megatron_retro.config import RunConfig, load_config
from megatron_retro.evaluation.experiment_config import ExperimentConfig, ExperimentModel


def is_writer() -> bool:
    import torch.distributed as dist

    return not dist.is_initialized() or dist.get_rank() == 0


def log(msg: str) -> None:
    """One ``[experiment] ...`` line on the console, from the writing rank only."""
    if is_writer():
        print(f"[experiment] {msg}", flush=True)


def model_config(exp: ExperimentConfig, model: ExperimentModel, *extra: str) -> RunConfig:
    """The model's run config with the grid's overrides (``{out_dir}`` in them = the experiment's)."""
    return load_config(exp.resolve(model.config), exp.run_overrides(model, *extra))


def run_pretrain(cfg: RunConfig, progress: bool):
    """Pretrain (or resume) a GPT or RETRO as ``cfg`` says; the parallel state is torn down after."""
    from megatron_retro.parallel.initialize import destroy_parallel

    try:
        if cfg.model.arch == "retro":
            from megatron_retro.training.retro_pretrain import pretrain_retro

            return pretrain_retro(cfg, progress=progress)
        from megatron_retro.training.pretrain import pretrain

        return pretrain(cfg, progress=progress)
    finally:
        destroy_parallel()


def barrier() -> None:
    """Wait for every rank of the job (no-op in a single process)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.barrier()


def cell_dir(exp: ExperimentConfig, model: str, method: str, seed: int) -> str:
    """Directory of one cell of the grid: <out_dir>/cells/<model>/<method>/seed<seed>."""
    return os.path.join(exp.out_dir, "cells", model, method, f"seed{seed}")


def cell_config(exp: ExperimentConfig, model: ExperimentModel, base: str, method: str, seed: int) -> RunConfig:
    """The run config of one cell (its out_dir is the cell's directory): zero-shot reads the base as the
    grid's common settings say; a fine-tuning cell adds its seed and the fine-tuning / method overrides
    (the grid's, then the model's: ``ExperimentConfig.finetune_overrides_of``)."""
    extra = [f"out_dir={cell_dir(exp, model.name, method, seed)}", f"checkpoint.load={base}"]
    if method != "zero-shot":
        extra += [f"train.seed={seed}", *exp.finetune_overrides_of(model, method)]
    return model_config(exp, model, *extra)


def cell_settings(cfg: RunConfig, method: str) -> dict:
    """The settings a cell ran with, for its result.json: the tokenizer, sequence length and test
    questions; a fine-tuning cell also its step budget, batch and learning rates."""
    out = {"tokenizer": cfg.data.tokenizer, "seq_length": cfg.qa.seq_length or cfg.model.seq_length,
           "eval_examples": cfg.qa.eval_examples}
    if method != "zero-shot":
        t = cfg.train
        out.update(steps=t.steps, micro_batch_size=t.micro_batch_size, global_batch_size=t.global_batch_size,
                   lr=t.lr, min_lr=t.min_lr, train_examples=cfg.qa.train_examples)
    return out


def grid(exp: ExperimentConfig) -> List[tuple]:
    """(model, method, seed) of every cell, in run order; zero-shot once per model (seed 0)."""
    cells = []
    for model in exp.models:
        for method in exp.methods:
            for seed in ([0] if method == "zero-shot" else exp.seeds):
                cells.append((model, method, seed))
    return cells
