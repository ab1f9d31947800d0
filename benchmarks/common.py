"""What the benchmark scripts share: their command line of size and repeat options.

``options(__doc__, hidden=512, steps=(10, "timed steps"), ...)`` is an ``ArgumentParser`` described
by the script docstring's first line, with one ``--name`` option per keyword (``kv_heads`` ->
``--kv-heads``) typed like its default; a ``(default, help)`` pair adds a help text.  Scripts add
their other options (choices, flags) to it.  ``run_variant`` runs one variant of a benchmark in a
fresh process (so each variant's peak RSS is its own) and returns the JSON of its last RESULT line.
"""
import argparse
import json
import os
import subprocess
import sys


def options(doc: str, **defaults) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, spec in defaults.items():
        default, text = spec if isinstance(spec, tuple) else (spec, None)
        ap.add_argument("--" + name.replace("_", "-"), type=type(default), default=default, help=text)
    return ap


def run_variant(script: str, variant: str, argv: list, threads: int) -> dict:
    """``python script --variant VARIANT *argv`` with ``threads`` OpenMP threads; its last ``RESULT {json}``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONWARNINGS="ignore")
    out = subprocess.run([sys.executable, script, "--variant", variant, *argv], capture_output=True, text=True,
                         env=env, check=False)
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"{variant} failed:\n{out.stderr[-3000:]}")
    return json.loads(lines[-1][7:])
