"""`megatron-retro finetune --model {gpt,retro} --peft <method|none>`: QA fine-tuning with retrieval.

Reads top to bottom: parallel setup, the QA data (task examples + their retrieved passages,
``training/qa_data.py``), the model (GPT or RETRO) with its base weights from
``checkpoint.load`` (any TP/PP layout), the PEFT method (or none: full fine-tuning), the
engine (megatron DDP + optimizer over the trainable parameters only), the steps with a held-out
answer loss, and the result: an adapter-only checkpoint in ``<out_dir>/adapter`` that loads at any
TP/PP, or (full fine-tuning) a full checkpoint in ``<out_dir>/checkpoints``.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Optional

from megatron_retro.config import RunConfig
from megatron_retro.training.fingerprint import FIELD as FINGERPRINT_FIELD


@dataclass
class FinetuneResult:
    steps: int
    first_loss: Optional[float]
    last_loss: Optional[float]
    valid_loss: Optional[float]
    trainable_params: int
    total_params: int
    adapter_dir: Optional[str]          # PEFT: the adapter checkpoint
    checkpoint: Optional[str] = None    # full fine-tuning: the checkpoint
    data: dict = field(default_factory=dict)   # examples, retrieval hit rate, truncation
    seconds: float = 0.0


def parameter_counts(chunks) -> tuple[int, int]:
    """(trainable, total) parameters summed over this job's ranks (replicas counted once)."""
    import torch
    import torch.distributed as dist
    from megatron.core import parallel_state
    from megatron.core.tensor_parallel.layers import param_is_not_tensor_parallel_duplicate

    counts = torch.zeros(2, dtype=torch.float64)
    if parallel_state.get_data_parallel_rank() == 0:
        for c in chunks:
            for p in c.parameters():
                if param_is_not_tensor_parallel_duplicate(p):
                    counts[1] += p.numel()
                    counts[0] += p.numel() if p.requires_grad else 0
    if dist.is_initialized():
        dist.all_reduce(counts)
    return int(counts[0]), int(counts[1])


def build_model(cfg: RunConfig, vocab_size: int, precision: Optional[str] = None,
                peft_method: Optional[str] = None) -> list:
    """This rank's GPT or RETRO chunks (``model.arch``), random weights, with the layer backend
    PEFT ``peft_method`` can wrap (peft/reach.py: local linears where TE would be in its way)."""
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.peft.reach import peft_layer_backend

    precision = precision or cfg.train.precision
    backend = peft_layer_backend(cfg.model.attention_backend, peft_method)
    if cfg.model.arch == "retro":
        from megatron_retro.models.retro import build_retro_model

        return build_retro_model(cfg.model, cfg.retro, cfg.parallel, vocab_size=vocab_size, precision=precision,
                                 recompute=cfg.train.recompute, backend=backend)
    return build_gpt_model(cfg.model, cfg.parallel, vocab_size=vocab_size, precision=precision,
                           recompute=cfg.train.recompute, backend=backend)


def make_engine(cfg: RunConfig, chunks: list):
    """Engine with the forward step (and, for RETRO, the pipeline payload) of ``model.arch``."""
    if cfg.model.arch == "retro":
        from megatron_retro.training.retro_step import RetroEngine

        return RetroEngine(cfg, chunks)
    from megatron_retro.training.engine import Engine
    from megatron_retro.training.gpt_step import gpt_forward_step

    return Engine(cfg, chunks, gpt_forward_step)


def load_model(cfg: RunConfig, vocab_size: int, base: Optional[str], adapter: Optional[str] = None,
               peft_cfg=None, tokenizer=None) -> tuple[list, dict, object]:
    """(chunks, model record, PEFT config): base weights from ``base``, then an adapter loaded from
    ``adapter`` or a fresh ``peft_cfg`` method applied (the base frozen).  ``tokenizer`` (the run's)
    must have the base's vocabulary: a mismatch is one line naming both."""
    from megatron_retro.peft import apply_peft
    from megatron_retro.peft.api import method_of
    from megatron_retro.peft.checkpoint import check_adapter, load_adapter
    from megatron_retro.training.checkpointing import STATE_FILE, check_compatible, load_checkpoint, read_state
    from megatron_retro.training.pretrain import model_record

    if base and tokenizer is not None and os.path.isfile(os.path.join(base, STATE_FILE)):
        from megatron_retro.data.tokenizer import check_vocab

        saved = (read_state(base).get("model") or {}).get("vocab_size")
        if saved:
            check_vocab(tokenizer, int(saved), base)

    record = model_record(cfg, vocab_size)
    # The stored things are checked against this model before any weights are built or read:
    # the base checkpoint's record first, then the adapter's (its shapes and its base's weights).
    saved_base = read_state(base) if base else {}
    if base:
        check_compatible(base, saved_base.get("model", {}), record)
    meta = check_adapter(adapter, record, saved_base.get(FINGERPRINT_FIELD), base) if adapter else None
    method = meta["peft"].get("method") if meta else (method_of(peft_cfg) if peft_cfg is not None else None)
    chunks = build_model(cfg, vocab_size, peft_method=method)
    base_state = {}
    if base:
        base_state = load_checkpoint(base, SimpleNamespace(chunks=chunks), record, with_optimizer=False).state
    if adapter:
        peft_cfg = load_adapter(adapter, chunks, apply=True, model_record=record,
                                base_fingerprint=base_state.get(FINGERPRINT_FIELD), base=base)
    elif peft_cfg is not None:
        apply_peft(chunks, peft_cfg)
    return chunks, record, peft_cfg


