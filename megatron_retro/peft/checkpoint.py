"""Adapter-only checkpoints: ``adapter_model.safetensors`` (full, unsharded fp32 tensors keyed by
global name) + ``adapter_config.json`` (method, its options, base-model record, source layout).

Because tensors are stored whole under layout-independent names, an adapter saved at one TP/PP
layout loads at any other: each rank reads the file and copies the slices it owns.  No pickle.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import torch.distributed as dist

from megatron_retro.errors import RuntimeFailure, UserError, is_disk_full, os_error_line
from megatron_retro.peft.api import config_from_dict, config_to_dict, load_peft_state_dict, peft_state_dict

WEIGHTS, CONFIG = "adapter_model.safetensors", "adapter_config.json"
FORMAT_VERSION = 1


def _rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def _barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def save_adapter(directory: str, chunks: list, peft_cfg, model_record: Optional[dict] = None,
                 extra: Optional[dict] = None) -> str:
    """Collective: write the adapter of ``chunks`` to ``directory`` (rank 0 writes, atomically)."""
    from megatron.core import parallel_state
    from safetensors.torch import save_file

    state = peft_state_dict(chunks)
    if _rank() == 0:
        os.makedirs(directory, exist_ok=True)
        layout = {"tp": parallel_state.get_tensor_model_parallel_world_size(),
                  "pp": parallel_state.get_pipeline_model_parallel_world_size()}
        meta = {"format_version": FORMAT_VERSION, "peft": config_to_dict(peft_cfg), "model": model_record or {},
                "saved_layout": layout, "tensors": len(state), **(extra or {})}
        _write_both(directory, state, meta, save_file)
    _barrier()
    return directory


def _write_both(directory: str, state: dict, meta: dict, save_file) -> None:
    """Write weights and config to temporary files, then rename both: a failure (a full disk) leaves
    the previous adapter as it was and no temporary file, and says so in one line."""
    tmps = {name: os.path.join(directory, name + ".tmp") for name in (WEIGHTS, CONFIG)}
    try:
        save_file({k: v.contiguous() for k, v in state.items()}, tmps[WEIGHTS], metadata={"format": "pt"})
        with open(tmps[CONFIG], "w", encoding="utf-8") as f:
            json.dump(meta, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
    except BaseException as e:
        for tmp in tmps.values():
            if os.path.exists(tmp):
                os.remove(tmp)
        if is_disk_full(e):
            raise RuntimeFailure(f"{directory}: cannot save adapter: no space left on device") from e
        if isinstance(e, OSError):
            raise RuntimeFailure(f"{directory}: cannot save adapter: {os_error_line(e)}") from e
        raise
    os.replace(tmps[WEIGHTS], os.path.join(directory, WEIGHTS))
    os.replace(tmps[CONFIG], os.path.join(directory, CONFIG))


def read_adapter_config(directory: str) -> dict:
    path = os.path.join(directory, CONFIG)
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise UserError(f"{directory}: not an adapter checkpoint (no {CONFIG})") from None
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: corrupt adapter config ({e.msg})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path}: format_version={meta.get('format_version')!r}, expected {FORMAT_VERSION}")
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
    for key in ("num_layers", "hidden_size", "num_attention_heads", "num_query_groups", "ffn_hidden_size",
                "vocab_size"):
        if model_record and key in saved and key in model_record and saved[key] != model_record[key]:
            raise UserError(f"{directory}: adapter was trained for model.{key}={saved[key]!r}, "
                            f"this base has {model_record[key]!r}")


def load_adapter(directory: str, chunks: list, apply: bool = True, model_record: Optional[dict] = None,
                 base_fingerprint: Optional[str] = None, base: Optional[str] = None):
    """Collective: (apply the saved method to ``chunks`` and) load the adapter; returns its config.
    ``base_fingerprint``/``base``: the weights fingerprint and path of the base checkpoint loaded."""
    from megatron_retro.peft.api import apply_peft

    meta = read_adapter_config(directory)
    check_base(directory, meta, model_record, base_fingerprint, base)
    peft_cfg = config_from_dict(meta["peft"], where=os.path.join(directory, CONFIG))
    if apply:
        apply_peft(chunks, peft_cfg)
    load_peft_state_dict(chunks, read_adapter_tensors(directory), source=directory)
    return peft_cfg
