"""The paper's claims checked on the grid (RETRO > GPT zero-shot; GPT+PEFT > RETRO+PEFT; LoRA and
Adapter > P-tuning), per (task, decoder size): "no signal" when both cells are at the floor
(``Floor``: mean score below a stated threshold, or a degenerate model that gives one answer to
most questions), else "holds"/"reversed" only when the two mean ± spread bands do not overlap,
else "inconclusive"; ``findings_markdown`` is the table of ``results.md``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

from megatron_retro.errors import UserError
from megatron_retro.evaluation.score_cells import METRIC_LABELS, Cell, check_spread, format_value, size_label


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
    check_spread(spread)
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
