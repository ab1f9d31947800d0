"""Result tables and plots of the experiment grid, written atomically.

Input: one `ScoreRow` per finished run (task, model, size, PEFT method, seed, scores in
[0, 1]); `aggregate` groups the seeds of each (task, model, size, method) cell into a `Cell`
with the mean and the spread over seeds; then

- `markdown_table(cells, spread)`: one row per cell, scores x100 as ``mean ± std`` (sample
  standard deviation, ddof=1) or ``mean (min–max)``; the header line says which and how many
  seeds; a cell with one seed shows its mean only;
- `findings(cells, metric, spread, floor)`: the paper's claims (RETRO > GPT zero-shot; GPT+PEFT >
  RETRO+PEFT; LoRA and Adapter > P-tuning) checked per (task, size): "no signal" when both
  cells are at the floor (`Floor`: mean score below a stated threshold, or a degenerate model
  that gives one answer to most questions), else "holds"/"reversed" only when the two
  mean ± spread bands do not overlap, else "inconclusive";
- `build_figure(cells, task, metric, spread)`: score vs model size (log x axis), one panel per
  PEFT method, GPT and RETRO as two lines with error bars of the chosen spread;
- `write_report(rows, out_dir, ...)`: ``results.md`` plus ``<task>_<metric>_vs_size.png``
  per task and metric, each written to a temporary file in ``out_dir`` and renamed into
  place, so an interrupted run never leaves a half-written table or image.

Score rows are kept as JSON lines (`write_score_rows` / `read_score_rows`), one object per
run: ``{"task": "bundled", "model": "retro", "size": 12500000, "method": "lora",
"seed": 1, "scores": {"em": 0.31, "f1": 0.42, "rougeL": 0.44}, "top_answer": "1717",
"top_share": 0.12}`` (the most common normalised prediction and the share of questions given it;
both optional).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from megatron_retro.errors import UserError
from megatron_retro.io_atomic import save_figure_atomic, write_text_atomic

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
                                       # a GPT with the RETRO on the same decoder (None = size)


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


def _order(value: str, order: Sequence[str]) -> Tuple[int, str]:
    return (order.index(value) if value in order else len(order), value)


def _check_spread(spread: str) -> None:
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
    cells.sort(key=lambda c: (c.task, _order(c.model, MODEL_ORDER), c.size,
                              _order(c.method, METHOD_ORDER)))
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


def _metrics_of(cells: Sequence[Cell]) -> List[str]:
    seen = {m for c in cells for m in c.mean}
    return [m for m in METRIC_LABELS if m in seen] + sorted(seen - set(METRIC_LABELS))


def markdown_table(cells: Sequence[Cell], spread: str = "std",
                   metrics: Optional[Sequence[str]] = None) -> str:
    _check_spread(spread)
    if not cells:
        raise UserError("no scores to tabulate")
    metrics = list(metrics or _metrics_of(cells))
    how = ("mean ± sample standard deviation (n−1)" if spread == "std"
           else "mean (min–max)")
    n_seeds = sorted({len(c.seeds) for c in cells})
    seeds_txt = "/".join(map(str, n_seeds))
    lines = [f"Scores ×100, {how} over {seeds_txt} seed(s) per cell; a single seed shows "
             f"its value only.", "",
             "| Task | Model | Size | Method | Seeds | "
             + " | ".join(METRIC_LABELS.get(m, m) for m in metrics) + " |",
             "|" + "---|" * (5 + len(metrics))]
    for c in cells:
        values = " | ".join(format_value(c, m, spread) for m in metrics)
        lines.append(f"| {c.task} | {c.model.upper() if c.model in MODEL_ORDER else c.model} "
                     f"| {size_label(c.size)} | {c.method} | {len(c.seeds)} | {values} |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Floor:
    """When a cell carries no signal: its mean ``metric`` is below ``score`` (a fraction), or
    some seed gave one answer to at least ``share`` of the questions (a degenerate model)."""

    score: float = 0.05
    share: float = 0.5

    def __post_init__(self) -> None:
        if not 0 <= self.score <= 1 or not 0 < self.share <= 1:
            raise UserError(f"floor score={self.score}, share={self.share}: score in [0, 1], "
                            f"share in (0, 1]")

    def reason(self, cell: Cell, metric: str) -> Optional[str]:
        """Why ``cell`` is at the floor on ``metric``, or None when it is above it."""
        label = METRIC_LABELS.get(metric, metric)
        if cell.top_share is not None and cell.top_share >= self.share:
            return (f"degenerate: {100 * cell.top_share:.0f}% of answers are "
                    f"{cell.top_answer!r}")
        if cell.mean[metric] < self.score:
            return f"{label} {100 * cell.mean[metric]:.1f} < {100 * self.score:g}"
        return None

    def describe(self, metric: str) -> str:
        label = METRIC_LABELS.get(metric, metric)
        return (f"mean {label} below {100 * self.score:g}, or one answer to at least "
                f"{100 * self.share:g}% of the questions")


@dataclass
class Finding:
    """One of the paper's claims "a > b" checked on one (task, decoder size) of the grid."""

    claim: str
    task: str
    size: float    # the decoder size both cells are built on
    a: Cell
    b: Cell
    verdict: str   # "holds", "reversed", "inconclusive" or "no signal"
    floor_a: Optional[str] = None   # why a is at the floor (None: above it)
    floor_b: Optional[str] = None

    def summary(self, metric: str = "f1", spread: str = "std") -> str:
        """One console line: claim, where, both scores, verdict (and why there is no signal)."""
        line = (f"{self.claim} [{self.task} {size_label(self.size)}]: "
                f"{format_value(self.a, metric, spread)} vs {format_value(self.b, metric, spread)}"
                f" -> {self.verdict}")
        if self.verdict == "no signal":
            line += f" (both at the floor: {self.floor_a}; {self.floor_b})"
        return line


