"""Adapter-only checkpoints: ``adapter_model.safetensors`` (full, unsharded fp32 tensors keyed by
global name) + ``adapter_config.json`` (method, its options, base-model record, source layout).

Written and read through the project's one checkpoint file layer (``parallel/checkpoint_io.py``,
also under ``training/checkpointing.py``): rank 0 writes both files beside their names and renames
them in; a failure is one line and leaves the previous adapter; a missing or corrupt config is
refused naming the file.  ``check_adapter`` / ``check_base`` compare the adapter's record with the consuming model
(and base weights) and is meant to run before any weights are built or loaded.

Because tensors are stored whole under layout-independent names, an adapter saved at one TP/PP
layout loads at any other: each rank reads the file and copies the slices it owns.  No pickle.
"""
from __future__ import annotations

import json
import os
from typing import Optional

from megatron_retro.errors import UserError
from megatron_retro.parallel.checkpoint_io import barrier, first_mismatch, rank, read_json_record, write_files_atomic
from megatron_retro.peft.api import config_from_dict, config_to_dict, load_peft_state_dict, peft_state_dict

WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"
FORMAT_VERSION = 1
# Model fields an adapter's tensor shapes depend on (checked against the consuming model first).
SHAPE_FIELDS = ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "ffn_hidden_size",
                "vocab_size")


def save_adapter(directory: str, chunks: list, peft_cfg, model_record: Optional[dict] = None,
                 extra: Optional[dict] = None) -> str:
    """Collective: write the adapter of ``chunks`` to ``directory`` (rank 0 writes, atomically)."""
    from megatron.core import parallel_state
    from safetensors.torch import save_file

    state = peft_state_dict(chunks)
    if rank() == 0:
        os.makedirs(directory, exist_ok=True)
        layout = {"tp": parallel_state.get_tensor_model_parallel_world_size(),
                  "pp": parallel_state.get_pipeline_model_parallel_world_size()}
        meta = {"format_version": FORMAT_VERSION, "peft": config_to_dict(peft_cfg), "model": model_record or {},
                "saved_layout": layout, "tensors": len(state), **(extra or {})}
        write_files_atomic(directory, {
            WEIGHTS: lambda tmp: save_file({k: v.contiguous() for k, v in state.items()}, tmp, metadata={"format": "pt"}),
            CONFIG: json.dumps(meta, indent=1, sort_keys=True)}, "adapter")
    barrier()
    return directory


def read_adapter_config(directory: str) -> dict:
    meta = read_json_record(directory, CONFIG, "an adapter checkpoint", "adapter config")
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{os.path.join(directory, CONFIG)}: format_version={meta.get('format_version')!r}, "
                        f"expected {FORMAT_VERSION}")
    return meta


def adapter_peft_config(directory: str):
    return config_from_dict(read_adapter_config(directory)["peft"], where=os.path.join(directory, CONFIG))


def read_adapter_tensors(directory: str) -> dict:
    from safetensors.torch import load_file

    path = os.path.join(directory, WEIGHTS)
    if not os.path.isfile(path):
        raise UserError(f"{directory}: adapter checkpoint has no {WEIGHTS}")
    return load_file(path)


def check_base(directory: str, meta: dict, model_record: Optional[dict], base_fingerprint: Optional[str] = None,
               base: Optional[str] = None) -> None:
    """Refuse an adapter trained for another model shape, or on another base checkpoint: the adapter
    records its base's weights fingerprint (``base_fingerprint``); both sides are named."""
    trained_on = meta.get("base_fingerprint")
    if trained_on and base_fingerprint and trained_on != base_fingerprint:
        raise UserError(f"{directory}: adapter was trained on base {meta.get('base_checkpoint', '?')} (weights "
                        f"{trained_on[:19]}), not on {base or 'this base'} (weights {base_fingerprint[:19]}): "
                        "same shapes, other weights")
    saved = meta.get("model") or {}
    key = first_mismatch(saved, model_record, SHAPE_FIELDS) if model_record else None
    if key:
        raise UserError(f"{directory}: adapter was trained for model.{key}={saved[key]!r}, "
                        f"this base has {model_record.get(key)!r}")


def check_adapter(directory: str, model_record: Optional[dict], base_fingerprint: Optional[str] = None,
                  base: Optional[str] = None) -> dict:
    """Read the adapter's record and refuse it for this model / base (before any weights are built);
    returns the record."""
    meta = read_adapter_config(directory)
    check_base(directory, meta, model_record, base_fingerprint, base)
    return meta


def load_adapter(directory: str, chunks: list, apply: bool = True, model_record: Optional[dict] = None,
                 base_fingerprint: Optional[str] = None, base: Optional[str] = None):
    """Collective: (apply the saved method to ``chunks`` and) load the adapter; returns its config.
    ``base_fingerprint``/``base``: the weights fingerprint and path of the base checkpoint loaded."""
    from megatron_retro.peft.api import apply_peft

    meta = check_adapter(directory, model_record, base_fingerprint, base)
    peft_cfg = config_from_dict(meta["peft"], where=os.path.join(directory, CONFIG))
    if apply:
        apply_peft(chunks, peft_cfg)
    load_peft_state_dict(chunks, read_adapter_tensors(directory), source=directory)
    return peft_cfg
