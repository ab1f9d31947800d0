"""Tables and plots from synthetic score rows: mean ± spread over seeds, the Markdown layout,
figure data, atomic writes (nothing half-written on failure), score-row files."""
import json
import os
import re

import pytest

from megatron_retro.errors import UserError
from megatron_retro.evaluation.plots import build_figure
from megatron_retro.evaluation.score_cells import ScoreRow, aggregate, size_label
from megatron_retro.evaluation.tables import markdown_table, read_score_rows, write_report, write_score_rows
from megatron_retro.io_atomic import save_figure_atomic, write_text_atomic

# F1 over seeds 0,1,2: GPT-lora-small 0.40/0.42/0.44 -> mean 42.0, sample std 2.0,
# min-max 40.0-44.0; RETRO-lora-small 0.50/0.53/0.59 -> mean 54.0,
# std sqrt(((-4)^2 + (-1)^2 + 5^2)/2) = sqrt(21) = 4.58, min-max 50.0-59.0
F1 = {("gpt", 1e6, "lora"): [0.40, 0.42, 0.44], ("retro", 1e6, "lora"): [0.50, 0.53, 0.59],
      ("gpt", 4e6, "lora"): [0.45, 0.47, 0.49], ("retro", 4e6, "lora"): [0.60, 0.60, 0.60],
      ("gpt", 1e6, "zero-shot"): [0.10, 0.10, 0.10], ("retro", 1e6, "zero-shot"): [0.2, 0.3, 0.4],
      ("gpt", 4e6, "zero-shot"): [0.12, 0.14, 0.16], ("retro", 4e6, "zero-shot"): [0.3, 0.3, 0.3]}


def rows(task="bundled"):
    out = []
    for (model, size, method), vals in F1.items():
        for seed, v in enumerate(vals):
            out.append(ScoreRow(model=model, size=size, method=method, seed=seed, task=task,
                                scores={"em": v / 2, "f1": v, "rougeL": v}))
    return out


def cell(cells, model, size, method):
    (c,) = [c for c in cells if (c.model, c.size, c.method) == (model, size, method)]
    return c


def test_aggregate_mean_std_minmax():
    cells = aggregate(rows())
    assert len(cells) == 8
    c = cell(cells, "gpt", 1e6, "lora")
    assert c.seeds == [0, 1, 2]
    assert c.mean["f1"] == pytest.approx(0.42) and c.std["f1"] == pytest.approx(0.02)
    assert (c.low["f1"], c.high["f1"]) == (0.40, 0.44)
    r = cell(cells, "retro", 1e6, "lora")
    assert r.mean["f1"] == pytest.approx(0.54) and r.std["f1"] == pytest.approx(21 ** 0.5 / 100)
    assert r.spread("f1", "minmax") == pytest.approx((0.04, 0.05))
    # display order: model gpt before retro, size ascending, zero-shot before lora
    assert [(c.model, c.size, c.method) for c in cells[:3]] == [
        ("gpt", 1e6, "zero-shot"), ("gpt", 1e6, "lora"), ("gpt", 4e6, "zero-shot")]


def test_markdown_table_std_and_minmax():
    cells = aggregate(rows())
    md = markdown_table(cells, "std")
    lines = md.splitlines()
    assert lines[0].startswith("Scores ×100, mean ± sample standard deviation (n−1) over 3 seed")
    assert lines[2] == "| Task | Model | Size | Method | Seeds | EM | F1 | ROUGE-L |"
    assert "| bundled | GPT | 1M | lora | 3 | 21.0 ± 1.0 | 42.0 ± 2.0 | 42.0 ± 2.0 |" in lines
    assert "| bundled | RETRO | 1M | lora | 3 | 27.0 ± 2.3 | 54.0 ± 4.6 | 54.0 ± 4.6 |" in lines
    assert len(lines) == 4 + 8
    mm = markdown_table(cells, "minmax").splitlines()
    assert mm[0].startswith("Scores ×100, mean (min–max)")
    assert "| bundled | RETRO | 1M | lora | 3 | 27.0 (25.0–29.5) | 54.0 (50.0–59.0) | " \
           "54.0 (50.0–59.0) |" in mm


