"""Indexed dataset round trip and megatron GPT datasets on it (with and without a process group)."""
import os

import numpy as np
import pytest
import torch

from megatron_retro.data.synthetic.encyclopedia import document_split, generate
from megatron_retro.data.indexed import (build_gpt_datasets, open_indexed,
                                         read_documents_tokens, write_indexed)
from megatron_retro.data.tokenizer import train_tokenizer
from megatron_retro.errors import UserError

SPLIT = "80,10,10"
SEQ = 48


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    d = tmp_path_factory.mktemp("indexed")
    texts = [doc.text for doc in generate(60, seed=5).documents]
    tok = train_tokenizer(texts, str(d / "tokenizer.model"), 512)
    prefix = str(d / "text_document")
    n_docs, n_tokens = write_indexed(texts, tok, prefix, progress=False)
    return texts, tok, prefix, n_docs, n_tokens


def test_round_trip(built):
    texts, tok, prefix, n_docs, n_tokens = built
    assert n_docs == len(texts)
    docs = read_documents_tokens(prefix)
    assert len(docs) == len(texts)
    assert sum(len(d) for d in docs) == n_tokens
    for text, ids in zip(texts, docs):
        assert ids.dtype == np.uint16
        assert ids.tolist() == tok.encode(text) + [tok.eod]
        assert tok.decode(ids[:-1]) == text
    assert [d.tolist() for d in read_documents_tokens(prefix, [3, 1])] == \
        [docs[3].tolist(), docs[1].tolist()]


def _doc_ids(ds, i):
    return ds._query_document_sample_shuffle_indices(i)[1].tolist()


def _check_items(ds, docs, lo, hi, n_items):
    """Shapes, dtypes, label shift, and that every sample comes from documents [lo, hi)."""
    for i in range(n_items):
        item = ds[i]
        assert set(item) == {"tokens", "labels", "loss_mask", "position_ids"}
        for key, dtype in (("tokens", torch.int64), ("labels", torch.int64),
                           ("loss_mask", torch.float32), ("position_ids", torch.int64)):
            assert item[key].shape == (SEQ,) and item[key].dtype == dtype, key
        assert torch.equal(item["labels"][:-1], item["tokens"][1:])
        assert torch.equal(item["position_ids"], torch.arange(SEQ))
        ids = _doc_ids(ds, i)
        assert all(lo <= j < hi for j in ids), (ids, lo, hi)
        # the sample's tokens + last label are a window of its documents' concatenation
        stream = np.concatenate([docs[j] for j in ids]).astype(np.int64)
        window = np.concatenate([item["tokens"].numpy(), item["labels"][-1:].numpy()])
        real = int(item["loss_mask"].sum().item())
        if real == SEQ:  # no padding: the window must occur in the stream (at a token offset)
            sb, wb = stream.tobytes(), window.astype(np.int64).tobytes()
            k = sb.find(wb)
            while k > 0 and k % 8:
                k = sb.find(wb, k + 1)
            assert k >= 0 and k % 8 == 0


def test_gpt_datasets_without_process_group(built, tmp_path):
    texts, tok, prefix, n_docs, _ = built
    assert not torch.distributed.is_initialized()
    train, valid, test = build_gpt_datasets(prefix, tok, SEQ, SPLIT, (200, None, None), seed=3,
                                            cache_dir=str(tmp_path / "cache"))
    assert len(train) >= 200 and len(valid) > 0 and len(test) > 0
    docs = read_documents_tokens(prefix)
    ranges = document_split(n_docs, SPLIT)
    _check_items(train, docs, *ranges[0], 20)
    _check_items(valid, docs, *ranges[1], len(valid))
    _check_items(test, docs, *ranges[2], len(test))
    assert set(train.indices.tolist()).isdisjoint(valid.indices.tolist())
    assert set(train.indices.tolist()).isdisjoint(test.indices.tolist())
    assert os.listdir(tmp_path / "cache")  # the index cache went where it was told
    # same seed: same samples (from the cache); other seed: another order
    again, _, _ = build_gpt_datasets(prefix, tok, SEQ, SPLIT, (200, None, None), seed=3,
                                     cache_dir=str(tmp_path / "cache"))
    assert all(torch.equal(train[i]["tokens"], again[i]["tokens"]) for i in range(10))
    other, _, _ = build_gpt_datasets(prefix, tok, SEQ, SPLIT, (200, None, None), seed=4,
                                     cache_dir=str(tmp_path / "cache"))
    assert not all(torch.equal(train[i]["tokens"], other[i]["tokens"]) for i in range(10))


