"""Dropout in the Triton kernels draws its Philox seed from the model-parallel RNG tracker:
TP ranks get different masks, successive calls (layers) different ones, a rerun the same.
The CUDA branch (seed from the CUDA Philox generator the tracker swaps) is checked on a stub."""
import importlib

import pytest
import torch

from megatron_retro.kernels import _dispatch
from megatron_retro.kernels import fused_lora as fl

cca = importlib.import_module("megatron_retro.kernels.chunked_cross_attention")


@pytest.fixture(scope="module")
def tracker():
    from megatron.core import tensor_parallel

    from megatron_retro.parallel import cpu_compat

    cpu_compat.apply_if_needed()   # megatron's tracker forks the CPU generator here

    def seeded(tp_rank, seed=1234):
        tensor_parallel.model_parallel_cuda_manual_seed(seed, tp_rank=tp_rank, ep_rank=0, etp_rank=0)
        return tensor_parallel.get_cuda_rng_tracker()
    return seeded


def lora_inputs():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 32, generator=g)        # [M, K_local] (a row-parallel shard)
    w = torch.randn(16, 32, generator=g) / 6    # [N, K_local]
    a = torch.randn(4, 32, generator=g) / 6     # [r, K_local]
    b = torch.randn(16, 4, generator=g)         # [N, r]
    return x, w, a, b


def lora_layers(tracker, tp_rank, calls=2):
    """`calls` successive LoRA dropout calls (layers) inside the model-parallel fork of `tp_rank`."""
    x, w, a, b = lora_inputs()
    t = tracker(tp_rank)
    with t.fork():
        return [fl.fused_lora_linear(x, w, a, b, 1.0, dropout_p=0.5, backend="triton") for _ in range(calls)]


def cca_layers(tracker, tp_rank, calls=2):
    g = torch.Generator().manual_seed(1)
    q = torch.randn(16, 1, 2, 16, generator=g)   # [ns, bs, h/tp, hd]: this rank's heads
    kv = torch.randn(1, 1, 16, 2, 16, generator=g)  # [bs, l, nk, h/tp, hd]
    t = tracker(tp_rank)
    with t.fork():
        return [cca.chunked_cross_attention(q, kv, kv, chunk_length=16, dropout_p=0.5, backend="triton")
                for _ in range(calls)]


@pytest.mark.parametrize("layers", [lora_layers, cca_layers], ids=["fused_lora", "cca"])
def test_tp_ranks_layers_and_reruns(tracker, layers):
    r0, r1, again = layers(tracker, 0), layers(tracker, 1), layers(tracker, 0)
    assert not torch.equal(r0[0], r1[0]), "TP ranks 0 and 1 drew the same dropout mask"
    assert not torch.equal(r0[0], r0[1]), "two layers drew the same dropout mask"
    for a, b in zip(r0, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_outside_the_fork_the_default_stream_is_used(tracker):
    """The seed comes from the generator the tracker swaps, not from a private one."""
    t = tracker(0)
    with t.fork():
        inside = _dispatch.dropout_seed(torch.device("cpu"))
    t = tracker(0)
    outside = _dispatch.dropout_seed(torch.device("cpu"))
    assert inside != outside


class PhiloxStub:
    """The three methods of a CUDA torch.Generator that dropout_seed uses (no GPU here)."""

    def __init__(self, seed, offset=0):
        self.seed, self.offset = seed, offset

    def initial_seed(self):
        return self.seed

    def get_offset(self):
        return self.offset

    def set_offset(self, offset):
        assert offset % 4 == 0
        self.offset = offset


def test_cuda_seed_comes_from_the_cuda_generator(monkeypatch):
    gens = (PhiloxStub(1234 + 2718), PhiloxStub(1234 + 2718 + 1))   # what fork() installs on TP ranks 0, 1
    monkeypatch.setattr(torch.cuda, "default_generators", gens)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    s0 = _dispatch.dropout_seed(torch.device("cuda"))
    s0b = _dispatch.dropout_seed(torch.device("cuda", 0))
    s1 = _dispatch.dropout_seed(torch.device("cuda", 1))
    assert len({s0, s0b, s1}) == 3 and gens[0].offset == 8
    gens[0].offset = 0   # a tracker fork / recompute restoring the state replays the seed
    assert _dispatch.dropout_seed(torch.device("cuda")) == s0
    torch.manual_seed(0)  # the CPU generator plays no part on CUDA
    gens[0].offset = 0
    assert _dispatch.dropout_seed(torch.device("cuda")) == s0
