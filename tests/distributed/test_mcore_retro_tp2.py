"""retro.megatron_compat at TP2 reproduces megatron-core 0.15.3's logits (tests/fixtures/mcore_retro),
through `retro import-mcore` at TP2 and our checkpoint loaded back at TP2 (one 2-rank launch)."""
import os

import pytest

from launch import torchrun

pytestmark = [pytest.mark.distributed, pytest.mark.slow]  # ~15-45 s: one 2-rank launch
HERE = os.path.dirname(__file__)


def test_tp2_import_and_logits(tmp_path):
    (row,) = torchrun(os.path.join(HERE, "worker_mcore_retro.py"), 2, str(tmp_path / "imported"))
    assert row["tp"] == 2 and row["local_linear_q"] == [16, 32]  # heads really split over 2 ranks
    assert len(row["errors"]) == 4 and max(row["errors"].values()) < 1e-5, row
