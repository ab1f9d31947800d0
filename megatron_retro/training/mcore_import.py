"""megatron-core 0.15 RETRO ``torch_dist`` checkpoint -> our reshardable checkpoint (collective).

``megatron-retro retro import-mcore --load DIR --out OUT [--tp T] [--config YAML]``:

1. DIR is a Megatron-LM save directory (``latest_checkpointed_iteration.txt`` names the
   ``iter_NNNNNNN`` / ``release`` inside) or one checkpoint directory; it must be megatron's
   ``torch_dist`` format (``metadata.json``) with DCP metadata that passes our allow-list unpickler.
2. The architecture comes from ``--config`` (its model / retro sections) or else from the
   Megatron-LM ``args`` in ``common.pt`` (read with ``weights_only=True``, ``argparse.Namespace``
   allowed), always as ``retro.megatron_compat: true``.
3. The model is built at this job's TP size (world size = T); every tensor it needs is checked
   against the checkpoint's metadata (key present, same global shape) before a byte is read, so a
   checkpoint of another model is refused with one line naming the first mismatching tensor.
4. The weights load through dist_checkpointing (any saved TP layout; ``common.pt`` is not
   unpickled by the loader) and are saved with :func:`save_checkpoint` as step 0, with
   ``model.yaml`` next to it; ``state.json`` records where they came from.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
from typing import Optional

import torch
import torch.distributed as dist

from megatron_retro.config import ModelConfig, ParallelConfig, RetroConfig, RunConfig, TrainConfig
from megatron_retro.errors import UserError

TRACKER = "latest_checkpointed_iteration.txt"


def resolve_mcore_checkpoint(path: str) -> tuple[str, Optional[int]]:
    """(checkpoint directory, iteration or None) of a Megatron-LM save dir or a checkpoint dir."""
    tracker = os.path.join(path, TRACKER)
    iteration = None
    if os.path.isfile(tracker):
        text = open(tracker, encoding="utf-8").read().strip()
        name = "release" if text == "release" else None
        if name is None:
            try:
                iteration = int(text)
            except ValueError:
                raise UserError(f"{tracker}: expected an iteration number or 'release', got {text[:40]!r}") from None
            name = f"iter_{iteration:07d}"
        path = os.path.join(path, name)
    meta = os.path.join(path, "metadata.json")
    if not os.path.isfile(meta):
        raise UserError(f"{path}: not a megatron dist checkpoint (no metadata.json; a legacy "
                        "mp_rank_* checkpoint must be converted to torch_dist first)")
    try:
        backend = json.load(open(meta, encoding="utf-8")).get("sharded_backend")
    except (json.JSONDecodeError, AttributeError) as e:
        raise UserError(f"{meta}: corrupt ({e})") from None
    if backend != "torch_dist":
        raise UserError(f"{meta}: sharded_backend={backend!r}; only 'torch_dist' checkpoints are read")
    return path, iteration


def megatron_args(ckpt: str) -> Optional[dict]:
    """Megatron-LM's saved ``args`` (a dict), or None when ``common.pt`` has none we can read safely."""
    common = os.path.join(ckpt, "common.pt")
    if not os.path.isfile(common):
        return None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            state = torch.load(common, map_location="cpu", weights_only=True)
    except Exception:
        return None  # e.g. enums in the args: not unpickled; --config must say what the model is
    args = state.get("args") if isinstance(state, dict) else None
    return vars(args) if isinstance(args, argparse.Namespace) else None


