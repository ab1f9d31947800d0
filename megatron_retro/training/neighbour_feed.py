"""Neighbours travel with the data: each step's micro-batches with their neighbours, fetched
ahead of time, once per sample in the job.

Notation: ``J`` micro-batches per DP rank per step, ``b`` micro-batch size, ``n = J*b`` samples,
``l`` chunks per sample, ``m`` chunk length, ``k`` neighbours, ``r`` neighbour length.

* Which samples: ``batches.step_sample_indices`` — the same rule as ``step_microbatches``, so a
  DP rank asks only for the samples it trains on.
* Who asks: in each model-parallel group (the TP x PP ranks of one DP rank) the first rank
  (tp 0, pp 0) holds the ``NeighbourSource`` and a ``PrefetchingNeighbourLoader`` over the steps
  still to run: while step ``t`` trains, background threads fetch steps ``t+1 .. t+depth``
  (``retrieval.prefetch_depth``).  The other ranks of the group open no source: they receive the
  step's neighbours int64[n, l, k, r] in one broadcast over the group.  Every chunk of every
  sample is therefore queried once in the job.
* Each chunk is its own query (``[n*l, 1, m]`` with the document of the chunk's last token), so
  precomputed neighbours keyed by (document, chunk tokens) answer exactly the same queries.
* Held-out batches (a fixed set) get their neighbours once, on first use, by the same route.
* ``step_metrics()`` (collective) gives ``retrieval_wait_s`` (seconds the feeding ranks waited,
  summed), ``retrieval_queries`` (query rows the sources answered, summed) of the last step and
  ``retrieval_sources`` (how many ranks hold a source: one per model-parallel group).
"""
from __future__ import annotations

import time
from typing import Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist

from megatron_retro.training.batches import collate, eval_sample_indices, step_sample_indices


def _model_parallel_group():
    from megatron.core import parallel_state

    return parallel_state.get_model_parallel_group()


def is_feeder() -> bool:
    """This rank fetches its model-parallel group's neighbours (the group's first rank)."""
    if not dist.is_initialized():
        return True
    group = _model_parallel_group()
    return dist.get_rank() == dist.get_global_rank(group, 0)


class RetroFeed:
    """Micro-batches of RETRO pretraining with ``neighbours`` int64[b, l, k, r] attached."""

    def __init__(self, cfg, train, valid, source, dp: int = 1, dp_rank: int = 0):
        retro = cfg.retro
        self.cfg, self.train_ds, self.valid_ds, self.source = cfg, train, valid, source
        self.dp, self.dp_rank = dp, dp_rank
        self.k, self.r = retro.num_neighbours, retro.neighbour_length
        self.depth = cfg.retrieval.prefetch_depth
        self.group = _model_parallel_group() if dist.is_initialized() else None
        self.group_size = dist.get_world_size(self.group) if self.group is not None else 1
        self.src = dist.get_global_rank(self.group, 0) if self.group is not None else 0
        self.feeder = source is not None
        self._loader = None
        self._items: Optional[Iterator] = None
        self._next_step: Optional[int] = None
        self._eval_cache: Optional[tuple] = None
        self._wait = 0.0
        self._queries = 0
        if self.feeder != is_feeder():
            raise RuntimeError("RetroFeed: exactly the first rank of each model-parallel group has a source")

    # -- steps ------------------------------------------------------------------------------
    def start(self, start_step: int, steps: int, global_batch: int, micro_batch: int) -> None:
        """Plan steps ``start_step .. steps-1`` and start prefetching their neighbours."""
        from megatron_retro.retrieval.prefetch import PrefetchingNeighbourLoader

        n = len(self.train_ds)
        plans = (step_sample_indices(n, s, global_batch, micro_batch, self.dp, self.dp_rank)
                 for s in range(start_step, steps))
        self._items = (self._item(self.train_ds, plan) for plan in plans)
        self._next_step = start_step
        if self.feeder:
            self._loader = PrefetchingNeighbourLoader(self._items, self.source, flat_queries, depth=self.depth)

    @staticmethod
    def _item(ds, plan: list[list[int]]) -> dict:
        """One step's (or eval set's) micro-batches and the chunk queries of their samples."""
        flat = [i for idx in plan for i in idx]
        chunks, docs = ds.queries(flat)                        # [n, l, m], [n, l]
        micro = [collate([ds[i] for i in idx]) for idx in plan]
        return {"micro": micro, "chunks": chunks, "docs": docs}

    def train_step(self, step: int) -> list[dict]:
        """The micro-batches of ``step`` (the next planned one) with their neighbours."""
        if step != self._next_step:
            raise RuntimeError(f"RetroFeed: step {step} requested, {self._next_step} planned next")
        self._next_step += 1
        t0 = time.perf_counter()
        if self.feeder:
            item, nb = next(self._loader)                      # nb [n*l, 1, k, r]
            self._queries = self._loader.last_queries
        else:
            item, nb = next(self._items), None
            self._queries = 0
        out = self._attach(item, nb)
        self._wait = time.perf_counter() - t0 if self.feeder else 0.0
        return out

    def eval(self, num_micro: int, micro_batch: int) -> list[dict]:
        """The fixed held-out micro-batches with neighbours (fetched once, on first use)."""
        key = (num_micro, micro_batch)
        if self._eval_cache is None or self._eval_cache[0] != key:
            plan = eval_sample_indices(len(self.valid_ds), num_micro, micro_batch, self.dp, self.dp_rank)
            item = self._item(self.valid_ds, plan)
            nb = None
            if self.feeder:
                chunks, docs = flat_queries(item)
                fetch = lambda: self.source.neighbours(chunks, docs)  # noqa: E731
                nb = self._loader.run(fetch) if self._loader is not None else fetch()
            self._eval_cache = (key, self._attach(item, nb))
        return self._eval_cache[1]

    def _attach(self, item: dict, nb: Optional[np.ndarray]) -> list[dict]:
        """Broadcast the feeder's neighbours over the model-parallel group; split per micro-batch."""
        n, l, _ = item["chunks"].shape
        if nb is not None:
            t = torch.from_numpy(np.ascontiguousarray(nb, dtype=np.int64).reshape(n, l, self.k, self.r))
        else:
            t = torch.empty((n, l, self.k, self.r), dtype=torch.int64)
        if self.group_size > 1:
            dist.broadcast(t, src=self.src, group=self.group)  # [n, l, k, r]
        out, lo = [], 0
        for mb in item["micro"]:
            b = mb["tokens"].shape[0]
            out.append({**mb, "neighbours": t[lo:lo + b]})
            lo += b
        return out

    # -- metrics ----------------------------------------------------------------------------
    def step_metrics(self) -> dict:
        """Collective over the job: the last step's summed wait and query rows of the feeding ranks,
        and the number of feeding ranks."""
        v = torch.tensor([self._wait, float(self._queries), float(self.feeder)], dtype=torch.float64)
        if dist.is_initialized():
            dist.all_reduce(v)
        return {"retrieval_wait_s": float(v[0]), "retrieval_queries": int(v[1]), "retrieval_sources": int(v[2])}

    def close(self) -> None:
        if self._loader is not None:
            self._loader.close()
        if self.source is not None:
            self.source.close()


def flat_queries(item: dict) -> tuple[np.ndarray, np.ndarray]:
    """Every chunk its own query: (chunks int64[n*l, 1, m], its document int64[n*l])."""
    chunks, docs = item["chunks"], item["docs"]
    n, l, m = chunks.shape
    return chunks.reshape(n * l, 1, m), docs.reshape(n * l)
