"""Sharded, atomically written, resumable and reshardable checkpoints.

Layout of ``<dir>``::

    iter_0000010/            a complete checkpoint (renamed from iter_0000010.tmp once written)
      (megatron dist_checkpointing files: model chunks + optimizer, any TP/PP layout)
      state.json             step, consumed samples, LR-scheduler state, model config (no pickle)
      rng/rank00003.safetensors   per-rank RNG states (restored when the layout is unchanged)
    latest                   name of the newest complete checkpoint (a hint; verified on load)

A checkpoint directory is complete iff it has no ``.tmp`` suffix and holds ``state.json``;
``state.json`` is written last, inside the temporary directory, before the atomic rename.  A run
killed at any moment therefore leaves the previous complete checkpoint as the newest one.

Fault injection for tests: with ``MEGATRON_RETRO_FAULT_KILL_IN_SAVE=<step>`` in the environment
the process SIGKILLs its process group (as a job scheduler would: the checkpoint writer helper
processes die too) in the middle of writing that step's checkpoint (after the shards, before
``state.json`` and the rename), the worst moment for a crash.

Nothing executable is unpickled: dist_checkpointing's ``.metadata`` is a pickle of torch DCP
dataclasses, so it is first read with an allow-list unpickler (:func:`verify_metadata_pickle`);
``common.pt`` is read by megatron with ``weights_only=True``; our own files are JSON / safetensors.
"""
from __future__ import annotations

import io
import json
import os
import pickle
import re
import shutil
import signal
from dataclasses import dataclass
from typing import Optional

import torch
import torch.distributed as dist

from megatron_retro.errors import UserError
from megatron_retro.io_atomic import write_text_atomic
from megatron_retro.parallel.checkpoint_io import barrier, failure_text, first_mismatch, rank, read_json_record, saving
from megatron_retro.training.fingerprint import FIELD as FINGERPRINT_FIELD
from megatron_retro.training.fingerprint import weights_fingerprint

STATE_FILE = "state.json"
_ITER_RE = re.compile(r"^iter_(\d{7})$")
# Model-config fields that must match for weights to load.
ARCH_FIELDS = ("arch", "num_layers", "hidden_size", "num_attention_heads", "num_query_groups",
               "ffn_hidden_size", "kv_channels", "activation", "normalization", "position_embedding",
               "untie_embeddings", "add_bias_linear", "vocab_size", "retro")


@dataclass
class LoadedState:
    step: int
    path: str
    state: dict


def checkpoint_name(step: int) -> str:
    return f"iter_{step:07d}"


def complete_checkpoints(directory: str) -> list[tuple[int, str]]:
    """(step, path) of every complete checkpoint under ``directory``, oldest first."""
    if not os.path.isdir(directory):
        return []
    found = []
    for name in os.listdir(directory):
        match = _ITER_RE.match(name)
        path = os.path.join(directory, name)
        if match and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(match.group(1)), path))
    return sorted(found)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ------------------------------------------------------------------------------------------
# Pickle safety

_ALLOWED_PICKLE_PREFIXES = ("torch.distributed.checkpoint.",)
_ALLOWED_PICKLE_GLOBALS = {
    ("collections", "OrderedDict"), ("torch", "Size"), ("torch", "device"), ("torch", "dtype"),
    ("torch.serialization", "_get_layout"),
    # megatron-core 0.15's DCP metadata classes (empty placeholder classes in 0.16.1): retro import-mcore
    ("megatron.core.dist_checkpointing.strategies.torch", "MCoreMetadata"),
    ("megatron.core.dist_checkpointing.strategies.torch", "MCoreSavePlan"),
    *(("torch", dt) for dt in ("float64", "float32", "float16", "bfloat16", "int64", "int32", "int16",
                               "int8", "uint8", "bool")),
    *(("builtins", b) for b in ("set", "frozenset", "dict", "list", "tuple", "slice", "int", "float",
                                "str", "bytes", "bool", "complex")),
}