def configs_from_args(args: dict, where: str) -> tuple[ModelConfig, RetroConfig]:
    """Megatron-LM argument names -> our model / retro sections (megatron_compat)."""
    from megatron_retro.config import ConfigError

    def need(name):
        if args.get(name) is None:
            raise UserError(f"{where}: the saved args have no {name}; pass --config with the model and retro sections")
        return args[name]

    activation = "swiglu" if args.get("swiglu") else "squared_relu" if args.get("squared_relu") else "gelu"
    position = need("position_embedding_type")
    groups = args.get("num_query_groups") if args.get("group_query_attention") else None
    chunk = need("retro_chunk_length")
    try:
        model = ModelConfig(
            arch="retro", num_layers=need("num_layers"), hidden_size=need("hidden_size"),
            num_attention_heads=need("num_attention_heads"), num_query_groups=groups,
            ffn_hidden_size=args.get("ffn_hidden_size"), kv_channels=args.get("kv_channels"),
            vocab_size=need("padded_vocab_size"), make_vocab_size_divisible_by=1,
            seq_length=need("max_position_embeddings") if position == "learned_absolute" else need("seq_length"),
            activation=activation, normalization=args.get("normalization", "LayerNorm"),
            norm_epsilon=args.get("norm_epsilon", 1e-5), position_embedding=position,
            rotary_percent=args.get("rotary_percent", 1.0), rotary_base=int(args.get("rotary_base", 10000)),
            untie_embeddings=bool(args.get("untie_embeddings_and_output_weights", False)),
            add_bias_linear=bool(args.get("add_bias_linear", True)),
            hidden_dropout=args.get("hidden_dropout", 0.0), attention_dropout=args.get("attention_dropout", 0.0),
            attention_backend="unfused")
        retro = RetroConfig(
            chunk_length=chunk, num_neighbours=need("retro_num_neighbors"),
            neighbour_length=chunk * need("retro_num_retrieved_chunks"),
            encoder_num_layers=need("retro_encoder_num_layers"),
            encoder_hidden_dropout=args.get("retro_encoder_hidden_dropout", 0.1),
            encoder_attention_dropout=args.get("retro_encoder_attention_dropout", 0.1), megatron_compat=True)
    except (ConfigError, TypeError, ValueError) as e:
        raise UserError(f"{where}: the saved args do not describe a model we can build: {e}") from None
    return model, retro


def check_against_metadata(ckpt: str, sharded: dict) -> None:
    """Every tensor the model needs is in the checkpoint with the same global shape (one-line error)."""
    from megatron.core.dist_checkpointing.mapping import ShardedTensor, ShardedTensorFactory
    from megatron.core.dist_checkpointing.utils import extract_matching_values
    from torch.distributed.checkpoint import FileSystemReader

    saved = FileSystemReader(ckpt).read_metadata().state_dict_metadata
    encoder = [k for k in saved if ".cross_attention.encoder." in k]
    if not encoder:
        raise UserError(f"{ckpt}: not a megatron-core RETRO checkpoint (no decoder.layers.*.cross_attention.encoder.*)")
    tensors, _ = extract_matching_values(sharded, lambda v: isinstance(v, ShardedTensor))
    for name, ten in sorted(_flatten(tensors)):
        meta = saved.get(ten.key)
        if meta is None:
            raise UserError(f"{ckpt}: checkpoint does not match the model: no tensor {ten.key} "
                            f"(shape {tuple(ten.global_shape)} expected)")
        if tuple(meta.size) != tuple(ten.global_shape):
            raise UserError(f"{ckpt}: checkpoint does not match the model: {ten.key} has shape "
                            f"{tuple(meta.size)}, the model needs {tuple(ten.global_shape)}")
    # factories (e.g. a SwiGLU fc1 split into its two halves) are checked when dist_checkpointing loads them
    factories, _ = extract_matching_values(sharded, lambda v: isinstance(v, ShardedTensorFactory))
    needed = {ten.key for _, ten in _flatten(tensors)} | {f.key for _, f in _flatten(factories)}
    extra = sorted(k for k in saved if "_extra_state" not in k and k not in needed)
    if extra:
        raise UserError(f"{ckpt}: checkpoint does not match the model: it has {len(extra)} tensor(s) the model "
                        f"lacks, e.g. {extra[0]}")


