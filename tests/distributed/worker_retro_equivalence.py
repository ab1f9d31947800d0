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
from equivalence_cases import RandomSamples, compare, layout_overrides, loss_and_grads  # noqa: E402
from megatron_retro.models.global_params import assemble_full, init_by_global_name  # noqa: E402
from megatron_retro.models.retro import build_retro_model  # noqa: E402
from megatron_retro.parallel.initialize import initialize_parallel  # noqa: E402
from megatron_retro.training.retro_step import RetroEngine  # noqa: E402

VOCAB, SEQ, GBS, M, K, R = 512, 32, 4, 8, 2, 16
LAYOUTS = [
    dict(tp=1, pp=1), dict(tp=2, pp=1), dict(tp=2, pp=1, sp=True), dict(tp=1, pp=2), dict(tp=2, pp=2),
    dict(tp=2, pp=2, sp=True), dict(tp=1, pp=2, vpp=2),
]


def run_layout(layout, retrieval="[2,4]"):
    overrides = layout_overrides(layout) + [
        "model.arch=retro", "model.num_layers=4", "model.hidden_size=64", "model.num_attention_heads=4",
        "model.ffn_hidden_size=128", f"model.seq_length={SEQ}", "model.rotary_percent=0.5",
        "model.add_bias_linear=true",
                 f"retro.chunk_length={M}", f"retro.num_neighbours={K}", f"retro.neighbour_length={R}",
                 f"retro.retrieval_layers={retrieval}", "retro.attention_gate=true",
        "train.micro_batch_size=1", f"train.global_batch_size={GBS}"]
    cfg = load_config(None, overrides)
    ctx = initialize_parallel(cfg.parallel, seed=7)
    chunks = build_retro_model(cfg.model, cfg.retro, cfg.parallel, vocab_size=VOCAB)
    init_by_global_name(chunks, seed=11)
    engine = RetroEngine(cfg, chunks)
    loss, grads = loss_and_grads(engine, chunks, ctx, RandomSamples(SEQ, neighbours=(SEQ // M, K, R)), GBS)
    return ctx, loss, grads


def main():
    _, ref_loss, ref = run_layout(LAYOUTS[0])
    ref_full = assemble_full(ref)
    retro_keys = sum(1 for key, _ in ref_full if "cross_attention" in key)
    for layout in LAYOUTS[1:]:
        _, loss, grads = run_layout(layout)
        grad_err, loss_err, n_loss, worst_key = compare(loss, ref_loss, grads, ref_full)
        checked_retro = torch.tensor([sum("cross_attention" in shard.key for shard, _ in grads)])
        dist.all_reduce(checked_retro)
        if dist.get_rank() == 0:
            print("RESULT " + json.dumps({
                "layout": layout, "grad_rel_err": grad_err, "loss_rel_err": loss_err, "ref_loss": ref_loss,
                "ranks_with_loss": n_loss, "retro_shards_checked": int(checked_retro), "retro_keys_in_ref": retro_keys,
                "worst_key_rank0": worst_key}), flush=True)
    dist.barrier()


if __name__ == "__main__":
    main()
