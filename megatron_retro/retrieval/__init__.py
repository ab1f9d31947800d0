"""Retrieval for RETRO and retrieval-augmented GPT: chunk store, embedders, faiss indexes,
the ``NeighbourSource`` seam, a sharded gRPC retrieval service and a prefetching loader.

Public API (import the submodules directly; this package imports nothing heavy on its own):

* ``chunk_store``: ``build_chunk_store(docs, out_dir, decode, chunk_length=64, neighbour_length=128)``,
  ``ChunkStore`` (``chunks(ids)``, ``neighbours(ids)``, ``doc_ids(ids)``, ``text(i)``)
* ``embedder``: ``Embedder``, ``SentenceTransformerEmbedder`` (all-MiniLM-L6-v2 offline),
  ``HashingEmbedder`` (tests), ``build_embedder(spec)``, ``embed_chunk_store``
* ``index``: ``Index`` (train/add/search/save/load), ``FaissIndex``, ``IndexFactory.create(spec, dim)``
* ``neighbours``: ``NeighbourSource``, ``SearchNeighbourSource(searcher, store, embedder, decode, k)``
* ``service.client``: ``ShardedRetrievalClient`` (same ``search`` contract as ``Index``);
  ``service.server``: ``megatron-retro serve``; ``service.launcher``: ``start_service``
* ``prefetch``: ``PrefetchingNeighbourLoader``, ``precompute_neighbours``, ``PrecomputedNeighbourSource``
* ``sources``: ``open_neighbour_source(cfg, decode, rank)``, ``open_searcher``, ``resolve`` (the config
  class is ``megatron_retro.config.RetrievalConfig``)
* ``sharding`` / ``build`` / ``parallel_build``: index directories, ``megatron-retro index build|eval``;
  ``parallel_build``: one shard per rank under torchrun (gloo) or mpirun (mpi4py)
* ``metrics`` (Hit@k, Recall@k, MRR, NDCG) and ``hybrid`` (BM25 + dense RRF, re-ranking hook)
* ``qa_retrieval``: ``retrieve_passages(retriever, questions, k) -> int64[n, k]`` chunk ids,
  ``open_qa_retriever(kind, index_dir)`` (dense | bm25 | hybrid | rerank), ``evaluate_qa``
  (question -> gold passage quality), ``megatron-retro index eval-qa``
"""
