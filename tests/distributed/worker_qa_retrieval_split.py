"""torchrun worker (4 ranks, TP2 x DP2): QA passages are retrieved once per question in the job.

Rank 0 builds a small chunk store + 2-shard index; every rank calls ``retrieve_split`` (the path
fine-tuning and evaluation take); the searches of each rank are counted.  Rank 0 prints one
RESULT line: per-rank query rows and whether the gathered chunk ids equal one in-process search.
"""
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402
import torch.distributed as dist  # noqa: E402

from megatron_retro.config import ParallelConfig, QAConfig, RunConfig  # noqa: E402
from megatron_retro.data.tasks.example import QAExample  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from megatron_retro.retrieval import build as build_mod  # noqa: E402
from megatron_retro.retrieval.build import build_index  # noqa: E402
from megatron_retro.retrieval.chunk_store import build_chunk_store  # noqa: E402
from megatron_retro.training import qa_data  # noqa: E402

WORDS = "star planet orbit bread oven flour boat wind sail rock granite fossil violin piano melody".split()


def main(work: str) -> None:
    ctx = initialize_parallel(ParallelConfig(tp=2), seed=0)
    vocab = {w: i + 1 for i, w in enumerate(WORDS)}
    decode = lambda ids: " ".join(WORDS[i - 1] for i in ids if i > 0)  # noqa: E731
    db = os.path.join(work, "db")
    if dist.get_rank() == 0:
        rng = np.random.default_rng(0)
        docs = [(d, [int(t) for t in rng.integers(1, len(WORDS) + 1, 40)]) for d in range(12)]
        build_chunk_store(docs, os.path.join(db, "store"), decode, chunk_length=8, neighbour_length=16)
        build_index(os.path.join(db, "store"), os.path.join(db, "index"), "hash:32", "flat", num_shards=2)
    dist.barrier()
    calls = []
    search = build_mod.ShardedLocalIndex.search

    def counted(self, q, k):
        calls.append(len(q))
        return search(self, q, k)

    build_mod.ShardedLocalIndex.search = counted
    cfg = RunConfig(parallel=ParallelConfig(tp=2),
                    qa=QAConfig(embedder="hash:32", num_passages=2, passage_length=16, chunk_length=8))
    examples = [QAExample(id=str(i), question=f"{WORDS[i % 15]} {WORDS[(3 * i) % 15]}", answers=["x"], task="t")
                for i in range(11)]
    split = qa_data.retrieve_split(cfg, examples, db)
    rows = [None] * dist.get_world_size()
    dist.all_gather_object(rows, sum(calls))
    cached = qa_data.retrieve_split(cfg, examples, db)  # from the cache: no search at all
    build_mod.ShardedLocalIndex.search = search
    if dist.get_rank() == 0:
        from megatron_retro.retrieval.chunk_store import ChunkStore

        ref = qa_data._search(cfg, ChunkStore(os.path.join(db, "store")), os.path.join(db, "index"),
                              [e.question for e in examples], 2)
        print("RESULT " + json.dumps({"rows": rows, "dp": ctx.dp, "equal": bool((split.chunk_ids == ref).all()),
                                      "cached_equal": bool((cached.chunk_ids == ref).all()),
                                      "after_cache": sum(calls) - rows[0],
                                      "retrieved_by": [split.retrieved_by, cached.retrieved_by]}), flush=True)
    dist.barrier()


if __name__ == "__main__":
    main(sys.argv[1])
