"""The synthetic encyclopedia: determinism, redundancy of facts, QA pairs, document split."""
import collections
import hashlib
import os

import pytest

from megatron_retro.data.synthetic.encyclopedia import (GENERATOR_VERSION, SPLITS, document_split, generate,
                                                        read_documents, read_qa, write_documents, write_facts,
                                                        write_qa)
from megatron_retro.data.synthetic.qa import answers_for, contains_words
from megatron_retro.errors import UserError

N = 120


@pytest.fixture(scope="module")
def enc():
    return generate(N, seed=7, split="80,10,10")


def _digest(enc, tmp_path, tag):
    h = hashlib.sha256()
    for name, write, obj in (("docs", write_documents, enc.documents),
                             ("facts", write_facts, enc.facts), ("qa", write_qa, enc.qa)):
        path = os.path.join(tmp_path, f"{tag}-{name}.jsonl")
        write(obj, path)
        h.update(open(path, "rb").read())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(enc, tmp_path):
    again = generate(N, seed=7, split="80,10,10")
    other = generate(N, seed=8, split="80,10,10")
    assert _digest(enc, tmp_path, "a") == _digest(again, tmp_path, "b")
    assert _digest(enc, tmp_path, "a") != _digest(other, tmp_path, "c")
    # different seeds give different knowledge, not just a different order
    assert {d.title for d in enc.documents} != {d.title for d in other.documents}


# sha256 of the documents, facts and QA files of generate(120, seed=7, split="80,10,10") (with
# reading=20), per GENERATOR_VERSION: a change to the generator that changes a byte of the corpus
# must bump the version (prepared data directories are checked against it), a refactor must not.
PINNED = {3: ("95987ea2f28799b3d62ece1c835743cf4f7edf557c33e07a2acfe62aa0b1e24c",
              "efa14f818d4d7e5258aa98b624b313e26f84deec905718db04933ccab9eb3d00")}


def test_the_same_version_writes_the_same_bytes(enc, tmp_path):
    assert GENERATOR_VERSION in PINNED, "new GENERATOR_VERSION: pin its digests here"
    plain, reading = PINNED[GENERATOR_VERSION]
    assert _digest(enc, tmp_path, "pinned") == plain
    assert _digest(generate(N, seed=7, split="80,10,10", reading=20), tmp_path, "reading") == reading


def test_entity_counts_and_one_article_each(enc):
    assert len(enc.entities) == N
    articles = [d for d in enc.documents if d.kind == "article"]
    assert sorted(d.entity for d in articles) == sorted(enc.entities)
    assert [d.id for d in enc.documents] == list(range(len(enc.documents)))


def test_every_fact_in_two_documents_with_different_wording(enc):
    docs = {d.id: d for d in enc.documents}
    assert len(enc.facts) > 4 * N
    for fact in enc.facts.values():
        assert len(set(fact.doc_ids)) >= 2, fact.id
        assert len(set(fact.sentences)) >= 2, (fact.id, fact.sentences)
        subject = enc.entities[fact.subject]
        forms = answers_for(enc.entities, fact.relation, subject.attrs[fact.relation])
        assert fact.value == forms[0]
        for doc_id, sentence in zip(fact.doc_ids, fact.sentences):
            text = docs[doc_id].text
            assert sentence in text and fact.id in docs[doc_id].facts
            # the value is in the sentence, or the sentence is about the document's own
            # subject ("Members have included X" in the article of the organisation)
            assert any(contains_words(sentence, f) for f in forms) or (
                docs[doc_id].entity == subject.attrs[fact.relation]), (fact.id, sentence)
            assert contains_words(text, subject.name.split()[-1]), (fact.id, doc_id)


def test_every_attribute_of_every_entity_is_written(enc):
    stated = set(enc.facts)
    for e in enc.entities.values():
        for attr in e.attrs:
            assert f"{e.id}.{attr}" in stated


