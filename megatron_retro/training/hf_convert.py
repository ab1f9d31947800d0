"""HF checkpoints (Llama, Gemma 3; safetensors directories or a Gemma 3 GGUF) <-> our sharded
checkpoint, at any TP/PP (collective: every rank calls).

Import: ``config.json`` -> ModelConfig (refusing what we cannot represent) -> model chunks built
for this rank's TP/PP coordinates -> each rank copies its slices of the HF tensors (read lazily,
so a rank reads only its pipeline stage) -> :func:`save_checkpoint` (step 0).  The result is an
ordinary reshardable checkpoint: ``pretrain``/``finetune`` ``--load`` it at any layout, with the
run config written next to it (``model.yaml``).
Export: any checkpoint -> full tensors (gathered) -> Llama/Gemma3ForCausalLM safetensors + config.json.
Tokenizer: import copies the model's own (``tokenizer.json`` + config, ``tokenizer.model``, or the
one embedded in the GGUF, converted) to ``<out_dir>/tokenizer`` and names it in ``model.yaml``;
export copies it back next to the HF weights.
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


TOKENIZER_DIR = "tokenizer"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json")


def hf_family(model_type: str, where: str) -> SimpleNamespace:
    """The conversion functions of one HF architecture (``config.json`` model_type / our family)."""
    if model_type == "llama":
        from megatron_retro.models import hf_llama as m

        return SimpleNamespace(name="llama", model_config=m.llama_model_config, shapes=m.hf_shapes,
                               ignored=m.HF_IGNORED_SUFFIXES, tensor_for=m.llama_tensor_for,
                               to_hf=m.base_to_llama, check=m.check_llama_compatible,
                               hf_config=lambda cfg, vocab, ids: m.llama_config(cfg, vocab))
    if model_type in ("gemma3_text", "gemma3"):
        from megatron_retro.models import hf_gemma3 as m

        return SimpleNamespace(name="gemma3", model_config=m.gemma3_model_config, shapes=m.hf_shapes,
                               ignored=m.HF_IGNORED_SUFFIXES, tensor_for=m.gemma3_tensor_for,
                               to_hf=m.base_to_gemma3, check=m.check_gemma3_compatible, hf_config=m.gemma3_config)
    raise UserError(f"{where}: model_type={model_type!r}: only 'llama' and 'gemma3_text' checkpoints "
                    f"can be imported")


def _copy_tokenizer(src_dir: str, dst_dir: str) -> list[str]:
    import shutil

    names = [n for n in TOKENIZER_FILES if os.path.isfile(os.path.join(src_dir, n))]
    if names:
        os.makedirs(dst_dir, exist_ok=True)
        for n in names:
            shutil.copyfile(os.path.join(src_dir, n), os.path.join(dst_dir, n))
    return names


def _save_tokenizer(source, gguf: bool, out_dir: str) -> str | None:
    """Rank 0: the model's own tokenizer -> ``<out_dir>/tokenizer``; its load path, or None if it has none."""
    from megatron_retro.data.tokenizer import save_gguf_tokenizer

    dst = os.path.join(out_dir, TOKENIZER_DIR)
    if gguf:
        save_gguf_tokenizer(source.path, dst)
        return dst
    names = _copy_tokenizer(source.directory, dst)
    if "tokenizer.json" in names:
        return dst
    return os.path.join(dst, "tokenizer.model") if "tokenizer.model" in names else None


@torch.no_grad()
def fill_from_hf(chunks: list, hf, model_cfg: ModelConfig, padded_vocab: int, tensor_for=None) -> int:
    """Copy this rank's slice of every parameter from the HF checkpoint; returns elements copied."""
    from megatron_retro.models.global_params import global_shards, local_slice
    from megatron_retro.models.hf_llama import llama_tensor_for
    from megatron_retro.peft.api import global_name

    tensor_for = tensor_for or llama_tensor_for
    copied, cached = 0, ("", None)
    for shard in global_shards(chunks):
        name = global_name(shard)
        if cached[0] != name:  # a fused SwiGLU fc1 comes as two shards of one name
            cached = (name, tensor_for(name, hf.get, model_cfg, padded_vocab))
        full = cached[1]
        if tuple(full.shape) != shard.full_shape:
            raise UserError(f"{hf.directory}: {name} converts to shape {tuple(full.shape)}, "
                            f"the model needs {shard.full_shape}")
        shard.data.copy_(local_slice(full, shard).to(shard.data.dtype))
        copied += shard.data.numel()
    return copied


def _model_yaml(model_cfg: ModelConfig, tokenizer: str | None = None) -> str:
    import yaml

    fields = {k: v for k, v in dataclasses.asdict(model_cfg).items() if v != getattr(ModelConfig(), k)}
    body = {"model": fields}
    note = TOKENIZER_NOTE
    if tokenizer:
        body["data"] = {"tokenizer": os.path.abspath(tokenizer)}
        note = "data.tokenizer is the model's own tokenizer, copied here"
    return ("# Written by `megatron-retro hf import`: the model section of a run config for this checkpoint.\n"
            "# Use it as --config (or `inherit:` it) and add data/train sections; " + note + ".\n"
            + yaml.safe_dump(body, sort_keys=False))


