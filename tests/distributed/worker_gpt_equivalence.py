"""torchrun worker (4 ranks): GPT loss and gradients under many TP/PP/SP/VPP layouts vs TP1PP1.

Every layout gets the same full weights (init_by_global_name) and the same global batch; each
rank compares its local gradient slices with the TP1xPP1 reference and rank 0 prints one RESULT
line per layout with the largest relative errors.
"""
import json
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from megatron_retro.config import load_config  # noqa: E402
from megatron_retro.models.global_params import (  # noqa: E402
    assemble_full, global_shards, init_by_global_name, local_grad_view, worst_relative_error)
from megatron_retro.models.gpt import build_gpt_model  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from megatron_retro.training.batches import step_microbatches  # noqa: E402
from megatron_retro.training.engine import Engine  # noqa: E402
from megatron_retro.training.gpt_step import gpt_forward_step  # noqa: E402

VOCAB, SEQ, GBS = 512, 32, 8
LAYOUTS = [
    dict(tp=1, pp=1), dict(tp=2, pp=1), dict(tp=4, pp=1), dict(tp=2, pp=1, sp=True),
    dict(tp=4, pp=1, sp=True), dict(tp=1, pp=2), dict(tp=2, pp=2), dict(tp=2, pp=2, sp=True),
    dict(tp=1, pp=2, vpp=2),
]


class RandomTokens:
    """Deterministic random token windows with a partially masked loss."""

    def __len__(self):
        return 64

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        t = torch.randint(0, 500, (SEQ + 1,), generator=g)
        mask = torch.ones(SEQ)
        mask[: i % 5] = 0.0
        return {"tokens": t[:-1], "labels": t[1:], "loss_mask": mask, "position_ids": torch.arange(SEQ)}


def run_layout(layout):
    overrides = [f"parallel.tp={layout['tp']}", f"parallel.pp={layout['pp']}",
                 f"parallel.sequence_parallel={str(layout.get('sp', False)).lower()}",
                 "model.num_layers=4", "model.hidden_size=64", "model.num_attention_heads=8",
                 "model.num_query_groups=4", "model.ffn_hidden_size=128", f"model.seq_length={SEQ}",
                 "model.rotary_percent=0.5", "train.micro_batch_size=1", f"train.global_batch_size={GBS}"]
    if layout.get("vpp"):
        overrides.append(f"parallel.vpp={layout['vpp']}")
    cfg = load_config(None, overrides)
    ctx = initialize_parallel(cfg.parallel, seed=7)
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB)
    init_by_global_name(chunks, seed=11)
    engine = Engine(cfg, chunks, gpt_forward_step)
    for c in engine.chunks:
        c.zero_grad_buffer()
    batches = step_microbatches(RandomTokens(), 0, GBS, 1, ctx.dp, ctx.dp_rank)
    loss, _ = engine.forward_backward(batches)
    grads = [(s, local_grad_view(s).detach().clone().double()) for s in global_shards(chunks)]
    return ctx, loss, grads


def main():
    ref_ctx, ref_loss, ref = run_layout(LAYOUTS[0])
    ref_full = assemble_full(ref)
    for layout in LAYOUTS[1:]:
        ctx, loss, grads = run_layout(layout)
        worst_grad, _ = worst_relative_error(grads, ref_full)
        loss_err = abs(loss - ref_loss) / abs(ref_loss) if loss is not None else 0.0
        stats = torch.tensor([worst_grad, loss_err], dtype=torch.float64)
        dist.all_reduce(stats, op=dist.ReduceOp.MAX)
        n_loss = torch.tensor([1 if loss is not None else 0])
        dist.all_reduce(n_loss)
        if dist.get_rank() == 0:
            print("RESULT " + json.dumps({"layout": layout, "grad_rel_err": stats[0].item(),
                                          "loss_rel_err": stats[1].item(), "ref_loss": ref_loss,
                                          "ranks_with_loss": int(n_loss.item()), "params_checked": len(grads)}),
                  flush=True)
    dist.barrier()


if __name__ == "__main__":
    main()
