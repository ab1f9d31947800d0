"""RETRO under pipeline parallelism: past the last retrieval layer the stages send and receive the
hidden states alone (bytes counted at megatron's p2p and at torch.distributed), with the TP1xPP1
loss and gradients; greedy generation under PP2 equals PP1 token for token, GPT and RETRO
(one 4-rank launch, worker_retro_pp_payload.py)."""
import os

import pytest

from launch import torchrun

pytestmark = pytest.mark.distributed
HERE = os.path.dirname(__file__)
LAYOUTS = ["tp1-pp2", "tp2-pp2-spTrue", "tp1-pp4", "tp1-pp2-vpp2"]


def _name(layout: dict) -> str:
    return "-".join(f"{k}{v}" for k, v in layout.items())


@pytest.fixture(scope="module")
def results():
    return torchrun(os.path.join(HERE, "worker_retro_pp_payload.py"), 4, "payload", "generate")


@pytest.fixture(scope="module")
def payloads(results):
    return {_name(r["layout"]): r for r in results if r["case"] == "payload"}


def test_every_layout_reported(payloads):
    assert sorted(payloads) == sorted(LAYOUTS)


@pytest.mark.parametrize("layout", LAYOUTS)
def test_payload_is_hidden_states_only_after_last_retrieval_layer(payloads, layout):
    """(interleaved: the full payload on every boundary, the schedule declares one shape)"""
    row = payloads[layout]
    for rank in row["ranks"]:
        assert rank["sent_next"] == rank["expected_next"], (layout, rank)   # forward payloads
        assert rank["sent_prev"] == rank["expected_prev"], (layout, rank)   # their gradients
        assert rank["shape_bytes"] == 0, rank   # nothing else goes point to point
    assert sum(r["sent_next"] for r in row["ranks"]) > 0


@pytest.mark.parametrize("layout", LAYOUTS)
def test_shrunk_payload_keeps_the_tp1pp1_loss_and_gradients(payloads, layout):
    row = payloads[layout]
    assert row["loss_rel_err"] < 1e-6, row
    assert row["grad_rel_err"] < 1e-5, row


@pytest.mark.parametrize("arch,retrieval", [("gpt", None), ("retro", 3), ("retro", 2)])
def test_greedy_generation_pp2_equals_pp1(results, arch, retrieval):
    runs = {r["pp"]: r["tokens"] for r in results
            if r["case"] == "generate" and r["arch"] == arch and r["retrieval"] == retrieval}
    assert sorted(runs) == [1, 2]
    assert runs[2] == runs[1]
    new = [row[13:] for row in runs[1]]                        # prompt length 2·m - 3 = 13
    assert len(new[0]) == 8 and len({tuple(r) for r in new}) > 1  # the rows really differ
