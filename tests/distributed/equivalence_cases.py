"""What the GPT and RETRO layout-equivalence workers share: the layouts' overrides, the random
samples (tokens, a partially masked loss, and for RETRO neighbours), one layout's loss and local
gradient slices, and the comparison with the TP1xPP1 reference reduced over the ranks."""
import torch
import torch.distributed as dist

from megatron_retro.models.global_params import global_shards, local_grad_view, worst_relative_error
from megatron_retro.training.batches import step_microbatches


class RandomSamples:
    """Deterministic random windows of ``seq`` tokens with a partially masked loss; with
    ``neighbours=(l, k, r)`` also random neighbour tokens [l, k, r] per sample."""

    def __init__(self, seq: int, neighbours=None):
        self.seq, self.neighbours = seq, neighbours

    def __len__(self):
        return 64

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(i)
        t = torch.randint(0, 500, (self.seq + 1,), generator=g)
        mask = torch.ones(self.seq)
        mask[: i % 5] = 0.0
        sample = {"tokens": t[:-1], "labels": t[1:], "loss_mask": mask, "position_ids": torch.arange(self.seq)}
        if self.neighbours:
            sample["neighbours"] = torch.randint(0, 500, self.neighbours, generator=g)
        return sample


def layout_overrides(layout: dict) -> list:
    """Config overrides of one layout dict (tp, pp, optional sp and vpp)."""
    overrides = [f"parallel.tp={layout['tp']}", f"parallel.pp={layout['pp']}",
                 f"parallel.sequence_parallel={str(layout.get('sp', False)).lower()}"]
    if layout.get("vpp"):
        overrides.append(f"parallel.vpp={layout['vpp']}")
    return overrides


def loss_and_grads(engine, chunks, ctx, samples, global_batch: int):
    """One forward/backward of step 0's global batch: (loss or None off the last stage, [(shard, grad)])."""
    for c in engine.chunks:
        c.zero_grad_buffer()
    batches = step_microbatches(samples, 0, global_batch, 1, ctx.dp, ctx.dp_rank)
    loss, _ = engine.forward_backward(batches)
    grads = [(s, local_grad_view(s).detach().clone().double()) for s in global_shards(chunks)]
    return loss, grads


def compare(loss, ref_loss, grads, ref_full):
    """(largest gradient and loss relative errors over all ranks, ranks with a loss, this rank's worst key)."""
    worst_grad, worst_key = worst_relative_error(grads, ref_full)
    loss_err = abs(loss - ref_loss) / abs(ref_loss) if loss is not None else 0.0
    stats = torch.tensor([worst_grad, loss_err], dtype=torch.float64)
    dist.all_reduce(stats, op=dist.ReduceOp.MAX)
    n_loss = torch.tensor([1 if loss is not None else 0])
    dist.all_reduce(n_loss)
    return stats[0].item(), stats[1].item(), int(n_loss.item()), worst_key
