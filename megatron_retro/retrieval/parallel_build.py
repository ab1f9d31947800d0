"""Parallel index build across ranks (megatron's "faiss-par-add"): train once, one shard per rank.

Rank 0 embeds a training sample and trains the quantizers once; every rank then embeds its
own contiguous slice of the chunk store, adds it to a copy of the trained index and writes it
as shard ``rank`` of ``world_size``; rank 0 writes the manifest last.  Uses torch.distributed
(gloo) only for barriers, so it runs under ``torchrun`` (or with RANK/WORLD_SIZE and a file://
init method).  The result equals ``build_index`` with ``num_shards = world_size``.

    torchrun --nproc-per-node 4 -m megatron_retro.retrieval.parallel_build \
        --store runs/chunks --out runs/index --embedder minilm --factory ivf-flat
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np


def build_index_distributed(store_dir: str, out_dir: str, embedder: str = "minilm", factory: str = "flat",
                            train_size: Optional[int] = None, batch_size: int = 128,
                            init_method: str = "env://", seed: int = 0, **factory_kwargs) -> Optional[dict]:
    import torch.distributed as dist

    from megatron_retro.retrieval.chunk_store import ChunkStore
    from megatron_retro.retrieval.embedder import build_embedder
    from megatron_retro.retrieval.index import FaissIndex
    from megatron_retro.retrieval.sharding import (build_shard, shard_bounds, shard_path, train_empty_index,
                                                   train_sample_ids, write_manifest)

    own_group = not dist.is_initialized()
    if own_group:
        dist.init_process_group("gloo", init_method=init_method,
                                rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
    rank, world = dist.get_rank(), dist.get_world_size()
    try:
        store = ChunkStore(store_dir)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        model = build_embedder(embedder)
        trained_file = out / "trained-empty.faiss"
        if rank == 0:
            ids = train_sample_ids(len(store), train_size, seed)
            sample = model.embed([store.text(int(i)) for i in ids], batch_size=batch_size, progress=True)
            train_empty_index(factory, sample, **factory_kwargs).save(trained_file)
        dist.barrier()
        trained = FaissIndex.load(trained_file, use_gpu=False)
        bounds = shard_bounds(len(store), world)
        lo, hi = int(bounds[rank]), int(bounds[rank + 1])
        vectors = model.embed(store.texts(lo, hi), batch_size=batch_size, progress=rank == 0)
        build_shard(trained, vectors, np.arange(lo, hi, dtype=np.int64), shard_path(out, rank, world))
        dist.barrier()
        manifest = None
        if rank == 0:
            import uuid

            manifest = {"build_id": uuid.uuid4().hex, "num_shards": world, "dim": trained.dim,
                        "factory": trained.factory, "metric": trained.metric, "ntotal": len(store),
                        "bounds": bounds.tolist(), "params": trained.params, "embedder": embedder,
                        "store": str(Path(store_dir).resolve())}
            write_manifest(out, manifest)
            for f in (trained_file, Path(str(trained_file) + ".json")):
                f.unlink()
        dist.barrier()
        return manifest
    finally:
        if own_group:
            dist.destroy_process_group()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--store", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--embedder", default="minilm")
    p.add_argument("--factory", default="flat")
    p.add_argument("--train-size", type=int)
    p.add_argument("--nlist", type=int, default=256)
    p.add_argument("--pq-m", type=int, default=16)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--init-method", default="env://")
    a = p.parse_args(argv)
    build_index_distributed(a.store, a.out, a.embedder, a.factory, a.train_size, a.batch_size, a.init_method,
                            nlist=a.nlist, pq_m=a.pq_m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
