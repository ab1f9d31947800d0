"""torchrun worker (2 ranks): the chunked output-layer + cross-entropy at TP2 (and TP2 + SP).

(1) The op on a vocabulary split over the TP group vs single-process plain cross-entropy on the
full vocabulary (losses, the reduced input gradient, each rank's weight-gradient shard).
(2) A GPT at TP2 and TP2+SP: one train batch through the fused path vs megatron's output layer +
vocab-parallel cross-entropy on the same model (loss, every gradient).  Rank 0 prints RESULT lines.
"""
import json
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from megatron_retro.config import load_config  # noqa: E402
from megatron_retro.models.global_params import init_by_global_name  # noqa: E402
from megatron_retro.models.gpt import build_gpt_model  # noqa: E402
from megatron_retro.models.output_loss import linear_cross_entropy  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from megatron_retro.training.engine import Engine  # noqa: E402
from megatron_retro.training.gpt_step import gpt_forward_step  # noqa: E402


def _max_err(a, b):
    t = torch.tensor([(a - b).abs().max().item() / max(b.abs().max().item(), 1e-12)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def op_case():
    from megatron.core import parallel_state

    cfg = load_config(None, ["parallel.tp=2"])
    initialize_parallel(cfg.parallel, seed=1)
    group, rank = parallel_state.get_tensor_model_parallel_group(), parallel_state.get_tensor_model_parallel_rank()
    ns, bs, d, v = 7, 3, 16, 38                       # v/tp = 19 rows per rank
    g = torch.Generator().manual_seed(0)
    h = torch.randn(ns, bs, d, generator=g, dtype=torch.float64)
    w = torch.randn(v, d, generator=g, dtype=torch.float64)
    labels = torch.randint(0, v, (bs, ns), generator=g)
    mask = (torch.rand(bs, ns, generator=g) > 0.3).double()
    coeff = torch.randn(bs, ns, generator=g, dtype=torch.float64)
    rows = {}
    for upstream in ("mask", "arbitrary"):
        c = mask * 2.0 if upstream == "mask" else coeff * mask
        h_ref, w_ref = h.clone().requires_grad_(), w.clone().requires_grad_()
        ref = F.cross_entropy(torch.einsum("sbd,vd->bsv", h_ref, w_ref).reshape(-1, v), labels.reshape(-1),
                              reduction="none").view(bs, ns) * mask
        (ref * c).sum().backward()
        h1 = h.clone().requires_grad_()
        w1 = w[rank * 19:(rank + 1) * 19].clone().requires_grad_()
        out = linear_cross_entropy(h1, w1, labels, mask, tp_group=group, chunk_elements=2 * 19)
        (out * c).sum().backward()
        dh = h1.grad.clone()
        dist.all_reduce(dh, group=group)               # the caller's input mapping sums the shards' dh
        rows[upstream] = {"loss": _max_err(out, ref.detach()), "dh": _max_err(dh, h_ref.grad),
                          "dw": _max_err(w1.grad, w_ref.grad[rank * 19:(rank + 1) * 19])}
    return rows


def model_case(sp: bool):
    cfg = load_config(None, ["parallel.tp=2", f"parallel.sequence_parallel={str(sp).lower()}", "model.num_layers=2",
                             "model.hidden_size=32", "model.num_attention_heads=4", "model.ffn_hidden_size=64",
                             "model.seq_length=16", "train.micro_batch_size=2", "train.global_batch_size=4",
                             "train.precision=fp32"])
    initialize_parallel(cfg.parallel, seed=3)
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=250)
    init_by_global_name(chunks, seed=5)
    engine = Engine(cfg, chunks, gpt_forward_step)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        t = torch.randint(0, 250, (2, 17), generator=g)
        mask = torch.zeros(2, 16)
        mask[0, 10:] = 1.0
        mask[1, 3:] = 1.0
        batches.append({"tokens": t[:, :-1], "labels": t[:, 1:], "loss_mask": mask,
                        "position_ids": torch.arange(16).expand(2, -1)})
    res = {}
    for fused in (True, False):
        engine.chunks[0].module.fused_output_loss = fused
        engine.chunks[0].zero_grad_buffer()
        loss, _ = engine.forward_backward(batches)
        res[fused] = (loss, [p.main_grad.clone() for p in engine.chunks[0].module.parameters()])
    grad_err = max(_max_err(a, b) for a, b in zip(res[True][1], res[False][1]))
    return {"sp": sp, "loss_fused": res[True][0], "loss_plain": res[False][0], "grad_rel_err": grad_err}


def main():
    op = op_case()
    models = [model_case(False), model_case(True)]
    if dist.get_rank() == 0:
        print("RESULT " + json.dumps({"case": "op", **op}), flush=True)
        for m in models:
            print("RESULT " + json.dumps({"case": "model", **m}), flush=True)


if __name__ == "__main__":
    main()
