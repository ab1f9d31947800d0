"""Retrieval for RETRO and retrieval-augmented GPT: chunk store, embedders, faiss indexes,
the ``NeighbourSource`` seam, a sharded gRPC retrieval service and a prefetching loader.

Import submodules directly (``megatron_retro.retrieval.chunk_store`` ...): this package
imports nothing heavy on its own.
"""
