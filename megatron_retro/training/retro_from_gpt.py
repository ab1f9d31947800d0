"""RETRO from a GPT checkpoint (InstructRetro-style continued pretraining).

The RETRO decoder *is* the GPT (same parameter names, see models/retro/model.py); everything
RETRO adds lives under ``*.cross_attention.*`` (chunked cross-attention, its pre-norm, gate and
the encoder).  Loading reads every GPT tensor from the checkpoint, at any TP/PP layout, and
leaves the RETRO parts as initialised.  With ``retro.attention_gate=true`` (tanh gate starting
at 0) the loaded RETRO computes exactly the GPT's function until training opens the gates.
"""
from __future__ import annotations

import dataclasses

from megatron_retro.config import RunConfig
from megatron_retro.errors import UserError

RETRO_ONLY = ".cross_attention."


def is_gpt_checkpoint(path: str) -> bool:
    from megatron_retro.training.checkpointing import read_state

    return read_state(path).get("model", {}).get("arch") == "gpt"


def load_gpt_into_retro(path: str, engine, cfg: RunConfig) -> list[str]:
    """Collective: copy a GPT checkpoint's weights into a RETRO engine's decoder.

    Returns the names of the parameters left as initialised (the RETRO-only ones).
    """
    import torch
    from megatron.core import dist_checkpointing

    from megatron_retro.training.checkpointing import (
        check_compatible,
        read_state,
        verify_metadata_pickle,
        without_sharded_objects,
    )
    from megatron_retro.training.pretrain import model_record

    saved = read_state(path).get("model", {})
    if saved.get("arch") != "gpt":
        raise UserError(f"{path}: checkpoint.load for a RETRO-from-GPT start must be a GPT checkpoint "
                        f"(model.arch={saved.get('arch')!r} there)")
    gpt_cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, arch="gpt"))
    check_compatible(path, saved, model_record(gpt_cfg, saved.get("vocab_size")))  # architecture fields
    verify_metadata_pickle(f"{path}/.metadata")
    sharded, modules = {}, []
    for i, chunk in enumerate(engine.chunks):
        module = getattr(chunk, "module", chunk)
        modules.append(module)
        sd = without_sharded_objects(module.sharded_state_dict())
        sharded[f"model{i}"] = {k: v for k, v in sd.items() if RETRO_ONLY not in k}
    try:
        loaded = dist_checkpointing.load(sharded, path)
    except Exception as e:
        raise UserError(f"{path}: cannot load the GPT weights: {type(e).__name__}: "
                        f"{str(e).splitlines()[0][:300]}") from None
    fresh = []
    for i, module in enumerate(modules):
        missing, unexpected = module.load_state_dict(loaded[f"model{i}"], strict=False)
        missing = [k for k in missing if not k.endswith("_extra_state")]
        wrong = [k for k in missing if RETRO_ONLY not in k]
        if wrong or unexpected:
            raise UserError(f"{path}: GPT checkpoint does not match the RETRO decoder: missing {wrong[:3]}, "
                            f"unexpected {unexpected[:3]}")
        fresh.extend(missing)
    reload = getattr(engine.optimizer, "reload_model_params", None)
    if reload is not None:  # mixed precision: refresh the fp32 main copies
        with torch.no_grad():
            reload()
    return fresh