def test_qa_answers_in_gold_documents_not_in_question(enc):
    docs = {d.id: d for d in enc.documents}
    assert len(enc.qa) > 3 * N
    for q in enc.qa:
        assert q.answers and q.gold_doc_ids == sorted(enc.facts[q.fact_id].doc_ids)
        assert not any(contains_words(q.question, a) for a in q.answers), q
        for doc_id in q.gold_doc_ids:
            assert contains_words(docs[doc_id].text, q.answers[0]), (q, doc_id)
        # at least one gold document is a training document (the answer is retrievable)
        # or every gold doc is held out by chance; the latter must be rare
    held_out_only = sum(all(docs[i].split != "train" for i in q.gold_doc_ids) for q in enc.qa)
    assert held_out_only < 0.05 * len(enc.qa)


def test_qa_split_by_entity(enc):
    by_split = collections.defaultdict(set)
    for q in enc.qa:
        by_split[q.split].add(q.entity)
    assert set(by_split) == set(SPLITS)
    assert not by_split["train"] & by_split["valid"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["valid"] & by_split["test"]


def test_relations_are_varied(enc):
    relations = collections.Counter(q.relation for q in enc.qa)
    assert len(relations) >= 30
    templates = collections.Counter(q.question.split()[0] for q in enc.qa)
    assert len(templates) >= 6


@pytest.mark.parametrize("n,split", [(1875, "98,2,0"), (161, "80,10,10"), (7, "1,1,1"),
                                     (100, "0,1,0"), (999, "33.3,33.3,33.4")])
def test_document_split_matches_megatron(n, split):
    from megatron.core.datasets.blended_megatron_dataset_config import (
        convert_split_vector_to_split_matrix, parse_and_normalize_split)

    matrix = convert_split_vector_to_split_matrix(parse_and_normalize_split(split))
    ours = document_split(n, split)
    for (b, e), bounds in zip(ours, matrix):
        if bounds is None:
            assert b == e
        else:
            assert (b, e) == (int(round(bounds[0] * n)), int(round(bounds[1] * n)))


def test_document_split_labels(enc):
    ranges = document_split(len(enc.documents), "80,10,10")
    for which, (b, e) in zip(SPLITS, ranges):
        assert all(d.split == which for d in enc.documents[b:e])
        assert e > b


@pytest.mark.parametrize("split", ["98,2", "a,b,c", "-1,1,1", "0,0,0", ""])
def test_bad_split_is_user_error(split):
    with pytest.raises(UserError, match="split="):
        document_split(10, split)


def test_too_few_entities_is_user_error():
    with pytest.raises(UserError, match="num_entities=5"):
        generate(5)


def test_jsonl_round_trip_and_truncation(enc, tmp_path):
    path = str(tmp_path / "documents.jsonl")
    write_documents(enc.documents, path)
    back = read_documents(path)
    assert [(d.id, d.text, d.split, d.facts) for d in back] == \
        [(d.id, d.text, d.split, d.facts) for d in enc.documents]
    raw = open(path, "rb").read()
    lines = raw.count(b"\n")
    open(path, "wb").write(raw[: len(raw) - 40])  # cut inside the last line
    with pytest.raises(UserError, match=rf"documents.jsonl:{lines}: truncated"):
        read_documents(path)
    open(path, "w").write('{"id": 0, "title": "x", "text": "y", "split": "train"}\n{"id": 1,\n')
    with pytest.raises(UserError, match=r"documents.jsonl:2: invalid JSON"):
        read_documents(path)
    open(path, "w").write('{"id": 0, "title": "x", "split": "train"}\n')
    with pytest.raises(UserError, match=r"documents.jsonl:1: field 'text' missing"):
        read_documents(path)
    open(path, "w").write('{"id": 3, "title": "x", "text": "y", "split": "train"}\n')
    with pytest.raises(UserError, match=r"documents.jsonl:1: document id 3 out of order"):
        read_documents(path)
    with pytest.raises(UserError, match="file not found"):
        read_documents(str(tmp_path / "missing.jsonl"))


def test_qa_files_are_nq_open_style(enc, tmp_path):
    path = str(tmp_path / "qa.jsonl")
    write_qa(enc.qa, path)
    rows = read_qa(path)
    assert len(rows) == len(enc.qa)
    for row in rows:
        assert isinstance(row["question"], str) and row["answers"]
        assert {"entity", "relation", "fact_id", "gold_doc_ids"} <= set(row)
    open(path, "w").write('{"question": "q?", "answers": []}\n')
    with pytest.raises(UserError, match=r"qa.jsonl:1: 'answers' must be a non-empty list"):
        read_qa(path)


def test_heldout_facts_are_stated_in_training_documents(enc):
    from megatron_retro.data.stats import retrieval_coverage

    cov = retrieval_coverage(enc)
    assert cov["heldout_facts"] > 100
    assert cov["heldout_facts_in_train_docs"] > 0.95
    assert cov["qa_with_train_gold_doc"] > 0.95


def test_answers_not_guessable_from_question_alone(enc):
    """The best question-blind guess (the most frequent train answer of the relation)
    gets few test questions right: the answers have to come from the corpus."""
    from megatron_retro.data.stats import blind_baseline_em

    train = collections.defaultdict(collections.Counter)
    for q in enc.qa:
        if q.split == "train":
            train[q.relation][q.answers[0]] += 1
    test = [q for q in enc.qa if q.split == "test"]
    hits = sum(bool(train[q.relation]) and train[q.relation].most_common(1)[0][0] == q.answers[0]
               for q in test)
    assert blind_baseline_em(enc.qa) == pytest.approx(hits / len(test))
    assert hits / len(test) < 0.1


def test_dates_are_consistent(enc):
    """Nobody acts before birth or after death; places exist when people are born there."""
    w = enc.entities
    year = lambda e, a: int(w[e].attrs[a]) if isinstance(e, str) else int(e.attrs[a])  # noqa: E731

    def alive(pid, y):
        return year(pid, "birth_year") <= y <= year(pid, "death_year")

    for e in w.values():
        a = e.attrs
        if e.kind == "person":
            assert year(e, "birth_year") < year(e, "work_year") <= year(e, "death_year")
            assert year(a["birthplace"], "founded_year") <= year(e, "birth_year")
            assert year(a["death_place"], "founded_year") <= year(e, "death_year")
            if "teacher" in a:
                assert alive(a["teacher"], year(e, "birth_year") + 12)
            if "employer" in a:
                assert year(a["employer"], "founded_year") <= year(e, "birth_year") + 40
        for actor, when in (("founder", "founded_year"), ("discovered_by", "discovery_year"),
                            ("inventor", "year"), ("first_ascent_by", "first_ascent_year"),
                            ("leader", "leader_since")):
            if actor in a:
                assert alive(a[actor], int(a[when])), (e.id, actor)
        if e.kind == "organisation":
            assert year(a["headquarters"], "founded_year") <= int(a["founded_year"])
            if "leader" in a:
                assert int(a["leader_since"]) >= int(a["founded_year"])


def test_reading_practice_documents_first_answers_only_in_their_passage():
    """Reading documents come first, are about entities of another world (so no QA question is
    asked in them and no QA answer can be learnt from them), and every answer is in the passage."""
    from megatron_retro.data.synthetic.encyclopedia import generate

    plain, enc = generate(60, seed=3, split="90,10,0"), generate(60, seed=3, split="90,10,0", reading=40)
    r = enc.first_article
    assert r == 40 and len(enc.documents) == len(plain.documents) + r
    names = {e.name for e in enc.entities.values()}
    questions = {q.question for q in enc.qa}
    titles = set()
    for d in enc.documents[:r]:
        assert d.kind == "reading" and d.split == "train" and d.entity is None
        titles.add(d.title)
        passage, qa_lines = d.text.split("\n", 1)
        lines = qa_lines.split("\n")
        assert 1 <= len(lines) <= 4
        for line in lines:
            q, a = line[len("Question: "):].split(" Answer: ")
            assert q not in questions and a in passage           # answerable by reading only
        assert not any(n in d.text for n in names if len(n) > 12)           # no encyclopedia entity named
    assert len(titles) == r                                                 # one entity per document
    # the articles are the same, renumbered after the reading documents; gold ids follow them
    assert [d.text for d in enc.documents[r:]] == [d.text for d in plain.documents]
    assert [d.id for d in enc.documents] == list(range(len(enc.documents)))
    by_id = {q.id: q for q in plain.qa}
    for q in enc.qa:
        assert q.gold_doc_ids == [i + r for i in by_id[q.id].gold_doc_ids]
        assert all(i >= r for i in q.gold_doc_ids)
