"""``Writer``: what every article template draws on: how an entity is named inside a sentence,
the descriptive asides that restate its facts ("Tarvenholm, a city of 12,400 people in Kelvaria"),
comparisons, template picking and filler sentences (texture that states no tracked fact).
Every choice comes from one ``rng``, so the same seed writes the same words."""
from __future__ import annotations

import random
from typing import Dict, List, Sequence, Tuple

from megatron_retro.data.synthetic.prose import Draft, Sentence, article, cap, fid
from megatron_retro.data.synthetic.world import Entity


class Writer:
    """The shared state of the article writers: the world, its entities by kind and people by birth
    year, and the one ``rng`` that decides templates, asides and orders."""

    def __init__(self, world: Dict[str, Entity], rng: random.Random) -> None:
        self.world = world
        self.rng = rng
        self.by_kind: Dict[str, List[Entity]] = {}
        for e in world.values():
            self.by_kind.setdefault(e.kind, []).append(e)
        self.by_birth = sorted(self.by_kind.get("person", []),
                               key=lambda e: (int(e.attrs["birth_year"]), e.id))
        self.births = [int(e.attrs["birth_year"]) for e in self.by_birth]

    # -- names and asides ----------------------------------------------------------------
    def ent(self, x) -> Entity:
        return self.world[x] if isinstance(x, str) else x

    def ref(self, x) -> str:
        """How an entity (or id) is named inside a sentence."""
        e = self.ent(x)
        return {"river": f"the {e.name} River", "mountain": f"Mount {e.name}",
                "organisation": f"the {e.name}", "species": f"the {e.name}",
                "invention": f"the {e.name}"}.get(e.kind, e.name)

    def short(self, e: Entity) -> str:
        """A person's family name, anything else's reference."""
        return e.name.split()[-1] if e.kind == "person" else self.ref(e)

    def asides(self, e: Entity) -> List[Tuple[str, Tuple[str, ...]]]:
        """Descriptive phrases for ``e`` (each: text following "<name>, ", facts stated)."""
        a, r, out = e.attrs, self.ref, []
        if e.kind == "person":
            out += [(f"{article(a['occupation'])} born in {r(a['birthplace'])} in {a['birth_year']}",
                     ("occupation", "birthplace", "birth_year")),
                    (f"who lived from {a['birth_year']} to {a['death_year']}",
                     ("birth_year", "death_year")),
                    (f"{article(a['occupation'])} from {r(a['birthplace'])}",
                     ("occupation", "birthplace"))]
            if "employer" in a:
                out.append((f"a member of {r(a['employer'])}", ("employer",)))
            if "teacher" in a:
                out.append((f"a pupil of {r(a['teacher'])}", ("teacher",)))
            out.append((f"the author of {a['work']} ({a['work_year']})", ("work", "work_year")))
        elif e.kind == "city":
            out += [(f"a city of {a['population']} people in {r(a['country'])}",
                     ("population", "country")),
                    (f"a town in {r(a['country'])} founded in {a['founded_year']}",
                     ("country", "founded_year"))]
            if "river" in a:
                out.append((f"which lies on {r(a['river'])}", ("river",)))
            if "neighbour" in a:
                out.append((f"{a['distance_km']} kilometres from {r(a['neighbour'])}",
                            ("distance_km", "neighbour")))
        elif e.kind == "country":
            out += [(f"whose capital is {r(a['capital'])}", ("capital",)),
                    (f"where {a['language']} is spoken", ("language",)),
                    (f"whose money is the {a['currency']}", ("currency",))]
        elif e.kind == "river":
            out += [(f"which runs for {a['length_km']} kilometres through {r(a['country'])}",
                     ("length_km", "country")),
                    (f"which rises on {r(a['source'])}", ("source",))]
        elif e.kind == "mountain":
            out += [(f"a peak of {a['height_m']} metres in {r(a['country'])}",
                     ("height_m", "country")),
                    (f"first climbed by {r(a['first_ascent_by'])} in {a['first_ascent_year']}",
                     ("first_ascent_by", "first_ascent_year"))]
        elif e.kind == "organisation":
            out += [(f"a society for {a['field']} based in {r(a['headquarters'])}",
                     ("field", "headquarters")),
                    (f"founded by {r(a['founder'])} in {a['founded_year']}",
                     ("founder", "founded_year"))]
            if "leader" in a:
                out.append((f"led from {a['leader_since']} by {r(a['leader'])}",
                            ("leader", "leader_since")))
        elif e.kind == "species":
            out += [(f"{article(a['colour'])} {e.name.split()[-1]} that eats {a['diet']}",
                     ("colour", "diet")),
                    (f"first described by {r(a['discovered_by'])} in {a['discovery_year']}",
                     ("discovered_by", "discovery_year")),
                    (f"which grows to {a['length_cm']} centimetres", ("length_cm",))]
        elif e.kind == "invention":
            out += [(f"{article(a['material'])} device for {a['purpose']}",
                     ("material", "purpose")),
                    (f"invented by {r(a['inventor'])} in {a['year']}", ("inventor", "year"))]
            if "manufacturer" in a:
                out.append((f"made by {r(a['manufacturer'])}", ("manufacturer",)))
        return [(t, tuple(fid(e, f) for f in fs)) for t, fs in out]

    def species_words(self, s: Entity) -> Dict[str, str]:
        """The template words of a species: ``{sp}``/``{Sp}`` its name, ``{an}`` the animal,
        ``{col}``/``{a_col}`` its colour."""
        return dict(sp=self.ref(s), Sp=cap(self.ref(s)), col=s.attrs["colour"], a_col=article(s.attrs["colour"]),
                    an=s.name.split()[-1])

    def mention(self, x, p: float = 0.6, avoid: Sequence[str] = ()) -> Tuple[str, List[str]]:
        """``(text, facts)`` naming ``x``, with probability ``p`` followed by an aside that
        states none of the facts in ``avoid``. Put it at the end of a clause."""
        e = self.ent(x)
        options = [o for o in self.asides(e) if not set(o[1]) & set(avoid)]
        if options and self.rng.random() < p:
            text, facts = self.rng.choice(options)
            return f"{self.ref(e)}, {text}", list(facts)
        return self.ref(e), []

    def compare(self, d: Draft, e: Entity) -> None:
        """A sentence naming another entity of the same kind, with an aside about it."""
        others = self.by_kind[e.kind]
        if len(others) > 1:
            x = self.rng.choice([o for o in self.rng.sample(others, 2) if o is not e])
            self.say_naming(d, "o", x, 1.0, ["It is often compared with {o}.", "It is sometimes confused with {o}.",
                                             "Visitors also know {o}."])

    def pick(self, templates: Sequence[str], **kw) -> str:
        return cap(self.rng.choice(templates).format(**kw))

    def say(self, d: Draft, templates: Sequence[str], facts: Sequence[str] = (), /, **kw) -> None:
        """A body sentence: one of ``templates``, filled with ``kw``, stating ``facts``."""
        d.add(self.pick(templates, **kw), facts)

    def say_lead(self, d: Draft, templates: Sequence[str], facts: Sequence[str] = (), /, **kw) -> None:
        """The same for the lead (the opening sentences, which are not shuffled)."""
        d.lead.append(Sentence(self.pick(templates, **kw), tuple(facts)))

    def say_naming(self, d: Draft, slot: str, x, p: float, templates: Sequence[str], facts: Sequence[str] = (),
                   avoid: Sequence[str] = (), /, **kw) -> None:
        """A body sentence whose ``{slot}`` names ``x``, with probability ``p`` followed by an aside
        (see :meth:`mention`, ``avoid``); it states ``facts`` and the aside's facts."""
        text, aside = self.mention(x, p, avoid)
        self.say(d, templates, list(facts) + aside, **{slot: text}, **kw)

    def filler(self, d: Draft, templates: Sequence[str], k: Tuple[int, int] = (1, 2),
               **kw) -> None:
        """Sentences that state no tracked fact (texture, not knowledge)."""
        n = min(len(templates), self.rng.randint(*k))
        for t in self.rng.sample(list(templates), n):
            d.add(cap(t.format(**kw)))
