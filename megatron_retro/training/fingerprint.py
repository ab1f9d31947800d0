"""The identity of a set of model weights: a digest of every weight's metadata — its
layout-independent name, global shape, dtype, and the float64 sum and sum of squares of its
values — computed when a checkpoint is saved and stored in its ``state.json``.

Adapters record the fingerprint of the base checkpoint they were trained on; loading one on a
base with another fingerprint is refused naming both (two bases of the same shape are told
apart by their values, which shapes alone cannot do).

Each rank sums only the shards it is the main replica of (megatron's ``replica_id`` all zero),
so every element counts once whatever the TP/PP/DP layout; the per-weight totals are rounded to
7 significant digits before hashing, so the float64 summation order of a layout does not change
the digest.
"""
from __future__ import annotations

import hashlib
import json

FIELD = "weights_fingerprint"


def _is_main_replica(replica_id) -> bool:
    ids = replica_id if isinstance(replica_id, (tuple, list)) else (replica_id,)
    return all(int(i) == 0 for i in ids)


def local_weight_stats(chunks: list) -> dict[str, list]:
    """{global name: [shape, dtype, sum, sum of squares]} over the shards this rank owns."""
    import torch
    from megatron.core.dist_checkpointing.mapping import ShardedTensor

    stats: dict[str, list] = {}
    for chunk in chunks:
        module = getattr(chunk, "module", chunk)
        for sh in module.sharded_state_dict().values():
            if not isinstance(sh, ShardedTensor) or not _is_main_replica(sh.replica_id):
                continue
            data = sh.data.detach().to(torch.float64)  # [local shard of global_shape]
            entry = stats.setdefault(sh.key, [list(sh.global_shape), str(sh.dtype).replace("torch.", ""), 0.0, 0.0])
            entry[2] += float(data.sum())
            entry[3] += float((data * data).sum())
    return stats


def weights_fingerprint(chunks: list) -> str:
    """Collective (every rank calls it): ``sha256:<hex>`` of the weights' metadata, same on all ranks."""
    import torch.distributed as dist

    stats = local_weight_stats(chunks)
    if dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, stats)
    else:
        gathered = [stats]
    total: dict[str, list] = {}
    for part in gathered:
        for key, (shape, dtype, s, sq) in part.items():
            entry = total.setdefault(key, [shape, dtype, 0.0, 0.0])
            entry[2] += s
            entry[3] += sq
    rows = [[key, shape, dtype, f"{s:.7g}", f"{sq:.7g}"] for key, (shape, dtype, s, sq) in sorted(total.items())]
    return "sha256:" + hashlib.sha256(json.dumps(rows).encode()).hexdigest()
