"""HF Llama checkpoint <-> our sharded checkpoint, at any TP/PP (collective: every rank calls).

Import: ``config.json`` -> ModelConfig (refusing what we cannot represent) -> model chunks built
for this rank's TP/PP coordinates -> each rank copies its slices of the HF tensors (read lazily,
so a rank reads only its pipeline stage) -> :func:`save_checkpoint` (step 0).  The result is an
ordinary reshardable checkpoint: ``pretrain``/``finetune`` ``--load`` it at any layout, with the
run config written next to it (``model.yaml``).
Export: any checkpoint -> full tensors (gathered) -> LlamaForCausalLM safetensors + config.json.
The tokenizer is not converted either way.
"""
from __future__ import annotations

import dataclasses
import os
from types import SimpleNamespace

import torch
import torch.distributed as dist

from megatron_retro.config import ModelConfig, ParallelConfig, RunConfig, TrainConfig
from megatron_retro.errors import UserError

TOKENIZER_NOTE = ("the tokenizer is not converted: train/evaluate with the HF model's own tokenizer "
                  "(data.tokenizer / a matching indexed dataset) so token ids mean the same")


def _is_rank0() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


@torch.no_grad()
def fill_from_hf(chunks: list, hf, model_cfg: ModelConfig, padded_vocab: int) -> int:
    """Copy this rank's slice of every parameter from the HF checkpoint; returns elements copied."""
    from megatron_retro.models.global_params import global_shards, local_slice
    from megatron_retro.models.hf_llama import llama_tensor_for
    from megatron_retro.peft.api import global_name

    copied, cached = 0, ("", None)
    for shard in global_shards(chunks):
        name = global_name(shard)
        if cached[0] != name:  # a fused SwiGLU fc1 comes as two shards of one name
            cached = (name, llama_tensor_for(name, hf.get, model_cfg, padded_vocab))
        full = cached[1]
        if tuple(full.shape) != shard.full_shape:
            raise UserError(f"{hf.directory}: {name} converts to shape {tuple(full.shape)}, "
                            f"the model needs {shard.full_shape}")
        shard.data.copy_(local_slice(full, shard).to(shard.data.dtype))
        copied += shard.data.numel()
    return copied


def _model_yaml(model_cfg: ModelConfig) -> str:
    import yaml

    fields = {k: v for k, v in dataclasses.asdict(model_cfg).items() if v != getattr(ModelConfig(), k)}
    return ("# Written by `megatron-retro hf import`: the model section of a run config for this checkpoint.\n"
            "# Use it as --config (or `inherit:` it) and add data/train sections; " + TOKENIZER_NOTE + ".\n"
            + yaml.safe_dump({"model": fields}, sort_keys=False))


def import_hf(hf_dir: str, out_dir: str, parallel: ParallelConfig, seed: int = 1234) -> dict:
    """Collective: HF Llama directory -> ``<out_dir>/iter_0000000`` (+ ``<out_dir>/model.yaml``)."""
    from megatron_retro.models.gpt import build_gpt_model, padded_vocab_size
    from megatron_retro.models.hf_files import HFCheckpoint
    from megatron_retro.models.hf_llama import HF_IGNORED_SUFFIXES, hf_shapes, llama_model_config
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.checkpointing import save_checkpoint
    from megatron_retro.training.engine import Engine
    from megatron_retro.training.gpt_step import gpt_forward_step
    from megatron_retro.training.pretrain import model_record

    hf = HFCheckpoint(hf_dir)
    model_cfg = llama_model_config(hf.config, hf.config_path)
    vocab = model_cfg.vocab_size
    hf.check(hf_shapes(model_cfg, vocab), HF_IGNORED_SUFFIXES)
    cfg = RunConfig(model=model_cfg, parallel=parallel, train=TrainConfig(steps=1, lr_warmup_steps=0),
                    out_dir=out_dir)
    initialize_parallel(cfg.parallel, seed=seed)
    chunks = build_gpt_model(model_cfg, parallel, vocab_size=vocab, precision="fp32")
    padded = padded_vocab_size(vocab, model_cfg.make_vocab_size_divisible_by, parallel.tp)
    copied = fill_from_hf(chunks, hf, model_cfg, padded)
    engine = Engine(cfg, chunks, gpt_forward_step)
    path = save_checkpoint(out_dir, 0, engine, {"model": model_record(cfg, vocab),
                                                "hf_import": {"source": os.path.abspath(hf_dir)}})
    if _is_rank0():
        with open(os.path.join(out_dir, "model.yaml"), "w", encoding="utf-8") as f:
            f.write(_model_yaml(model_cfg))
    _barrier()
    return {"checkpoint": path, "model_yaml": os.path.join(out_dir, "model.yaml"), "vocab_size": vocab,
            "padded_vocab_size": padded, "elements_on_rank0": copied, "tokenizer": TOKENIZER_NOTE}


def resolve_checkpoint(path: str) -> str:
    """An ``iter_*`` directory, or a checkpoints directory (its newest complete checkpoint)."""
    from megatron_retro.training.checkpointing import STATE_FILE, newest_checkpoint

    if os.path.isfile(os.path.join(path, STATE_FILE)):
        return path
    newest = newest_checkpoint(path)
    if newest is None:
        raise UserError(f"{path}: neither a checkpoint (no {STATE_FILE}) nor a directory of complete checkpoints")
    return newest


def model_config_from_record(record: dict, where: str) -> ModelConfig:
    """The ModelConfig saved in a checkpoint's state.json (``model_record``)."""
    names = {f.name for f in dataclasses.fields(ModelConfig)}
    try:
        return ModelConfig(**{k: v for k, v in record.items() if k in names})
    except Exception as e:
        raise UserError(f"{where}: state.json holds an unusable model record: {e}") from None


def export_hf(load: str, out_dir: str, parallel: ParallelConfig, max_shard_bytes: int = 5 * 1024 ** 3,
              seed: int = 1234) -> dict:
    """Collective: our checkpoint (any TP/PP, read at ``parallel``) -> HF Llama directory (rank 0 writes)."""
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.models.hf_files import write_hf_dir
    from megatron_retro.models.hf_llama import base_to_llama, check_llama_compatible, llama_config
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.peft.hf_export import full_model_state
    from megatron_retro.training.checkpointing import load_checkpoint, read_state

    path = resolve_checkpoint(load)
    record = read_state(path).get("model") or {}
    vocab = record.get("vocab_size")
    if not vocab:
        raise UserError(f"{path}: checkpoint state names no model.vocab_size")
    model_cfg = model_config_from_record(record, path)
    check_llama_compatible(model_cfg)
    RunConfig(model=model_cfg, parallel=parallel)  # validates the layout against the model
    initialize_parallel(parallel, seed=seed)
    chunks = build_gpt_model(model_cfg, parallel, vocab_size=vocab, precision="fp32")
    load_checkpoint(path, SimpleNamespace(chunks=chunks), record, with_optimizer=False)
    full = full_model_state(chunks)
    files: list[str] = []
    if _is_rank0():
        files = write_hf_dir(out_dir, llama_config(model_cfg, vocab), base_to_llama(full, model_cfg, vocab),
                             max_shard_bytes)
    _barrier()
    return {"hf_dir": out_dir, "files": files, "source": path, "vocab_size": vocab, "tokenizer": TOKENIZER_NOTE}
