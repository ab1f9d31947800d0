"""QA retrieval quality: gold sets are the chunks of the gold documents, metrics on a hand-built
ranking (gold document at rank 2), and `index eval-qa` on a small bundled corpus (hashing
embedder) against a slow reference computed from documents, not chunk sets."""
import argparse
import json
import math

import numpy as np
import pytest

from megatron_retro.errors import UserError
from megatron_retro.retrieval import commands
from megatron_retro.retrieval.qa_retrieval import evaluate_qa, gold_chunks, retrieve_passages


class FixedRetriever:
    """Returns the same ranked chunk ids for every question (scores descending)."""

    def __init__(self, ranked):
        self.ranked = np.asarray(ranked, dtype=np.int64)

    def search(self, texts, k):
        ids = self.ranked[:len(texts), :k]
        return -np.arange(k, dtype=np.float32)[None].repeat(len(texts), 0), ids


def _doc_chunks(store, doc):
    return np.flatnonzero(np.asarray(store.chunk_doc) == doc)


def test_gold_doc_at_rank_two(store):
    docs = sorted(set(np.asarray(store.chunk_doc).tolist()))
    gold_doc, other = docs[3], docs[0]
    gold_ids, other_ids = _doc_chunks(store, gold_doc), _doc_chunks(store, other)
    assert len(gold_ids) >= 2 and len(other_ids) >= 2
    # rank 1: another document's chunk, rank 2: a gold chunk, then other docs, another gold chunk at rank 5
    ranked = [[other_ids[0], gold_ids[1], other_ids[1], -1, gold_ids[0]]]
    assert gold_chunks(store, [[gold_doc]]) == [set(gold_ids.tolist())]
    m = evaluate_qa(FixedRetriever(ranked), store, ["q"], [[gold_doc]], ks=(1, 2, 5))
    g = len(gold_ids)
    assert m["hit@1"] == 0.0 and m["hit@2"] == 1.0 and m["hit@5"] == 1.0
    assert m["mrr"] == pytest.approx(0.5)
    assert m["recall@2"] == pytest.approx(1 / g) and m["recall@5"] == pytest.approx(2 / g)
    ideal = sum(1 / math.log2(p + 1) for p in range(1, min(g, 5) + 1))
    assert m["ndcg@5"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(6)) / ideal)
    assert m["questions"] == 1 and m["questions_without_gold"] == 0
    # a gold document that is not in the store scores 0 and is counted; all missing is an error
    m2 = evaluate_qa(FixedRetriever(ranked * 2), store, ["q", "r"], [[gold_doc], [10 ** 9]], ks=(2,))
    assert m2["hit@2"] == 0.5 and m2["questions_without_gold"] == 1
    with pytest.raises(UserError, match="none of the 1 questions has a relevant chunk"):
        evaluate_qa(FixedRetriever(ranked), store, ["q"], [[10 ** 9]])


def test_answer_relevance_keeps_only_answer_bearing_chunks(store):
    doc = int(store.chunk_doc[0])
    ids = _doc_chunks(store, doc)
    word = store.text(int(ids[0])).split()[0]
    want = {int(c) for c in ids if word.lower() in store.text(int(c)).lower()}
    assert gold_chunks(store, [[doc]], answers=[[word.upper()]]) == [want]
    assert gold_chunks(store, [[doc]], answers=[["no-such-answer-xyz"]]) == [set()]


def test_retrieve_passages_shape_and_errors(store):
    r = FixedRetriever([[3, 1, -1]] * 5)
    ids = retrieve_passages(r, ["a", "b", "c", "d", "e"], 3, batch_size=2)
    assert ids.dtype == np.int64 and ids.shape == (5, 3) and (ids == [3, 1, -1]).all()
    with pytest.raises(UserError, match="k=0"):
        retrieve_passages(r, ["a"], 0)
    with pytest.raises(UserError, match=r"questions\[1\] is int"):
        retrieve_passages(r, ["a", 7], 2)


