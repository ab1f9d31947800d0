"""RETRO pretraining samples: per-chunk document ids (same-document rule), neighbour shapes,
one retrieval call per block of samples."""
import numpy as np
import torch

from megatron_retro.training.retro_data import RetroSamples, chunk_documents

EOD, M, K, R = 3, 4, 2, 6


def test_chunk_documents_follow_eod_boundaries():
    #          doc 5 ........ | doc 9 ............... | doc 11
    tokens = np.array([7, 7, 7, EOD, 8, 8, 8, 8, 8, EOD, 9, 9])
    # chunks end at positions 3 (EOD of doc 5), 7 (doc 9), 11 (doc 11)
    assert chunk_documents(tokens, np.array([5, 9, 11]), EOD, M).tolist() == [5, 9, 11]
    assert chunk_documents(tokens[:8], np.array([5, 9]), EOD, M).tolist() == [5, 9]


class FakeGPTDataset:
    """Items of 8 tokens; sample i spans documents (100 + i, 200 + i) split at position 5."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        t = torch.full((8,), 10 + i)
        t[4] = EOD
        return {"tokens": t, "labels": t, "loss_mask": torch.ones(8), "position_ids": torch.arange(8)}

    def _query_document_sample_shuffle_indices(self, i):
        return None, np.array([100 + i, 200 + i])


class FakeSource:
    def __init__(self):
        self.calls = []

    def neighbours(self, chunks, doc_ids):
        self.calls.append((chunks.copy(), doc_ids.copy()))
        n = chunks.shape[0]
        out = np.zeros((n, chunks.shape[1], K, R), dtype=np.int64)
        out[:] = (doc_ids * 1000 + chunks[:, 0, 0])[:, None, None, None]
        return out


def test_retro_samples_route_each_chunk_with_its_document():
    source = FakeSource()
    ds = RetroSamples(FakeGPTDataset(), source, M, EOD, block=4)
    item = ds[5]
    assert item["neighbours"].shape == (2, K, R) and item["neighbours"].dtype == torch.int64
    # chunk 0 ends at position 3 (doc 105), chunk 1 ends at 7, after the EOD at 4 (doc 205)
    assert item["neighbours"][0, 0, 0].item() == 105 * 1000 + 15
    assert item["neighbours"][1, 0, 0].item() == 205 * 1000 + EOD
    chunks, docs = source.calls[0]
    assert chunks.shape == (4 * 2, 1, M) and docs.tolist() == [104, 204, 105, 205, 106, 206, 107, 207]
    ds[6], ds[7], ds[4]
    assert len(source.calls) == 1  # the block of samples 4..7 was fetched once
    ds[9]
    assert len(source.calls) == 2 and source.calls[1][0].shape[0] == 2 * 2  # last, short block
