"""Training metrics: one JSON line per step in metrics.jsonl, TensorBoard scalars, a PNG loss curve.

On resume the lines of steps after the restored checkpoint are dropped (they belong to the
killed run's lost progress), so metrics.jsonl always describes one consistent run.
"""
from __future__ import annotations

import json
import math
import os
from typing import Optional

from megatron_retro.io_atomic import atomic_file, write_text_atomic

METRICS_FILE = "metrics.jsonl"


def read_metrics(path: str) -> list[dict]:
    rows = []
    if not os.path.isfile(path):
        return rows
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is lost progress
    return rows


class MetricsWriter:
    """Writes only on the logging rank (``enabled``); a no-op elsewhere."""

    def __init__(self, out_dir: str, enabled: bool, resume_step: int = 0, tensorboard: bool = True,
                 init_step: int = 0, init_from: str = ""):
        self.enabled = enabled
        self.init_step, self.init_from = init_step, init_from   # the loss curve starts there
        self.path = os.path.join(out_dir, METRICS_FILE)
        self.out_dir = out_dir
        self._tb = None
        if not enabled:
            return
        os.makedirs(out_dir, exist_ok=True)
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
        write_text_atomic(self.path, "".join(json.dumps(r) + "\n" for r in kept))
        self._file = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(os.path.join(out_dir, "tensorboard"), purge_step=resume_step + 1)

    def log(self, row: dict) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in row.items():
                if key != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                    self._tb.add_scalar(key, value, row["step"])

    def close(self, plot: bool = True) -> Optional[str]:
        if not self.enabled:
            return None
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        return plot_loss_curve(self.path, os.path.join(self.out_dir, "loss_curve.png"), self.init_step,
                               self.init_from) if plot else None


def loss_curve_figure(rows: list[dict], init_step: int = 0, init_from: str = ""):
    """Figure (no pyplot state) of the training loss per step and the held-out loss where
    measured, or None without a training loss.  A run initialised from another model's step
    ``init_step`` (retro-fitting from a GPT) is drawn on that model's step axis: its step s at
    ``init_step + s``, the axis starting at ``init_step``."""
    from matplotlib.figure import Figure

    train = [(init_step + r["step"], r["loss"]) for r in rows if r.get("loss") is not None]
    valid = [(init_step + r["step"], r["valid_loss"]) for r in rows if r.get("valid_loss") is not None]
    if not train:
        return None
    fig = Figure(figsize=(6, 4), dpi=100, tight_layout=True)
    ax = fig.subplots()
    ax.plot(*zip(*train), label="train loss", lw=1)
    if valid:
        ax.plot(*zip(*valid), "o-", label="held-out loss")
    if init_step:
        ax.set_xlim(left=init_step)
        ax.set_xlabel(f"step (initialised from {init_from or 'a checkpoint'} at step {init_step})")
    else:
        ax.set_xlabel("step")
    ax.set_ylabel("loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_loss_curve(metrics_path: str, png_path: str, init_step: int = 0, init_from: str = "") -> Optional[str]:
    """`loss_curve_figure` of a metrics.jsonl as a PNG; returns its path (None: nothing to plot)."""
    fig = loss_curve_figure(read_metrics(metrics_path), init_step, init_from)
    if fig is None:
        return None
    return atomic_file(png_path, lambda tmp: fig.savefig(tmp, format="png"))