def test_single_seed_shows_value_only_and_errors():
    one = [ScoreRow("gpt", 2.5e6, "adapter", 7, {"f1": 0.333})]
    assert "| bundled | GPT | 2.5M | adapter | 1 | 33.3 |" in markdown_table(aggregate(one))
    with pytest.raises(UserError, match=r"method=adapter: seed\(s\) \[7\] scored more than once"):
        aggregate(one + one)
    with pytest.raises(UserError, match="seed 8 has metrics \\['em'\\], seed 7 has \\['f1'\\]"):
        aggregate(one + [ScoreRow("gpt", 2.5e6, "adapter", 8, {"em": 0.1})])
    with pytest.raises(UserError, match="spread='sem'"):
        markdown_table(aggregate(one), "sem")
    with pytest.raises(UserError, match="no scores"):
        markdown_table([])


@pytest.mark.parametrize("n,label", [(800, "800"), (1e6, "1M"), (1.25e6, "1.25M"),
                                     (125e6, "125M"), (3e9, "3B"), (4500, "4.5K")])
def test_size_label(n, label):
    assert size_label(n) == label


def test_figure_panels_lines_and_error_bars():
    fig = build_figure(aggregate(rows()), "bundled", "f1", "minmax")
    axes = fig.axes
    assert [a.get_title() for a in axes] == ["zero-shot", "lora"]
    lora = axes[1]
    bars = {c.get_label(): c for c in lora.containers}     # one ErrorbarContainer per model
    assert set(bars) == {"GPT", "RETRO"}
    gpt, retro = bars["GPT"].lines[0], bars["RETRO"].lines[0]
    # dodged sideways by 10^(∓0.02) so equal scores stay visible, with distinct markers
    assert list(gpt.get_xdata()) == pytest.approx([1e6 / 10 ** 0.02, 4e6 / 10 ** 0.02])
    assert list(retro.get_xdata()) == pytest.approx([1e6 * 10 ** 0.02, 4e6 * 10 ** 0.02])
    assert (gpt.get_marker(), retro.get_marker()) == ("o", "s") and retro.get_fillstyle() == "none"
    assert list(gpt.get_ydata()) == pytest.approx([42.0, 47.0])
    assert list(retro.get_ydata()) == pytest.approx([54.0, 60.0])
    assert lora.get_xscale() == "log"
    # min-max error bars of RETRO: 50..59 at 1M, 60..60 at 4M
    (segments,) = [c.get_segments() for c in bars["RETRO"].lines[2]]
    assert [(s[0][1], s[1][1]) for s in segments] == [pytest.approx((50.0, 59.0)),
                                                      pytest.approx((60.0, 60.0))]


def test_write_report_files_are_complete_pngs(tmp_path):
    paths = write_report(rows() + rows("nq_open"), str(tmp_path), spread="std")
    names = sorted(os.path.basename(p) for p in paths)
    assert names == sorted(["results.md"] + [f"{t}_{m}_vs_size.png"
                                             for t in ("bundled", "nq_open")
                                             for m in ("em", "f1", "rougeL")])
    for p in paths[1:]:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "| nq_open | RETRO | 4M | lora | 3 | 30.0 ± 0.0 | 60.0 ± 0.0 |" in \
        open(tmp_path / "results.md").read()
    assert sorted(os.listdir(tmp_path)) == names           # no temp files left
    assert oct(os.stat(tmp_path / "results.md").st_mode & 0o777) != oct(0o600)


