"""The grid's scores: one ``ScoreRow`` per finished run, ``aggregate`` -> one ``Cell`` per (task,
model, size, method) with the mean and the spread over seeds, and how a cell's value is shown
(``format_value``: scores x100 as ``mean ± std`` or ``mean (min–max)``, ``size_label``).
``tables``, ``findings`` and ``plots`` read cells."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from megatron_retro.errors import UserError

SPREADS = ("std", "minmax")
METRIC_LABELS = {"em": "EM", "f1": "F1", "rougeL": "ROUGE-L", "choice": "Choice acc."}
MODEL_ORDER = ("gpt", "retro")
METHOD_ORDER = ("zero-shot", "none", "lora", "adapter", "ptuning")


@dataclass(frozen=True)
class ScoreRow:
    """The scores (metric -> value in [0, 1]) of one finished run of the grid."""

    model: str
    size: float          # the model's own number of parameters: the x axis of the plots
    method: str          # PEFT method; "zero-shot" for no fine-tuning
    seed: int
    scores: Dict[str, float]
    task: str = "bundled"
    top_answer: Optional[str] = None   # the most common (normalised) prediction of the run
    top_share: Optional[float] = None  # share of the questions answered with it, in [0, 1]
    decoder: Optional[float] = None    # parameters of the GPT decoder the model is built on: pairs



@dataclass
class Cell:
    """Seeds of one (task, model, size, method) aggregated: mean and spread per metric."""

    task: str
    model: str
    size: float
    method: str
    seeds: List[int]
    mean: Dict[str, float]
    std: Dict[str, float]                       # sample std (ddof=1); 0.0 for one seed
    low: Dict[str, float] = field(default_factory=dict)    # min over seeds
    high: Dict[str, float] = field(default_factory=dict)   # max over seeds
    top_answer: Optional[str] = None    # the most concentrated seed's most common answer
    top_share: Optional[float] = None   # its share of the questions (max over seeds)
    decoder: float = 0.0                # pairing size of the findings (ScoreRow.decoder)

    def spread(self, metric: str, kind: str) -> Tuple[float, float]:
        """(distance below, distance above) the mean for error bars."""
        if kind == "std":
            return self.std[metric], self.std[metric]
        # clamp: the mean of equal values can differ from them by rounding
        return (max(0.0, self.mean[metric] - self.low[metric]),
                max(0.0, self.high[metric] - self.mean[metric]))



def display_order(value: str, order: Sequence[str]) -> Tuple[int, str]:
    return (order.index(value) if value in order else len(order), value)



def check_spread(spread: str) -> None:
    if spread not in SPREADS:
        raise UserError(f"spread={spread!r}: must be one of {', '.join(SPREADS)}")



def aggregate(rows: Iterable[ScoreRow]) -> List[Cell]:
    """Group rows by (task, model, size, method); the same seed twice in a cell, or cells
    whose seeds report different metric sets, are errors. Sorted for display."""
    groups: Dict[tuple, List[ScoreRow]] = {}
    for r in rows:
        groups.setdefault((r.task, r.model, r.size, r.method), []).append(r)
    cells = []
    for (task, model, size, method), rs in groups.items():
        where = f"task={task} model={model} size={size:g} method={method}"
        seeds = [r.seed for r in rs]
        dup = sorted({s for s in seeds if seeds.count(s) > 1})
        if dup:
            raise UserError(f"{where}: seed(s) {dup} scored more than once")
        metrics = set(rs[0].scores)
        for r in rs[1:]:
            if set(r.scores) != metrics:
                raise UserError(f"{where}: seed {r.seed} has metrics {sorted(r.scores)}, seed "
                                f"{rs[0].seed} has {sorted(metrics)}")
        mean, std, low, high = {}, {}, {}, {}
        for m in metrics:
            vals = [float(r.scores[m]) for r in rs]
            mu = sum(vals) / len(vals)
            mean[m] = mu
            std[m] = (math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1))
                      if len(vals) > 1 else 0.0)
            low[m], high[m] = min(vals), max(vals)
        shares = [r for r in rs if r.top_share is not None]
        top = max(shares, key=lambda r: r.top_share) if shares else None
        cells.append(Cell(task, model, size, method, sorted(seeds), mean, std, low, high,
                          top.top_answer if top else None, top.top_share if top else None,
                          rs[0].decoder or size))
    cells.sort(key=lambda c: (c.task, display_order(c.model, MODEL_ORDER), c.size,
                              display_order(c.method, METHOD_ORDER)))
    return cells



def size_label(n: float) -> str:
    """1250000 -> '1.25M', 3e9 -> '3B', 800 -> '800'."""
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.3g}{unit}"
    return f"{n:g}"



def format_value(cell: Cell, metric: str, spread: str) -> str:
    if metric not in cell.mean:
        return "–"
    mu = 100 * cell.mean[metric]
    if len(cell.seeds) == 1:
        return f"{mu:.1f}"
    if spread == "std":
        return f"{mu:.1f} ± {100 * cell.std[metric]:.1f}"
    return f"{mu:.1f} ({100 * cell.low[metric]:.1f}–{100 * cell.high[metric]:.1f})"



def metrics_of(cells: Sequence[Cell]) -> List[str]:
    seen = {m for c in cells for m in c.mean}
    return [m for m in METRIC_LABELS if m in seen] + sorted(seen - set(METRIC_LABELS))
