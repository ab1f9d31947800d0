"""Hugging Face checkpoint directories: read ``config.json`` + safetensors (single file or a
sharded ``model.safetensors.index.json``) lazily, and write them back in the same format.

Only safetensors are read: a ``pytorch_model.bin`` is a pickle and is refused, never loaded.
Tensors are read one at a time (``safe_open``), so an importing rank only touches the weights
of its own pipeline stage.
"""
from __future__ import annotations

import json
import os
from typing import Optional

import torch

from megatron_retro.errors import UserError
from megatron_retro.parallel.checkpoint_io import read_json

CONFIG = "config.json"
INDEX = "model.safetensors.index.json"


def _read_json(path: str) -> dict:
    data = read_json(path, f"{path}: not found (an HF checkpoint directory holds config.json + *.safetensors)",
                     "not valid JSON")
    if not isinstance(data, dict):
        raise UserError(f"{path}: expected a JSON object")
    return data


class HFCheckpoint:
    """One HF model directory: ``config`` (dict) and its tensors by name."""

    def __init__(self, directory: str):
        if not os.path.isdir(directory):
            raise UserError(f"{directory}: no such HF checkpoint directory")
        self.directory = directory
        self.config_path = os.path.join(directory, CONFIG)
        self.config = _read_json(self.config_path)
        self.files = self._weight_files()  # tensor name -> safetensors file
        self._open: dict[str, object] = {}

    def _weight_files(self) -> dict[str, str]:
        from safetensors import safe_open

        index = os.path.join(self.directory, INDEX)
        if os.path.isfile(index):
            weight_map = _read_json(index).get("weight_map")
            if not isinstance(weight_map, dict) or not weight_map:
                raise UserError(f"{index}: no 'weight_map' of tensor name -> file")
            files = {name: os.path.join(self.directory, f) for name, f in weight_map.items()}
            for path in set(files.values()):
                if not os.path.isfile(path):
                    raise UserError(f"{index}: names {os.path.basename(path)}, which is missing")
            return files
        shards = sorted(f for f in os.listdir(self.directory) if f.endswith(".safetensors"))
        if not shards:
            pickles = [f for f in os.listdir(self.directory) if f.endswith((".bin", ".pt", ".pth"))]
            extra = f" ({pickles[0]} is a pickle and is not loaded; convert it to safetensors)" if pickles else ""
            raise UserError(f"{self.directory}: no *.safetensors weights{extra}")
        files = {}
        for shard in shards:
            path = os.path.join(self.directory, shard)
            with safe_open(path, framework="pt") as f:
                files.update({name: path for name in f.keys()})
        return files

    def _handle(self, path: str):
        from safetensors import safe_open

        if path not in self._open:
            self._open[path] = safe_open(path, framework="pt")
        return self._open[path]

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(self._handle(self.files[name]).get_slice(name).get_shape())

    def get(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if name not in self.files:
            raise UserError(f"{self.directory}: the checkpoint has no tensor {name}")
        return self._handle(self.files[name]).get_tensor(name).to(dtype)

    def check(self, expected: dict[str, tuple[int, ...]], ignored_suffixes: tuple[str, ...] = ()) -> None:
        """Refuse missing, unexpected or mis-shaped tensors, naming the first one and its file."""
        names = {n for n in self.files if not n.endswith(ignored_suffixes)}
        missing = sorted(set(expected) - names)
        if missing:
            raise UserError(f"{self.directory}: tensor {missing[0]} is missing ({len(missing)} in all) "
                            f"for the architecture in {CONFIG}")
        unexpected = sorted(names - set(expected))
        if unexpected:
            name = unexpected[0]
            what = "a bias, which our GPT does not have" if name.endswith(".bias") else "not part of a Llama model"
            raise UserError(f"{self.files[name]}: tensor {name} is {what} ({len(unexpected)} unexpected in all)")
        for name, want in expected.items():
            got = self.shape(name)
            if got != tuple(want):
                raise UserError(f"{self.files[name]}: tensor {name} has shape {got}, {CONFIG} implies {tuple(want)}")


def write_hf_dir(directory: str, hf_config, tensors: dict[str, torch.Tensor],
                 max_shard_bytes: Optional[int] = 5 * 1024 ** 3) -> list[str]:
    """``hf_config.save_pretrained`` + safetensors shards (with an index when more than one)."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    hf_config.save_pretrained(directory)
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if max_shard_bytes and shards[-1] and size + nbytes > max_shard_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = t.contiguous()
        size += nbytes
    if len(shards) == 1:
        names = ["model.safetensors"]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards):
        save_file(shard, os.path.join(directory, name), metadata={"format": "pt"})
    if len(shards) > 1:
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                 "weight_map": {t: name for name, shard in zip(names, shards) for t in shard}}
        with open(os.path.join(directory, INDEX), "w", encoding="utf-8") as f:
            json.dump(index, f, indent=2, sort_keys=True)
    return names
