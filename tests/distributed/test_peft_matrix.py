"""Every PEFT method, on GPT and on RETRO, gives the TP1xPP1 adapter gradients and per-token losses
at TP2, TP2+SP and PP2 after loading the adapter saved at TP1xPP1 (and the same losses after
merging LoRA / QLoRA / IA3 there); LoRA adds no collective to a TP layer.
One 4-rank launch runs all cases (tests/distributed/worker_peft_matrix.py)."""
import os

import pytest
from launch import torchrun
from peft_cases import METHOD_CASES, RETRO_METHOD_CASES

pytestmark = pytest.mark.distributed
HERE = os.path.dirname(__file__)
LAYOUTS = [dict(tp=2, pp=1), dict(tp=2, pp=1, sp=True), dict(tp=1, pp=2)]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    # ~3 min on an idle 2-core machine; the timeout leaves room for a machine shared with other jobs
    rows = torchrun(os.path.join(HERE, "worker_peft_matrix.py"), 4, str(tmp_path_factory.mktemp("adapters")),
                    timeout=1500)
    return rows


def _layout_id(d):
    return "-".join(f"{k}{v}" for k, v in d.items())


# TP2 without SP (the non-SP reduction of replicated LoRA factors) runs for GPT lora and adapter;
# every method runs TP2+SP and PP2 on GPT and on RETRO (see layouts_for in the worker).
CASES = [(arch, m, lay) for arch, methods in (("gpt", METHOD_CASES), ("retro", RETRO_METHOD_CASES))
         for m in methods for lay in LAYOUTS if lay != LAYOUTS[0] or (arch == "gpt" and m in ("lora", "adapter"))]


@pytest.mark.parametrize("arch,method,layout", CASES, ids=[f"{a}-{m}-{_layout_id(lay)}" for a, m, lay in CASES])
def test_same_adapter_grads_and_losses_after_reload(results, arch, method, layout):
    rows = [r for r in results if r["case"] == "matrix" and r["arch"] == arch and r["method"] == method
            and r["layout"] == layout]
    assert len(rows) == 1, f"no result for {arch} {method} at {layout}"
    row = rows[0]
    assert row["grad_elements"] > 0 and row["samples"] == 4
    assert row["grad_rel_err"] < 1e-5, row
    assert row["token_loss_err"] < 1e-5, row
    if method in ("lora", "qlora", "ia3"):  # mergeable: merged at this TP/PP layout, same per-token losses
        assert 0.0 <= row["merged_token_loss_err"] < 1e-4, row
    else:
        assert row["merged_token_loss_err"] == -1.0, row


@pytest.mark.parametrize("layout", [dict(tp=2, pp=1), dict(tp=2, pp=1, sp=True)], ids=_layout_id)
def test_lora_adds_no_collective_to_a_tp_layer(results, layout):
    row = next(r for r in results if r["case"] == "collectives" and r["layout"] == layout)
    assert sum(row["frozen"].values()) >= 4, row          # the layer does communicate
    assert row["lora"] == row["frozen"], row              # same calls, same kinds, with LoRA
    assert sum(row["lora"].values()) <= sum(row["trainable"].values()), row