def finetune(cfg: RunConfig, peft_cfg, adapter_dir: Optional[str] = None, progress: bool = True,
             keep_engine: bool = False) -> FinetuneResult:
    """Collective: fine-tune on ``qa.task`` with retrieved passages; ``peft_cfg`` None = full fine-tuning.

    With ``keep_engine`` the result carries ``engine`` and ``qa`` for an in-process evaluation.
    """
    from tqdm import tqdm

    from megatron_retro.errors import UserError
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.peft import install_peft_grad_reduction
    from megatron_retro.peft.checkpoint import save_adapter
    from megatron_retro.training.batches import eval_microbatches, step_microbatches
    from megatron_retro.training.checkpointing import read_state, save_checkpoint
    from megatron_retro.training.metrics import MetricsWriter
    from megatron_retro.training.qa_data import QASamples, describe, load_split, prepare_qa

    t_start = time.perf_counter()
    if not cfg.checkpoint.load:
        raise UserError("checkpoint.load: fine-tuning needs a pretrained base checkpoint (--base or checkpoint.load)")
    read_state(cfg.checkpoint.load)  # a missing or incomplete base is refused before any data/retrieval work
    ctx = initialize_parallel(cfg.parallel, seed=cfg.train.seed)
    virtual = getattr(peft_cfg, "num_virtual_tokens", 0)
    qa = prepare_qa(cfg, virtual_tokens=virtual)
    train_split = load_split(cfg, qa, cfg.qa.train_split, cfg.qa.train_examples)
    refusals = 0
    if cfg.qa.refusal_fraction > 0:  # negative-rejection samples: distractor passages in, the refusal string out
        from megatron_retro.training.rag_passages import teach_refusal

        train_split, refusals = teach_refusal(cfg, qa, train_split, cfg.qa.refusal_fraction, cfg.train.seed)
    train = cfg.train
    num_micro = train.num_microbatches(ctx.dp)
    global_batch = num_micro * train.micro_batch_size * ctx.dp
    valid_split = load_split(cfg, qa, "valid", train.eval_iters * train.micro_batch_size * ctx.dp)
    train_ds = QASamples(qa.layout, qa.tokenizer, train_split, shuffle_seed=train.seed)
    valid_ds = QASamples(qa.layout, qa.tokenizer, valid_split)

    chunks, record, peft_cfg = load_model(cfg, qa.vocab_size, cfg.checkpoint.load, peft_cfg=peft_cfg,
                                          tokenizer=qa.tokenizer)
    trainable, total = parameter_counts(chunks)
    engine = make_engine(cfg, chunks)
    if peft_cfg is not None:
        install_peft_grad_reduction(engine)
    method = type(peft_cfg).method if peft_cfg is not None else "none"

    metrics = MetricsWriter(cfg.out_dir, enabled=ctx.is_logging_rank, resume_step=0)
    bar = tqdm(total=train.steps, desc=f"finetune[{cfg.model.arch}/{method}]", unit="step",
               disable=not (progress and ctx.is_logging_rank), dynamic_ncols=True)
    first = last = valid = None
    for step in range(train.steps):
        t0 = time.perf_counter()
        result = engine.train_step(step_microbatches(train_ds, step, global_batch, train.micro_batch_size,
                                                     ctx.dp, ctx.dp_rank))
        elapsed = time.perf_counter() - t0
        first = result.loss if first is None else first
        last = result.loss
        row = {"step": step + 1, "loss": result.loss, "lr": result.lr, "grad_norm": result.grad_norm,
               "tokens_per_s": global_batch * qa.layout.seq_length / elapsed, "step_time_s": elapsed}
        if step + 1 == train.steps or (train.eval_interval and (step + 1) % train.eval_interval == 0):
            valid = engine.evaluate(eval_microbatches(valid_ds, train.eval_iters, train.micro_batch_size,
                                                      ctx.dp, ctx.dp_rank))
            row["valid_loss"] = valid
        metrics.log(row)
        bar.set_postfix(loss=f"{result.loss:.4f}" if result.loss is not None else "-", refresh=False)
        bar.update(1)
    bar.close()
    metrics.close()
    state = {"model": record, "base_checkpoint": cfg.checkpoint.load, "qa_task": cfg.qa.task}
    checkpoint = None
    if peft_cfg is not None:
        adapter_dir = adapter_dir or os.path.join(cfg.out_dir, "adapter")
        save_adapter(adapter_dir, chunks, peft_cfg, model_record=record,
                     extra={"steps": train.steps, "base_checkpoint": cfg.checkpoint.load,
                            "base_fingerprint": read_state(cfg.checkpoint.load).get(FINGERPRINT_FIELD)})
    else:
        adapter_dir = None
        checkpoint = save_checkpoint(cfg.checkpoint_dir, train.steps, engine, state)
    info = {"train": describe(train_split), "valid": describe(valid_split),
            "truncation": qa.layout.truncation.as_dict()}
    if refusals:
        info["train"]["refusal_samples"] = refusals
    if method == "qlora":
        from megatron_retro.peft.qlora import qlora_memory

        info["qlora_memory"] = qlora_memory(chunks, reduce=True).as_dict()
    out = FinetuneResult(steps=train.steps, first_loss=first, last_loss=last, valid_loss=valid,
                         trainable_params=trainable, total_params=total, adapter_dir=adapter_dir,
                         checkpoint=checkpoint, data=info, seconds=time.perf_counter() - t_start)
    if keep_engine:
        out.engine, out.qa = engine, qa
    return out


