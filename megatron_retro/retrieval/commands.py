"""CLI subcommands of the retrieval stack: ``serve`` (one shard server) and
``index chunks|build|eval|eval-qa``.

Heavy imports (faiss, grpc, torch) happen inside the handlers only.
"""
from __future__ import annotations

from megatron_retro.retrieval.service.args import add_serve_args


def _serve(args) -> int:
    from megatron_retro.retrieval.service.server import run

    return run(args)


def _index_chunks(args) -> int:
    import json

    from megatron_retro.retrieval.chunk_store import build_chunk_store

    from megatron_retro.errors import UserError

    try:
        from megatron_retro.data import load_tokenizer
    except ImportError:
        try:
            from megatron_retro.data.tokenizer import load_tokenizer
        except ImportError as e:
            raise UserError(f"index chunks needs megatron_retro.data.load_tokenizer ({e})") from None
    tok = load_tokenizer(args.tokenizer)

    def documents():
        found = 0
        with open(args.documents, encoding="utf-8") as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                found += 1
                try:
                    doc = json.loads(line)
                    text = doc["text"]
                except (json.JSONDecodeError, KeyError, TypeError) as e:
                    raise UserError(f"{args.documents}:{line_no}: expected a JSON object with a 'text' "
                                    f"field ({e})") from None
                doc_id = doc.get("id", line_no)
                yield (doc_id if isinstance(doc_id, int) else line_no), tok.encode(text)
        if not found:
            raise UserError(f"--documents {args.documents}: no documents (the file has no JSON lines)")

    store = build_chunk_store(documents(), args.out, tok.decode, chunk_length=args.chunk_length,
                              neighbour_length=args.neighbour_length, pad_id=tok.pad, overwrite=args.overwrite)
    print(f"{args.out}: {len(store)} chunks of {store.chunk_length} tokens from {store.num_docs} documents")
    return 0


def _index_build(args) -> int:
    from megatron_retro.retrieval.build import check_rebuild
    from megatron_retro.retrieval.parallel_build import build_index_distributed, launched_world_size

    check_rebuild(args.out, args.embedder, None if args.embeddings else args.store)
    if args.backend != "auto" or launched_world_size() > 1:
        manifest = build_index_distributed(args.store, args.out, args.embedder, args.factory, args.train_size,
                                           args.batch_size, backend=args.backend, nlist=args.nlist, pq_m=args.pq_m)
    else:
        from megatron_retro.retrieval.build import build_index

        manifest = build_index(args.store, args.out, args.embedder, args.factory, args.shards, args.train_size,
                               args.embeddings, args.batch_size, nlist=args.nlist, pq_m=args.pq_m)
    if manifest:
        print(f"{args.out}: {manifest['ntotal']} vectors, {manifest['factory']}, {manifest['num_shards']} shards")
    return 0


def _index_eval(args) -> int:
    import json

    from megatron_retro.retrieval.build import eval_index

    result = eval_index(args.index_dir, args.embeddings, args.queries, args.k, nprobe=args.nprobe,
                        efSearch=args.ef_search)
    print(json.dumps(result))
    return 0


