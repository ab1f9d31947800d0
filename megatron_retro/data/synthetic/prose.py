"""The building blocks of the generated documents: a ``Sentence`` that records the facts it states
(``"<entity id>.<attribute>"``), a ``Draft`` (a document before shuffling), the small English
helpers (``cap``, ``ordinal``, ``article``, ``join_list``) and ``draft_text``, which lays a draft
out as the final text."""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from megatron_retro.data.synthetic.world import Entity


@dataclass
class Sentence:
    text: str
    facts: Tuple[str, ...] = ()


@dataclass
class Draft:
    """A document before shuffling and numbering."""

    key: str                 # stable name, e.g. "article:person:0007", "list:births:1740:0"
    title: str
    kind: str                # "article" or "list"
    entity: Optional[str] = None
    lead: List[Sentence] = field(default_factory=list)
    body: List[Sentence] = field(default_factory=list)

    def add(self, text: str, facts: Sequence[str] = ()) -> None:
        self.body.append(Sentence(text, tuple(facts)))


def fid(e: Entity, attr: str) -> str:
    return f"{e.id}.{attr}"


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def article(word: str) -> str:
    return ("an " if word[:1].lower() in "aeiou" else "a ") + word


def join_list(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 2:
        return " and ".join(items)
    return "; ".join(items[:-1]) + "; and " + items[-1] if any("," in i for i in items) \
        else ", ".join(items[:-1]) + " and " + items[-1]


def draft_text(d: Draft, rng: random.Random) -> Tuple[str, List[Sentence]]:
    """The final text of a draft (title, lead, shuffled body) and its sentences in order."""
    body = list(d.body)
    if d.kind == "article":
        rng.shuffle(body)
        sents = d.lead + body
        paras, k = [], 0
        while k < len(sents):
            n = rng.randint(2, 4)
            paras.append(" ".join(s.text for s in sents[k:k + n]))
            k += n
        return d.title + "\n\n" + "\n\n".join(paras), sents
    sents = d.lead + body
    return d.title + "\n\n" + "\n".join(s.text for s in sents), sents
