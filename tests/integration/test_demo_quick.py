"""End to end: `megatron-retro demo --quick` (the README's main job, shortened) — corpus, index,
2-shard retrieval service, GPT + retro-fitted RETRO, zero-shot / LoRA / Adapter / P-tuning x 2
seeds, table and plots — killed in the middle of the grid, then resumed to completion."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import run_cli

pytestmark = pytest.mark.slow

CELLS = 2 * (1 + 3 * 2)  # models x (zero-shot + 3 methods x 2 seeds)


def _kill_after_first_cells(out: str, finished: int, timeout: float = 900) -> None:
    """Start the demo and SIGKILL its process group once ``finished`` cells are done and the next
    one has started writing (its directory exists without a result)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    proc = subprocess.Popen([sys.executable, "-m", "megatron_retro.cli", "demo", "--quick", "--out", out,
                             "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            done = _results(out)
            started = [d for d in _cell_dirs(out) if not os.path.isfile(os.path.join(d, "result.json"))]
            if len(done) >= finished and started:
                break
            assert proc.poll() is None, f"demo exited early with {proc.returncode}"
            time.sleep(0.2)
        else:
            raise AssertionError("the demo did not reach the kill point in time")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _cell_dirs(out: str):
    root = os.path.join(out, "cells")
    for dirpath, dirnames, _ in os.walk(root):
        if os.path.basename(dirpath).startswith("seed"):
            yield dirpath


def _results(out: str):
    return [d for d in _cell_dirs(out) if os.path.isfile(os.path.join(d, "result.json"))]


def test_demo_quick_killed_then_resumed(tmp_path):
    out = str(tmp_path / "demo")
    _kill_after_first_cells(out, finished=3)
    before = {d: os.path.getmtime(os.path.join(d, "result.json")) for d in _results(out)}
    assert 3 <= len(before) < CELLS
    assert not os.path.exists(os.path.join(out, "results.md"))     # no report from an unfinished grid

    proc = run_cli(["demo", "--quick", "--out", out, "--no-progress"], timeout=1200)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["cells"] == summary["total_cells"] == CELLS
    assert summary["ran"] == CELLS - len(before)                     # finished cells were not rerun
    phases = summary["phase_minutes"]                                # what this (resumed) run spent where
    assert set(phases) == {"retrieval", "pretrain", "cells"} and phases["cells"] > 0, phases
    assert sum(phases.values()) <= summary["seconds"] / 60 + 0.2, (phases, summary["seconds"])
    assert "minutes per phase in this run" in proc.stdout
    for d, mtime in before.items():
        assert os.path.getmtime(os.path.join(d, "result.json")) == mtime

    rows = [json.loads(line) for line in open(os.path.join(out, "scores.jsonl"))]
    assert len(rows) == CELLS
    assert {(r["model"], r["method"]) for r in rows} == {(m, x) for m in ("gpt", "retro")
                                                         for x in ("zero-shot", "lora", "adapter", "ptuning")}
    assert len({r["decoder"] for r in rows}) == 1                    # GPT and RETRO paired on one decoder
    assert len({(r["model"], r["size"]) for r in rows}) == 2         # each at its own parameter count
    results = open(os.path.join(out, "results.md")).read()
    assert "| bundled | RETRO |" in results and "RETRO > GPT zero-shot" in results
    assert "| bundled | GPT |" in proc.stdout                          # the table is printed
    for metric in ("em", "f1", "rougeL"):
        png = os.path.join(out, f"bundled_{metric}_vs_size.png")
        assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    leftovers = [f for _, _, files in os.walk(out) for f in files if ".tmp" in f]
    assert not leftovers, leftovers

    cell = os.path.join(out, "cells", "retro-micro", "lora", "seed1")
    record = json.load(open(os.path.join(cell, "result.json")))
    assert record["arch"] == "retro" and record["finetune"]["trainable_params"] > 0
    assert record["finetune"]["data"]["train"]["examples"] == 64
    preds = [json.loads(line) for line in open(os.path.join(cell, "predictions.jsonl"))]
    assert len(preds) == record["count"] == 12 and all("prediction" in p for p in preds)
    retrieval = json.load(open(os.path.join(out, "retrieval", "endpoints.json")))
    assert len(retrieval["shards"]) == 2                              # questions went through 2 shards
    assert "question retrieval (service)" in proc.stdout
    # the cell's passages came from the service (the per-split cache it filled), and say so
    assert record["retrieval"] == {"mode": "service", "eval_passages": "service"}, record["retrieval"]
    assert record["finetune"]["data"]["train"]["retrieved_by"] == "service"
    # the RETRO pretraining (in the resumed run) fetched its neighbours through the same running service
    line = next(x for x in proc.stdout.splitlines() if "pretrain retro-micro: neighbours" in x)
    assert "neighbours service (" in line and "endpoints.json" in line and "wait share" in line, line
    steps = [json.loads(x) for x in open(os.path.join(out, "pretrain", "retro-micro", "metrics.jsonl"))]
    assert len(steps) == 3 and all(r["retrieval_queries"] > 0 for r in steps)
