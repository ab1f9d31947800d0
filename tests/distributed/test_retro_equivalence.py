"""RETRO: TP / PP / SP layouts give the TP1xPP1 loss and gradients for the same weights, data and
neighbours (one 4-rank launch loops over the layouts; the context crosses a PP stage boundary)."""
import os

import pytest

from launch import torchrun

pytestmark = pytest.mark.distributed
HERE = os.path.dirname(__file__)
LAYOUTS = [dict(tp=2, pp=1), dict(tp=2, pp=1, sp=True), dict(tp=1, pp=2), dict(tp=2, pp=2),
           dict(tp=2, pp=2, sp=True), dict(tp=1, pp=2, vpp=2)]


@pytest.fixture(scope="module")
def results():
    rows = torchrun(os.path.join(HERE, "worker_retro_equivalence.py"), 4)
    return {str(sorted(r["layout"].items())): r for r in rows}


def test_every_layout_reported(results):
    assert len(results) == len(LAYOUTS)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: "-".join(f"{k}{v}" for k, v in d.items()))
def test_same_loss_and_grads_as_tp1pp1(results, layout):
    row = results[str(sorted(layout.items()))]
    assert row["ranks_with_loss"] >= 1
    assert row["retro_shards_checked"] > 0 and row["retro_keys_in_ref"] > 0, row
    assert row["loss_rel_err"] < 1e-5, row
    assert row["grad_rel_err"] < 1e-5, row