def _cli(argv):
    parser = argparse.ArgumentParser()
    commands.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.handler(args)


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    from megatron_retro.data.prepare import prepare_bundled_data

    d = tmp_path_factory.mktemp("qa") / "bundled"
    return prepare_bundled_data(str(d), num_entities=20, vocab_size=512, seed=5, split="90,10,0", progress=False)


def test_eval_qa_cli_on_bundled_subset(bundled, tmp_path, capsys):
    from megatron_retro.retrieval.chunk_store import ChunkStore
    from megatron_retro.retrieval.embedder import HashingEmbedder
    from megatron_retro.retrieval.qa_retrieval import open_qa_retrievers

    store_dir, index_dir = tmp_path / "chunks", tmp_path / "index"
    assert _cli(["index", "chunks", "--documents", bundled.documents, "--tokenizer", bundled.tokenizer,
                 "--out", str(store_dir)]) == 0
    assert _cli(["index", "build", "--store", str(store_dir), "--out", str(index_dir), "--embedder", "hash:64",
                 "--shards", "2"]) == 0
    capsys.readouterr()
    qa = bundled.qa["train"]
    assert _cli(["index", "eval-qa", "--index", str(index_dir), "--qa", qa, "--retriever",
                 "dense,bm25,hybrid,rerank", "--k", "1,5,10", "--limit", "40", "--table"]) == 0
    out = capsys.readouterr().out
    rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [r["retriever"] for r in rows] == ["dense", "bm25", "hybrid", "dense + bm25 re-rank (top 50)"]
    assert "| retriever | Hit@1 |" in out

    # slow reference: per question, the documents of the retrieved chunks against the gold documents
    store = ChunkStore(store_dir)
    lines = [json.loads(x) for x in open(qa)][:40]
    questions, gold_docs = [x["question"] for x in lines], [set(x["gold_doc_ids"]) for x in lines]
    docs_of = np.asarray(store.chunk_doc)
    retrievers = open_qa_retrievers(["dense", "bm25", "hybrid", "rerank"], str(index_dir))
    for row, (kind, retriever) in zip(rows, retrievers.items()):
        ranked = retrieve_passages(retriever, questions, 10)
        hits, rr, rec5 = [], [], []
        for ids, g in zip(ranked, gold_docs):
            rel = [i >= 0 and int(docs_of[i]) in g for i in ids]
            n_gold = int(np.isin(docs_of, list(g)).sum())
            hits.append(any(rel[:5]))
            rr.append(next((1 / (p + 1) for p, x in enumerate(rel) if x), 0.0))
            rec5.append(sum(rel[:5]) / n_gold if n_gold else 0.0)
        assert row["hit@5"] == pytest.approx(np.mean(hits)), kind
        assert row["mrr"] == pytest.approx(np.mean(rr)), kind
        assert row["recall@5"] == pytest.approx(np.mean(rec5)), kind
        assert row["questions"] == 40

    # dense = brute-force cosine over the hashing embeddings of every chunk
    emb = HashingEmbedder(64)
    scores = emb.embed(questions) @ emb.embed(store.texts()).T                     # [n, C]
    got_s, got_i = retrievers["dense"].search(questions, 10)
    np.testing.assert_allclose(got_s, -np.sort(-scores, axis=1)[:, :10], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.take_along_axis(scores, got_i, 1), got_s, rtol=1e-5, atol=1e-6)
    # the re-ranked list holds dense candidates, ordered by their BM25 score
    _, cand = retrievers["dense"].search(questions, 50)
    _, rer = retrievers["rerank"].search(questions, 10)
    bm25 = retrievers["bm25"].score(questions, rer)
    assert all(set(r) <= set(c) for r, c in zip(rer, cand)) and (np.diff(bm25, axis=1) <= 1e-6).all()


