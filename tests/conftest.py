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
