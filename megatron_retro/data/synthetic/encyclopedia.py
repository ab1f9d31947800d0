"""Deterministic generator of the bundled corpus: a synthetic, knowledge-intensive encyclopedia.

``generate(num_entities, seed)`` builds fictional entities (``world.py``), writes them as prose
documents in which every fact appears in at least two documents with different wording
(``articles.py``, ``lists.py``), and asks one held-out question per fact (``qa.py``). The same
``(num_entities, seed)`` always gives the same bytes; bump ``GENERATOR_VERSION`` whenever the
output changes so that prepared data directories are regenerated.

With ``reading > 0``, up to that many *reading-practice* documents come first (ids 0..R-1, all in the
train range): each is about one entity of a separate fictional world (same generator, another
seed, no name shared with the encyclopedia): the sentences stating a few of its facts, mixed with
distractor sentences (an unasked fact, a fact of another entity), followed by the questions on
those facts and their answers (``Question: q Answer: a``).  Their answers cannot be recalled from
anywhere else, only read from the passage, so pretraining on them teaches a tiny model to read
(copy) an answer out of its context; no QA question is ever asked in them, and the QA retrieval
database leaves them out (``first_article``).

Documents are numbered after a seeded shuffle; the number is the document's index in the
megatron indexed dataset. ``document_split(n, split)`` cuts those numbers into train / valid /
test ranges exactly as megatron's ``BlendedMegatronDatasetBuilder`` does for a ``split`` string
such as ``"98,2,0"``, so the held-out documents are the ones megatron never trains on.

On-disk formats (JSON lines, UTF-8):
- documents.jsonl: {"id", "key", "title", "kind", "entity", "split", "text", "facts"}
- facts.jsonl:     {"id", "subject", "relation", "value", "doc_ids"}
- qa/<split>.jsonl: NQ-open style {"question", "answers"} plus
                   {"id", "entity", "relation", "fact_id", "gold_doc_ids"}
"""
from __future__ import annotations

import json
import random
from dataclasses import asdict, dataclass, field
from typing import Dict, Iterator, List, Optional, Tuple

from megatron_retro.data.synthetic.articles import Renderer
from megatron_retro.data.synthetic.prose import draft_text
from megatron_retro.data.synthetic.lists import list_drafts
from megatron_retro.data.synthetic.qa import answers_for, make_questions, split_by_entity
from megatron_retro.data.synthetic.world import Entity, build_world
from megatron_retro.errors import UserError

GENERATOR_VERSION = 3
SPLITS = ("train", "valid", "test")


@dataclass
class Document:
    id: int                 # index in documents.jsonl and in the indexed dataset
    key: str                # stable name, e.g. "article:person:0007"
    title: str
    kind: str               # "article" | "list"
    entity: Optional[str]   # entity id of an article, None for a list
    split: str              # "train" | "valid" | "test" (document split, see module doc)
    text: str
    facts: List[str] = field(default_factory=list)


@dataclass
class Fact:
    id: str                 # "<entity id>.<relation>"
    subject: str
    relation: str
    value: str              # canonical answer string
    doc_ids: List[int] = field(default_factory=list)
    sentences: List[str] = field(default_factory=list)  # one per doc id (not written to disk)


@dataclass
class QAPair:
    id: str
    question: str
    answers: List[str]
    entity: str
    relation: str
    fact_id: str
    gold_doc_ids: List[int]
    split: str


@dataclass
class Encyclopedia:
    entities: Dict[str, Entity]
    documents: List[Document]
    facts: Dict[str, Fact]
    qa: List[QAPair]
    first_article: int = 0  # documents before it are reading-practice documents


def parse_split(split: str) -> Tuple[float, float, float]:
    """'98,2,0' -> normalised weights; UserError on anything else."""
    parts = [p.strip() for p in str(split).split(",")]
    try:
        weights = [float(p) for p in parts]
    except ValueError:
        weights = []
    if len(weights) != 3 or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise UserError(f"split={split!r}: must be three non-negative weights 'train,valid,test'")
    total = sum(weights)
    return tuple(w / total for w in weights)  # type: ignore[return-value]


def document_split(num_docs: int, split: str) -> List[Tuple[int, int]]:
    """[begin, end) document ranges of train/valid/test, the arithmetic of megatron's
    ``convert_split_vector_to_split_matrix`` + ``int(round(bound * num_docs))``."""
    bounds = [0.0]
    for w in parse_split(split):
        bounds.append(bounds[-1] + w)
    return [(int(round(bounds[i] * num_docs)), int(round(bounds[i + 1] * num_docs)))
            for i in range(3)]