def test_eval_qa_cli_errors(bundled, tmp_path, store):
    with pytest.raises(UserError, match="no manifest.json"):
        _cli(["index", "eval-qa", "--index", str(tmp_path), "--qa", bundled.qa["train"]])
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "q1", "question": "x?", "answers": ["a"], "entity": "e", "relation": "r", '
                   '"fact_id": "f", "gold_doc_ids": ["7"]}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:1: .*gold_doc_ids.*integer"):
        _cli(["index", "eval-qa", "--index", str(tmp_path), "--qa", str(bad)])
    with pytest.raises(UserError, match="retriever 'sparse'"):
        _cli(["index", "eval-qa", "--index", str(tmp_path), "--qa", bundled.qa["train"], "--retriever", "sparse",
              "--store", str(store.path)])


def test_cross_encoder_reranker_orders_by_the_models_logits(store, tmp_path):
    """A tiny random BERT cross-encoder (no download): the re-ranker's scores are the model's own
    logits on (question, chunk text) pairs under the CrossEncoder's activation; id -1 scores -inf."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from megatron_retro.retrieval.hybrid import CrossEncoderReranker, RerankedRetriever

    words = sorted({w for i in range(len(store)) for w in store.text(i).split()} | {"violin", "orbit"})
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    cfg = transformers.BertConfig(vocab_size=len(words) + 5, hidden_size=16, num_hidden_layers=1,
                                  num_attention_heads=2, intermediate_size=32, num_labels=1,
                                  initializer_range=0.5)  # spread logits: no near-ties
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(cfg).eval()
    model.save_pretrained(tmp_path / "ce")
    tok.save_pretrained(tmp_path / "ce")
    reranker = CrossEncoderReranker(str(tmp_path / "ce"), store, device="cpu")
    questions = ["violin orbit", "granite magma"]
    cand = np.array([[0, 5, 9, -1, 12], [3, 4, 20, 21, 7]])
    got = reranker(questions, cand)
    assert got.shape == cand.shape and np.isneginf(got[0, 3]) and np.isfinite(got[1]).all()
    for q, row in enumerate(cand):
        ids = [int(i) for i in row if i >= 0]
        enc = tok([questions[q]] * len(ids), [store.text(i) for i in ids], padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**enc).logits[:, 0].numpy()
        want = reranker.model.activation_fn(torch.from_numpy(logits)).numpy()
        np.testing.assert_allclose(got[q][row >= 0], want, rtol=1e-4, atol=1e-6)
        assert list(np.argsort(-got[q][row >= 0])) == list(np.argsort(-logits))

    class Fixed:
        def search(self, texts, k):
            return np.zeros(cand.shape, np.float32)[:, :k], cand[:, :k]

    _, order = RerankedRetriever(Fixed(), reranker, candidates=5).search(questions, 5)
    np.testing.assert_array_equal(order, np.take_along_axis(cand, np.argsort(-got, axis=1, kind="stable"), 1))


def test_eval_qa_cli_runs_the_variants(bundled, tmp_path, capsys):
    store_dir, index_dir = tmp_path / "chunks", tmp_path / "index"
    assert _cli(["index", "chunks", "--documents", bundled.documents, "--tokenizer", bundled.tokenizer,
                "--out", str(store_dir)]) == 0
    assert _cli(["index", "build", "--store", str(store_dir), "--out", str(index_dir), "--embedder", "hash:64"]) == 0
    capsys.readouterr()
    assert _cli(["index", "eval-qa", "--index", str(index_dir), "--qa", bundled.qa["train"], "--retriever",
                "dense,small2big,multiquery", "--limit", "30", "--table"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert [r["retriever"] for r in rows] == ["dense", "small-to-big (sentences -> chunk)",
                                              "multi-query fusion (dense, RRF)"]
    for r in rows:
        assert r["questions"] == 30 and 0.0 < r["hit@10"] <= 1.0
