"""torchrun worker (4 ranks): GPT loss and gradients under many TP/PP/SP/VPP layouts vs TP1PP1.

Every layout gets the same full weights (init_by_global_name) and the same global batch; each
rank compares its local gradient slices with the TP1xPP1 reference and rank 0 prints one RESULT
line per layout with the largest relative errors.
"""
import json
import warnings

warnings.filterwarnings("ignore")

import torch.distributed as dist  # noqa: E402

from megatron_retro.config import load_config  # noqa: E402
from equivalence_cases import RandomSamples, compare, layout_overrides, loss_and_grads  # noqa: E402
from megatron_retro.models.global_params import assemble_full, init_by_global_name  # noqa: E402
from megatron_retro.models.gpt import build_gpt_model  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from megatron_retro.training.engine import Engine  # noqa: E402
from megatron_retro.training.gpt_step import gpt_forward_step  # noqa: E402

VOCAB, SEQ, GBS = 512, 32, 8
LAYOUTS = [
    dict(tp=1, pp=1), dict(tp=2, pp=1), dict(tp=4, pp=1), dict(tp=2, pp=1, sp=True),
    dict(tp=4, pp=1, sp=True), dict(tp=1, pp=2), dict(tp=2, pp=2), dict(tp=2, pp=2, sp=True),
    dict(tp=1, pp=2, vpp=2),
    # model.smear_keys: per-group key-smear logits shard with the key/value groups (vs its own TP1 reference)
    dict(tp=1, pp=1, smear=True), dict(tp=2, pp=1, sp=True, smear=True), dict(tp=2, pp=2, smear=True),
]


def run_layout(layout):
    overrides = layout_overrides(layout) + [
        "model.num_layers=4", "model.hidden_size=64", "model.num_attention_heads=8",
        "model.num_query_groups=4", "model.ffn_hidden_size=128", f"model.seq_length={SEQ}",
        "model.rotary_percent=0.5", "train.micro_batch_size=1", f"train.global_batch_size={GBS}",
        f"model.smear_keys={str(layout.get('smear', False)).lower()}"]
    cfg = load_config(None, overrides)
    ctx = initialize_parallel(cfg.parallel, seed=7)
    chunks = build_gpt_model(cfg.model, cfg.parallel, vocab_size=VOCAB)
    init_by_global_name(chunks, seed=11)
    engine = Engine(cfg, chunks, gpt_forward_step)
    loss, grads = loss_and_grads(engine, chunks, ctx, RandomSamples(SEQ), GBS)
    return ctx, loss, grads


def main():
    refs = {}
    for layout in LAYOUTS:
        key = layout.get("smear", False)
        if layout in (dict(tp=1, pp=1), dict(tp=1, pp=1, smear=True)):
            _, ref_loss, ref = run_layout(layout)
            refs[key] = (ref_loss, assemble_full(ref))
            continue
        ref_loss, ref_full = refs[key]
        ctx, loss, grads = run_layout(layout)
        grad_err, loss_err, n_loss, _ = compare(loss, ref_loss, grads, ref_full)
        if dist.get_rank() == 0:
            print("RESULT " + json.dumps({"layout": layout, "grad_rel_err": grad_err, "loss_rel_err": loss_err,
                                          "ref_loss": ref_loss, "ranks_with_loss": n_loss,
                                          "params_checked": len(grads)}), flush=True)
    dist.barrier()


if __name__ == "__main__":
    main()
