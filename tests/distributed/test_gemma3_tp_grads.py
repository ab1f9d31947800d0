"""Gemma 3's single KV head under tensor parallelism: full fine-tuning, LoRA, QLoRA, Adapter and
P-tuning at TP2, TP2+SP and PP2 give TP1's loss, gradient norm, every trainable gradient and
post-step loss (one 2-rank launch, worker_gemma3_tp_grads.py; a tiny random-weight Gemma 3 with
4 query heads and 1 KV head)."""
import os

import pytest

from gemma3_cases import TP_METHODS
from launch import torchrun

pytestmark = pytest.mark.distributed
LAYOUTS = [dict(tp=1, pp=1), dict(tp=2, pp=1), dict(tp=2, pp=1, sp=True), dict(tp=1, pp=2)]


@pytest.fixture(scope="module")
def rows():
    return torchrun(os.path.join(os.path.dirname(__file__), "worker_gemma3_tp_grads.py"), 2)


def _rel(a, b):
    return abs(a - b) / abs(b)


@pytest.mark.parametrize("method", ["full", *TP_METHODS])
def test_one_kv_head_at_tp2_sp_pp2_trains_like_tp1(rows, method):
    got = {str(r["layout"]): r for r in rows if r["method"] == method}
    assert set(got) == {str(layout) for layout in LAYOUTS}, rows
    for r in got.values():
        assert r["grad_elements"] > 0, r
        assert (r["qkv_grad_elements"] > 0) == (method in ("full", "lora", "qlora")), r
        assert _rel(r["loss"], r["ref_loss"]) < 1e-5, r
        assert _rel(r["grad_norm"], r["ref_grad_norm"]) < 1e-5, r
        # fp32 sums in another order (row-parallel partial sums at TP2): ~1.5e-5 of a tensor's max
        assert r["grad_rel_err"] < 1e-4, r
        assert r["qkv_grad_rel_err"] < 1e-4, r  # the KV head's rows (and LoRA's) collect every query head's part
        assert _rel(r["loss_after_step"], r["ref_loss_after_step"]) < 5e-5, r
    # the step did something: the check would see a layout whose update went wrong
    tp1 = got[str(LAYOUTS[0])]
    assert abs(tp1["loss_after_step"] - tp1["loss"]) > 1e-3, tp1
