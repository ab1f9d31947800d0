"""Re-run the benchmark scripts and rewrite the BENCHMARKS.md tables they own.

Every table owned here sits between ``<!-- run_all:NAME begin -->`` and ``<!-- run_all:NAME
end -->`` in BENCHMARKS.md and is generated, never typed: the exact command, the commit, the
UTC time, the median over ``--repeats`` runs, and the machine's load around every run.  Two load
figures are recorded per run: the 1-minute load average before it (``/proc/loadavg``) and the
CPU that *other* processes used while it ran (``/proc/stat`` busy time minus the run's own CPU
time, in cores).  A table whose first run did not start on an idle machine (load average >= --idle)
or whose runs shared the machine (others used >= --others cores in any run) is written with a NOT-A-FIGURE banner.

Run it through the heavy queue so that it waits for an idle machine:

    ../shared/tools/heavy --quiet python benchmarks/run_all.py               # everything
    ../shared/tools/heavy --quiet python benchmarks/run_all.py --only peft   # one section
    python benchmarks/run_all.py --list
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Callable

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
ENV = dict(os.environ, OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")


@dataclass
class Bench:
    argv: list            # script + arguments, run with this Python
    render: Callable      # list of per-run results -> markdown lines
    parse: Callable       # stdout -> one run's result (dict)


# ---------------------------------------------------------------- load ---------------------------
def _busy_seconds() -> float:
    """Busy CPU seconds of the whole machine since boot (all cores)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _loadavg() -> float:
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


def run_once(argv: list) -> tuple[str, dict]:
    """Run one benchmark; (stdout, load record)."""
    load_before, busy0, t0 = _loadavg(), _busy_seconds(), time.monotonic()
    child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, busy = time.monotonic() - t0, _busy_seconds() - busy0
    own = (child1.ru_utime + child1.ru_stime) - (child0.ru_utime + child0.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"run_all: {' '.join(argv)} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout, {"load_before": load_before, "load_after": _loadavg(), "wall_s": round(wall, 1),
                         "others_cores": round(max(busy - own, 0.0) / max(wall, 1e-9), 2)}


