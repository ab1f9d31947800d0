"""The RAG suite's table (metric per split) and its noise plot (score vs noise ratio, a line per model).

Input everywhere: ``{label: {split name: {metric: mean or None}}}``, the ``splits`` of
``rag_suite.run_suite`` for one model (label "gpt + lora") or averaged over seeds
(``average_suites``).  Scores are shown x100; "–" where a metric is undefined for a split
(no recall without gold passages, no pretrained-fact EM outside the counterfactual split).
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence

COLUMNS = [("em", "EM"), ("f1", "F1"), ("context_precision", "ctx P"), ("context_recall", "ctx R"),
           ("faithful", "faithful"), ("gold_faithful", "gold-faithful"), ("answer_relevance", "ans. rel."),
           ("refused", "refused"), ("pretrained_em", "pretrain-fact EM")]
NOISE_METRICS = (("em", "EM"), ("faithful", "faithfulness"))


def _fmt(v: Optional[float]) -> str:
    return "–" if v is None else f"{100 * v:.1f}"


def suite_table(suites: Dict[str, Dict[str, dict]]) -> str:
    """Markdown: one row per (model, split), one column per metric, with the question count."""
    head = "| model | split | n | " + " | ".join(h for _, h in COLUMNS) + " |"
    lines = [head, "|---" * (len(COLUMNS) + 3) + "|"]
    for label, splits in suites.items():
        for name, m in splits.items():
            lines.append(f"| {label} | {name} | {m.get('count', 0)} | "
                         + " | ".join(_fmt(m.get(key)) for key, _ in COLUMNS) + " |")
    return "\n".join(lines)


def noise_curve(splits: Dict[str, dict], metric: str) -> List[tuple]:
    """[(noise ratio, score)] of the noise splits, by ratio."""
    pts = [(m["noise_ratio"], m.get(metric)) for name, m in splits.items()
           if name.startswith("noise-") and m.get("noise_ratio") is not None]
    return sorted(p for p in pts if p[1] is not None)


def noise_figure(suites: Dict[str, Dict[str, dict]], metrics: Sequence[tuple] = NOISE_METRICS,
                 archs: Optional[Dict[str, str]] = None):
    """Figure (no pyplot state): a panel per metric, score vs noise ratio, a line per model (RETRO
    dashed: ``archs`` maps a label to its architecture, else a label starting with "retro" is one)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(metrics), 3.4))
    for j, (metric, title) in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), j + 1)
        for label, splits in suites.items():
            pts = noise_curve(splits, metric)
            if pts:
                arch = (archs or {}).get(label) or label.lower()
                style = "s--" if arch.startswith("retro") else "o-"
                ax.plot([x for x, _ in pts], [100 * y for _, y in pts], style, label=label)
        ax.set_xlabel("noise ratio (distractors / passages given)")
        ax.set_ylabel(f"{title} (x100)")
        ax.set_title(f"{title} vs noise")
        ax.grid(alpha=0.3)
        if j == 0:
            ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def average_suites(runs: Sequence[Dict[str, dict]]) -> Dict[str, dict]:
    """Per split and metric, the mean over runs (seeds) of the defined values; count = total questions."""
    out: Dict[str, dict] = {}
    for splits in runs:
        for name, m in splits.items():
            acc = out.setdefault(name, {})
            for key, v in m.items():
                if v is not None and key != "count":
                    acc.setdefault(key, []).append(float(v))
            acc.setdefault("count", []).append(m.get("count", 0))
    return {name: {k: (sum(v) if k == "count" else sum(v) / len(v)) for k, v in acc.items()}
            for name, acc in out.items()}


def write_suite_report(records: Sequence[dict], out_dir: str) -> List[str]:
    """An experiment's ``rag_suite.md`` and ``rag_noise.png``: each (model, method) cell's suite scores
    averaged over its seeds (records: the cells' ``result.json`` with a ``rag`` entry).  A row per grid
    model (its name, e.g. a Gemma beside a GPT of the same architecture), GPT and RETRO alike."""
    import os

    from megatron_retro.io_atomic import save_figure_atomic, write_text_atomic

    groups: Dict[str, List[dict]] = {}
    archs: Dict[str, str] = {}
    for r in records:
        if "rag" in r:
            label = f"{r.get('model', r['arch'])} {r['method']}"
            groups.setdefault(label, []).append(r["rag"])
            archs[label] = r["arch"]
    suites, styles = {}, {}
    for label, runs in groups.items():
        key = f"{label} ({len(runs)} seed{'s' if len(runs) > 1 else ''})"
        suites[key], styles[key] = average_suites(runs), archs[label]
    text = ("RAG suite (`evaluate --suite rag`): scores x100, mean over seeds; see "
            "megatron_retro/evaluation/rag_metrics.py for the definitions.\n\n" + suite_table(suites) + "\n")
    return [write_text_atomic(os.path.join(out_dir, "rag_suite.md"), text),
            save_figure_atomic(noise_figure(suites, archs=styles), os.path.join(out_dir, "rag_noise.png"))]