def test_zero_weight_split_is_none_and_attention_mask_option(built, tmp_path):
    _, tok, prefix, _, _ = built
    train, valid, test = build_gpt_datasets(prefix, tok, SEQ, "9,1,0", (None, None, None),
                                            cache_dir=str(tmp_path / "c"),
                                            create_attention_mask=True)
    assert test is None
    item = valid[0]
    assert item["attention_mask"].shape == (1, SEQ, SEQ)
    assert item["attention_mask"].dtype == torch.bool
    assert bool(item["attention_mask"][0, 0, 1]) and not bool(item["attention_mask"][0, 1, 0])


def test_gpt_datasets_with_process_group(built, tmp_path):
    _, tok, prefix, n_docs, _ = built
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        train, valid, _ = build_gpt_datasets(prefix, tok, SEQ, SPLIT, (50, None, None),
                                             cache_dir=str(tmp_path / "cache"))
        assert len(train) >= 50
        ranges = document_split(n_docs, SPLIT)
        assert all(ranges[1][0] <= j < ranges[1][1] for j in valid.indices.tolist())
    finally:
        torch.distributed.destroy_process_group()


def test_rank_not_building_gets_none(built, tmp_path):
    _, tok, prefix, _, _ = built
    torch.distributed.init_process_group(
        "gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        assert build_gpt_datasets(prefix, tok, SEQ, SPLIT, cache_dir=str(tmp_path / "c"),
                                  build_on_this_rank=lambda: False) == (None, None, None)
    finally:
        torch.distributed.destroy_process_group()


def _two_rank_worker(rank, prefix, tok_path, cache, store, out):
    from megatron_retro.data.indexed import build_gpt_datasets as build
    from megatron_retro.data.tokenizer import load_tokenizer

    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank,
                                         world_size=2)
    train, _, _ = build(prefix, load_tokenizer(tok_path), SEQ, SPLIT, (40, None, None),
                        cache_dir=cache)
    torch.save(torch.stack([train[i]["tokens"] for i in range(8)]), f"{out}.{rank}")
    torch.distributed.destroy_process_group()


@pytest.mark.distributed
def test_gpt_datasets_two_ranks_same_samples(built, tmp_path):
    _, tok, prefix, _, _ = built
    out = str(tmp_path / "tokens")
    # fork: the children inherit the imported modules (a spawn re-imports megatron: ~10 s each)
    torch.multiprocessing.start_processes(_two_rank_worker, nprocs=2, start_method="fork", args=(
        prefix, tok.path, str(tmp_path / "cache"), str(tmp_path / "store"), out))
    a = torch.load(out + ".0", weights_only=True)
    b = torch.load(out + ".1", weights_only=True)
    assert a.shape == (8, SEQ) and torch.equal(a, b)


def test_missing_and_truncated_files(built, tmp_path):
    _, tok, prefix, _, _ = built
    with pytest.raises(UserError, match=r"nothere.idx: indexed dataset file not found"):
        open_indexed(str(tmp_path / "nothere"))
    cut = str(tmp_path / "cut")
    open(cut + ".idx", "wb").write(open(prefix + ".idx", "rb").read())
    open(cut + ".bin", "wb").write(open(prefix + ".bin", "rb").read()[:-10])
    with pytest.raises(UserError, match=r"cut.bin: \d+ bytes, the index expects \d+"):
        build_gpt_datasets(cut, tok, SEQ, SPLIT)
    open(cut + ".idx", "wb").write(b"garbage" * 10)
    with pytest.raises(UserError, match=r"cut.idx: not a valid megatron indexed dataset"):
        open_indexed(cut)
    with pytest.raises(UserError, match=r"seq_length=0"):
        build_gpt_datasets(prefix, tok, 0, SPLIT)
    with pytest.raises(UserError, match=r"split='1,2'"):
        build_gpt_datasets(prefix, tok, SEQ, "1,2")