# ---------------------------------------------------------------- parsers / renderers -----------
def _result_line(stdout: str) -> dict:
    lines = [ln for ln in stdout.splitlines() if ln.startswith("RESULT ")]
    if not lines:
        raise SystemExit(f"run_all: no RESULT line in:\n{stdout[-2000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _json_line(stdout: str) -> dict:
    return json.loads([ln for ln in stdout.splitlines() if ln.startswith("{")][-1])


def _med(runs: list, *keys) -> float:
    vals = []
    for r in runs:
        for k in keys:
            r = r[k]
        vals.append(r)
    return statistics.median(vals)


def render_peft(runs: list) -> list:
    names = list(runs[0]["rows"])
    tokens = runs[0]["tokens"]
    step = {n: _med(runs, "rows", n, "step_s") for n in names}
    rss = {n: _med(runs, "rows", n, "peak_rss_mb") for n in names}
    out = ["| variant | step s (median) | tokens/s | vs HF peft tokens/s | peak RSS MB | vs HF peft memory |",
           "|---|---|---|---|---|---|"]
    for n in names:
        out.append(f"| {n} | {step[n]:.3f} | {tokens / step[n]:.0f} | {step['hf-peft'] / step[n]:.2f}x | "
                   f"{rss[n]:.0f} | {rss[n] / rss['hf-peft']:.2f}x |")
    f = runs[0]["flops"]
    checks = [
        ("ours-lora tokens/s vs HF peft", step["hf-peft"] / step["ours-lora"], ">=", 1.15),
        ("ours-lora peak RSS vs HF peft", rss["ours-lora"] / rss["hf-peft"], "<=", 0.85),
        (f"ours-lora / ours-full step (FLOP floor {f['lora_floor'] / f['full_step']:.2f})",
         step["ours-lora"] / step["ours-full"], "<=", 0.75),
        ("ours-qlora / ours-lora step", step["ours-qlora"] / step["ours-lora"], "<=", 1.10),
        ("ours-qlora peak RSS - ours-lora (MB)", rss["ours-qlora"] - rss["ours-lora"], "<=", 0.0),
    ]
    out += ["", "| target | measured | goal | met |", "|---|---|---|---|"]
    for name, val, op, goal in checks:
        ok = val >= goal if op == ">=" else val <= goal
        out.append(f"| {name} | {val:.2f} | {op} {goal} | {'yes' if ok else 'no'} |")
    return out


def render_gpt_step(runs: list) -> list:
    out = ["| run | megatron_retro step s | plain PyTorch (per-tensor AdamW) step s | ratio | "
           "plain PyTorch (fused AdamW) step s | ratio | step-0 loss diff |", "|---|---|---|---|---|---|---|"]
    for i, r in enumerate(runs, 1):
        out.append(f"| {i} | {r['median_step_s']['megatron']:.3f} | {r['median_step_s']['plain']:.3f} | "
                   f"{r['ratio_megatron_over_plain']:.3f} | {r['median_step_s']['plain-fused']:.3f} | "
                   f"{r['ratio_megatron_over_plain_fused']:.3f} | {r['step0_loss_abs_diff']:.1e} |")
    ratio, fair = _med(runs, "ratio_megatron_over_plain"), _med(runs, "ratio_megatron_over_plain_fused")
    out += ["", f"Median ratio megatron_retro / plain PyTorch with the same fused AdamW (the fair twin): **{fair:.3f}** "
                f"(target <= 1.03: {'met' if fair <= 1.03 else 'not met'}); against the twin with torch's default "
                f"per-tensor AdamW: {ratio:.3f}."]
    return out


def render_retro_step(runs: list) -> list:
    return ["| model | fwd+bwd s (median) | ratio |", "|---|---|---|",
            f"| GPT | {_med(runs, 'gpt_fwd_bwd_s'):.3f} | 1.00 |",
            f"| RETRO | {_med(runs, 'retro_fwd_bwd_s'):.3f} | {_med(runs, 'retro_over_gpt'):.2f} |", "",
            f"CCA op share of the RETRO step {_med(runs, 'cca_share_of_retro_step'):.1%}; neighbour encoder "
            f"share {_med(runs, 'encoder_share_of_retro_step'):.1%}."]


BENCHES = {
    "peft": Bench(["benchmarks/bench_peft.py", "--steps", "5", "--warmup", "2", "--json"], render_peft,
                  _result_line),
    "peft-recompute": Bench(["benchmarks/bench_peft.py", "--steps", "5", "--warmup", "2", "--json", "--override",
                             "model.recompute_modules=[mlp]"], render_peft, _result_line),
    "gpt-step": Bench(["benchmarks/bench_gpt_step.py", "--steps", "8"], render_gpt_step, _json_line),
    "retro-step": Bench(["benchmarks/bench_retro.py", "--what", "step", "--iters", "5"], render_retro_step,
                        _json_line),
}


# ---------------------------------------------------------------- BENCHMARKS.md -----------------
def region_markers(name: str) -> tuple[str, str]:
    return f"<!-- run_all:{name} begin -->", f"<!-- run_all:{name} end -->"


def replace_region(text: str, name: str, body: list) -> str:
    """Swap the body between NAME's markers; one clear error if the markers are missing."""
    begin, end = region_markers(name)
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise SystemExit(f"run_all: BENCHMARKS.md has no '{begin}' ... '{end}' region for '{name}'")
    return pattern.sub(lambda _: "\n".join([begin, *body, end]), text, count=1)


def section(name: str, bench: Bench, runs: list, loads: list, idle: float, others: float, commit: str,
            start_load: float | None = None) -> list:
    """``start_load``: the load average when run_all started (default: before this section's first run)."""
    # Idle when run_all starts, and nobody else on the cores during any run.  A later run's 1-minute
    # load average still holds the previous runs' own threads, so it is no test of other processes.
    start = loads[0]["load_before"] if start_load is None else start_load
    quiet = start < idle and all(ld["others_cores"] < others for ld in loads)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    head = [f"Generated by `python benchmarks/run_all.py --only {name}` ({len(runs)} runs of "
            f"`python {' '.join(bench.argv)}`, median), commit `{commit}`, {when}."]
    if not quiet:
        head.append(f"**NOT A FIGURE: taken on a busy machine** (need load average < {idle} when run_all "
                    f"starts and other processes < {others} cores during every run); re-run on an idle machine.")
    head.append(f"Load average when run_all started: {start:.2f}. Load per run (1-min load average before -> after; CPU cores used by other processes during the "
                "run): " + "; ".join(f"{ld['load_before']:.2f} -> {ld['load_after']:.2f}, others "
                                     f"{ld['others_cores']:.2f}" for ld in loads) + ".")
    return [*head, "", *bench.render(runs)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", action="append", choices=sorted(BENCHES), help="run only this (repeatable)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--idle", type=float, default=1.0, help="max 1-minute load average before a run")
    ap.add_argument("--others", type=float, default=0.15, help="max CPU cores used by others during a run")
    ap.add_argument("--markdown", default=os.path.join(ROOT, "BENCHMARKS.md"))
    ap.add_argument("--list", action="store_true", help="print the benchmarks and their commands")
    args = ap.parse_args()
    if args.list:
        for name, b in BENCHES.items():
            print(f"{name}: python {' '.join(b.argv)}")
        return
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    start_load = _loadavg()
    for name in args.only or list(BENCHES):
        bench, runs, loads = BENCHES[name], [], []
        for i in range(args.repeats):
            stdout, load = run_once(bench.argv)
            runs.append(bench.parse(stdout))
            loads.append(load)
            print(f"run_all: {name} run {i + 1}/{args.repeats}: {json.dumps(load)}", flush=True)
        body = section(name, bench, runs, loads, args.idle, args.others, commit, start_load)
        print("\n".join(body), flush=True)
        with open(args.markdown) as f:
            text = f.read()
        text = replace_region(text, name, body)
        tmp = args.markdown + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, args.markdown)


if __name__ == "__main__":
    main()
