"""Greedy and sampled decoding for GPT and RETRO, with or without a KV cache.

Notation: bs prompts, p prompt length, n current length, m chunk length, k neighbours, r
neighbour length, V vocabulary.

The KV cache is megatron-core's ``StaticInferenceContext`` (self-attention keys/values per
layer); RETRO's retrieval layers keep their own cache in it (chunk states and encoded neighbours,
see ``RetroChunkedCrossAttention._forward_inference``).  RETRO retrieves whenever a chunk
boundary is crossed: as soon as the sequence holds c·m + m tokens, the neighbours of chunk c are
fetched with chunk c (the last complete chunk) as the query, before the token c·m + m - 1 (the
first one allowed to see them) is fed to the model.

Single pipeline stage (any TP; logits are gathered over TP).
"""
from __future__ import annotations

from typing import Callable, Optional

import numpy as np
import torch

Retriever = Callable[[np.ndarray], np.ndarray]  # chunks int64[bs, 1, m] -> int64[bs, 1, k, r]


def neighbour_retriever(source, exclude_doc_ids: Optional[np.ndarray] = None) -> Retriever:
    """Adapt a ``NeighbourSource`` (``neighbours(chunks, doc_ids)``) to a generation retriever."""
    def retrieve(chunks: np.ndarray) -> np.ndarray:
        docs = exclude_doc_ids if exclude_doc_ids is not None else np.full(chunks.shape[0], -1, np.int64)
        return np.asarray(source.neighbours(chunks, docs))
    return retrieve


class _Neighbours:
    """Neighbours of the complete chunks of the sequences so far: int64 [bs, n // m, k, r]."""

    def __init__(self, retriever: Retriever, m: int, k: int, r: int, bs: int):
        self.retriever, self.m, self.k, self.r = retriever, m, k, r
        self.ids = torch.zeros(bs, 0, k, r, dtype=torch.long)

    def update(self, tokens: torch.Tensor) -> torch.Tensor:
        bs, n = tokens.shape
        for c in range(self.ids.shape[1], n // self.m):
            chunk = tokens[:, c * self.m:(c + 1) * self.m].reshape(bs, 1, self.m)
            got = torch.as_tensor(self.retriever(chunk.cpu().numpy()), dtype=torch.long)
            if tuple(got.shape) != (bs, 1, self.k, self.r):
                raise ValueError(f"retriever returned shape {tuple(got.shape)}, expected {(bs, 1, self.k, self.r)}")
            self.ids = torch.cat([self.ids, got], dim=1)
        return self.ids

    def padded(self, n: int, pad_id: int) -> torch.Tensor:
        """[bs, ceil(n / m), k, r]: the incomplete last chunk gets pad neighbours (no token sees them)."""
        l = -(-n // self.m)
        extra = l - self.ids.shape[1]
        if extra == 0:
            return self.ids
        pad = torch.full((self.ids.shape[0], extra, self.k, self.r), pad_id, dtype=torch.long)
        return torch.cat([self.ids, pad], dim=1)


def _pick(logits: torch.Tensor, greedy: bool, temperature: float, top_k: int, gen: torch.Generator):
    """logits [bs, V] -> next token [bs]."""
    if greedy:
        return logits.argmax(-1)
    logits = logits.double() / max(temperature, 1e-6)
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=gen).squeeze(1).to(logits.device)


@torch.no_grad()
def generate(model, prompts: torch.Tensor, max_new_tokens: int, vocab_size: int, *, use_cache: bool = True,
             greedy: bool = True, temperature: float = 1.0, top_k: int = 0, seed: int = 0,
             retriever: Optional[Retriever] = None, pad_id: int = 0, eod: Optional[int] = None) -> torch.Tensor:
    """prompts int64 [bs, p] -> int64 [bs, p + new] (new <= max_new_tokens; stops when all hit eod).

    ``model``: one GPTModel or RetroModel chunk holding every layer.  ``retriever`` is required
    for RETRO (see :func:`neighbour_retriever`).
    """
    from megatron.core.inference.contexts import StaticInferenceContext

    from megatron_retro.models.retro.model import RetroModel

    if not (model.pre_process and model.post_process):
        raise ValueError("generate: the model must hold every layer (pipeline parallel generation is not supported)")
    model.eval()
    device = next(model.parameters()).device
    tokens = prompts.to(device).long()
    bs, p = tokens.shape
    retro = isinstance(model, RetroModel)
    neighbours = None
    if retro:
        if retriever is None:
            raise ValueError("generate: a RETRO model needs a retriever")
        neighbours = _Neighbours(retriever, model.chunk_length, model.num_neighbours, model.neighbour_length, bs)
    ictx = None
    use_cache = use_cache and getattr(model, "supports_kv_cache", True)  # megatron_compat RETRO: none
    if use_cache:
        ictx = StaticInferenceContext(bs, p + max_new_tokens)
        ictx.materialize_only_last_token_logits = True
    gen = torch.Generator().manual_seed(seed)
    done = torch.zeros(bs, dtype=torch.bool, device=device)
    processed = 0
    for _ in range(max_new_tokens):
        n = tokens.shape[1]
        kwargs = {"runtime_gather_output": True}
        if use_cache:
            new = tokens[:, processed:]
            positions = torch.arange(processed, n, device=device).expand(bs, -1)
            if retro:
                kwargs["neighbours"] = neighbours.update(tokens).to(device)
            logits = model(new, positions, None, inference_context=ictx, **kwargs)
            ictx.sequence_len_offset += new.shape[1]
            processed = n
        else:
            positions = torch.arange(n, device=device).expand(bs, -1)
            if retro:
                neighbours.update(tokens)
                kwargs["neighbours"] = neighbours.padded(n, pad_id).to(device)
            logits = model(tokens, positions, None, **kwargs)
        nxt = _pick(logits[:, -1, :vocab_size].float(), greedy, temperature, top_k, gen)
        if eod is not None:
            nxt = torch.where(done, torch.full_like(nxt, eod), nxt)
            done |= nxt == eod
        tokens = torch.cat([tokens, nxt[:, None]], dim=1)
        if eod is not None and bool(done.all()):
            break
    return tokens
