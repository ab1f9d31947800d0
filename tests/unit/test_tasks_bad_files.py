"""Bad task files raise one-line UserErrors naming file, line and field, for every loader:
missing fields, empty answers, wrong JSON types, invalid UTF-8, truncated lines/files."""
import copy
import json
import os

import pytest

from megatron_retro.data.tasks import load_task
from megatron_retro.errors import UserError

F = os.path.join(os.path.dirname(__file__), "..", "fixtures", "tasks")


def first_record(*parts):
    with open(os.path.join(F, *parts), encoding="utf-8") as f:
        return json.loads(f.readline())


BUNDLED = first_record("bundled", "qa", "train.jsonl")
NQ = first_record("nq_open", "NQ-open.dev.jsonl")
TRIVIA = first_record("triviaqa", "simplified.jsonl")
NARRATIVE = first_record("narrativeqa", "narrativeqa.jsonl")
QUALITY = first_record("quality", "QuALITY.v1.0.1.htmlstripped.dev")
QMSUM = first_record("qmsum", "val.jsonl")
with open(os.path.join(F, "qasper", "qasper-dev-v0.3.json"), encoding="utf-8") as _f:
    QASPER_PAPER = dict(next(iter(json.load(_f).values())), id="1909.00694")


def _set(path, value):
    """A mutation setting (or, with value=KeyError, deleting) a nested field."""
    def apply(rec):
        rec = copy.deepcopy(rec)
        node = rec
        for k in path[:-1]:
            node = node[k]
        if value is KeyError:
            del node[path[-1]]
        else:
            node[path[-1]] = value
        return rec
    return apply


# task, file name, good record, [(mutation, expected message part)] -- line 2 is the bad one
JSONL_CASES = [
    ("bundled", "train.jsonl", BUNDLED, [
        (_set(["question"], KeyError), "missing field 'question'"),
        (_set(["answers"], []), "field 'answers' is an empty list"),
        (_set(["answers"], ["412", " "]), "field answers[1] is an empty string"),
        (_set(["answers"], "412"), "field 'answers' must be a list, got a string"),
        (_set(["gold_doc_ids"], ["4"]), "field gold_doc_ids[0] must be an integer"),
    ]),
    ("nq_open", "NQ-open.dev.jsonl", NQ, [
        (_set(["answer"], KeyError), "missing field 'answer'"),
        (_set(["answer"], [""]), "field answer[0] is an empty string"),
        (_set(["question"], 7), "field 'question' must be a string, got an integer"),
    ]),
    ("triviaqa", "dev.jsonl", TRIVIA, [
        (_set(["Answer", "Value"], KeyError), "missing field 'Answer.Value'"),
        (_set(["Answer", "Value"], ""), "field 'Answer.Value' is empty"),
        (_set(["Answer", "Aliases"], {"a": 1}), "field 'Answer.Aliases' must be a list"),
        (_set(["Answer"], KeyError), "missing field 'Answer'"),
        (lambda r: {"question": "Who?"}, "missing field 'Answer' (original TriviaQA), 'answer'"),
    ]),
    ("narrativeqa", "narrativeqa.jsonl", NARRATIVE, [
        (_set(["document", "summary"], KeyError), "missing field 'document.summary'"),
        (_set(["answers"], []), "field 'answers' is an empty list"),
        (_set(["answers", 1, "text"], "  "), "field 'answers[1].text' is empty"),
        (_set(["question"], "Who?"), "field 'question' must be an object, got a string"),
    ]),
    ("qasper", "qasper.jsonl", QASPER_PAPER, [
        (_set(["qas", 0, "question"], KeyError), "missing field 'qas[0].question'"),
        (_set(["qas", 1, "answers"], []), "field 'qas[1].answers' is an empty list"),
        (_set(["qas", 1, "answers", 0, "answer"], {"unanswerable": False, "yes_no": None,
                                                   "extractive_spans": [],
                                                   "free_form_answer": ""}),
         "field 'qas[1].answers[0].answer' is an empty answer"),
        (_set(["qas", 1, "answers", 0, "answer", "yes_no"], "yes"),
         "field 'qas[1].answers[0].answer.yes_no' must be a boolean, got a string"),
    ]),
    ("quality", "QuALITY.dev.jsonl", QUALITY, [
        (_set(["questions", 1, "gold_label"], KeyError),
         "missing field 'questions[1].gold_label' (the QuALITY test split is unlabelled)"),
        (_set(["questions", 0, "gold_label"], 5), "'questions[0].gold_label' = 5: must be in 1..4"),
        (_set(["questions", 0, "options"], []), "field 'questions[0].options' is an empty list"),
        (_set(["article"], None), "field 'article' must be a string, got null"),
    ]),
    ("qmsum", "val.jsonl", QMSUM, [
        (_set(["meeting_transcripts"], KeyError), "missing field 'meeting_transcripts'"),
        (_set(["specific_query_list", 0, "answer"], ""),
         "field 'specific_query_list[0].answer' is empty"),
        (_set(["general_query_list", 0, "query"], ["q"]),
         "field 'general_query_list[0].query' must be a string, got a list"),
    ]),
]
MUTATIONS = [(task, name, rec, m, msg) for task, name, rec, ms in JSONL_CASES for m, msg in ms]