def _index_eval_qa(args) -> int:
    import json

    from megatron_retro.data.tasks.open_domain import load_bundled
    from megatron_retro.errors import UserError
    from megatron_retro.retrieval import qa_retrieval

    kinds = [k.strip() for k in args.retriever.split(",") if k.strip()]
    try:
        ks = sorted({int(k) for k in args.k.split(",")})
    except ValueError:
        raise UserError(f"--k {args.k!r}: expected comma-separated integers, e.g. 1,5,10") from None
    examples = list(load_bundled(args.qa))[:args.limit]
    questions = [e.question for e in examples]
    gold = [e.meta["gold_doc_ids"] for e in examples]
    answers = [e.answers for e in examples] if args.relevance == "answer" else None
    store = None
    if args.store:
        from megatron_retro.retrieval.chunk_store import ChunkStore

        store = ChunkStore(args.store)
    results = qa_retrieval.evaluate_qa_retrievers(
        kinds, args.index, questions, gold, ks, answers, store=store, embedder=args.embedder, nprobe=args.nprobe,
        depth=args.depth, candidates=args.candidates, reranker=args.reranker,
        on_result=lambda name, r: print(json.dumps({"retriever": name, **r}), flush=True))
    if args.table:
        print(qa_retrieval.format_table(results, ks))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("serve", help="run one shard server of the retrieval service (gRPC)")
    add_serve_args(p)
    p.set_defaults(handler=_serve)

    index = subparsers.add_parser("index", help="chunk a corpus, build and evaluate retrieval indexes")
    sub = index.add_subparsers(dest="index_command", required=True, metavar="<step>")
    c = sub.add_parser("chunks", help="tokenize documents.jsonl into a chunk store")
    c.add_argument("--documents", required=True, help="JSONL with {id, text, ...} per line")
    c.add_argument("--tokenizer", required=True, help="tokenizer model file")
    c.add_argument("--out", required=True, help="chunk store directory to write")
    c.add_argument("--chunk-length", type=int, default=64, help="m: tokens per chunk")
    c.add_argument("--neighbour-length", type=int, default=128, help="r: chunk + continuation")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(handler=_index_chunks)

    b = sub.add_parser("build", help="embed a chunk store and write a sharded faiss index "
                                     "(under torchrun or mpirun: one shard per rank)")
    b.add_argument("--store", required=True, help="chunk store directory")
    b.add_argument("--out", required=True, help="index directory to write")
    b.add_argument("--embedder", default="minilm", help="minilm | hash:<dim> | sentence-transformers path")
    b.add_argument("--embeddings", help="cached chunk embeddings .npy (default <out>/embeddings.npy)")
    b.add_argument("--factory", default="flat", help="faiss factory string or flat|ivf-flat|ivf-pq|hnsw|opq-ivf-pq")
    b.add_argument("--shards", type=int, default=1, help="number of shards (single-process build)")
    b.add_argument("--train-size", type=int, help="vectors sampled to train quantizers (default all)")
    b.add_argument("--nlist", type=int, default=256, help="IVF lists for the aliases")
    b.add_argument("--pq-m", type=int, default=16, help="PQ sub-quantizers for the aliases")
    b.add_argument("--batch-size", type=int, default=128, help="embedding batch size")
    b.add_argument("--backend", choices=["auto", "torch", "mpi"], default="auto",
                   help="multi-rank build: torch (torchrun) or mpi (mpirun + mpi4py); auto: from the launcher's "
                        "environment, one process when there is none")
    b.set_defaults(handler=_index_build)

    e = sub.add_parser("eval", help="recall@k of an index against exact search")
    e.add_argument("--index-dir", required=True)
    e.add_argument("--embeddings", required=True, help="the vectors the index was built from (.npy)")
    e.add_argument("--queries", type=int, default=1000, help="database vectors used as queries")
    e.add_argument("--k", type=int, default=10)
    e.add_argument("--nprobe", type=int)
    e.add_argument("--ef-search", type=int)
    e.set_defaults(handler=_index_eval)

    q = sub.add_parser("eval-qa", help="retrieval quality on a QA file: Hit@k, Recall@k, MRR, NDCG@k "
                                       "(a chunk is relevant when its document is a gold document)")
    q.add_argument("--index", required=True, help="index directory (its manifest names the chunk store and embedder)")
    q.add_argument("--qa", required=True, help="bundled QA JSONL with gold_doc_ids (data/qa/<split>.jsonl)")
    q.add_argument("--retriever", default="dense", help="comma-separated: dense, bm25, hybrid (BM25 + dense "
                                                        "by reciprocal rank fusion), rerank (dense + re-ranker), small2big "
                                                        "(sentence units -> their chunks), multiquery (question + "
                                                        "rule-based rewrites, dense, RRF)")
    q.add_argument("--k", default="1,5,10", help="comma-separated cut-offs")
    q.add_argument("--relevance", choices=["doc", "answer"], default="doc",
                   help="doc: any chunk of a gold document; answer: such a chunk that contains an answer")
    q.add_argument("--store", help="chunk store (default: the one recorded in the index manifest)")
    q.add_argument("--embedder", help="query embedder (default: the one recorded in the index manifest)")
    q.add_argument("--nprobe", type=int, help="IVF lists probed (default: as built)")
    q.add_argument("--depth", type=int, default=50, help="hybrid: results each retriever contributes to RRF")
    q.add_argument("--candidates", type=int, default=50, help="rerank: dense candidates re-ordered")
    q.add_argument("--reranker", default="bm25",
                   help="rerank: bm25 | cross-encoder:<path> | an embedder spec (bi-encoder cosine)")
    q.add_argument("--limit", type=int, help="evaluate the first N questions only")
    q.add_argument("--table", action="store_true", help="also print a markdown table")
    q.set_defaults(handler=_index_eval_qa)
