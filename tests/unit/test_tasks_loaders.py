"""Task loaders read the fixture files (tests/fixtures/tasks, the datasets' own layouts) into
QAExample records with the expected ids, questions, answers, contexts and options."""
import json
import os

import pytest

from megatron_retro.data.tasks import QAExample, load_task, resolve_task_file, task_names
from megatron_retro.errors import UserError

F = os.path.join(os.path.dirname(__file__), "..", "fixtures", "tasks")


def fx(*parts):
    return os.path.join(F, *parts)


def test_registry_names_and_unknown_task():
    assert task_names() == ["bundled", "narrativeqa", "nq_open", "qasper", "qmsum", "quality",
                            "triviaqa"]
    with pytest.raises(UserError, match="task 'squad': unknown, choose one of bundled"):
        load_task("squad", fx("nq_open"))


def test_bundled_by_split_from_data_dir():
    train = list(load_task("bundled", fx("bundled"), "train"))
    assert [e.id for e in train] == ["q0", "q1"]
    assert train[1].answers == ["412", "412 kilometres", "412 km"]
    assert train[1].meta["gold_doc_ids"] == [7, 9] and train[1].meta["fact_id"] == "r1.length_km"
    assert train[0].context is None and train[0].task == "bundled"
    # 'dev' is an alias of valid; the qa/ folder of a data dir is found
    assert [e.id for e in load_task("bundled", fx("bundled"), "dev")] == ["q2"]
    assert [e.id for e in load_task("bundled", fx("bundled", "qa", "test.jsonl"))] == ["q3"]


def test_split_errors():
    with pytest.raises(UserError, match="is a directory; give split="):
        load_task("bundled", fx("bundled"))
    with pytest.raises(UserError, match="split='dvelop': must be one of"):
        load_task("bundled", fx("bundled"), "dvelop")
    with pytest.raises(UserError, match="no nq_open file.*split 'train'"):
        load_task("nq_open", fx("nq_open"), "train")
    with pytest.raises(UserError, match="nope.jsonl: file not found"):
        load_task("nq_open", fx("nope.jsonl"))


def test_nq_open():
    ex = list(load_task("nq", fx("nq_open"), "valid"))
    assert len(ex) == 3 and all(isinstance(e, QAExample) for e in ex)
    assert ex[0].question == "when was the last time anyone was on the moon"
    assert ex[0].answers == ["14 December 1972 UTC", "December 1972"]
    assert ex[2].id == "NQ-open:3" and ex[2].task == "nq_open"


def test_triviaqa_original_json_and_jsonl_variants():
    ex = list(load_task("triviaqa", fx("triviaqa", "wikipedia-dev.json")))
    assert [e.id for e in ex] == ["tc_33", "tc_40"]
    # Value first, then Aliases; NormalizedAliases only when Aliases is empty
    assert ex[0].answers == ["Sunset Boulevard", "Sunset Blvd", "Sunset Boulevard (musical)"]
    assert ex[1].answers == ["6", "six"]
    assert ex[0].meta["line"] == 3 and ex[1].meta["line"] == 18   # where each record starts
    simple = list(load_task("triviaqa", fx("triviaqa", "simplified.jsonl")))
    assert [e.id for e in simple] == ["tc_2", "tc_3", "simplified:3"]
    assert simple[0].answers == ["David Seville", "Ross Bagdasarian"]          # deduplicated
    assert simple[1].answers == ["Chicago", "Chicago, Illinois", "Chi-town"]   # HF layout
    assert simple[2].answers == ["Canberra"]


