"""TP / PP / SP / virtual-PP layouts give the TP1xPP1 loss and gradients for the same weights and data."""
import os

import pytest

from launch import torchrun

pytestmark = pytest.mark.distributed
HERE = os.path.dirname(__file__)


@pytest.fixture(scope="module")
def results():
    rows = torchrun(os.path.join(HERE, "worker_gpt_equivalence.py"), 4)
    return {str(sorted(r["layout"].items())): r for r in rows}


def test_every_layout_reported(results):
    assert len(results) == 10


@pytest.mark.parametrize("layout", [
    dict(tp=2, pp=1), dict(tp=4, pp=1), dict(tp=2, pp=1, sp=True), dict(tp=4, pp=1, sp=True),
    dict(tp=1, pp=2), dict(tp=2, pp=2), dict(tp=2, pp=2, sp=True), dict(tp=1, pp=2, vpp=2),
    dict(tp=2, pp=1, sp=True, smear=True), dict(tp=2, pp=2, smear=True),
], ids=lambda d: "-".join(f"{k}{v}" for k, v in d.items()))
def test_same_loss_and_grads_as_tp1pp1(results, layout):
    row = results[str(sorted(layout.items()))]
    assert row["ranks_with_loss"] >= 1
    assert row["loss_rel_err"] < 1e-5, row
    assert row["grad_rel_err"] < 1e-5, row
    assert row["params_checked"] > 0