def merge_adapter_checkpoint(cfg: RunConfig, base: str, adapter: str, out_dir: str) -> str:
    """Collective: base checkpoint + adapter -> merged base checkpoint (at this run's TP/PP).

    The result is an ordinary checkpoint (``checkpoint.load`` it for inference or further
    fine-tuning); LoRA is folded into the base weights shard by shard, without communication.
    GPT or RETRO (``model.arch``).
    """
    from megatron_retro.errors import UserError
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.peft import merge_peft
    from megatron_retro.training.checkpointing import read_state, save_checkpoint

    state = read_state(base)
    vocab = (state.get("model") or {}).get("vocab_size")
    if not vocab:
        raise UserError(f"{base}: checkpoint state names no model.vocab_size")
    initialize_parallel(cfg.parallel, seed=cfg.train.seed)
    chunks, record, _ = load_model(cfg, vocab, base, adapter=adapter)
    merge_peft(chunks)
    for c in chunks:
        for p in c.parameters():
            p.requires_grad_(True)
    engine = make_engine(cfg, chunks)
    return save_checkpoint(out_dir, int(state.get("step", 0)), engine,
                           {"model": record, "merged_adapter": adapter, "base_checkpoint": base})


def export_hf_checkpoint(cfg: RunConfig, base: str, adapter: str, out_dir: str) -> dict:
    """Collective: base checkpoint + LoRA adapter -> HF LlamaForCausalLM + HF peft adapter (rank 0 writes)."""
    import torch.distributed as dist

    from megatron_retro.errors import UserError
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.peft import peft_state_dict
    from megatron_retro.peft.checkpoint import check_adapter, load_adapter
    from megatron_retro.peft.hf_export import check_llama_compatible, export_hf, full_model_state
    from megatron_retro.training.checkpointing import check_compatible, load_checkpoint, read_state
    from megatron_retro.training.pretrain import model_record

    check_llama_compatible(cfg.model)
    state = read_state(base)
    vocab = (state.get("model") or {}).get("vocab_size")
    if not vocab:
        raise UserError(f"{base}: checkpoint state names no model.vocab_size")
    record = model_record(cfg, vocab)
    check_compatible(base, state.get("model", {}), record)  # the stored things first, then the work
    check_adapter(adapter, record, state.get(FINGERPRINT_FIELD), base)
    initialize_parallel(cfg.parallel, seed=cfg.train.seed)
    chunks = build_model(cfg, vocab, precision="fp32", peft_method="lora")
    loaded = load_checkpoint(base, SimpleNamespace(chunks=chunks), record, with_optimizer=False)
    lora_cfg = load_adapter(adapter, chunks, apply=True, model_record=record,
                            base_fingerprint=loaded.state.get(FINGERPRINT_FIELD), base=base)
    if type(lora_cfg).method != "lora":
        raise UserError(f"{adapter}: export-hf exports LoRA adapters, this one is {type(lora_cfg).method!r}")
    base_state, adapter_state = full_model_state(chunks), peft_state_dict(chunks)
    summary = {}
    if not dist.is_initialized() or dist.get_rank() == 0:
        summary = export_hf(out_dir, cfg.model, vocab, base_state, adapter_state, lora_cfg)
    if dist.is_initialized():
        dist.barrier()
    return summary