def _flatten(d, prefix=""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _flatten(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


class _NoCommonState:
    """A dist_checkpointing common-load strategy that reads nothing from ``common.pt``."""

    def load_common(self, checkpoint_dir):
        return {}

    def load_sharded_objects(self, sharded_objects_state_dict, checkpoint_dir):
        return {}

    def check_backend_compatibility(self, loaded_version):
        pass

    def check_version_compatibility(self, loaded_version):
        pass


def load_mcore_weights(chunks: list, ckpt: str) -> None:
    """Collective: fill this rank's compat RETRO chunks from a megatron-core 0.15 RETRO checkpoint."""
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.strategies.base import LoadCommonStrategy

    from megatron_retro.training.checkpointing import verify_metadata_pickle, without_sharded_objects

    if len(chunks) != 1:
        raise UserError("retro import-mcore: pipeline parallelism is not supported (megatron-core 0.15 RETRO is TP only)")
    module = getattr(chunks[0], "module", chunks[0])
    verify_metadata_pickle(os.path.join(ckpt, ".metadata"))
    sharded = without_sharded_objects(module.sharded_state_dict())
    check_against_metadata(ckpt, sharded)
    common = type("NoCommonState", (_NoCommonState, LoadCommonStrategy), {})()
    try:
        loaded = dist_checkpointing.load(sharded, ckpt, common_strategy=common)
    except Exception as e:
        raise UserError(f"{ckpt}: cannot load: {type(e).__name__}: {str(e).splitlines()[0][:300]}") from None
    missing, unexpected = module.load_state_dict(loaded, strict=False)
    missing = [k for k in missing if not k.endswith("_extra_state")]
    if missing or unexpected:
        raise UserError(f"{ckpt}: checkpoint does not match the model: missing {missing[:3]}, unexpected {unexpected[:3]}")


def _model_yaml(model: ModelConfig, retro: RetroConfig, source: str) -> str:
    import yaml

    def changed(obj, default):
        return {k: v for k, v in dataclasses.asdict(obj).items() if v != getattr(default, k)}

    return (f"# Written by `megatron-retro retro import-mcore` from {source}: the model and retro sections\n"
            "# of a run config for this checkpoint (megatron-core 0.15 RETRO architecture).\n"
            + yaml.safe_dump({"model": changed(model, ModelConfig()), "retro": changed(retro, RetroConfig())},
                             sort_keys=False))


def import_mcore(load: str, out_dir: str, parallel: ParallelConfig, config_path: Optional[str] = None,
                 seed: int = 1234) -> dict:
    """Collective: megatron-core RETRO checkpoint -> ``<out_dir>/iter_0000000`` (+ ``model.yaml``)."""
    from megatron_retro.config import load_config
    from megatron_retro.models.retro import build_retro_model
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.checkpointing import save_checkpoint
    from megatron_retro.training.pretrain import model_record
    from megatron_retro.training.retro_step import RetroEngine, retro_forward_step

    if parallel.pp != 1:
        raise UserError(f"--pp {parallel.pp}: retro.megatron_compat=true runs with tensor parallelism only")
    ckpt, iteration = resolve_mcore_checkpoint(load)
    if config_path:
        given = load_config(config_path)
        model, retro = given.model, dataclasses.replace(given.retro, megatron_compat=True)
        if model.arch != "retro":
            raise UserError(f"{config_path}: model.arch={model.arch!r}; a RETRO checkpoint needs model.arch=retro")
    else:
        args = megatron_args(ckpt)
        if args is None:
            raise UserError(f"{ckpt}/common.pt: no Megatron-LM args readable without unpickling code; "
                            "pass --config with the model and retro sections")
        model, retro = configs_from_args(args, f"{ckpt}/common.pt")
    cfg = RunConfig(model=model, retro=retro, parallel=parallel,
                    train=TrainConfig(steps=1, lr_warmup_steps=0), out_dir=out_dir)
    initialize_parallel(cfg.parallel, seed=seed)
    vocab = model.vocab_size
    if vocab is None:
        raise UserError(f"{config_path}: model.vocab_size must be set (the checkpoint's embedding rows)")
    chunks = build_retro_model(model, retro, parallel, vocab_size=vocab, precision="fp32")
    load_mcore_weights(chunks, ckpt)
    engine = RetroEngine(cfg, chunks, retro_forward_step)
    source = {"source": os.path.abspath(ckpt), "iteration": iteration, "format": "megatron-core 0.15 RETRO torch_dist"}
    path = save_checkpoint(out_dir, 0, engine, {"model": model_record(cfg, vocab), "mcore_import": source})
    if not dist.is_initialized() or dist.get_rank() == 0:
        with open(os.path.join(out_dir, "model.yaml"), "w", encoding="utf-8") as f:
            f.write(_model_yaml(model, retro, os.path.abspath(ckpt)))
    if dist.is_initialized():
        dist.barrier()
    return {"checkpoint": path, "model_yaml": os.path.join(out_dir, "model.yaml"), "source": source["source"],
            "tp": parallel.tp}
