"""Question-answer pairs about the facts of the synthetic encyclopedia.

One question per fact, from a few templates per relation; the answers list starts with the
canonical string (the one written in the documents) and adds accepted variants ("the Ossel
River", "412 km"). A pair is kept only if no answer appears in its question (whole words,
case-insensitive), so the answer must come from the corpus. Pairs are split into
train/valid/test *by entity*: the questions about one entity all land in one split.
"""
from __future__ import annotations

import random
import re
from typing import Dict, List, Sequence

from megatron_retro.data.synthetic.world import Entity

QUESTIONS: Dict[tuple, List[str]] = {
    ("person", "birth_year"): ["In what year was {s} born?", "When was {s} born?"],
    ("person", "death_year"): ["In what year did {s} die?", "When did {s} die?"],
    ("person", "birthplace"): ["Where was {s} born?", "In which city was {s} born?"],
    ("person", "occupation"): ["What was the occupation of {s}?", "What did {s} do for a living?"],
    ("person", "teacher"): ["Who was the teacher of {s}?", "Under whom did {s} study?"],
    ("person", "death_place"): ["Where did {s} die?", "In which city did {s} die?"],
    ("city", "neighbour"): ["Which town lies {distance_km} kilometres from {s}?"],
    ("city", "distance_km"): ["How far is {s} from {neighbour}, in kilometres?",
                              "How many kilometres lie between {s} and {neighbour}?"],
    ("organisation", "leader"): ["Who led {s} from {leader_since}?",
                                 "Who became head of {s} in {leader_since}?"],
    ("organisation", "leader_since"): ["In what year did {leader} begin to lead {s}?",
                                       "Since what year did {leader} lead {s}?"],
    ("species", "length_cm"): ["How long does {s} grow, in centimetres?",
                               "What length do adults of {s} reach?"],
    ("invention", "manufacturer"): ["Which organisation made {s}?", "Who produced {s}?"],
    ("person", "work"): ["What is the best-known work of {s}?",
                         "For which work is {s} remembered?"],
    ("person", "work_year"): ["In what year did {s} complete {work}?",
                              "When was {work} by {s} finished?"],
    ("person", "employer"): ["Which organisation did {s} work for?",
                             "Of which organisation was {s} a member?"],
    ("city", "country"): ["In which country is {s}?", "{s} lies in which country?"],
    ("city", "river"): ["On which river does {s} lie?", "Which river flows through {s}?"],
    ("city", "population"): ["What is the population of {s}?", "How many people live in {s}?"],
    ("city", "founded_year"): ["When was {s} founded?", "In what year was {s} founded?"],
    ("city", "founder"): ["Who founded {s}?", "Who was the founder of {s}?"],
    ("country", "capital"): ["What is the capital of {s}?", "Which city is the capital of {s}?"],
    ("country", "language"): ["What language is spoken in {s}?",
                              "What is the official language of {s}?"],
    ("country", "currency"): ["What is the currency of {s}?", "Which currency is used in {s}?"],
    ("country", "founded_year"): ["In what year did {s} become a state?",
                                  "When was {s} founded?"],
    ("river", "length_km"): ["How long is {s} in kilometres?", "What is the length of {s}?"],
    ("river", "source"): ["On which mountain does {s} rise?", "Where is the source of {s}?"],
    ("river", "country"): ["In which country does {s} flow?", "{s} is a river of which country?"],
    ("mountain", "height_m"): ["How high is {s} in metres?", "What is the height of {s}?"],
    ("mountain", "country"): ["In which country is {s}?", "{s} is a mountain of which country?"],
    ("mountain", "first_ascent_by"): ["Who first climbed {s}?",
                                      "Who made the first ascent of {s}?"],
    ("mountain", "first_ascent_year"): ["In what year was {s} first climbed?",
                                        "When was the first ascent of {s}?"],
    ("organisation", "founder"): ["Who founded {s}?", "Who established {s}?"],
    ("organisation", "founded_year"): ["When was {s} founded?",
                                       "In what year was {s} established?"],
    ("organisation", "headquarters"): ["Where are the headquarters of {s}?",
                                       "In which city is {s} based?"],
    ("organisation", "field"): ["In which field does {s} work?", "What is {s} devoted to?"],
    ("species", "discovered_by"): ["Who discovered {s}?", "Who first described {s}?"],
    ("species", "discovery_year"): ["In what year was {s} first described?",
                                    "When was {s} discovered?"],
    ("species", "habitat"): ["Where does {s} live?", "Where is {s} found?"],
    ("species", "colour"): ["What colour is {s}?", "What is the colour of {s}?"],
    ("species", "diet"): ["What does {s} feed on?", "What does {s} eat?"],
    ("invention", "inventor"): ["Who invented {s}?", "Who built the first {n}?"],
    ("invention", "year"): ["In what year was {s} invented?", "When was {s} invented?"],
    ("invention", "purpose"): ["What is {s} used for?", "What was {s} built for?"],
    ("invention", "material"): ["What were early models of {s} made of?",
                                "From what material was {s} built?"],
}


