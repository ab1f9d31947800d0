"""Documents -> megatron indexed dataset (.bin/.idx), and GPT train/valid/test datasets on it.

``write_indexed`` tokenizes documents (tqdm progress) into one sequence per document with the
EOD token appended (``IndexedDatasetBuilder``; uint16 ids when the vocabulary fits).

``build_gpt_datasets`` runs megatron-core's ``BlendedMegatronDatasetBuilder`` with
``GPTDataset`` on one prefix and a ``split`` string ("98,2,0"): megatron cuts the *documents*
into contiguous train / valid / test ranges (``encyclopedia.document_split`` gives the same
ranges), so valid and test samples come only from documents never seen in training. Works
without a process group and with one (then every rank must call it; rank 0 builds the index
cache first, the others read it after a barrier).

Notation: ``s`` = seq_length. Each item of the returned datasets is a dict of torch tensors:
- ``tokens``       int64[s]  input ids
- ``labels``       int64[s]  next-token targets: labels[i] == tokens[i + 1] within a sample
- ``loss_mask``    float32[s] 1.0 on real tokens, 0.0 on padding
- ``position_ids`` int64[s]  0 .. s-1
- ``attention_mask`` bool[1, s, s] (True = masked out), only with create_attention_mask=True
"""
from __future__ import annotations

import os
from typing import Callable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from megatron_retro.errors import UserError


def write_indexed(texts: Sequence[str], tokenizer, prefix: str, progress: bool = True,
                  batch: int = 256) -> Tuple[int, int]:
    """Tokenize ``texts`` into ``prefix``.bin/.idx; returns (documents, tokens incl. EOD)."""
    from megatron.core.datasets.indexed_dataset import IndexedDatasetBuilder
    from tqdm import tqdm

    dtype = np.uint16 if tokenizer.vocab_size < 65500 else np.int32
    builder = IndexedDatasetBuilder(prefix + ".bin", dtype=dtype)
    n_tokens = 0
    bar = tqdm(total=len(texts), desc="tokenize", unit="doc", disable=not progress)
    for k in range(0, len(texts), batch):
        for ids in tokenizer.encode_batch(texts[k:k + batch]):
            if getattr(tokenizer, "add_bos", False):  # models trained with a leading bos (Gemma, Llama)
                ids.insert(0, tokenizer.bos)
            ids.append(tokenizer.eod)
            builder.add_document(np.asarray(ids, dtype=dtype), [len(ids)])
            n_tokens += len(ids)
        bar.update(min(batch, len(texts) - k))
    bar.close()
    builder.finalize(prefix + ".idx")
    return len(texts), n_tokens


def open_indexed(prefix: str):
    """megatron ``IndexedDataset`` at ``prefix``; UserError naming a missing or bad file."""
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    class _Opened(IndexedDataset):
        def __del__(self) -> None:  # megatron's __del__ raises on an object whose __init__ failed
            self.__dict__.pop("bin_reader", None)
            self.__dict__.pop("index", None)

    for ext in (".idx", ".bin"):
        if not os.path.isfile(prefix + ext):
            raise UserError(f"{prefix}{ext}: indexed dataset file not found")
    try:
        ds = _Opened(prefix, mmap=True)
    except (AssertionError, ValueError, OSError) as e:
        raise UserError(f"{prefix}.idx: not a valid megatron indexed dataset ({e})") from None
    expected = int(ds.sequence_lengths.astype(np.int64).sum()) * ds.index.dtype_size
    actual = os.path.getsize(prefix + ".bin")
    if actual != expected:
        raise UserError(f"{prefix}.bin: {actual} bytes, the index expects {expected} "
                        f"(truncated or from another dataset)")
    return ds


def read_documents_tokens(prefix: str, doc_ids: Optional[Iterable[int]] = None) -> List[np.ndarray]:
    """Token ids (with the trailing EOD) of the given documents (all by default).

    Copies: megatron's arrays are views of a memory map that closes with its dataset.
    """
    ds = open_indexed(prefix)
    ids = range(len(ds)) if doc_ids is None else doc_ids
    return [np.array(ds[i], copy=True) for i in ids]


def build_gpt_datasets(prefix: str, tokenizer, seq_length: int, split: str = "98,2,0",
                       num_samples: Sequence[Optional[int]] = (None, None, None),
                       seed: int = 1234, cache_dir: Optional[str] = None,
                       create_attention_mask: bool = False,
                       build_on_this_rank: Callable[[], bool] = lambda: True):
    """(train, valid, test) megatron ``GPTDataset``s (None for a split of weight 0).

    ``num_samples[i]`` = samples to draw for split i (None = one epoch; more than one epoch
    repeats the split's documents in a new order). The index cache goes to ``cache_dir``
    (default: ``<dir of prefix>/cache``). Item layout: see the module docstring.
    With a process group every rank must call this; ``build_on_this_rank()`` False (e.g. a
    middle pipeline stage) makes this rank take part in the barriers and get Nones.
    """
    from megatron.core.datasets.blended_megatron_dataset_builder import (
        BlendedMegatronDatasetBuilder)
    from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    from megatron_retro.data.synthetic.encyclopedia import parse_split

    if seq_length < 1:
        raise UserError(f"seq_length={seq_length}: must be >= 1")
    if len(num_samples) != 3:
        raise UserError(f"num_samples={tuple(num_samples)}: need three values (train, valid, test)")
    parse_split(split)
    open_indexed(prefix)  # clear errors for missing or truncated files
    cache = cache_dir or os.path.join(os.path.dirname(os.path.abspath(prefix)), "cache")
    config = GPTDatasetConfig(
        random_seed=seed, sequence_length=seq_length, blend=([prefix], None), split=split,
        tokenizer=tokenizer.megatron, path_to_cache=cache,
        reset_position_ids=False, reset_attention_mask=False, eod_mask_loss=False,
        create_attention_mask=create_attention_mask)
    sizes = [None if n is None else int(n) for n in num_samples]
    train, valid, test = BlendedMegatronDatasetBuilder(
        GPTDataset, sizes, build_on_this_rank, config).build()
    return train, valid, test
