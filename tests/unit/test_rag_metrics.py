"""RAG quality metrics on hand-built worked examples (the module docstring's), incl. the distractor copy."""
import pytest

from megatron_retro.data.synthetic.rag_splits import REFUSAL, RagItem
from megatron_retro.data.synthetic.world import Entity
from megatron_retro.evaluation.rag_metrics import (AnswerTypes, ReferenceJudge, context_scores, faithfulness_scores,
                                                   make_judge, mean_scores, support)

P1 = "Tarvenholm lies on the Ossel River."          # gold (doc 4), answer-bearing
P2 = "Brimwick lies on the Vell River."              # distractor (doc 30)
REQ = [([4, 9], ["Ossel River", "the Ossel River", "Ossel"])]


def test_context_precision_and_recall_worked_example():
    s = context_scores([9, 9, 30], ["was born in 1740 in Tarvenholm", "a painter", "died 1788"],
                       [([4, 9], ["1740"])])
    assert s == {"context_precision": pytest.approx(1 / 3), "context_precision_doc": pytest.approx(2 / 3),
                 "context_recall": 1.0, "context_recall_doc": 1.0}
    # two requirements (two-hop), only hop 2 present; an empty slot does not count
    s = context_scores([7, -1], ["Fairskyx lies in Teimcukora", ""],
                       [([3], ["Fairskyx"]), ([7], ["Teimcukora"])])
    assert s["context_recall"] == 0.5 and s["context_precision"] == 1.0 and s["context_recall_doc"] == 0.5
    # negative rejection: no requirement -> no recall, precision 0
    s = context_scores([30, 31], [P2, "x"], [])
    assert s["context_recall"] is None and s["context_precision"] == 0.0


@pytest.mark.parametrize("prediction, faithful, gold_faithful, supp", [
    ("Ossel River", 1.0, 1.0, 1.0),
    ("the Ossel", 1.0, 1.0, 1.0),                 # faithful though not an exact match
    ("Vell River", 1.0, 0.0, 1.0),                # copied from the distractor: faithful to the context only
    ("Kelmor River", 0.0, 0.0, 0.5),              # hallucinated
    (REFUSAL, None, None, None),                  # abstention
    ("", None, None, None),
])
def test_faithfulness_worked_examples(prediction, faithful, gold_faithful, supp):
    s = faithfulness_scores(prediction, [4, 30], [P1, P2], REQ)
    assert s["faithful"] == faithful and s["gold_faithful"] == gold_faithful and s["support"] == supp
    assert s["abstained"] == float(supp is None)


def test_support_is_a_share_of_content_tokens():
    assert support("Vell River", [P1]) == 0.5
    assert support("of the in", [P1]) is None       # only stop words: claims nothing


def _world():
    w = {"person:0000": Entity("person:0000", "person", "Anna Vell", {"birth_year": "1740",
                                                                       "birthplace": "city:0000",
                                                                       "occupation": "painter"}),
         "city:0000": Entity("city:0000", "city", "Tarvenholm", {"population": "12,400"}),
         "person:0001": Entity("person:0001", "person", "Orm Kelt", {"birth_year": "1701",
                                                                      "birthplace": "city:0000",
                                                                      "occupation": "poet"})}
    return w


def test_answer_relevance_by_expected_type():
    types = AnswerTypes(_world())
    assert types.expected("person.birth_year") == {"year"}
    assert types.expected("person.birthplace") == {"city"}
    assert types.relevant("1740", "person.birth_year") == 1.0
    assert types.relevant("Tarvenholm", "person.birth_year") == 0.0
    assert types.relevant("in Tarvenholm", "person.birthplace") == 1.0
    assert types.relevant("Orm Kelt", "person.birthplace") == 0.0
    assert types.relevant("a poet", "person.occupation") == 1.0        # another value of the closed list
    assert types.relevant("12,400", "city.population") == 1.0
    assert types.relevant(REFUSAL, "refusal") == 1.0 and types.relevant("1740", "refusal") == 0.0


def test_reference_judge_and_means():
    judge = make_judge("reference", AnswerTypes(_world()))
    assert isinstance(judge, ReferenceJudge)
    item = RagItem("q", "noise", "Where was Anna Vell born?", ["Tarvenholm"], "person.birthplace", [],
                   [([4], ["Tarvenholm"])])
    rows = [judge.judge(item.question, p, [P1, P2], item, [4, 30]) for p in ("Tarvenholm", REFUSAL)]
    assert rows[0]["answer_relevance"] == 1.0 and rows[0]["faithful"] == 1.0 and rows[1]["refused"] == 1.0
    means = mean_scores(rows)
    assert means["faithful"] == 1.0 and means["refused"] == 0.5 and means["abstained"] == 0.5
    with pytest.raises(Exception, match="choose one of"):
        make_judge("gpt4", AnswerTypes(_world()))
