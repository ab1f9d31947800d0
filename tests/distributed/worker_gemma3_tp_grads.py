"""torchrun worker (2 ranks): one training step of a tiny random-weight Gemma 3 (ONE KV head, as
the 270M) at TP1 (x DP2), TP2, TP2+SP and PP2, full fine-tuning, LoRA, QLoRA, Adapter and
P-tuning, all from the same
weights (init_by_global_name). At TP2 the single KV head is split with the fused QKV rows over
both ranks by megatron-core (num_query_groups < tp: the QKV output is all-gathered, so the KV
head's gradient collects every query head's contribution). Rank 0 prints per (method, layout):
the step's loss, grad norm, the worst relative error of every trainable gradient against TP1's,
and the loss after the optimizer step (the update itself is the same).
"""
import json
import os
import sys
import warnings

warnings.filterwarnings("ignore")

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from gemma3_cases import TP_METHODS, TP_OVERRIDES, VOCAB  # noqa: E402
from peft_cases import RandomTokens  # noqa: E402

from megatron_retro.config import load_config  # noqa: E402
from megatron_retro.models.global_params import (assemble_full, full_tensor, global_shards, init_by_global_name,  # noqa: E402,E501
                                                 local_grad_view, local_slice, worst_relative_error)
from megatron_retro.models.gpt import build_gpt_model  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from megatron_retro.peft import apply_peft, install_peft_grad_reduction, make_peft_config  # noqa: E402
from megatron_retro.peft.api import peft_shards  # noqa: E402
from megatron_retro.training.batches import step_microbatches  # noqa: E402
from megatron_retro.training.engine import Engine  # noqa: E402
from megatron_retro.training.gpt_step import gpt_forward_step  # noqa: E402

GBS = 4
LAYOUTS = [dict(tp=1, pp=1), dict(tp=2, pp=1), dict(tp=2, pp=1, sp=True), dict(tp=1, pp=2)]


def run(method, layout):
    cfg = load_config(None, TP_OVERRIDES + [
        f"parallel.tp={layout['tp']}", f"parallel.pp={layout['pp']}",
        f"parallel.sequence_parallel={str(layout.get('sp', False)).lower()}",
        "train.micro_batch_size=1", f"train.global_batch_size={GBS}", "train.lr=1e-2", "train.lr_warmup_steps=0",
        "train.clip_grad=1.0", "train.weight_decay=0"])
    ctx = initialize_parallel(cfg.parallel, seed=7)
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB, precision="fp32")
    init_by_global_name(chunks, seed=11, std=0.1)
    if method != "full":
        apply_peft(chunks, make_peft_config(method, TP_METHODS[method]))
        with torch.no_grad():
            for shard in peft_shards(chunks):  # B != 0: the adapter acts from the first step
                shard.data.copy_(local_slice(full_tensor(shard, 13, 0.05), shard))
    engine = Engine(cfg, chunks, gpt_forward_step)
    if method != "full":
        install_peft_grad_reduction(engine)
    data = RandomTokens(vocab=VOCAB)
    batches = lambda: step_microbatches(data, 0, GBS, 1, ctx.dp, ctx.dp_rank)  # noqa: E731
    result = engine.train_step(batches())
    trainable = [s for s in global_shards(chunks) if s.param.requires_grad]
    grads = [(s, local_grad_view(s).detach().double().clone()) for s in trainable]
    after = engine.evaluate(batches())
    return result, grads, after


def broadcast_last_stage(value):
    """The loss lives on the last pipeline stage: give it to every rank."""
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, value)
    return next(v for v in out if v is not None)


def main():
    for method in ("full", *TP_METHODS):
        reference = None
        for layout in LAYOUTS:
            result, grads, after = run(method, layout)
            loss, after = broadcast_last_stage(result.loss), broadcast_last_stage(after)
            if reference is None:  # TP1: every rank holds every parameter
                reference = (loss, result.grad_norm, after, assemble_full(grads))
            err, key = worst_relative_error(grads, reference[3])
            qkv = [(s, g) for s, g in grads if ".linear_qkv." in s.key]  # q heads + THE KV head (+ LoRA)
            qkv_err = worst_relative_error(qkv, reference[3])[0] if qkv else -1.0
            worst = [None] * dist.get_world_size()
            dist.all_gather_object(worst, (err, key, sum(g.numel() for _, g in grads), qkv_err,
                                           sum(g.numel() for _, g in qkv)))
            if dist.get_rank() == 0:
                err, key, _, _, _ = max(worst)
                print("RESULT " + json.dumps({
                    "method": method, "layout": layout, "loss": loss, "grad_norm": result.grad_norm,
                    "loss_after_step": after, "ref_loss": reference[0], "ref_grad_norm": reference[1],
                    "ref_loss_after_step": reference[2], "grad_rel_err": err, "worst_key": key,
                    "grad_elements": sum(w[2] for w in worst), "qkv_grad_rel_err": max(w[3] for w in worst),
                    "qkv_grad_elements": sum(w[4] for w in worst)}), flush=True)


if __name__ == "__main__":
    main()
