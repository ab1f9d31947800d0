"""The chunked output-layer + cross-entropy is megatron's vocab-parallel cross-entropy at TP2 and
TP2 + SP: the op against a full-vocabulary reference, and a GPT's loss and gradients against
megatron's output layer + vocab_parallel_cross_entropy on the same TP2 model (one 2-rank launch)."""
import os

import pytest

from launch import torchrun

pytestmark = pytest.mark.distributed
HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def rows():
    return torchrun(os.path.join(HERE, "worker_output_loss_tp.py"), 2)


def test_op_matches_full_vocabulary_cross_entropy(rows):
    op = next(r for r in rows if r["case"] == "op")
    for upstream in ("mask", "arbitrary"):      # precomputed dW, and the recompute fallback
        assert max(op[upstream].values()) < 1e-10, op


@pytest.mark.parametrize("sp", [False, True], ids=["tp2", "tp2-sp"])
def test_gpt_loss_and_grads_match_megatron_output_layer(rows, sp):
    m = next(r for r in rows if r["case"] == "model" and r["sp"] == sp)
    assert abs(m["loss_fused"] - m["loss_plain"]) < 1e-5 * abs(m["loss_plain"]), m
    assert m["grad_rel_err"] < 1e-4, m
