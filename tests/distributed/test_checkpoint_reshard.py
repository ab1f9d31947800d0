"""Checkpoints reshard: TP2xPP2 -> TP1xPP1 -> TP2xPP2 keeps the logits."""
import os

import pytest

from launch import torchrun

pytestmark = pytest.mark.distributed


def test_tp2pp2_to_tp1pp1_and_back(tmp_path):
    (row,) = torchrun(os.path.join(os.path.dirname(__file__), "worker_checkpoint_reshard.py"), 4, str(tmp_path))
    assert row["step"] == 3
    assert row["differs_before_load"] > 1e-2 * row["logit_scale"]  # the check can fail
    assert row["tp2pp2_to_tp1"] <= 1e-5 * row["logit_scale"]
    assert row["tp1_to_tp2pp2"] <= 1e-5 * row["logit_scale"]
    a, b = row["fingerprints"]
    assert a.startswith("sha256:") and a == b  # layout-independent (training/fingerprint.py)