def test_interrupted_writes_leave_old_files_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "results.md"
    write_text_atomic(str(target), "old\n")

    class Boom(Exception):
        pass

    def bad_open(path, *a, **k):
        f = real_open(path, *a, **k)
        f.write("half")
        raise Boom()

    real_open = open
    monkeypatch.setattr("builtins.open", bad_open)
    with pytest.raises(Boom):
        write_text_atomic(str(target), "new\n")
    monkeypatch.undo()
    assert target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["results.md"]

    fig = build_figure(aggregate(rows()), "bundled", "f1")

    def bad_savefig(path, **kw):
        with real_open(path, "wb") as f:
            f.write(b"\x89PNG partial")
        raise Boom()

    monkeypatch.setattr(fig, "savefig", bad_savefig)
    with pytest.raises(Boom):
        save_figure_atomic(fig, str(tmp_path / "f1.png"))
    assert os.listdir(tmp_path) == ["results.md"]


def test_score_rows_round_trip_and_bad_lines(tmp_path):
    p = tmp_path / "scores.jsonl"
    write_score_rows(rows(), str(p))
    assert read_score_rows(str(p)) == rows()
    good = json.dumps({"task": "t", "model": "gpt", "size": 1e6, "method": "lora", "seed": 0,
                       "scores": {"f1": 0.5}})
    for bad, msg in [({"scores": {"f1": 50}}, "field 'scores.f1' must be a number in [0, 1]"),
                     ({"seed": "0"}, "field 'seed' must be an integer, got a string"),
                     ({"size": 0}, "field 'size' must be > 0"),
                     ({"model": ""}, "field 'model' is empty")]:
        p.write_text(good + "\n" + json.dumps({**json.loads(good), **bad}) + "\n")
        with pytest.raises(UserError, match=re.escape(f"scores.jsonl:2: {msg}")):
            read_score_rows(str(p))


def test_findings_verdicts():
    from megatron_retro.evaluation.findings import findings, findings_markdown

    cells = aggregate(rows())
    got = {(f.claim, f.size): f.verdict for f in findings(cells, "f1")}
    # zero-shot 1M: RETRO 30 ± 10 (band 20..40) vs GPT 10 ± 0 -> holds
    # lora 1M: GPT 42 ± 2 (40..44) vs RETRO 54 ± 4.58 (49.4..58.6) -> reversed
    assert got == {("RETRO > GPT zero-shot", 1e6): "holds",
                   ("GPT+LoRA > RETRO+LoRA", 1e6): "reversed",
                   ("RETRO > GPT zero-shot", 4e6): "holds",
                   ("GPT+LoRA > RETRO+LoRA", 4e6): "reversed"}
    extra = [ScoreRow("gpt", 1e6, "ptuning", s, {"f1": v}) for s, v in enumerate([.39, .41, .5])]
    got = {f.claim: f.verdict for f in findings(aggregate(rows() + extra), "f1")
           if f.size == 1e6}
    # GPT lora 42 ± 2 vs ptuning 43.3 ± 5.9: overlapping bands -> inconclusive
    assert got["GPT: LoRA > P-tuning"] == "inconclusive"
    one = [ScoreRow(m, 1e6, "zero-shot", 0, {"f1": v}) for m, v in (("gpt", .1), ("retro", .9))]
    (f,) = findings(aggregate(one), "f1")
    assert f.verdict == "inconclusive"          # a single seed proves nothing
    md = findings_markdown(findings(cells, "f1", "minmax"), "f1", "minmax")
    assert "| bundled | 1M | RETRO > GPT zero-shot | 30.0 (20.0–40.0) | 10.0 (10.0–10.0) | " \
           "holds |" in md


