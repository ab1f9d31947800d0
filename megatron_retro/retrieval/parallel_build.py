"""Parallel index build across ranks (megatron's "faiss-par-add"): train once, one shard per rank.

Rank 0 embeds a training sample and trains the quantizers once; every rank then embeds its
own contiguous slice of the chunk store, adds it to a copy of the trained index and writes it
as shard ``rank`` of ``world_size``; rank 0 writes the manifest last.  The ranks only need
barriers, from either of two backends:

* ``torch``: torch.distributed (gloo), under ``torchrun`` (or RANK / WORLD_SIZE and an
  ``--init-method`` such as ``file://``);
* ``mpi``: mpi4py's ``COMM_WORLD``, under ``mpirun`` / ``mpiexec`` / ``srun --mpi=pmix``
  (``pip install megatron_retro[mpi]``).

``backend="auto"`` picks torch when RANK / WORLD_SIZE are set or a process group exists, mpi
when an MPI launcher's variables are (OMPI_COMM_WORLD_SIZE, PMI_SIZE); under other launchers
(``srun --mpi=pmix``) pass ``--backend mpi``.  The result
equals ``build_index`` with ``num_shards = world_size``, whichever backend ran it.

    torchrun --nproc-per-node 4 -m megatron_retro.retrieval.parallel_build \
        --store runs/chunks --out runs/index --embedder minilm --factory ivf-flat
    mpirun -np 4 python -m megatron_retro.retrieval.parallel_build --store runs/chunks --out runs/index
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional

import numpy as np

from megatron_retro.errors import UserError

MPI_ENV = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE")  # Open MPI's mpirun; MPICH / Intel MPI (Hydra)
BACKENDS = ("auto", "torch", "mpi")


class _TorchGroup:
    """Barriers through torch.distributed (gloo); owns the process group only if it made it."""

    def __init__(self, init_method: str):
        import torch.distributed as dist

        self._dist = dist
        self._own = not dist.is_initialized()
        if self._own:
            for name in ("RANK", "WORLD_SIZE"):
                if name not in os.environ:
                    raise UserError(f"parallel build (torch backend): environment variable {name} is not set; "
                                    f"launch with torchrun, or use --backend mpi under mpirun")
            dist.init_process_group("gloo", init_method=init_method,
                                    rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))
        self.rank, self.world_size = dist.get_rank(), dist.get_world_size()

    def barrier(self) -> None:
        self._dist.barrier()

    def close(self) -> None:
        if self._own:
            self._dist.destroy_process_group()


class _MPIGroup:
    """Barriers through mpi4py's COMM_WORLD (MPI is initialised on import, finalised at exit)."""

    def __init__(self):
        try:
            from mpi4py import MPI
        except ImportError as e:
            raise UserError(f"parallel build (mpi backend) needs mpi4py: pip install 'megatron_retro[mpi]' ({e})") \
                from None
        self._comm = MPI.COMM_WORLD
        self.rank, self.world_size = self._comm.Get_rank(), self._comm.Get_size()

    def barrier(self) -> None:
        self._comm.Barrier()

    def close(self) -> None:
        pass


def pick_backend(backend: str = "auto", env=None) -> str:
    """``torch`` or ``mpi`` for ``backend`` (``auto``: from the launcher's environment variables)."""
    env = os.environ if env is None else env
    if backend not in BACKENDS:
        raise UserError(f"parallel build backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    if "RANK" in env and "WORLD_SIZE" in env:
        return "torch"
    if any(name in env for name in MPI_ENV):
        return "mpi"
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return "torch"
    raise UserError("parallel build: no launcher found (RANK/WORLD_SIZE of torchrun, or "
                    f"{'/'.join(MPI_ENV)} of an MPI launcher); run `megatron-retro index build` for one process")


def launched_world_size(env=None) -> int:
    """World size the launcher announced (torchrun or MPI), 1 without a launcher."""
    env = os.environ if env is None else env
    for name in ("WORLD_SIZE",) + MPI_ENV:
        if name in env:
            try:
                return int(env[name])
            except ValueError:
                raise UserError(f"environment variable {name}={env[name]!r}: expected an integer") from None
    return 1


def build_index_distributed(store_dir: str, out_dir: str, embedder: str = "minilm", factory: str = "flat",
                            train_size: Optional[int] = None, batch_size: int = 128,
                            init_method: str = "env://", seed: int = 0, backend: str = "auto",
                            **factory_kwargs) -> Optional[dict]:
    """Build ``out_dir`` with one shard per rank; returns the manifest on rank 0, None elsewhere."""
    from megatron_retro.retrieval.chunk_store import ChunkStore
    from megatron_retro.retrieval.embedder import build_embedder
    from megatron_retro.retrieval.index import FaissIndex
    from megatron_retro.retrieval.sharding import (build_shard, shard_bounds, shard_path, train_empty_index,
                                                   train_sample_ids, write_manifest)

    group = _TorchGroup(init_method) if pick_backend(backend) == "torch" else _MPIGroup()
    rank, world = group.rank, group.world_size
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
        group.barrier()
        trained = FaissIndex.load(trained_file, use_gpu=False)
        bounds = shard_bounds(len(store), world)
        lo, hi = int(bounds[rank]), int(bounds[rank + 1])
        vectors = model.embed(store.texts(lo, hi), batch_size=batch_size, progress=rank == 0)
        build_shard(trained, vectors, np.arange(lo, hi, dtype=np.int64), shard_path(out, rank, world))
        group.barrier()
        manifest = None
        if rank == 0:
            import uuid

            from megatron_retro.retrieval.build_id import store_identity

            manifest = {"build_id": uuid.uuid4().hex, "num_shards": world, "dim": trained.dim,
                        "factory": trained.factory, "metric": trained.metric, "ntotal": len(store),
                        "bounds": bounds.tolist(), "params": trained.params, "embedder": embedder,
                        "store": str(Path(store_dir).resolve()),
                        "identity": store_identity(store, embedder, trained.dim).to_dict()}
            write_manifest(out, manifest)
            for f in (trained_file, Path(str(trained_file) + ".json")):
                f.unlink()
        group.barrier()
        return manifest
    finally:
        group.close()


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
    p.add_argument("--init-method", default="env://", help="torch backend: process group init method")
    p.add_argument("--backend", choices=BACKENDS, default="auto", help="torch (torchrun) or mpi (mpirun + mpi4py)")
    a = p.parse_args(argv)
    build_index_distributed(a.store, a.out, a.embedder, a.factory, a.train_size, a.batch_size, a.init_method,
                            backend=a.backend, nlist=a.nlist, pq_m=a.pq_m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