def _load_all(task, path):
    return list(load_task(task, path))


def _one_line(info) -> str:
    text = str(info.value)
    assert "\n" not in text
    return text


@pytest.mark.parametrize("task,name,record,mutate,message", MUTATIONS,
                         ids=[f"{c[0]}-{i}" for i, c in enumerate(MUTATIONS)])
def test_bad_field_names_file_line_and_field(tmp_path, task, name, record, mutate, message):
    p = tmp_path / name
    p.write_text(json.dumps(record) + "\n" + json.dumps(mutate(record)) + "\n")
    with pytest.raises(UserError) as info:
        _load_all(task, str(p))
    assert _one_line(info).startswith(f"{p}:2: "), str(info.value)
    assert message in str(info.value)


@pytest.mark.parametrize("task,name,record", [c[:3] for c in JSONL_CASES],
                         ids=[c[0] for c in JSONL_CASES])
def test_invalid_utf8_truncated_and_non_object_lines(tmp_path, task, name, record):
    good = json.dumps(record).encode() + b"\n"
    assert len(_load_all(task, _write(tmp_path, name, good + good))) >= 2   # the good file reads
    bad = good.replace(b'"', b'"\xff', 1)
    with pytest.raises(UserError) as info:
        _load_all(task, _write(tmp_path, name, good + bad))
    assert _one_line(info).endswith(f"{name}:2: invalid UTF-8 (byte 3 of the line)")
    with pytest.raises(UserError) as info:
        _load_all(task, _write(tmp_path, name, good + good[: len(good) // 2]))
    assert f"{name}:2: invalid JSON" in _one_line(info) and "truncated" in str(info.value)
    with pytest.raises(UserError) as info:
        _load_all(task, _write(tmp_path, name, good + b"[1, 2]\n"))
    assert _one_line(info).endswith(f"{name}:2: expected a JSON object, got a list")


def _write(tmp_path, name, data: bytes) -> str:
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


# -- whole-file JSON layouts: TriviaQA {"Data": [...]}, QASPER {paper_id: paper} ------------

def _trivia_file(records):
    return json.dumps({"Data": records, "Domain": "Web", "Version": 1.0}, indent=1)


def test_triviaqa_json_record_errors_name_the_record_line(tmp_path):
    rec = first_record("triviaqa", "simplified.jsonl")
    bad = _set(["Answer", "Value"], 3)(rec)
    text = _trivia_file([rec, bad])
    p = tmp_path / "web-dev.json"
    p.write_text(text)
    line = text.splitlines().index("  {", 2) + 1 if "  {" in text.splitlines()[2:] else None
    with pytest.raises(UserError) as info:
        _load_all("triviaqa", str(p))
    msg = _one_line(info)
    starts = [i + 1 for i, t in enumerate(text.splitlines()) if t == "  {"]
    assert line is not None and msg.startswith(f"{p}:{starts[1]}: ")
    assert "field 'Data[1].Answer.Value' must be a string, got an integer" in msg


def test_triviaqa_json_missing_data_truncated_and_utf8(tmp_path):
    p = tmp_path / "wikipedia-dev.json"
    p.write_text('{"Version": 1.0}')
    with pytest.raises(UserError, match="missing top-level field 'Data'"):
        _load_all("triviaqa", str(p))
    p.write_text('{"Data": {"Question": "x"}}')
    with pytest.raises(UserError, match=r":1: field 'Data' must be a list, got an object"):
        _load_all("triviaqa", str(p))
    text = _trivia_file([first_record("triviaqa", "simplified.jsonl")] * 2)
    p.write_text(text[: len(text) * 3 // 4])
    with pytest.raises(UserError) as info:
        _load_all("triviaqa", str(p))
    assert "invalid JSON (" in _one_line(info) and "the file looks truncated" in str(info.value)
    p.write_bytes(text.encode().replace(b"Chipmunks", b"Chip\xffmunks", 1))
    with pytest.raises(UserError) as info:
        _load_all("triviaqa", str(p))
    line = text[: text.index("Chipmunks")].count("\n") + 1
    assert _one_line(info) == f"{p}:{line}: invalid UTF-8"


def test_qasper_json_errors(tmp_path):
    paper = {k: v for k, v in QASPER_PAPER.items() if k != "id"}
    good = json.dumps({"p1": paper}, indent=1)
    bad = _set(["qas", 2, "answers"], "Unanswerable")(paper)
    p = tmp_path / "qasper-dev-v0.3.json"
    p.write_text(json.dumps({"p1": paper, "p2": bad}, indent=1))
    with pytest.raises(UserError) as info:
        _load_all("qasper", str(p))
    second = 1 + good.count("\n")       # "p2" starts right after p1's closing brace line
    assert _one_line(info).startswith(f"{p}:{second}: ")
    assert "field 'p2.qas[2].answers' must be a list, got a string" in str(info.value)
    p.write_text(good[:-40])
    with pytest.raises(UserError, match="the file looks truncated"):
        _load_all("qasper", str(p))
    p.write_text("[]")
    with pytest.raises(UserError, match=":1: expected a JSON object at the top level"):
        _load_all("qasper", str(p))


# -- NarrativeQA's official CSVs -------------------------------------------------------------

def _narrative_dir(tmp_path, qaps: bytes):
    (tmp_path / "summaries.csv").write_text(
        "document_id,set,summary,summary_tokenized\nd1,train,A story.,a story .\n")
    (tmp_path / "qaps.csv").write_bytes(
        b"document_id,set,question,answer1,answer2,question_tokenized,answer1_tokenized,"
        b"answer2_tokenized\nd1,train,Who?,Ann,Bo,who ?,ann,bo\n" + qaps)
    return str(tmp_path / "qaps.csv")


@pytest.mark.parametrize("row,message", [
    (b"d1,train,Why?,,,why ?,,\n", ":3: fields 'answer1' and 'answer2' are both empty"),
    (b"d1,train,,Ann,Bo,,ann,bo\n", ":3: field 'question' is empty"),
    (b"d9,train,Why?,Ann,Bo,why ?,ann,bo\n", ":3: document_id 'd9' has no summary"),
    (b"d1,train,Why?,Ann\n", ":3: 4 columns, expected 8 (truncated or malformed row)"),
    (b"d1,train,Wh\xffy?,Ann,Bo,why ?,ann,bo\n", ":3: invalid UTF-8"),
])
def test_narrativeqa_csv_errors(tmp_path, row, message):
    path = _narrative_dir(tmp_path, row)
    with pytest.raises(UserError) as info:
        _load_all("narrativeqa", path)
    assert _one_line(info).startswith(path) and message in str(info.value)


def test_narrativeqa_csv_needs_summaries(tmp_path):
    (tmp_path / "qaps.csv").write_text("document_id,set,question,answer1,answer2\n")
    with pytest.raises(UserError, match="summaries.csv not found"):
        _load_all("narrativeqa", str(tmp_path / "qaps.csv"))