def test_floor_degenerate_predictions_read_no_signal():
    """The demo's failure: LoRA collapses to one answer ("1717", F1 0.0 on every seed) and
    P-tuning scores chance overlap (F1 ~1); the bands do not overlap, so without the floor
    the claim would read 'reversed'."""
    from megatron_retro.evaluation.metrics import answer_concentration
    from megatron_retro.evaluation.findings import Floor, findings, findings_markdown

    golds = ["Ossel River", "412", "Mara Venn", "1801", "Tarn"]
    collapsed = ["1717", "1717.", "The 1717", "1717", "Venn"]          # normalises to 4 x "1717"
    top, share = answer_concentration(collapsed)
    assert (top, share) == ("1717", 0.8)
    assert answer_concentration(golds)[1] == 0.2
    rows_ = []
    for seed, (f1_lora, f1_pt) in enumerate([(0.0, 0.010), (0.0, 0.011), (0.0, 0.009)]):
        rows_.append(ScoreRow("gpt", 1e6, "lora", seed, {"f1": f1_lora}, top_answer=top, top_share=share))
        rows_.append(ScoreRow("gpt", 1e6, "ptuning", seed, {"f1": f1_pt}, top_answer="in", top_share=0.3))
    (f,) = findings(aggregate(rows_), "f1")
    assert f.claim == "GPT: LoRA > P-tuning" and f.verdict == "no signal"
    assert f.floor_a == "degenerate: 80% of answers are '1717'" and f.floor_b == "F1 1.0 < 5"
    assert "-> no signal (both at the floor" in f.summary()
    md = findings_markdown([f])
    assert "| no signal | A: degenerate: 80% of answers are '1717'; B: F1 1.0 < 5 |" in md
    assert "**No signal**" in md
    # without the floor the same bands read "reversed": the floor is what prevents it
    (raw,) = findings(aggregate(rows_), "f1", floor=Floor(score=0.0, share=1.0))
    assert raw.verdict == "reversed"
    # a degenerate model above the F1 floor is still at the floor; one side above it: a verdict
    high = [ScoreRow("gpt", 1e6, "ptuning", s, {"f1": v}, top_share=0.1) for s, v in
            enumerate([0.40, 0.41, 0.42])]
    lora = [r for r in rows_ if r.method == "lora"]
    (g,) = findings(aggregate(lora + high), "f1")
    assert g.verdict == "reversed" and g.floor_b is None


def test_score_rows_keep_top_answer(tmp_path):
    p = tmp_path / "scores.jsonl"
    one = [ScoreRow("gpt", 1e6, "lora", 1, {"f1": 0.0}, top_answer="1717", top_share=0.9)]
    write_score_rows(one, str(p))
    assert read_score_rows(str(p)) == one
    p.write_text(json.dumps({"task": "t", "model": "gpt", "size": 1e6, "method": "lora", "seed": 0,
                             "scores": {"f1": 0.5}, "top_share": 2}) + "\n")
    with pytest.raises(UserError, match="scores.jsonl:1: field 'top_share' must be in"):
        read_score_rows(str(p))


def test_figure_own_sizes_pairing_by_decoder_and_all_zero_metric():
    """RETRO on a 5.31M decoder has 7.97M parameters of its own: the x axis shows 7.97M, the
    findings still pair it with the GPT of that decoder; an EM of 0 everywhere is written in
    the panels instead of an empty plot."""
    from matplotlib.text import Text

    from megatron_retro.evaluation.findings import findings

    rs = [ScoreRow(m, size, "zero-shot", s, {"em": 0.0, "f1": v}, decoder=5.31e6)
          for m, size, vals in (("gpt", 5.31e6, (.1, .1, .1)), ("retro", 7.97e6, (.3, .3, .3)))
          for s, v in enumerate(vals)]
    cells = aggregate(rs)
    (f,) = findings(cells, "f1")
    assert f.verdict == "holds" and f.size == 5.31e6
    fig = build_figure(cells, "bundled", "f1")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["5.31M", "7.97M"]
    assert not [t for t in ax.findobj(Text) if "in every cell" in t.get_text()]
    em = build_figure(cells, "bundled", "em")
    assert [t.get_text() for t in em.axes[0].findobj(Text) if "every cell" in t.get_text()] == \
        ["EM = 0\nin every cell"]
    assert "EM is 0 everywhere" in em._suptitle.get_text()
