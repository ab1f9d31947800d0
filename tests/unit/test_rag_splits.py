"""The four RAG ability splits: deterministic, and their gold labels right (a hand-checked sample + invariants)."""
import pytest

from megatron_retro.data.synthetic.encyclopedia import generate
from megatron_retro.data.synthetic.qa import contains_words
from megatron_retro.data.synthetic.rag_splits import REFUSAL, build_rag_splits


@pytest.fixture(scope="module")
def enc():
    return generate(60, 3, "90,10,0")


@pytest.fixture(scope="module")
def splits(enc):
    return build_rag_splits(enc, k=2, per_split=20, seed=0)


def _by_name(enc, name):
    return next(e for e in enc.entities.values() if e.name == name)


def test_splits_are_deterministic(enc, splits):
    again = build_rag_splits(generate(60, 3, "90,10,0"), k=2, per_split=20, seed=0)
    assert again == splits
    other = build_rag_splits(enc, k=2, per_split=20, seed=1)
    assert [i.id for i in other["negative"]] != [i.id for i in splits["negative"]]
    assert {k: len(v) for k, v in splits.items()} == {"noise": 40, "negative": 20, "integration": 6,
                                                      "counterfactual": 20}


def test_hand_checked_sample(enc, splits):
    # checked by reading documents.jsonl of this corpus: Nirtelport's population is 66,778; doc 64, the article
    # of the Kirvek River, says "passes Nirtelport (66,778 people)"; doc 135 is Kryroshskaford's article
    n0, n1 = splits["noise"][0], splits["noise"][1]
    assert n0.question == "What is the population of Nirtelport?" and n0.answers == ["66,778", "66778"]
    assert _by_name(enc, "Nirtelport").attrs["population"] == "66,778"
    assert [p.doc_id for p in n0.passages if p.role == "gold"] == [64] and n0.noise == 0
    assert "Nirtelport (66,778 people)" in enc.documents[64].text
    assert sorted(p.doc_id for p in n1.passages) == [64, 135] and n1.noise == 1
    assert enc.documents[135].title == "Kryroshskaford" and "66,778" not in enc.documents[135].text
    neg = splits["negative"][0]
    assert neg.answers == [REFUSAL] and neg.original_answers == ["66,778", "66778"]
    cf = splits["counterfactual"][0]
    assert cf.answers[0] == "728,851" and cf.original_answers[0] == "66,778"
    assert [p.replace for p in cf.passages if p.doc_id >= 0] == [("66,778", "728,851")]
    # two-hop: Grast Thyndthoundox was born in Fairskyx, which lies in Teimcukora
    two = splits["integration"][0]
    assert two.question == "In which country was Grast Thyndthoundox born?" and two.answers == ["Teimcukora"]
    person = _by_name(enc, "Grast Thyndthoundox")
    city = enc.entities[person.attrs["birthplace"]]
    assert city.name == "Fairskyx" and enc.entities[city.attrs["country"]].name == "Teimcukora"
    hop1 = next(p for p in two.passages if p.role == "hop1")
    assert "Fairskyx" in enc.documents[hop1.doc_id].text and "Teimcukora" not in enc.documents[hop1.doc_id].text


def test_gold_labels_hold_on_every_item(enc, splits):
    qa = {q.id: q for q in enc.qa}
    for item in splits["noise"]:
        q = qa[item.id.rsplit("-", 1)[0]]
        gold = [p for p in item.passages if p.role == "gold"]
        dis = [p for p in item.passages if p.role == "distractor"]
        assert len(gold) == 1 and gold[0].doc_id in q.gold_doc_ids and len(dis) == item.noise
        assert any(contains_words(enc.documents[gold[0].doc_id].text, a) for a in q.answers)
        for p in dis:
            assert p.doc_id not in q.gold_doc_ids
            assert not any(contains_words(enc.documents[p.doc_id].text, a) for a in q.answers)
    for item in splits["negative"]:
        assert all(p.role == "distractor" for p in item.passages) and item.requirements == []
        assert not any(contains_words(enc.documents[p.doc_id].text, a)
                       for p in item.passages for a in item.original_answers)
    for item in splits["counterfactual"]:
        assert not set(map(str.lower, item.answers)) & set(map(str.lower, item.original_answers))
    for item in splits["integration"]:
        hop1, hop2 = (next(p for p in item.passages if p.role == r) for r in ("hop1", "hop2"))
        assert hop1.doc_id != hop2.doc_id
        assert any(contains_words(enc.documents[hop2.doc_id].text, a) for a in item.answers)
        assert not any(contains_words(enc.documents[hop1.doc_id].text, a) for a in item.answers)
        assert not any(contains_words(item.question, a) for a in item.answers)


def test_one_passage_gives_no_integration_split(enc):
    assert build_rag_splits(enc, k=1, per_split=5, seed=0)["integration"] == []
