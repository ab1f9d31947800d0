"""Test-wide setup: Triton's interpreter on CPU-only machines (must precede any triton import,
and megatron.core imports triton), tests/distributed helpers on the path, quiet import warnings."""
import os
import sys
import warnings

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "distributed"))
warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine|TE).*")


import pytest  # noqa: E402


def pytest_configure(config):
    """The CLI's one list of megatron-core noise (megatron_retro.quiet) as pytest filters too:
    filters set at import time do not survive pytest's per-test warning capture."""
    from megatron_retro.quiet import KNOWN_NOISE

    for message, category, module in KNOWN_NOISE:
        config.addinivalue_line("filterwarnings", f"ignore:{message}:{category.__name__}:{module}")


@pytest.fixture(scope="module", autouse=True)
def _no_process_group_leaks_between_modules():
    """Tests that start an in-process (world size 1) process group tear it down after their module,
    so tests that need no process group see none whatever the order."""
    yield
    import torch.distributed as dist

    if dist.is_initialized():
        from megatron_retro.parallel.initialize import destroy_parallel

        destroy_parallel()
