"""Wall time of CLI commands that build no model (start-up cost: imports), against importing
torch and megatron-core alone; median of N fresh processes each.

    python benchmarks/bench_cli_startup.py [--repeats 5] [--markdown] [--repo DIR]

``--repo DIR`` times another checkout of the project (e.g. ``git archive <commit> | tar -x -C DIR``
for the "before" column): its directory is the working directory and first on PYTHONPATH.

Run it on an idle machine (`/work/shared/tools/heavy --quiet ...`): with other processes on the
cores, every figure grows.  ``plan`` builds meta-device models, so it is compared with the
import of megatron-core, which it cannot avoid (the target: within 1 s of it).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TASK = os.path.join(REPO, "tests", "fixtures", "tasks", "nq_open", "NQ-open.dev.jsonl")
TINY = os.path.join(REPO, "configs", "models", "gpt-tiny.yaml")
CLI = [sys.executable, "-m", "megatron_retro.cli"]

COMMANDS = [
    ("python (interpreter only)", [sys.executable, "-c", "pass"]),
    ("import torch", [sys.executable, "-c", "import torch"]),
    ("import megatron.core", [sys.executable, "-c", "import megatron.core"]),
    ("megatron-retro --help", CLI + ["--help"]),
    ("megatron-retro config --fields", CLI + ["config", "--fields"]),
    ("megatron-retro config (resolved YAML)", CLI + ["config", "--config", TINY]),
    ("megatron-retro peft methods", CLI + ["peft", "methods"]),
    ("megatron-retro tasks list", CLI + ["tasks", "list"]),
    ("megatron-retro tasks check (NQ fixture)", CLI + ["tasks", "check", "--task", "nq", "--path", TASK]),
    ("megatron-retro pretrain --tp two (usage error)", CLI + ["pretrain", "--tp", "two"]),
    ("megatron-retro plan (gpt-tiny)", CLI + ["plan", "--config", TINY, "--vocab-size", "4096", "--json"]),
]


def time_command(cmd: list[str], repeats: int, repo: str) -> float:
    env = dict(os.environ, PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH")) if p))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, cwd=repo)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5, help="processes per command (the median is reported)")
    p.add_argument("--markdown", action="store_true", help="print a Markdown table")
    p.add_argument("--repo", default=REPO, help="checkout of the project to time (default: this one)")
    args = p.parse_args()
    repo = os.path.abspath(args.repo)
    rows = [(name, time_command([c.replace(REPO, repo) for c in cmd], args.repeats, repo)) for name, cmd in COMMANDS]
    if args.markdown:
        print("| command | median wall s |")
        print("|---|---|")
        for name, t in rows:
            print(f"| `{name}` | {t:.2f} |")
    else:
        for name, t in rows:
            print(f"{name:<50} {t:6.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