def _documents(world: Dict[str, Entity], drafts: list, ranges: List[Tuple[int, int]],
               text_rng: random.Random) -> Tuple[List[Document], Dict[str, Fact]]:
    """The drafts written out as documents (split label from ``ranges``) and every fact they state,
    with the ids of the documents stating it and one sentence per document."""
    documents: List[Document] = []
    facts: Dict[str, Fact] = {}
    for doc_id, d in enumerate(drafts):
        text, sentences = draft_text(d, text_rng)
        which = next(SPLITS[i] for i, (b, e) in enumerate(ranges) if b <= doc_id < e)
        doc_facts: List[str] = []
        for s in sentences:
            for f in s.facts:
                if f not in doc_facts:
                    doc_facts.append(f)
                fact = facts.get(f)
                if fact is None:
                    subject, relation = f.split(".", 1)
                    value = world[subject].attrs[relation]
                    fact = facts[f] = Fact(f, subject, relation,
                                           answers_for(world, relation, value)[0])
                if not fact.doc_ids or fact.doc_ids[-1] != doc_id:
                    fact.doc_ids.append(doc_id)
                    fact.sentences.append(s.text)
        documents.append(Document(doc_id, d.key, d.title, d.kind, d.entity, which, text,
                                  doc_facts))
    return documents, facts


def generate(num_entities: int = 1500, seed: int = 1234, split: str = "98,2,0", reading: int = 0) -> Encyclopedia:
    """The whole encyclopedia for ``(num_entities, seed)``; ``split`` only labels documents;
    ``reading`` = the number of reading-practice documents put first (0 = none; fewer when the
    separate world has fewer entities with an answerable question)."""
    if num_entities < 10:
        raise UserError(f"num_entities={num_entities}: must be >= 10")
    world = build_world(num_entities, random.Random(f"{seed}:world"))
    renderer = Renderer(world, random.Random(f"{seed}:render"))
    drafts = renderer.articles() + list_drafts(renderer)
    random.Random(f"{seed}:order").shuffle(drafts)
    ranges = document_split(len(drafts), split)

    documents, facts = _documents(world, drafts, ranges, random.Random(f"{seed}:text"))

    qa_rng = random.Random(f"{seed}:qa")
    questions = make_questions(world, renderer.ref, qa_rng)
    entity_split = split_by_entity(list(world), qa_rng)
    if reading:
        documents = _with_reading(documents, reading, split, seed, {e.name for e in world.values()})
        for f in facts.values():   # the articles now come after the reading documents
            f.doc_ids = [i + len(documents) - len(drafts) for i in f.doc_ids]
    qa = []
    for k, q in enumerate(questions):
        if q["fact_id"] not in facts:  # a fact that no document states cannot be asked
            continue
        qa.append(QAPair(id=f"q{k:05d}", gold_doc_ids=sorted(facts[q["fact_id"]].doc_ids),
                         split=entity_split[q["entity"]], **q))
    return Encyclopedia(world, documents, facts, qa, first_article=len(documents) - len(drafts))


READING_FACTS = 4   # facts (and questions) per reading-practice document
READING_VERSION = 3  # bump when the reading-practice documents change (part of the data manifest)


def reading_world(limit: int, seed: int, taken: set) -> Tuple[Dict[str, Fact], Dict[str, List[dict]]]:
    """Facts (with their sentences) and questions per entity of a separate fictional world of
    ``limit`` entities, none named like an entity of the encyclopedia (``taken``); a question is
    kept when one of its fact's sentences names the answer, and only those sentences are kept."""
    rng = random.Random(f"{seed}:reading-world")
    world = build_world(max(limit, 10), rng)
    renderer = Renderer(world, rng)
    _, facts = _documents(world, renderer.articles(), [(0, 10 ** 9), (0, 0), (0, 0)], rng)
    by_entity: Dict[str, List[dict]] = {}
    for q in make_questions(world, renderer.ref, rng):
        fact = facts.get(q["fact_id"])
        if fact is None or world[q["entity"]].name in taken:
            continue
        # only the wordings that name the answer ("The town is the seat of ..." does not)
        fact.sentences = [t for t in fact.sentences if q["answers"][0] in t]
        if fact.sentences:
            by_entity.setdefault(q["entity"], []).append(q)
    return facts, by_entity


