"""RETRO pretraining samples: per-chunk document ids (same-document rule) of the chunk queries."""
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


def test_retro_samples_route_each_chunk_with_its_document():
    ds = RetroSamples(FakeGPTDataset(), M, EOD)
    assert ds[5]["tokens"].shape == (8,)  # the dataset itself retrieves nothing
    chunks, docs = ds.queries([5, 6])
    assert chunks.shape == (2, 2, M) and chunks.dtype == np.int64
    # chunk 0 ends at position 3 (doc 105), chunk 1 ends at 7, after the EOD at 4 (doc 205)
    assert docs.tolist() == [[105, 205], [106, 206]]
    assert chunks[0, 0, 0] == 15 and chunks[0, 1, 0] == EOD