class _ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a global outside the allow-list."""


class _AllowListUnpickler(pickle.Unpickler):
    """Reconstructs only DCP metadata dataclasses and plain torch value types; refuses the rest."""

    def find_class(self, module: str, name: str):
        if (module, name) in _ALLOWED_PICKLE_GLOBALS or module.startswith(_ALLOWED_PICKLE_PREFIXES):
            return super().find_class(module, name)
        raise _ForbiddenGlobal(f"{module}.{name}")


def verify_metadata_pickle(path: str) -> None:
    """Refuse a ``.metadata`` pickle that references anything but DCP metadata classes."""
    try:
        with open(path, "rb") as f:
            _AllowListUnpickler(io.BytesIO(f.read())).load()
    except _ForbiddenGlobal as e:
        raise UserError(f"{path}: refusing to load: the pickle references {e} "
                        "(only torch.distributed.checkpoint metadata is allowed)") from None
    except Exception as e:  # truncated / corrupt
        raise UserError(f"{path}: corrupt checkpoint metadata ({type(e).__name__}: {e})") from None


# ------------------------------------------------------------------------------------------

def without_sharded_objects(sd: dict) -> dict:
    """Drop ShardedObjects (modules' ``_extra_state``): dist_checkpointing stores them as pickles and
    unpickles them with weights_only=False.  The local spec keeps nothing in them."""
    from megatron.core.dist_checkpointing.mapping import ShardedObject

    return {k: v for k, v in sd.items() if not isinstance(v, ShardedObject)}


def _sharded_state(engine, is_loading: bool, with_optimizer: bool) -> dict:
    sd = {}
    for i, chunk in enumerate(engine.chunks):
        module = getattr(chunk, "module", chunk)
        sd[f"model{i}"] = without_sharded_objects(module.sharded_state_dict())
    if with_optimizer:
        model_sd = {k: v for k, v in sd.items()}
        sd["optimizer"] = engine.optimizer.sharded_state_dict(model_sd, is_loading=is_loading)
    return sd


def _rng_state() -> dict[str, torch.Tensor]:
    from megatron.core import tensor_parallel

    states = {"torch": torch.get_rng_state()}
    for name, state in tensor_parallel.get_cuda_rng_tracker().get_states().items():
        states[f"tracker.{name}"] = state
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state()
    return states


def save_checkpoint(directory: str, step: int, engine, state: dict, keep_last: int = 2) -> str:
    """Collective: every rank calls it.  Returns the path of the complete checkpoint.

    A failure (full disk, unwritable directory; torch raises a BaseException for these) removes the
    temporary directory, leaves the previous checkpoints and ``latest`` untouched, and raises one
    :class:`RuntimeFailure` line naming the directory and the cause."""
    final = os.path.join(directory, checkpoint_name(step))
    tmp = final + ".tmp"
    with saving(directory, f"checkpoint {checkpoint_name(step)}", lambda: shutil.rmtree(tmp, ignore_errors=True)):
        return _save(directory, step, engine, state, keep_last, final, tmp)


def _save(directory: str, step: int, engine, state: dict, keep_last: int, final: str, tmp: str) -> str:
    from megatron.core import dist_checkpointing
    from safetensors.torch import save_file

    if rank() == 0:
        os.makedirs(directory, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)  # left by a killed save
        os.makedirs(tmp)
    barrier()
    dist_checkpointing.save(_sharded_state(engine, is_loading=False, with_optimizer=True), tmp)
    os.makedirs(os.path.join(tmp, "rng"), exist_ok=True)
    if os.environ.get("MEGATRON_RETRO_FAULT_KILL_IN_SAVE") == str(step):
        os.killpg(os.getpgid(0), signal.SIGKILL)
    save_file({k: v.contiguous() for k, v in _rng_state().items()},
              os.path.join(tmp, "rng", f"rank{rank():05d}.safetensors"))
    fingerprint = weights_fingerprint(engine.chunks)  # collective
    barrier()
    if rank() == 0:
        full_state = dict(state, step=step, world_size=dist.get_world_size() if dist.is_initialized() else 1,
                          scheduler=engine.scheduler.state_dict(), **{FINGERPRINT_FIELD: fingerprint})
        write_text_atomic(os.path.join(tmp, STATE_FILE), json.dumps(full_state, indent=1, sort_keys=True))
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(directory)
        write_text_atomic(os.path.join(directory, "latest"), checkpoint_name(step) + "\n")
        for _, old in complete_checkpoints(directory)[:-keep_last]:
            shutil.rmtree(old, ignore_errors=True)
    barrier()
    return final


def read_state(path: str) -> dict:
    return read_json_record(path, STATE_FILE, "a complete checkpoint", "checkpoint state")


def check_compatible(path: str, saved_model: dict, model_cfg: dict) -> None:
    """Refuse weights saved for another architecture, naming the first differing field."""
    name = first_mismatch(saved_model, model_cfg, ARCH_FIELDS)
    if name:
        raise UserError(f"{path}: checkpoint is for another model: model.{name}={saved_model.get(name)!r} "
                        f"there, {model_cfg.get(name)!r} in this run")


def load_checkpoint(path: str, engine, model_cfg: dict, with_optimizer: bool = True) -> LoadedState:
    """Collective: load weights (and optimizer / scheduler / RNG) from ``path`` at any TP/PP layout."""
    from megatron.core import dist_checkpointing

    state = read_state(path)
    check_compatible(path, state.get("model", {}), model_cfg)
    metadata = os.path.join(path, ".metadata")
    if not os.path.isfile(metadata):
        raise UserError(f"{path}: corrupt checkpoint (missing .metadata)")
    verify_metadata_pickle(metadata)
    sharded = _sharded_state(engine, is_loading=True, with_optimizer=with_optimizer)
    try:
        loaded = dist_checkpointing.load(sharded, path)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # CheckpointException (truncated shard) derives from BaseException
        raise UserError(f"{path}: cannot load checkpoint: {failure_text(e, loading=True)}") from None
    for i, chunk in enumerate(engine.chunks):
        module = getattr(chunk, "module", chunk)
        missing, unexpected = module.load_state_dict(loaded[f"model{i}"], strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        if missing or unexpected:
            raise UserError(f"{path}: checkpoint does not match the model: missing {missing[:3]}, "
                            f"unexpected {unexpected[:3]}")
    if with_optimizer:
        with torch.no_grad():
            engine.optimizer.load_state_dict(loaded["optimizer"])
        engine.scheduler.load_state_dict(state["scheduler"])
        _restore_rng(path, state)
    return LoadedState(step=int(state["step"]), path=path, state=state)


def _restore_rng(path: str, state: dict) -> None:
    from megatron.core import tensor_parallel
    from safetensors.torch import load_file

    world = dist.get_world_size() if dist.is_initialized() else 1
    rng_file = os.path.join(path, "rng", f"rank{rank():05d}.safetensors")
    if state.get("world_size") != world or not os.path.isfile(rng_file):
        return  # another layout: keep the fresh seeding of this run
    states = load_file(rng_file)
    torch.set_rng_state(states.pop("torch"))
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state(states.pop("cuda"))
    tracker = {k[len("tracker."):]: v for k, v in states.items() if k.startswith("tracker.")}
    if tracker:
        tensor_parallel.get_cuda_rng_tracker().set_states(tracker)


def newest_checkpoint(directory: str) -> Optional[str]:
    found = complete_checkpoints(directory)
    return found[-1][1] if found else None
