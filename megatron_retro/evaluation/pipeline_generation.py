"""Greedy generation through megatron's pipeline schedule (any TP x PP x VPP), without a KV cache.

Each new token costs one forward-only pass of the schedule over the whole fixed-length window
[bs, p + max_new] (right-filled; causal attention keeps the filler from changing earlier
logits); the last pipeline stage picks the argmax at the current position and broadcasts it to
the other stages of its pipeline group.  Slower than the KV-cached single-stage ``generate``
(O(n²) instead of O(n)), which is why ``answer_eval`` uses it only when the model is pipelined.

RETRO: ``neighbours`` int64 [bs, l', k, r] are the neighbours of the prompt's complete chunks;
chunks beyond them get pad neighbours, which no token can see before the chunk is complete.
"""
from __future__ import annotations

from functools import partial
from typing import Optional

import torch
import torch.distributed as dist


def _logits_forward_step(batch: dict, data_iterator, model):
    """Forward step returning the last stage's logits [bs, n, V] as non-loss data."""
    next(data_iterator)
    device = next(model.parameters()).device
    kwargs = {"runtime_gather_output": True}
    if "neighbours" in batch:
        kwargs["neighbours"] = batch["neighbours"].to(device)
    output = model(batch["tokens"].to(device), batch["position_ids"].to(device), None, **kwargs)

    def collect(output_tensor, non_loss_data=False):
        return output_tensor
    return output, collect


@torch.no_grad()
def generate_pipelined(chunks: list, prompts: torch.Tensor, max_new_tokens: int, vocab_size: int, *,
                       eod: Optional[int] = None, neighbours: Optional[torch.Tensor] = None,
                       chunk_length: int = 64, pad_id: int = 0) -> torch.Tensor:
    """Collective over the pipeline group: prompts int64 [bs, p] -> int64 [bs, p + max_new_tokens].

    ``chunks``: this rank's model chunks (unwrapped).  After an eod, a row keeps emitting eod.
    """
    from megatron.core import parallel_state
    from megatron.core.pipeline_parallel import get_forward_backward_func

    bs, p = prompts.shape
    total = p + max_new_tokens
    shapes = {"seq_length": total}
    batch = {}
    if neighbours is not None:
        from megatron_retro.models.retro.payload import schedule_shape_kwargs

        seq_chunks = -(-total // chunk_length)
        total = seq_chunks * chunk_length  # RETRO runs on whole chunks
        _, have, k, r = neighbours.shape
        nb = torch.full((bs, seq_chunks, k, r), pad_id, dtype=torch.long)
        nb[:, :have] = neighbours
        batch["neighbours"] = nb
        shapes = schedule_shape_kwargs(chunks, total, bs)
    for c in chunks:
        c.eval()
    window = torch.full((bs, total), eod if eod is not None else pad_id, dtype=torch.long)
    window[:, :p] = prompts
    batch["position_ids"] = torch.arange(total).expand(bs, -1)
    done = torch.zeros(bs, dtype=torch.bool)
    is_last = parallel_state.is_pipeline_last_stage(ignore_virtual=True)
    src = parallel_state.get_pipeline_model_parallel_last_rank()
    group = parallel_state.get_pipeline_model_parallel_group()
    model = chunks if len(chunks) > 1 else chunks[0]
    for n in range(p, p + max_new_tokens):
        batch["tokens"] = window
        iterators = [iter([batch]) for _ in chunks]
        out = get_forward_backward_func()(
            forward_step_func=partial(_logits_forward_step, batch), data_iterator=iterators if len(chunks) > 1
            else iterators[0], model=model, num_microbatches=1, micro_batch_size=bs,
            forward_only=True, collect_non_loss_data=True, **shapes)
        nxt = torch.zeros(bs, dtype=torch.long)
        if is_last:
            logits = out[0]                                       # [bs, total, V(padded)]
            nxt = logits[:, n - 1, :vocab_size].float().argmax(-1).cpu()
        if parallel_state.get_pipeline_model_parallel_world_size() > 1:
            dist.broadcast(nxt, src=src, group=group)
        if eod is not None:
            nxt = torch.where(done, torch.full_like(nxt, eod), nxt)
            done |= nxt == eod
        window[:, n] = nxt
        if eod is not None and bool(done.all()):
            window[:, n + 1:p + max_new_tokens] = eod
            break
    return window[:, :p + max_new_tokens]
