"""``build_figure``: score vs model size (log x axis), one panel per PEFT method, GPT and RETRO as
two lines with error bars of the chosen spread (matplotlib, no pyplot state)."""
from __future__ import annotations

from typing import Sequence

from megatron_retro.errors import UserError
from megatron_retro.evaluation.score_cells import (METHOD_ORDER, METRIC_LABELS, MODEL_ORDER, Cell, check_spread,
                                                   display_order, size_label)

MARKERS = {"gpt": ("o", "full"), "retro": ("s", "none")}   # shape, fill: equal scores stay visible
DODGE = 0.04      # log10 x offset between the models of one panel (~10% of a size)


def build_figure(cells: Sequence[Cell], task: str, metric: str, spread: str = "std"):
    """Figure (matplotlib, no pyplot state): score vs each model's own parameter count, a panel
    per method, a line per model with error bars of ``spread``; the models are dodged
    sideways and drawn with distinct markers so equal scores do not hide each other; a metric
    that is zero in every cell says so in each panel instead of drawing an empty one."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import NullFormatter

    check_spread(spread)
    mine = [c for c in cells if c.task == task and metric in c.mean]
    if not mine:
        raise UserError(f"no {metric} scores for task {task!r}")
    methods = sorted({c.method for c in mine}, key=lambda m: display_order(m, METHOD_ORDER))
    models = sorted({c.model for c in mine}, key=lambda m: display_order(m, MODEL_ORDER))
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
        ax.set_xticks(sizes, [size_label(v) for v in sizes], rotation=45, ha="right")  # close sizes stay legible
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
