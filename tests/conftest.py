"""Test-wide setup: make tests/distributed helpers importable, quiet megatron's import warnings."""
import os
import sys
import warnings

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "distributed"))
warnings.filterwarnings("ignore", message=".*(Apex|Transformer Engine|TE).*")
