"""torchrun worker (4 ranks): RETRO loss and gradients under TP/PP/SP layouts vs TP1PP1.

Every layout gets the same full weights (init_by_global_name), the same global batch and the
same neighbours.  Retrieval layers 2 and 4 of a 4-layer decoder: with PP=2 the encoder runs on
the first stage and layer 4's cross-attention on the second, so the neighbour context crosses
the stage boundary in the payload (with interleaving, VPP=2: one layer per model chunk, the
payload goes around the pipeline twice).  Rank 0 prints one RESULT line per layout.
"""
import json
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from megatron_retro.config import load_config  # noqa: E402
from megatron_retro.models.global_params import (  # noqa: E402
    assemble_full, global_shards, init_by_global_name, local_grad_view, worst_relative_error)
from megatron_retro.models.retro import build_retro_model  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from megatron_retro.training.batches import step_microbatches  # noqa: E402
from megatron_retro.training.retro_step import RetroEngine  # noqa: E402

VOCAB, SEQ, GBS, M, K, R = 512, 32, 4, 8, 2, 16
LAYOUTS = [
    dict(tp=1, pp=1), dict(tp=2, pp=1), dict(tp=2, pp=1, sp=True), dict(tp=1, pp=2), dict(tp=2, pp=2),
    dict(tp=2, pp=2, sp=True), dict(tp=1, pp=2, vpp=2),
]


class RandomRetroSamples:
    """Deterministic random tokens, neighbours and a partially masked loss."""

    def __len__(self):
        return 64

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        t = torch.randint(0, 500, (SEQ + 1,), generator=g)
        mask = torch.ones(SEQ)
        mask[: i % 5] = 0.0
        return {"tokens": t[:-1], "labels": t[1:], "loss_mask": mask, "position_ids": torch.arange(SEQ),
                "neighbours": torch.randint(0, 500, (SEQ // M, K, R), generator=g)}


def run_layout(layout, retrieval="[2,4]"):
    overrides = [f"parallel.tp={layout['tp']}", f"parallel.pp={layout['pp']}",
                 f"parallel.sequence_parallel={str(layout.get('sp', False)).lower()}",
                 "model.arch=retro", "model.num_layers=4", "model.hidden_size=64", "model.num_attention_heads=4",
                 "model.ffn_hidden_size=128", f"model.seq_length={SEQ}", "model.rotary_percent=0.5",
                 "model.add_bias_linear=true",
                 f"retro.chunk_length={M}", f"retro.num_neighbours={K}", f"retro.neighbour_length={R}",
                 f"retro.retrieval_layers={retrieval}", "retro.attention_gate=true",
                 "train.micro_batch_size=1", f"train.global_batch_size={GBS}"]
    if layout.get("vpp"):
        overrides.append(f"parallel.vpp={layout['vpp']}")
    cfg = load_config(None, overrides)
    ctx = initialize_parallel(cfg.parallel, seed=7)
    chunks = build_retro_model(cfg.model, cfg.retro, cfg.parallel, vocab_size=VOCAB)
    init_by_global_name(chunks, seed=11)
    engine = RetroEngine(cfg, chunks)
    for c in engine.chunks:
        c.zero_grad_buffer()
    batches = step_microbatches(RandomRetroSamples(), 0, GBS, 1, ctx.dp, ctx.dp_rank)
    loss, _ = engine.forward_backward(batches)
    grads = [(s, local_grad_view(s).detach().clone().double()) for s in global_shards(chunks)]
    return ctx, loss, grads


def main():
    _, ref_loss, ref = run_layout(LAYOUTS[0])
    ref_full = assemble_full(ref)
    retro_keys = sum(1 for key, _ in ref_full if "cross_attention" in key)
    for layout in LAYOUTS[1:]:
        _, loss, grads = run_layout(layout)
        worst_grad, worst_key = worst_relative_error(grads, ref_full)
        checked_retro = sum("cross_attention" in shard.key for shard, _ in grads)
        loss_err = abs(loss - ref_loss) / abs(ref_loss) if loss is not None else 0.0
        stats = torch.tensor([worst_grad, loss_err], dtype=torch.float64)
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)
        counts = torch.tensor([1 if loss is not None else 0, checked_retro])
        dist.all_reduce(counts)
        if dist.get_rank() == 0:
            print("RESULT " + json.dumps({
                "layout": layout, "grad_rel_err": stats[0].item(), "loss_rel_err": stats[1].item(),
                "ref_loss": ref_loss, "ranks_with_loss": int(counts[0]), "retro_shards_checked": int(counts[1]),
                "retro_keys_in_ref": retro_keys, "worst_key_rank0": worst_key}), flush=True)
    dist.barrier()


if __name__ == "__main__":
    main()
