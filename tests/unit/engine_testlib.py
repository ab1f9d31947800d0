"""A tiny GPT / RETRO engine (megatron DDP + optimizer) and two answer-masked micro-batches, same
weights and data every call: what the output-loss and CPU fast-path tests train."""
import torch


def tiny_engine(arch, overrides=(), method=None):
    """(engine, batches): 3 layers, d=32, seq 128, vocab 200; ``method`` a PEFT method or None."""
    from megatron_retro.config import load_config
    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.finetune import build_model, make_engine

    base = ["model.num_layers=3", "model.hidden_size=32", "model.num_attention_heads=4", "model.ffn_hidden_size=64",
            "model.seq_length=128", "train.micro_batch_size=2", "train.global_batch_size=4", "train.precision=fp32"]
    if arch == "retro":
        base += ["model.arch=retro", "retro.retrieval_layers=[2]", "retro.encoder_num_layers=1", "retro.num_neighbours=2",
                 "retro.chunk_length=64", "retro.neighbour_length=96"]
    cfg = load_config(None, base + list(overrides))
    initialize_parallel(cfg.parallel, seed=3)
    chunks = build_model(cfg, vocab_size=200)
    init_by_global_name(chunks, seed=5)
    if method:
        from megatron_retro.peft import apply_peft, make_peft_config

        apply_peft(chunks, make_peft_config(method, {"rank": 4, "alpha": 8.0}))
    engine = make_engine(cfg, chunks)
    g = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(2):
        t = torch.randint(0, 200, (2, 129), generator=g)
        mask = torch.zeros(2, 128)
        mask[0, 100:] = 1.0                    # answer-only loss in one sample
        mask[1, 5:] = 1.0
        b = {"tokens": t[:, :-1], "labels": t[:, 1:], "loss_mask": mask,
             "position_ids": torch.arange(128).expand(2, -1)}
        if arch == "retro":
            b["neighbours"] = torch.randint(0, 200, (2, 2, 2, 96), generator=g)
        batches.append(b)
    return engine, batches


def main_grads(engine) -> dict:
    """{name: main_grad copy} of every trained parameter."""
    return {n: p.main_grad.clone() for c in engine.chunks for n, p in c.module.named_parameters() if p.requires_grad}