def test_narrativeqa_jsonl_and_csv():
    ex = list(load_task("narrativeqa", fx("narrativeqa", "narrativeqa.jsonl")))
    assert ex[0].question == "Who is Mark Hunter?"
    assert ex[0].answers == ["He is a high school student in Arizona.", "A shy student"]
    assert ex[0].context.startswith("Mark Hunter, a shy high school student")
    assert ex[1].answers == ["His parents' basement."]      # identical answers kept once
    text = list(load_task("narrativeqa", fx("narrativeqa", "narrativeqa.jsonl"),
                          context="text"))
    assert text[0].context.startswith("PUMP UP THE VOLUME")
    csv_all = list(load_task("narrativeqa", fx("narrativeqa", "qaps.csv")))
    assert len(csv_all) == 2
    valid = list(load_task("narrativeqa", fx("narrativeqa"), "dev"))
    assert len(valid) == 1 and valid[0].question == "Why does Eliza, the maid, leave?"
    assert valid[0].answers == ["She is offered a better post.",
                                "Because of a better offer, it seems."]
    assert valid[0].context.startswith("Eliza, a maid in a London house")
    with pytest.raises(UserError, match="unknown option.*colour.*accepted: context"):
        load_task("narrativeqa", fx("narrativeqa", "qaps.csv"), colour="red")


def test_qasper_answer_kinds_and_context():
    ex = list(load_task("qasper", fx("qasper"), "valid"))
    assert [e.answers for e in ex] == [
        ["a vocabulary of positive and negative predicates",
         "seed lexicon, positive and negative predicates"],
        ["Yes"], ["Unanswerable"]]
    assert ex[0].meta["answer_types"] == ["abstractive", "extractive"]
    assert ex[0].id == "753990d0b621d390ed58f20c4d9e4f065f0dc672"
    ctx = ex[0].context
    assert ctx.startswith("Minimally Supervised Learning of Affective Events\n\nWe propose")
    assert "## Experiments\nWe used a Japanese web corpus" in ctx


def test_qasper_jsonl_one_paper_per_line(tmp_path):
    papers = json.load(open(fx("qasper", "qasper-dev-v0.3.json")))
    p = tmp_path / "qasper.jsonl"
    p.write_text("".join(json.dumps(dict(v, id=k)) + "\n" for k, v in papers.items()))
    ex = list(load_task("qasper", str(p)))
    assert [e.answers[0] for e in ex][1:] == ["Yes", "Unanswerable"]
    assert ex[0].meta["paper_id"] == "1909.00694"


def test_quality_options_and_gold():
    ex = list(load_task("quality", fx("quality"), "valid"))
    assert [e.answers for e in ex] == [["Knitting"], ["Tea"]]
    assert ex[1].options == ["Money", "A map", "Tea", "Her knitting"]
    assert ex[1].meta["gold_index"] == 2 and ex[1].meta["difficult"] is True
    assert ex[0].context.startswith("GRANDMA PERKINS")


def test_qmsum_general_and_specific_queries():
    ex = list(load_task("qmsum", fx("qmsum"), "val"))
    assert [e.id for e in ex] == ["val:1:g0", "val:1:s0"]
    assert ex[1].meta["query_type"] == "specific"
    assert ex[1].answers == ["They chose rubber because it is cheap and soft."]
    assert ex[0].context.splitlines()[1] == ("Industrial Designer: Um I think the case "
                                             "should be rubber .")


def test_resolve_task_file_names_the_split_file():
    assert resolve_task_file("quality", fx("quality"), "dev").endswith(
        "QuALITY.v1.0.1.htmlstripped.dev")


def test_streaming_yields_before_a_later_bad_line(tmp_path):
    """Records come one at a time: a bad line 2 only fails when iteration reaches it."""
    p = tmp_path / "nq.jsonl"
    p.write_text('{"question": "q1", "answer": ["a"]}\n{"question": "q2"}\n')
    it = load_task("nq_open", str(p))
    assert next(it).question == "q1"
    with pytest.raises(UserError, match=":2: missing field 'answer'"):
        next(it)


def test_cli_tasks_check_and_list(capsys, tmp_path):
    from megatron_retro.cli import main

    assert main(["tasks", "check", "--task", "quality", "--path", fx("quality"),
                 "--split", "dev"]) == 0
    out = capsys.readouterr().out
    assert "examples:  2 (2 with context, 2 multiple-choice, 1.00 gold answers" in out
    bad = tmp_path / "NQ-open.dev.jsonl"
    bad.write_text('{"question": "q", "answer": []}\n')
    assert main(["tasks", "check", "--task", "nq", "--path", str(bad)]) == 2
    assert f"{bad}:1: field 'answer' is an empty list" in capsys.readouterr().err
    assert main(["tasks", "list"]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("bundled      qa/{train,valid")
