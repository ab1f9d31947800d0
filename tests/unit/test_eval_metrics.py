"""EM / F1 / ROUGE-L match reference values worked out by hand on fixed examples.

EM and F1 follow the official SQuAD v1.1 evaluation script (normalise: lower-case, strip
punctuation, drop a/an/the, collapse whitespace; F1 over the multiset of tokens). ROUGE-L is
the F-measure of the longest common subsequence (LCS) of stemmed tokens:
P = LCS/len(pred), R = LCS/len(gold), F = 2PR/(P+R).
"""
import pytest

from megatron_retro.errors import UserError
from megatron_retro.evaluation.metrics import (exact_match, normalize_answer, rouge_l,
                                               score_all, score_one, token_f1)


@pytest.mark.parametrize("text,expected", [
    ("The  Eiffel Tower!", "eiffel tower"),
    ("an apple, a pear & THE plum.", "apple pear plum"),
    ("Theodore's anthem", "theodores anthem"),      # articles only as whole words
    ("  A.  ", ""),
    ("1,200 km", "1200 km"),                         # punctuation removed, not spaced
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


def test_exact_match_examples():
    assert exact_match("the Ossel River.", "Ossel river") == 1.0
    assert exact_match("Ossel", "Ossel River") == 0.0
    assert exact_match("", "a") == 1.0   # both normalise to "" (v1.1 behaviour)


def test_f1_worked_examples():
    # pred -> "eiffel tower in paris" (4 tokens) vs gold "eiffel tower": common 2,
    # P=2/4, R=2/2 -> F1 = 2*0.5*1/1.5 = 2/3
    assert token_f1("The Eiffel Tower in Paris", "Eiffel Tower") == pytest.approx(2 / 3)
    # pred "eiffel tower paris" (3) vs gold "eiffel tower": P=2/3, R=1 -> F1 = 0.8
    assert token_f1("Eiffel Tower, Paris", "the Eiffel Tower") == pytest.approx(0.8)
    # after normalisation pred "in paris" -> "in paris"; tokens {in, paris} vs {paris}:
    # common 1, P=1/2, R=1 -> 2/3
    assert token_f1("in Paris", "Paris") == pytest.approx(2 / 3)
    # multiset overlap: pred "a a b" -> "b" (articles go) -- use non-articles:
    # pred "x x y" vs gold "x y y": common = min(2,1)+min(1,2) = 2, P=2/3, R=2/3 -> 2/3
    assert token_f1("x x y", "x y y") == pytest.approx(2 / 3)
    assert token_f1("Berlin", "Paris") == 0.0
    assert token_f1("", "") == 0.0       # v1.1: no common tokens -> 0


def test_max_over_golds():
    s = score_one("Sunset Blvd.", ["Sunset Boulevard", "Sunset Blvd"])
    assert s["em"] == 1.0 and s["f1"] == 1.0 and s["rougeL"] == 1.0
    # golds: "David Seville" -> F1: common {david}: P=1/2 (pred "david bowie"), R=1/2 -> 0.5;
    #        "Ross Bagdasarian" -> 0; max = 0.5
    s = score_one("David Bowie", ["David Seville", "Ross Bagdasarian"])
    assert s == {"em": 0.0, "f1": pytest.approx(0.5), "rougeL": pytest.approx(0.5)}


def test_rouge_l_worked_examples():
    # pred "the cat sat on the mat" (6 tokens), gold "the cat is on the mat" (6 tokens):
    # LCS = the cat on the mat = 5 -> P=R=5/6 -> F=5/6
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == pytest.approx(5 / 6)
    # stemming: "running dogs" vs "the dog runs": stems run dog / the dog run;
    # LCS = 1 ("dog" or "run") -> P=1/2, R=1/3 -> F = 2*(1/6)/(5/6) = 0.4
    assert rouge_l("running dogs", "the dog runs") == pytest.approx(0.4)
    # ROUGE keeps articles (no SQuAD normalisation): "a b" vs "b": LCS 1, P=1/2, R=1 -> 2/3
    assert rouge_l("a plum", "plum") == pytest.approx(2 / 3)
    assert rouge_l("", "plum") == 0.0


def test_score_all_means():
    preds = ["Paris", "The Eiffel Tower in Paris", "Berlin"]
    golds = [["paris"], ["Eiffel Tower"], ["Bonn", "Berlin Mitte"]]
    s = score_all(preds, golds)
    # EM: 1, 0, 0 -> 1/3.  F1: 1, 2/3 (above), max(0, P=1 R=1/2 -> 2/3) -> (1 + 2/3 + 2/3)/3
    assert s.n == 3
    assert s.em == pytest.approx(1 / 3)
    assert s.f1 == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)
    # ROUGE-L: "paris"/"paris" 1; "the eiffel tower in paris" vs "eiffel tower": LCS 2,
    # P=2/5 R=1 -> 4/7; "berlin" vs "berlin mitte" -> 2/3
    assert s.rougeL == pytest.approx((1 + 4 / 7 + 2 / 3) / 3)
    assert [r["em"] for r in s.per_example] == [1.0, 0.0, 0.0]


def test_score_all_rejects_bad_input():
    with pytest.raises(UserError, match="2 predictions for 1 questions"):
        score_all(["a", "b"], [["a"]])
    with pytest.raises(UserError, match="no predictions"):
        score_all([], [])
    with pytest.raises(UserError, match="non-empty list of strings"):
        score_one("a", [])
    with pytest.raises(UserError, match="non-empty list of strings"):
        score_one("a", "a")


def test_score_by_id_aligns_and_rejects_partial_runs():
    from megatron_retro.data.tasks import QAExample
    from megatron_retro.evaluation.metrics import score_by_id

    ex = [QAExample("a", "q1", ["Paris"], "t"), QAExample("b", "q2", ["Bonn"], "t")]
    s = score_by_id(ex, {"b": "Bonn", "a": "Lyon"})
    assert [r["em"] for r in s.per_example] == [0.0, 1.0] and s.em == 0.5
    with pytest.raises(UserError, match="no prediction for 1 of 2 questions \\(first: id 'b'\\)"):
        score_by_id(ex, {"a": "Paris"})
    with pytest.raises(UserError, match="1 predictions for unknown question ids \\(first: 'c'\\)"):
        score_by_id(ex, {"a": "Paris", "b": "Bonn", "c": "x"})