def open_source(hf_dir: str | None = None, gguf: str | None = None):
    """(checkpoint, family) of an HF directory or a GGUF file (exactly one of them)."""
    if bool(hf_dir) == bool(gguf):
        raise UserError("hf import: give exactly one of --hf-dir, --gguf, --package")
    if gguf:
        from megatron_retro.models.gguf_reader import GGUFCheckpoint

        src = GGUFCheckpoint(gguf)
    else:
        from megatron_retro.models.hf_files import HFCheckpoint

        src = HFCheckpoint(hf_dir)
    return src, hf_family(src.config.get("model_type"), src.config_path)


def import_hf(hf_dir: str | None, out_dir: str, parallel: ParallelConfig, seed: int = 1234,
              gguf: str | None = None) -> dict:
    """Collective: HF directory or GGUF -> ``<out_dir>/iter_0000000`` (+ ``model.yaml``, ``tokenizer/``)."""
    from megatron_retro.models.gpt import build_gpt_model, padded_vocab_size
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.checkpointing import save_checkpoint
    from megatron_retro.training.engine import Engine
    from megatron_retro.training.gpt_step import gpt_forward_step
    from megatron_retro.training.pretrain import model_record

    hf, family = open_source(hf_dir, gguf)
    model_cfg = family.model_config(hf.config, hf.config_path)
    vocab = model_cfg.vocab_size
    hf.check(family.shapes(model_cfg, vocab), family.ignored)
    cfg = RunConfig(model=model_cfg, parallel=parallel, train=TrainConfig(steps=1, lr_warmup_steps=0),
                    out_dir=out_dir)
    initialize_parallel(cfg.parallel, seed=seed)
    chunks = build_gpt_model(model_cfg, parallel, vocab_size=vocab, precision="fp32")
    padded = padded_vocab_size(vocab, model_cfg.make_vocab_size_divisible_by, parallel.tp)
    copied = fill_from_hf(chunks, hf, model_cfg, padded, family.tensor_for)
    engine = Engine(cfg, chunks, gpt_forward_step)
    source = os.path.abspath(gguf or hf_dir)
    path = save_checkpoint(out_dir, 0, engine, {"model": model_record(cfg, vocab),
                                                "hf_import": {"source": source, "family": family.name}})
    tokenizer = None
    if _is_rank0():
        tokenizer = _save_tokenizer(hf, bool(gguf), out_dir)
        with open(os.path.join(out_dir, "model.yaml"), "w", encoding="utf-8") as f:
            f.write(_model_yaml(model_cfg, tokenizer))
    _barrier()
    return {"checkpoint": path, "model_yaml": os.path.join(out_dir, "model.yaml"), "vocab_size": vocab,
            "padded_vocab_size": padded, "elements_on_rank0": copied, "family": family.name,
            "tokenizer": tokenizer or TOKENIZER_NOTE}


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
    """Collective: our checkpoint (any TP/PP, read at ``parallel``) -> HF Llama / Gemma 3 directory
    (rank 0 writes; the imported tokenizer, if the checkpoint directory has one, is copied too)."""
    from megatron_retro.models.gpt import build_gpt_model
    from megatron_retro.models.hf_files import write_hf_dir
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.peft.hf_export import full_model_state
    from megatron_retro.training.checkpointing import load_checkpoint, read_state

    path = resolve_checkpoint(load)
    record = read_state(path).get("model") or {}
    vocab = record.get("vocab_size")
    if not vocab:
        raise UserError(f"{path}: checkpoint state names no model.vocab_size")
    model_cfg = model_config_from_record(record, path)
    family = hf_family("gemma3" if model_cfg.family == "gemma3" else "llama", path)
    family.check(model_cfg)
    RunConfig(model=model_cfg, parallel=parallel)  # validates the layout against the model
    initialize_parallel(parallel, seed=seed)
    chunks = build_gpt_model(model_cfg, parallel, vocab_size=vocab, precision="fp32")
    load_checkpoint(path, SimpleNamespace(chunks=chunks), record, with_optimizer=False)
    full = full_model_state(chunks)
    files: list[str] = []
    tokenizer = None
    if _is_rank0():
        tok_dir = os.path.join(os.path.dirname(os.path.abspath(path)), TOKENIZER_DIR)
        ids = _special_ids(tok_dir)
        files = write_hf_dir(out_dir, family.hf_config(model_cfg, vocab, ids), family.to_hf(full, model_cfg, vocab),
                             max_shard_bytes)
        tokenizer = _copy_tokenizer(tok_dir, out_dir) if os.path.isdir(tok_dir) else None
    _barrier()
    return {"hf_dir": out_dir, "files": files, "source": path, "vocab_size": vocab,
            "tokenizer": tokenizer or TOKENIZER_NOTE}


def _special_ids(tok_dir: str) -> dict:
    """bos/eos/pad ids of the tokenizer imported with the checkpoint (for the HF config), or {}."""
    if not os.path.isdir(tok_dir):
        return {}
    from megatron_retro.data.tokenizer import load_tokenizer

    try:
        tok = load_tokenizer(tok_dir if os.path.isfile(os.path.join(tok_dir, "tokenizer.json"))
                             else os.path.join(tok_dir, "tokenizer.model"))
    except UserError:
        return {}
    return {"bos": tok.bos, "eos": tok.eos, "pad": tok.pad}