def entity_answers(e: Entity) -> List[str]:
    """Canonical name first (as written inside sentences, without a leading 'the')."""
    if e.kind == "person":
        return [e.name, e.name.split()[-1]]
    if e.kind == "river":
        return [f"{e.name} River", f"the {e.name} River", e.name]
    if e.kind == "mountain":
        return [f"Mount {e.name}", e.name]
    if e.kind in ("organisation", "species", "invention"):
        return [e.name, f"the {e.name}"]
    return [e.name]


def value_answers(relation: str, value: str) -> List[str]:
    if relation == "length_km":
        return [value, f"{value} kilometres", f"{value} km"]
    if relation == "length_cm":
        return [value, f"{value} centimetres", f"{value} cm"]
    if relation == "distance_km":
        return [value, f"{value} kilometres", f"{value} km"]
    if relation == "height_m":
        return [value, f"{value} metres", f"{value} m"]
    if relation == "population":
        return [value, value.replace(",", "")]
    if relation == "occupation":
        return [value, f"a {value}"]
    if relation == "currency":
        return [value, f"the {value}"]
    return [value]


def _words(text: str) -> str:
    return " " + " ".join(re.findall(r"\w+", text.lower())) + " "


def contains_words(text: str, phrase: str) -> bool:
    """``phrase`` occurs in ``text`` as a run of whole words, ignoring case and punctuation."""
    return _words(phrase) in _words(text)


def answers_for(world: Dict[str, Entity], relation: str, value: str) -> List[str]:
    return entity_answers(world[value]) if value in world else value_answers(relation, value)


def make_questions(world: Dict[str, Entity], subject_ref, rng: random.Random) -> List[dict]:
    """One question per (entity, attribute); dicts without gold docs or split yet."""
    out = []
    for e in world.values():
        for rel in sorted(e.attrs):
            templates = QUESTIONS.get((e.kind, rel))
            if not templates:
                continue
            t = rng.choice(templates)
            shown = {k: subject_ref(world[v]) if v in world else v for k, v in e.attrs.items()}
            q = t.format(s=subject_ref(e), n=e.name, **shown)
            q = q[:1].upper() + q[1:]
            answers = answers_for(world, rel, e.attrs[rel])
            if any(contains_words(q, a) for a in answers):
                continue
            out.append({"question": q, "answers": answers, "entity": e.id, "relation": rel,
                        "fact_id": f"{e.id}.{rel}"})
    return out


def split_by_entity(entity_ids: Sequence[str], rng: random.Random,
                    fractions=(0.8, 0.1, 0.1)) -> Dict[str, str]:
    """entity id -> 'train' / 'valid' / 'test' (a seeded shuffle cut by ``fractions``)."""
    ids = sorted(entity_ids)
    rng.shuffle(ids)
    n_train = int(round(fractions[0] * len(ids)))
    n_valid = int(round(fractions[1] * len(ids)))
    out = {}
    for k, eid in enumerate(ids):
        out[eid] = "train" if k < n_train else "valid" if k < n_train + n_valid else "test"
    return out