def band_verdict(a: Cell, b: Cell, metric: str, spread: str) -> str:
    """'holds' if a's band (mean ± spread) lies wholly above b's, 'reversed' if below,
    else 'inconclusive' (overlapping bands, or a single seed on either side)."""
    if len(a.seeds) < 2 or len(b.seeds) < 2:
        return "inconclusive"
    a_lo, a_hi = a.spread(metric, spread)
    b_lo, b_hi = b.spread(metric, spread)
    if a.mean[metric] - a_lo > b.mean[metric] + b_hi:
        return "holds"
    if a.mean[metric] + a_hi < b.mean[metric] - b_lo:
        return "reversed"
    return "inconclusive"


PAPER_CLAIMS = (
    ("RETRO > GPT zero-shot", ("retro", "zero-shot"), ("gpt", "zero-shot")),
    ("GPT+LoRA > RETRO+LoRA", ("gpt", "lora"), ("retro", "lora")),
    ("GPT+Adapter > RETRO+Adapter", ("gpt", "adapter"), ("retro", "adapter")),
    ("GPT+P-tuning > RETRO+P-tuning", ("gpt", "ptuning"), ("retro", "ptuning")),
    ("GPT: LoRA > P-tuning", ("gpt", "lora"), ("gpt", "ptuning")),
    ("GPT: Adapter > P-tuning", ("gpt", "adapter"), ("gpt", "ptuning")),
    ("RETRO: LoRA > P-tuning", ("retro", "lora"), ("retro", "ptuning")),
    ("RETRO: Adapter > P-tuning", ("retro", "adapter"), ("retro", "ptuning")),
)


def findings(cells: Sequence[Cell], metric: str = "f1", spread: str = "std",
             claims=PAPER_CLAIMS, floor: Optional[Floor] = None) -> List[Finding]:
    """Check each claim ``(text, (model, method), (model, method))`` at every (task, size)
    where both cells have ``metric``; claims whose cells are absent are skipped.  Both cells
    at the ``floor`` (default `Floor()`): "no signal", whatever the bands say."""
    _check_spread(spread)
    floor = floor or Floor()
    index = {(c.task, c.decoder, c.model, c.method): c for c in cells if metric in c.mean}
    out = []
    for task, size in sorted({(c.task, c.decoder) for c in cells}):
        for text, (ma, pa), (mb, pb) in claims:
            a, b = index.get((task, size, ma, pa)), index.get((task, size, mb, pb))
            if a is not None and b is not None:
                fa, fb = floor.reason(a, metric), floor.reason(b, metric)
                verdict = "no signal" if fa and fb else band_verdict(a, b, metric, spread)
                out.append(Finding(text, task, size, a, b, verdict, fa, fb))
    return out


def findings_markdown(found: Sequence[Finding], metric: str = "f1",
                      spread: str = "std", floor: Optional[Floor] = None) -> str:
    label = METRIC_LABELS.get(metric, metric)
    band = "mean ± std" if spread == "std" else "min–max"
    floor = floor or Floor()
    lines = [f"Paper's findings on {label} (×100): 'no signal' when both sides are at the "
             f"floor ({floor.describe(metric)}); else 'holds' / 'reversed' when the two "
             f"{band} bands over seeds do not overlap, else 'inconclusive' (also with one "
             f"seed).", "",
             "| Task | Decoder | Claim | A | B | Verdict | At the floor |",
             "|---|---|---|---|---|---|---|"]
    for f in found:
        why = "; ".join(f"{side}: {r}" for side, r in (("A", f.floor_a), ("B", f.floor_b)) if r)
        lines.append(f"| {f.task} | {size_label(f.size)} | {f.claim} | "
                     f"{format_value(f.a, metric, spread)} | "
                     f"{format_value(f.b, metric, spread)} | {f.verdict} | {why or '–'} |")
    if found and all(f.verdict == "no signal" for f in found):
        lines += ["", "**No signal**: every compared cell is at the floor, so these scores "
                      "say nothing about the paper's findings."]
    return "\n".join(lines) + "\n"


MARKERS = {"gpt": ("o", "full"), "retro": ("s", "none")}   # shape, fill: equal scores stay visible
DODGE = 0.04      # log10 x offset between the models of one panel (~10% of a size)


