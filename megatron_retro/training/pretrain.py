"""`megatron-retro pretrain`: the GPT pretraining loop on megatron-core schedules.

Reads top to bottom: set up parallelism, data, model, engine; resume from the newest complete
checkpoint; run steps (progress bar, metrics.jsonl, TensorBoard); evaluate on held-out
documents; save atomically; plot the loss curve.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Optional

from megatron_retro.config import RunConfig
from megatron_retro.training.data_setup import PretrainData


@dataclass
class PretrainResult:
    steps_run: int
    start_step: int
    final_step: int
    last_loss: Optional[float]
    valid_loss: Optional[float]
    checkpoint: Optional[str]
    losses: list  # (step, loss) of the steps run in this call (last pipeline stage; empty elsewhere)
    logging_rank: bool  # this rank writes metrics and prints the summary
    retrieval_wait_share: Optional[float] = None  # feeding ranks' wait / their step time (RETRO)


def model_record(cfg: RunConfig, vocab_size: int) -> dict:
    """The architecture as saved with checkpoints (defaults resolved)."""
    record = dataclasses.asdict(cfg.model)
    record.update(ffn_hidden_size=cfg.model.ffn_size, kv_channels=cfg.model.head_dim, vocab_size=vocab_size)
    if cfg.model.arch == "retro":  # what shapes the RETRO-only weights
        retro = cfg.retro
        record["retro"] = {"retrieval_layers": retro.layer_numbers(cfg.model.num_layers),
                           "encoder_num_layers": retro.encoder_num_layers,
                           "attention_gate": retro.attention_gate}
        if retro.megatron_compat:  # another architecture: its checkpoints load only into itself
            record["retro"]["megatron_compat"] = True
    return record


def pretrain(cfg: RunConfig, data: Optional[PretrainData] = None, build_model: Optional[Callable] = None,
             forward_step: Optional[Callable] = None, progress: bool = True,
             make_data: Optional[Callable] = None, make_engine: Optional[Callable] = None,
             init_step: int = 0, init_from: str = "") -> PretrainResult:
    """Run (or resume) pretraining as configured. Collective: every rank of the job calls it.

    ``make_data(cfg, dp=...)`` and ``make_engine(cfg, chunks, forward_step)`` replace the GPT data
    and Engine (RETRO: training/retro_pretrain.py); ``init_step`` / ``init_from``: the step and name
    of the model this run was initialised from (retro-fitting), where the loss curve's axis starts."""
    from tqdm import tqdm

    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.batches import eval_microbatches, step_microbatches
    from megatron_retro.training.checkpointing import load_checkpoint, newest_checkpoint, save_checkpoint
    from megatron_retro.training.engine import Engine
    from megatron_retro.training.gpt_step import gpt_forward_step
    from megatron_retro.training.metrics import MetricsWriter

    ctx = initialize_parallel(cfg.parallel, seed=cfg.train.seed)
    if data is None:
        from megatron_retro.training.data_setup import build_pretrain_data

        data = (make_data or build_pretrain_data)(cfg, dp=ctx.dp)
    train = cfg.train
    num_micro = train.num_microbatches(ctx.dp)
    global_batch = num_micro * train.micro_batch_size * ctx.dp
    build_model = build_model or build_gpt_model
    chunks = build_model(cfg.model, cfg.parallel, vocab_size=data.vocab_size, precision=train.precision,
                         recompute=train.recompute)
    engine = (make_engine or Engine)(cfg, chunks, forward_step or gpt_forward_step)
    record = model_record(cfg, data.vocab_size)

    start_step = 0
    newest = newest_checkpoint(cfg.checkpoint_dir) if cfg.checkpoint.resume else None
    if newest is not None:
        start_step = load_checkpoint(newest, engine, record, with_optimizer=True).step
    elif cfg.checkpoint.load:
        load_checkpoint(cfg.checkpoint.load, engine, record, with_optimizer=False)

    metrics = MetricsWriter(cfg.out_dir, enabled=ctx.is_logging_rank, resume_step=start_step,
                            init_step=init_step, init_from=init_from)
    bar = tqdm(total=train.steps, initial=start_step, desc="pretrain", unit="step",
               disable=not (progress and ctx.is_logging_rank), dynamic_ncols=True)
    tokens_per_step = global_batch * cfg.model.seq_length
    losses, valid_loss, checkpoint, result = [], None, None, None
    feed = data.feed
    if feed is not None:
        feed.start(start_step, train.steps, global_batch, train.micro_batch_size)
    waited = step_time = 0.0
    for step in range(start_step, train.steps):
        t0 = time.perf_counter()
        micro = feed.train_step(step) if feed is not None else \
            step_microbatches(data.train, step, global_batch, train.micro_batch_size, ctx.dp, ctx.dp_rank)
        result = engine.train_step(micro)
        elapsed = time.perf_counter() - t0
        done = step + 1
        row = {"step": done, "loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm,
               "tokens_per_s": tokens_per_step / elapsed, "step_time_s": elapsed}
        if feed is not None:
            row.update(feed.step_metrics())
            waited, step_time = waited + row["retrieval_wait_s"], step_time + elapsed * ctx.dp
        at_end = done == train.steps
        if (train.eval_interval and done % train.eval_interval == 0) or at_end:
            valid_loss = engine.evaluate(feed.eval(train.eval_iters, train.micro_batch_size) if feed is not None else
                                         eval_microbatches(data.valid, train.eval_iters, train.micro_batch_size,
                                                           ctx.dp, ctx.dp_rank))
            row["valid_loss"] = valid_loss
        metrics.log(row)
        if result.loss is not None:
            losses.append((done, result.loss))
        if done % train.log_interval == 0 or at_end:
            bar.set_postfix(loss=f"{result.loss:.4f}" if result.loss is not None else "-",
                            lr=f"{result.lr:.2e}", refresh=False)
        bar.update(1)
        if (cfg.checkpoint.save_interval and done % cfg.checkpoint.save_interval == 0) or at_end:
            checkpoint = save_checkpoint(cfg.checkpoint_dir, done, engine,
                                         {"model": record, "consumed_samples": done * global_batch,
                                          "global_batch": global_batch},
                                         keep_last=cfg.checkpoint.keep_last)
    bar.close()
    metrics.close()
    if feed is not None:
        feed.close()
    return PretrainResult(steps_run=max(train.steps - start_step, 0), start_step=start_step,
                          final_step=max(train.steps, start_step), last_loss=result.loss if result else None,
                          valid_loss=valid_loss, checkpoint=checkpoint, losses=losses,
                          logging_rank=ctx.is_logging_rank,
                          retrieval_wait_share=waited / step_time if step_time else None)
