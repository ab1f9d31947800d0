"""RETRO with activation recompute (train.recompute = full, model.recompute_modules = selective): same per-token losses and
gradients as without it, with dropout on (the recomputed forward must replay the RNG), and full
recompute keeps fewer activations."""
import pytest
import torch

from megatron_retro.config import load_config

M, K, R, NS, VOCAB = 8, 2, 16, 32, 200
BASE = ["model.arch=retro", "model.num_layers=4", "model.hidden_size=64", "model.num_attention_heads=4",
        "model.ffn_hidden_size=128", f"model.seq_length={NS}", "model.rotary_percent=0.5",
        f"retro.chunk_length={M}", f"retro.num_neighbours={K}", f"retro.neighbour_length={R}",
        "retro.retrieval_layers=[2,4]", "model.hidden_dropout=0.1", "model.attention_dropout=0.1",
        "retro.encoder_attention_dropout=0.1", "retro.encoder_hidden_dropout=0.1"]


def run(mode):
    """(per-token losses, {param: grad}, saved activation bytes) of one step; mode None/full/selective."""
    from megatron.core import tensor_parallel

    from megatron_retro.models.global_params import init_by_global_name
    from megatron_retro.parallel.initialize import initialize_parallel
    from megatron_retro.training.finetune import build_model

    overrides = BASE + {None: [], "full": ["train.recompute=true"],
                        "selective": ["model.recompute_modules=[core_attn]"]}[mode]
    cfg = load_config(None, overrides)
    initialize_parallel(cfg.parallel, seed=3)
    (chunk,) = build_model(cfg, VOCAB, precision="fp32")
    init_by_global_name([chunk], seed=5, std=0.1)
    chunk.train()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, VOCAB, (2, NS), generator=g)
    neighbours = torch.randint(0, VOCAB, (2, NS // M, K, R), generator=g)
    labels = torch.randint(0, VOCAB, (2, NS), generator=g)
    tensor_parallel.model_parallel_cuda_manual_seed(11)
    torch.manual_seed(11)
    saved = []

    def pack(t):
        saved.append(t.numel() * t.element_size())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        losses = chunk(tokens, torch.arange(NS).expand(2, -1), None, labels=labels, neighbours=neighbours)
    losses.sum().backward()
    return losses.detach(), {n: p.grad.clone() for n, p in chunk.named_parameters() if p.grad is not None}, sum(saved)


@pytest.fixture(scope="module")
def reference():
    return run(None)


@pytest.mark.parametrize("mode", ["full", "selective"])
def test_recompute_matches_no_recompute(reference, mode):
    losses, grads, saved = run(mode)
    ref_losses, ref_grads, ref_saved = reference
    torch.testing.assert_close(losses, ref_losses, rtol=0, atol=0)
    assert grads.keys() == ref_grads.keys() and any("cross_attention" in n for n in grads)
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], rtol=1e-6, atol=1e-7, msg=name)
    assert saved < ref_saved, (mode, saved, ref_saved)
