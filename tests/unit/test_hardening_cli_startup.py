"""Commands that build no model start fast: they import neither torch nor megatron-core (checked
in fresh interpreters, so nothing an earlier test imported hides a regression), and the CLI is
quiet (no megatron-core warnings on a command that does import it)."""
import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NQ = os.path.join(REPO, "tests", "fixtures", "tasks", "nq_open", "NQ-open.dev.jsonl")
PROBE = """
import json, sys
from megatron_retro.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as e:
    code = e.code
print(json.dumps({"code": code, "torch": "torch" in sys.modules, "megatron": "megatron.core" in sys.modules}))
"""


def probe(*argv):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}  # Python's default filters, as users have
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=300,
                          cwd=REPO, env=env)
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


@pytest.mark.parametrize("argv", [
    ["--help"], ["config", "--fields"], ["config", "--config", "configs/models/gpt-tiny.yaml"], ["tasks", "list"],
    ["tasks", "check", "--task", "nq", "--path", NQ], ["pretrain", "--step", "3"], ["index", "--help"],
], ids=lambda a: " ".join(a[:2]))
def test_commands_without_a_model_import_no_torch(argv):
    got, err = probe(*argv)
    assert got["code"] in (0, 2), (got, err)
    assert not got["torch"] and not got["megatron"], f"{argv} imported torch/megatron-core: {got}"


def test_peft_methods_imports_no_megatron_core():
    got, err = probe("peft", "methods")
    assert got["code"] == 0 and not got["megatron"], (got, err)


def test_megatron_core_noise_is_filtered_centrally():
    got, err = probe("plan", "--config", "configs/models/gpt-tiny.yaml", "--vocab-size", "512", "--json")
    assert got["code"] == 0 and got["megatron"], (got, err)
    noise = [line for line in err.splitlines() if "Warning" in line]
    assert not noise, noise