def _with_reading(documents: List[Document], limit: int, split: str, seed: int, taken: set) -> List[Document]:
    """Up to ``limit`` reading-practice documents first, the articles renumbered after them, and every
    document's split label recomputed.

    The reading documents are about the entities of a separate fictional world (``reading_world``),
    one entity each, so their answers can only be read from their passage, never recalled: each
    asks up to READING_FACTS questions of its entity; its passage states those facts (one of each
    fact's wordings), one unasked fact of the entity and one fact of the next entity, shuffled."""
    facts, by_entity = reading_world(limit, seed, taken)
    entities = sorted(by_entity)
    rng = random.Random(f"{seed}:reading")
    rng.shuffle(entities)
    reading = []
    for i, e in enumerate(entities[:limit]):
        pool = by_entity[e]
        picked = rng.sample(pool, min(READING_FACTS + 1, len(pool)))
        asked = picked[:READING_FACTS]
        told = picked if len(picked) > READING_FACTS else asked
        told = told + [rng.choice(by_entity[entities[(i + 1) % len(entities)]])]   # a distractor
        sentences = list(dict.fromkeys(rng.choice(facts[q["fact_id"]].sentences) for q in told))
        rng.shuffle(sentences)
        text = " ".join(sentences) + "\n" + "\n".join(f"Question: {q['question']} Answer: {q['answers'][0]}"
                                                       for q in asked)
        reading.append(Document(i, f"reading:{e}", f"Reading practice: {e}", "reading", None, "train",
                                text, []))
    shift = len(reading)
    for d in documents:
        d.id += shift
    out = reading + documents
    ranges = document_split(len(out), split)
    for d in out:
        d.split = next(SPLITS[i] for i, (b, e) in enumerate(ranges) if b <= d.id < e)
    return out


# -- files -------------------------------------------------------------------------------
def _dumps(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, sort_keys=False)


def write_documents(docs: List[Document], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(_dumps(asdict(d)) + "\n")


def write_facts(facts: Dict[str, Fact], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for fact in facts.values():
            row = asdict(fact)
            row.pop("sentences")
            f.write(_dumps(row) + "\n")


def write_qa(pairs: List[QAPair], path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for p in pairs:
            row = asdict(p)
            row.pop("split")
            f.write(_dumps(row) + "\n")


_DOC_KEYS = {"id": int, "title": str, "text": str, "split": str}


def iter_jsonl(path: str, required: Dict[str, type]) -> Iterator[dict]:
    """Rows of a JSON-lines file; UserError naming file and line on a missing file, a
    truncated or malformed line, or a missing / mistyped required key."""
    try:
        f = open(path, encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"{path}: file not found") from None
    with f:
        for lineno, line in enumerate(f, 1):
            if not line.endswith("\n"):
                raise UserError(f"{path}:{lineno}: truncated line (no newline at end of file)")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise UserError(f"{path}:{lineno}: invalid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{lineno}: expected a JSON object")
            for key, typ in required.items():
                if not isinstance(row.get(key), typ):
                    raise UserError(f"{path}:{lineno}: field {key!r} missing or not "
                                    f"{typ.__name__}")
            yield row


def read_documents(path: str) -> List[Document]:
    """documents.jsonl back into Documents, checking ids run 0, 1, 2, ..."""
    docs = []
    for row in iter_jsonl(path, _DOC_KEYS):
        if row["id"] != len(docs):
            raise UserError(f"{path}:{len(docs) + 1}: document id {row['id']} out of order "
                            f"(expected {len(docs)})")
        docs.append(Document(row["id"], row.get("key", ""), row["title"], row.get("kind", ""),
                             row.get("entity"), row["split"], row["text"],
                             list(row.get("facts", []))))
    if not docs:
        raise UserError(f"{path}: no documents")
    return docs


def read_qa(path: str) -> List[dict]:
    """A QA JSONL file (NQ-open style rows) as dicts."""
    rows = list(iter_jsonl(path, {"question": str, "answers": list}))
    for k, row in enumerate(rows, 1):
        if not row["answers"] or not all(isinstance(a, str) for a in row["answers"]):
            raise UserError(f"{path}:{k}: 'answers' must be a non-empty list of strings")
    return rows
