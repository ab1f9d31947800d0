"""Which modules a PEFT method attaches to: module-path patterns and megatron linear types.

Selection is generic, with no model special cases: a target is a parallel linear (column or row,
by type, see :func:`megatron_retro.peft.tp_rule.parallel_kind`) whose *global* dotted path
(:func:`global_path`: layer indices are global, so a pattern selects the same modules at every
TP/PP layout) matches one of the ``targets`` patterns.  A bare name (``linear_qkv``) matches the last
path segment; a pattern with dots or wildcards is an ``fnmatch`` glob over the whole path, so
RETRO's parts can be targeted separately, e.g. ``decoder.*.cross_attention.linear_q``,
``*encoder*.linear_qkv`` or ``decoder.layers.*.self_attention.linear_qkv``.  ``exclude`` patterns
(same syntax) remove matches.

RETRO's parts (NeMo's encoder / pre-decoder / post-decoder split; ``*`` also matches dots):

* encoder (neighbour encoder, its self- and cross-attention and MLP): ``*.encoder.*``
* decoder chunked cross-attention: ``decoder.layers.*.cross_attention.*`` with exclude ``*.encoder.*``
* decoder self-attention / MLP: e.g. ``linear_qkv`` with exclude ``*cross_attention*``
* pre-decoder (layers before the first retrieval layer, global 0-based index): ``decoder.layers.[0-4].*``
  with exclude ``*cross_attention*``; post-decoder: the other indices.
"""
from __future__ import annotations

import fnmatch
from typing import Iterable, Iterator

import torch



def _matches(path: str, pattern: str) -> bool:
    if "." not in pattern and not any(c in pattern for c in "*?["):
        return path.rsplit(".", 1)[-1] == pattern
    return fnmatch.fnmatchcase(path, pattern)


def path_selected(path: str, targets: Iterable[str], exclude: Iterable[str] = ()) -> bool:
    return any(_matches(path, t) for t in targets) and not any(_matches(path, e) for e in exclude)


def find_linear_targets(chunk: torch.nn.Module, targets: Iterable[str], exclude: Iterable[str] = ()
                        ) -> Iterator[tuple[str, torch.nn.Module, str]]:
    """(local path, module, 'column' | 'row') of every selected parallel linear in one model chunk."""
    from megatron_retro.peft.tp_rule import parallel_kind

    targets, exclude = list(targets), list(exclude)
    for path, module in chunk.named_modules():
        kind = parallel_kind(module)
        if kind is not None and path_selected(global_path(chunk, path), targets, exclude):
            yield path, module, kind


def global_path(chunk: torch.nn.Module, path: str) -> str:
    """The path with each local ``layers.<i>`` replaced by the layer's global index.

    Under PP (and virtual PP) a chunk numbers its layers from 0; megatron's TransformerLayer
    keeps its global 1-based ``layer_number``.  Used to seed layout-independent initialisation.
    """
    parts = path.split(".")
    out = []
    module = chunk
    for i, part in enumerate(parts):
        module = getattr(module, part) if not part.isdigit() else module[int(part)]
        if part.isdigit() and i > 0 and parts[i - 1] == "layers" and hasattr(module, "layer_number"):
            part = str(module.layer_number - 1)
        out.append(part)
    return ".".join(out)


def seeded_full(shape: tuple, seed: int, name: str, fill) -> torch.Tensor:
    """A full (unsharded) fp32 tensor drawn from a generator seeded by (seed, global name)."""
    import hashlib

    digest = hashlib.sha256(f"{seed}|{name}".encode()).digest()
    g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    t = torch.empty(shape, dtype=torch.float32)
    fill(t, g)
    return t


def tp_slice(full: torch.Tensor, axis, local_size: int) -> torch.Tensor:
    """This TP rank's slice of ``full`` along ``axis`` (None = replicated: the whole tensor)."""
    if axis is None:
        return full.clone()
    from megatron.core import parallel_state

    rank = parallel_state.get_tensor_model_parallel_rank()
    return full.narrow(axis, rank * local_size, local_size).clone()


def find_modules(chunk: torch.nn.Module, targets: Iterable[str], exclude: Iterable[str] = ()
                 ) -> Iterator[tuple[str, torch.nn.Module]]:
    """(local path, module) of every module whose global path matches ``targets`` (same rules);
    megatron's empty spec slots (IdentityOp, e.g. the cross_attention of a non-retrieval layer)
    are not modules to adapt."""
    from megatron.core.transformer.identity_op import IdentityOp

    targets, exclude = list(targets), list(exclude)
    for path, module in chunk.named_modules():
        if path and not isinstance(module, IdentityOp) and path_selected(global_path(chunk, path), targets, exclude):
            yield path, module


def first_stage_chunks(chunks: list) -> list:
    """Chunks that hold the input embedding (the first pipeline stage / virtual stage)."""
    return [c for c in chunks if getattr(c, "pre_process", False) and hasattr(c, "embedding")]