def build_figure(cells: Sequence[Cell], task: str, metric: str, spread: str = "std"):
    """Figure (matplotlib, no pyplot state): score vs each model's own parameter count, a panel
    per method, a line per model with error bars of ``spread``; the models are dodged
    sideways and drawn with distinct markers so equal scores do not hide each other; a metric
    that is zero in every cell says so in each panel instead of drawing an empty one."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    _check_spread(spread)
    mine = [c for c in cells if c.task == task and metric in c.mean]
    if not mine:
        raise UserError(f"no {metric} scores for task {task!r}")
    methods = sorted({c.method for c in mine}, key=lambda m: _order(m, METHOD_ORDER))
    models = sorted({c.model for c in mine}, key=lambda m: _order(m, MODEL_ORDER))
    fig = Figure(figsize=(3.2 * len(methods), 3.2), constrained_layout=True)
    axes = fig.subplots(1, len(methods), sharey=True, squeeze=False)[0]
    label = METRIC_LABELS.get(metric, metric)
    all_zero = all(c.high.get(metric, c.mean[metric]) == 0 for c in mine)
    for ax, method in zip(axes, methods):
        for j, model in enumerate(models):
            pts = sorted((c for c in mine if c.method == method and c.model == model),
                         key=lambda c: c.size)
            if not pts:
                continue
            shift = 10 ** (DODGE * (j - (len(models) - 1) / 2))
            x = [c.size * shift for c in pts]
            y = [100 * c.mean[metric] for c in pts]
            err = [[100 * c.spread(metric, spread)[0] for c in pts],
                   [100 * c.spread(metric, spread)[1] for c in pts]]
            marker, fill = MARKERS.get(model, ("^", "full"))
            ax.errorbar(x, y, yerr=err, marker=marker, fillstyle=fill, markersize=7, capsize=3,
                        label=model.upper() if model in MODEL_ORDER else model)
        ax.set_xscale("log")
        sizes = sorted({c.size for c in mine if c.method == method})
        ax.set_xticks(sizes, [size_label(v) for v in sizes])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.15)
        ax.set_title(method)
        ax.set_xlabel("parameters (own)")
        ax.grid(True, alpha=0.3)
        if all_zero:
            ax.text(0.5, 0.5, f"{label} = 0\nin every cell", transform=ax.transAxes,
                    ha="center", va="center", fontsize=11, color="0.3")
    if all_zero:
        axes[0].set_ylim(-1, 10)
    axes[0].set_ylabel(f"{label} (×100)")
    axes[0].legend()
    fig.suptitle(f"{task}: {label} vs model size "
                 f"(error bars: {'std' if spread == 'std' else 'min–max'} over seeds)"
                 + (f" — {label} is 0 everywhere" if all_zero else ""))
    return fig


def write_report(rows: Iterable[ScoreRow], out_dir: str, spread: str = "std",
                 metrics: Optional[Sequence[str]] = None,
                 findings_metric: str = "f1", floor: Optional[Floor] = None) -> List[str]:
    """results.md (the table, then the paper's claims checked on ``findings_metric``) and
    one PNG per (task, metric) in ``out_dir``; returns the paths."""
    cells = aggregate(rows)
    metrics = list(metrics or _metrics_of(cells))
    text = markdown_table(cells, spread, metrics)
    found = findings(cells, findings_metric, spread, floor=floor) if findings_metric in metrics else []
    if found:
        text += "\n" + findings_markdown(found, findings_metric, spread, floor)
    paths = [write_text_atomic(os.path.join(out_dir, "results.md"), text)]
    for task in sorted({c.task for c in cells}):
        for m in metrics:
            if any(c.task == task and m in c.mean for c in cells):
                fig = build_figure(cells, task, m, spread)
                paths.append(save_figure_atomic(
                    fig, os.path.join(out_dir, f"{task}_{m}_vs_size.png")))
    return paths


def write_score_rows(rows: Iterable[ScoreRow], path: str) -> str:
    """All rows as JSON lines, atomically (rewrite the file to add a finished run)."""
    return write_text_atomic(path, "".join(json.dumps(asdict(r)) + "\n" for r in rows))


def read_score_rows(path: str) -> List[ScoreRow]:
    """Rows written by `write_score_rows`; UserError naming file, line and field."""
    from megatron_retro.data.tasks.reader import Fields, iter_jsonl

    rows = []
    for lineno, obj in iter_jsonl(path):
        r = Fields(path, lineno, obj)
        scores = r.get("scores", dict)
        for k, v in scores.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= 1:
                r.fail(f"field 'scores.{k}' must be a number in [0, 1], got {v!r}")
        size = r.get("size", float)
        if size <= 0:
            r.fail(f"field 'size' must be > 0, got {size}")
        share = r.get("top_share", float, optional=True)
        if share is not None and not 0 <= share <= 1:
            r.fail(f"field 'top_share' must be in [0, 1], got {share}")
        top = r.get("top_answer", str, optional=True)
        decoder = r.get("decoder", float, optional=True)
        rows.append(ScoreRow(model=r.text("model"), size=size, method=r.text("method"),
                             seed=r.get("seed", int), scores=dict(scores),
                             task=r.text("task"), top_answer=top, top_share=share,
                             decoder=decoder))
    return rows
