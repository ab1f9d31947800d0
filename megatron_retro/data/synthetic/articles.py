"""Renders the world (``world.py``) as encyclopedia documents in varied prose.

Every fact is written into several documents with different wording, as in a real
encyclopedia: the entity's own article, the articles of related entities (a city lists the
people born there, a person's article tells what they founded or discovered), descriptive
asides wherever an entity is mentioned ("Tarvenholm, a city of 12,400 people in Kelvaria"),
and the list pages of ``lists.py``. Each site has its own templates, several per fact, picked
at random; body sentences are shuffled. Each sentence records the ids of the facts it states
(``"<entity id>.<attribute>"``), so that the facts table and the gold documents of the QA pairs
come from what was actually written.
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

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


class Renderer:
    """Writes the drafts of all documents; ``rng`` decides templates, asides and orders."""

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
            other, facts = self.mention(x, 1.0)
            d.add(self.pick(["It is often compared with {o}.", "It is sometimes confused with {o}.",
                             "Visitors also know {o}."], o=other), facts)

    def pick(self, templates: Sequence[str], **kw) -> str:
        return cap(self.rng.choice(templates).format(**kw))

    def filler(self, d: Draft, templates: Sequence[str], k: Tuple[int, int] = (1, 2),
               **kw) -> None:
        """Sentences that state no tracked fact (texture, not knowledge)."""
        n = min(len(templates), self.rng.randint(*k))
        for t in self.rng.sample(list(templates), n):
            d.add(cap(t.format(**kw)))

    # -- articles of single entities -----------------------------------------------------
    def person(self, p: Entity) -> Draft:
        a, w, rng = p.attrs, self.world, self.rng
        d = Draft(f"article:{p.id}", p.name, "article", p.id)
        city = w[a["birthplace"]]
        kw = dict(name=p.name, fam=self.short(p), b=a["birth_year"], dd=a["death_year"],
                  occ=a["occupation"], a_occ=article(a["occupation"]), city=self.ref(city),
                  country=self.ref(city.attrs["country"]),
                  age=int(a["death_year"]) - int(a["birth_year"]))
        life = [fid(p, "birth_year"), fid(p, "death_year"), fid(p, "occupation"),
                fid(p, "birthplace")]
        d.lead.append(Sentence(self.pick([
            "{name} ({b}-{dd}) was {a_occ} from {city}.",
            "{name} was {a_occ} of {country}. Born in {city} in {b}, {fam} died in {dd}.",
            "{name} (born {b} in {city}, died {dd}) was {a_occ} in {country}.",
            "{name} was {a_occ}, born in {b} in the city of {city}; {fam} died in {dd}.",
        ], **kw), tuple(life)))
        town, facts = self.mention(city, 0.8)
        d.add(self.pick(["{fam} grew up in {town}.", "{fam} spent a childhood in {town}.",
                         "The family of {fam} lived in {town}."], town=town, **kw), facts)
        self.filler(d, ["The parents of {fam} were {par}.", "As a child {fam} {hobby}.",
                        "{fam} learned the trade of {a_occ} from an uncle.",
                        "{fam} was educated at home."],
                    k=(1, 1), par=rng.choice(["farmers", "weavers", "traders", "teachers",
                                              "fishers", "bakers"]),
                    hobby=rng.choice(["collected stones", "drew maps", "kept bees",
                                      "read every book in the house", "played the flute"]),
                    **kw)
        if "teacher" in a:
            t, facts = self.mention(a["teacher"], 0.7)
            d.add(self.pick(["{fam} studied under {t}.", "{fam} was taught by {t}.",
                             "The teacher of the young {fam} was {t}."], t=t, **kw),
                  [fid(p, "teacher")] + facts)
        pupils = [w[x] for x in p.links.get("pupil", [])]
        if pupils:
            d.add("Pupils of " + kw["fam"] + " included " + join_list(
                [f"{x.name}, {article(x.attrs['occupation'])}" for x in pupils]) + ".",
                [fid(x, k) for x in pupils for k in ("teacher", "occupation")])
        for oid in p.links.get("led", []):
            o = w[oid]
            org, facts = self.mention(o, 0.5, avoid=[fid(o, "leader")])
            d.add(self.pick(["From {y}, {fam} led {org}.", "In {y} {fam} became head of {org}."],
                            y=o.attrs["leader_since"], org=org, **kw),
                  [fid(o, "leader"), fid(o, "leader_since")] + facts)
        if "employer" in a:
            org, facts = self.mention(a["employer"], 0.7, avoid=[fid(p, "employer")])
            d.add(self.pick([
                "{fam} worked for {org}.",
                "For most of a long career, {fam} was a member of {org}.",
                "As a young {occ}, {fam} joined {org}.",
            ], org=org, **kw), [fid(p, "employer")] + facts)
        for oid in p.links.get("founded_org", []):
            o = w[oid]
            d.add(self.pick([
                "In {y}, {fam} founded {org}, devoted to {field}.",
                "{fam} established {org} in {y}; it works in {field}.",
                "{Org} was set up by {fam} in {y} to further {field}.",
            ], y=o.attrs["founded_year"], org=self.ref(o), Org=cap(self.ref(o)),
                field=o.attrs["field"], **kw),
                [fid(o, "founder"), fid(o, "founded_year"), fid(o, "field")])
            hq, facts = self.mention(o.attrs["headquarters"], 0.5)
            d.add(self.pick(["{fam} placed the seat of {org} in {hq}.",
                             "As the home of {org}, {fam} chose {hq}."],
                            hq=hq, org=self.ref(o), **kw), [fid(o, "headquarters")] + facts)
        for cid in p.links.get("founded_city", []):
            c = w[cid]
            d.add(self.pick([
                "{fam} is remembered as the founder of {c}, established in {y}.",
                "In {y} {fam} founded the settlement of {c}.",
                "The city of {c} was founded by {fam} in {y}.",
            ], c=self.ref(c), y=c.attrs["founded_year"], **kw),
                [fid(c, "founder"), fid(c, "founded_year")])
        for sid in p.links.get("discovered", []):
            s = w[sid]
            sp, facts = self.mention(s, 0.7, avoid=[fid(s, "discovered_by")])
            d.add(self.pick([
                "In {y}, {fam} first described {sp}.",
                "In {y}, {fam} discovered {sp}.",
                "A journey in {y} led {fam} to discover {sp}.",
            ], sp=sp, y=s.attrs["discovery_year"], **kw),
                [fid(s, "discovered_by"), fid(s, "discovery_year")] + facts)
        for iid in p.links.get("invented", []):
            i = w[iid]
            d.add(self.pick([
                "In {y} {fam} built the first {iname}, {a_mat} device for {purpose}.",
                "{fam} invented {inv} in {y}; it was made of {mat} and used for {purpose}.",
                "{Inv}, a {mat} machine for {purpose}, was invented by {fam} in {y}.",
            ], inv=self.ref(i), Inv=cap(self.ref(i)), iname=i.name, y=i.attrs["year"],
                purpose=i.attrs["purpose"], mat=i.attrs["material"],
                a_mat=article(i.attrs["material"]), **kw),
                [fid(i, "inventor"), fid(i, "year"), fid(i, "purpose"), fid(i, "material")])
        for mid in p.links.get("climbed", []):
            m = w[mid]
            mt, facts = self.mention(m, 0.7, avoid=[fid(m, "first_ascent_by")])
            d.add(self.pick([
                "In {y}, {fam} made the first ascent of {m}.",
                "In {y}, {fam} became the first to reach the summit of {m}.",
            ], m=mt, y=m.attrs["first_ascent_year"], **kw),
                [fid(m, "first_ascent_by"), fid(m, "first_ascent_year")] + facts)
        d.add(self.pick(["The best-known work of {fam} is {work}, completed in {wy}.",
                         "In {wy} {fam} completed {work}.",
                         "{fam} is remembered above all for {work}, finished in {wy}."],
                        work=a["work"], wy=a["work_year"], **kw),
              [fid(p, "work"), fid(p, "work_year")])
        born = int(a["birth_year"])
        peers = [x for x in self.by_birth[bisect.bisect_left(self.births, born - 25):
                                          bisect.bisect_right(self.births, born + 25)]
                 if x is not p]  # contemporaries: born within 25 years, adults together
        for x in self.rng.sample(peers, min(3, len(peers))):
            other, facts = self.mention(x, 0.9)
            d.add(self.pick(["{fam} once met {o}.", "Among the friends of {fam} was {o}.",
                             "{fam} exchanged letters with {o}.",
                             "A rival of {fam} was {o}."], o=other, **kw), facts)
        place, facts = self.mention(a["death_place"], 0.4)
        d.add(self.pick(["In {dd}, at the age of about {age}, {fam} died in {place}.",
                         "{fam} died in {dd} in {place}.",
                         "In {dd} {fam} died in {place}."], place=place, **kw),
              [fid(p, "death_year"), fid(p, "death_place")] + facts)
        self.filler(d, [
            "{fam} corresponded with scholars across {country}.",
            "Letters written by {fam} survive in several archives.",
            "{fam} was known for a patient and careful manner.",
            "A street in {city} is named after {fam}.",
            "Late in life {fam} travelled widely.",
            "A portrait of {fam} hangs in {city}.",
            "{fam} rose early and worked late.",
            "Few letters by {fam} have been published.",
            "{fam} disliked travel by sea.",
        ], k=(1, 3), **kw)
        return d

    def city(self, c: Entity) -> Draft:
        a, w = c.attrs, self.world
        d = Draft(f"article:{c.id}", c.name, "article", c.id)
        kw = dict(c=c.name, country=self.ref(a["country"]), pop=a["population"],
                  y=a["founded_year"])
        if self.rng.random() < 0.5:
            d.lead.append(Sentence(self.pick([
                "{c} is a city in {country}.", "{c} is a town in the country of {country}.",
            ], **kw), (fid(c, "country"),)))
            d.add(self.pick(["About {pop} people live in {c}.", "Its population is {pop}.",
                             "{c} has {pop} inhabitants."], **kw), [fid(c, "population")])
        else:
            d.lead.append(Sentence(self.pick([
                "{c} is a city of {pop} inhabitants in {country}.",
                "{c}, a town of {country}, has a population of {pop}.",
            ], **kw), (fid(c, "country"), fid(c, "population"))))
        if "river" in a:
            r, facts = self.mention(a["river"], 0.7)
            d.add(self.pick(["It lies on the banks of {r}.", "The town stands on {r}.",
                             "{c} was built where the land meets {r}."], r=r, **kw),
                  [fid(c, "river")] + facts)
        if "founder" in a:
            f, facts = self.mention(a["founder"], 0.7)
            d.add(self.pick(["{c} was founded in {y} by {f}.",
                             "The settlement was founded in {y} by {f}.",
                             "The town traces its origin to {y}; its founder was {f}."],
                            f=f, **kw), [fid(c, "founded_year"), fid(c, "founder")] + facts)
        else:
            d.add(self.pick(["{c} was founded in {y}.", "The town dates from {y}.",
                             "{c} was first settled in {y}."], **kw), [fid(c, "founded_year")])
        country = w[a["country"]]
        for nid in c.links.get("capital_of", []):
            n = w[nid]
            d.add(self.pick([
                "{c} is the capital of {n}, whose people speak {lang}.",
                "As the capital of {n}, {c} is the seat of its government; {lang} is spoken in its streets.",
            ], n=n.name, lang=n.attrs["language"], **kw),
                [fid(n, "capital"), fid(n, "language")])
        if not c.links.get("capital_of"):
            nm, facts = self.mention(country, 0.8, avoid=[fid(country, "currency")])
            d.add(self.pick(["{c} belongs to {n}.", "The town is part of {n}."], n=nm, **kw),
                  [fid(c, "country")] + facts)
        people = [w[x] for x in c.links.get("born_here", [])]
        if len(people) > 3:
            d.add(f"Notable people born in {c.name} include " + join_list(
                [f"{p.name} (born {p.attrs['birth_year']}), {article(p.attrs['occupation'])}"
                 for p in people]) + ".",
                [fid(p, x) for p in people for x in ("birthplace", "birth_year", "occupation")])
        else:
            for p in people:
                d.add(self.pick(["The {occ} {name} was born here in {b}.",
                                 "{name}, {a_occ}, was born in {c} in {b}."],
                                occ=p.attrs["occupation"], a_occ=article(p.attrs["occupation"]),
                                name=p.name, b=p.attrs["birth_year"], **kw),
                      [fid(p, "birthplace"), fid(p, "birth_year"), fid(p, "occupation")])
        dead = [w[x] for x in c.links.get("died_here", [])]
        if len(dead) > 3:
            d.add(f"Among those who died in {c.name} are " + join_list(
                [f"{p.name} ({p.attrs['death_year']})" for p in dead]) + ".",
                [fid(p, x) for p in dead for x in ("death_place", "death_year")])
        else:
            for p in dead:
                d.add(self.pick(["{name} died in {c} in {dd}.", "In {dd}, {name} died here."],
                                name=p.name, dd=p.attrs["death_year"], **kw),
                      [fid(p, "death_place"), fid(p, "death_year")])
        if "neighbour" in a:
            d.add(self.pick(["{c} lies {km} kilometres from {nb}.",
                             "The nearest town, {nb}, is {km} kilometres away."],
                            km=a["distance_km"], nb=self.ref(a["neighbour"]), **kw),
                  [fid(c, "neighbour"), fid(c, "distance_km")])
        for oid in c.links.get("neighbour_of", []):
            o = w[oid]
            d.add(self.pick(["{o} lies {km} kilometres away.",
                             "From {o} it is {km} kilometres to {c}."],
                            o=o.name, km=o.attrs["distance_km"], **kw),
                  [fid(o, "neighbour"), fid(o, "distance_km")])
        for oid in c.links.get("org_here", []):
            o, facts = self.mention(oid, 0.7, avoid=[fid(w[oid], "headquarters")])
            d.add(self.pick(["{c} is home to the headquarters of {o}.",
                             "The town is the seat of {o}."], o=o, **kw),
                  [fid(w[oid], "headquarters")] + facts)
        self.filler(d, [
            "The old market of {c} is busy on feast days.",
            "Winters in {c} are long and wet.",
            "{c} holds a fair every autumn.",
            "Many houses in {c} are built of grey stone.",
            "A stone bridge links the two halves of {c}.",
            "The streets of {c} are narrow and steep.",
        ], k=(1, 3), **kw)
        self.compare(d, c)
        return d

    def country(self, n: Entity) -> Draft:
        a, w = n.attrs, self.world
        d = Draft(f"article:{n.id}", n.name, "article", n.id)
        kw = dict(n=n.name, y=a["founded_year"], lang=a["language"], cur=a["currency"])
        d.lead.append(Sentence(self.pick([
            "{n} is a country founded in {y}.",
            "{n} is a nation whose history as a state begins in {y}.",
            "{n} became a state in {y}.",
        ], **kw), (fid(n, "founded_year"),)))
        capital, facts = self.mention(a["capital"], 0.8, avoid=[fid(w[a["capital"]], "country")])
        d.add(self.pick(["Its capital is {cap}.", "The capital of {n} is {cap}.",
                         "The seat of government is {cap}."], cap=capital, **kw),
              [fid(n, "capital")] + facts)
        d.add(self.pick(["The official language of {n} is {lang}.",
                         "Most people in {n} speak {lang}."], **kw), [fid(n, "language")])
        d.add(self.pick(["The currency of {n} is the {cur}.",
                         "Trade in {n} is conducted in the {cur}."], **kw), [fid(n, "currency")])
        cities = [w[x] for x in n.links.get("city", [])]
        d.add(f"Cities of {n.name} include " + join_list(
            [f"{x.name} (population {x.attrs['population']}, founded {x.attrs['founded_year']})"
             for x in cities]) + ".",
            [fid(x, k) for x in cities for k in ("country", "population", "founded_year")])
        rivers = [w[x] for x in n.links.get("river", [])]
        if rivers:
            d.add(f"Rivers of {n.name} include " + join_list(
                [f"{self.ref(x)} ({x.attrs['length_km']} km)" for x in rivers]) + ".",
                [fid(x, k) for x in rivers for k in ("country", "length_km")])
        mountains = [w[x] for x in n.links.get("mountain", [])]
        if mountains:
            d.add(f"The mountains of {n.name} include " + join_list(
                [f"{self.ref(x)} ({x.attrs['height_m']} m)" for x in mountains]) + ".",
                [fid(x, k) for x in mountains for k in ("country", "height_m")])
        people = [w[p] for c in cities for p in c.links.get("born_here", [])][:12]
        if people:
            d.add(f"People from {n.name} include " + join_list(
                [f"the {p.attrs['occupation']} {p.name} of {self.ref(p.attrs['birthplace'])}"
                 for p in people]) + ".",
                [fid(p, k) for p in people for k in ("occupation", "birthplace")])
        self.filler(d, ["The flag of {n} is plain.", "{n} has a long coast.",
                        "The roads of {n} were paved late.",
                        "{n} trades wool and timber with its neighbours."], **kw)
        return d

    def river(self, r: Entity) -> Draft:
        a, w = r.attrs, self.world
        d = Draft(f"article:{r.id}", self.ref(r)[4:], "article", r.id)
        kw = dict(r=self.ref(r), R=cap(self.ref(r)), n=self.ref(a["country"]),
                  km=a["length_km"])
        d.lead.append(Sentence(self.pick(["{R} is a river in {n}.",
                                          "{R} is one of the rivers of {n}."], **kw),
                               (fid(r, "country"),)))
        d.add(self.pick(["It is {km} kilometres long.", "The river runs for {km} kilometres.",
                         "{R} has a length of {km} kilometres."], **kw), [fid(r, "length_km")])
        m, facts = self.mention(a["source"], 0.7)
        d.add(self.pick(["It rises on the slopes of {m}.", "Its source lies on {m}.",
                         "{R} springs from {m}."], m=m, **kw), [fid(r, "source")] + facts)
        cities = [w[x] for x in r.links.get("city", [])]
        if cities:
            d.add(self.pick(["Cities on {r} include {cs}.", "{R} passes {cs}."],
                            cs=join_list([f"{x.name} ({x.attrs['population']} people)"
                                          for x in cities]), **kw),
                  [fid(x, k) for x in cities for k in ("river", "population")])
        for sid in r.links.get("species", []):
            s = w[sid]
            d.add(self.pick(["{R} is home to {sp}, {a_col} {an} that feeds on {diet}.",
                             "{Sp}, which is {col}, lives along {r} and eats {diet}."],
                            sp=self.ref(s), Sp=cap(self.ref(s)), col=s.attrs["colour"],
                            a_col=article(s.attrs["colour"]), an=s.name.split()[-1],
                            diet=s.attrs["diet"], **kw),
                  [fid(s, "habitat"), fid(s, "colour"), fid(s, "diet")])
        self.filler(d, ["Barges once carried timber down {r}.",
                        "{R} floods in most springs.", "Fishing on {r} is regulated.",
                        "Several mills stood on {r}.", "The water of {r} is cold and clear."],
                    k=(1, 3), **kw)
        self.compare(d, r)
        return d

    def mountain(self, m: Entity) -> Draft:
        a, w = m.attrs, self.world
        d = Draft(f"article:{m.id}", self.ref(m), "article", m.id)
        kw = dict(m=self.ref(m), n=self.ref(a["country"]), h=a["height_m"],
                  y=a["first_ascent_year"])
        if self.rng.random() < 0.5:
            d.lead.append(Sentence(self.pick(["{m} is a mountain in {n}, {h} metres high."],
                                             **kw), (fid(m, "country"), fid(m, "height_m"))))
        else:
            d.lead.append(Sentence(self.pick(["{m} is a mountain in {n}.",
                                              "{m} is a peak of {n}."], **kw),
                                   (fid(m, "country"),)))
            d.add(self.pick(["It rises to {h} metres.",
                             "Its summit stands {h} metres above the sea."], **kw),
                  [fid(m, "height_m")])
        p, facts = self.mention(a["first_ascent_by"], 0.8)
        d.add(self.pick(["It was first climbed in {y} by {p}.",
                         "The summit was first reached in {y} by {p}.",
                         "The first ascent was made in {y} by {p}."], p=p, **kw),
              [fid(m, "first_ascent_by"), fid(m, "first_ascent_year")] + facts)
        for rid in m.links.get("river_source", []):
            rv = w[rid]
            d.add(self.pick(["{R}, {km} kilometres long, rises on its slopes.",
                             "The source of {r} lies on {m}; the river is {km} kilometres long."],
                            r=self.ref(rv), R=cap(self.ref(rv)), km=rv.attrs["length_km"], **kw),
                  [fid(rv, "source"), fid(rv, "length_km")])
        for sid in m.links.get("species", []):
            s = w[sid]
            d.add(self.pick(["{Sp}, {a_col} {an}, lives on its slopes.",
                             "The slopes of {m} are home to {sp}, which is {col}."],
                            sp=self.ref(s), Sp=cap(self.ref(s)), col=s.attrs["colour"],
                            a_col=article(s.attrs["colour"]), an=s.name.split()[-1], **kw),
                  [fid(s, "habitat"), fid(s, "colour")])
        self.filler(d, ["Snow lies on {m} for half the year.",
                        "Shepherds graze flocks on the lower slopes of {m}.",
                        "The path to the summit of {m} is steep.",
                        "Storms often hide the top of {m}."], k=(1, 3), **kw)
        self.compare(d, m)
        return d

    def organisation(self, o: Entity) -> Draft:
        a, w = o.attrs, self.world
        d = Draft(f"article:{o.id}", o.name, "article", o.id)
        kw = dict(o=self.ref(o), O=cap(self.ref(o)), y=a["founded_year"], field=a["field"])
        d.lead.append(Sentence(self.pick(["{O} is an organisation devoted to {field}.",
                                          "{O} is a society working in {field}."], **kw),
                               (fid(o, "field"),)))
        f, facts = self.mention(a["founder"], 0.8)
        d.add(self.pick(["It was founded in {y} by {f}.", "It was established in {y} by {f}.",
                         "{O} was set up in {y}; its founder was {f}."], f=f, **kw),
              [fid(o, "founder"), fid(o, "founded_year")] + facts)
        hq, facts = self.mention(a["headquarters"], 0.6)
        d.add(self.pick(["Its headquarters are in {hq}.", "{O} has its seat in {hq}.",
                         "The society meets in {hq}."], hq=hq, **kw),
              [fid(o, "headquarters")] + facts)
        if "leader" in a:
            lead, facts = self.mention(a["leader"], 0.6)
            d.add(self.pick(["From {ly} it was led by {l}.", "In {ly}, leadership passed to {l}."],
                            ly=a["leader_since"], l=lead, **kw),
                  [fid(o, "leader"), fid(o, "leader_since")] + facts)
        for iid in o.links.get("made", []):
            i = w[iid]
            if self.rng.random() < 0.5:
                d.add(f"{kw['O']} made {self.ref(i)}, {article(i.attrs['material'])} device "
                      f"for {i.attrs['purpose']}.",
                      [fid(i, "manufacturer"), fid(i, "material"), fid(i, "purpose")])
            else:
                d.add(f"Its workshops produced {self.ref(i)}, used for {i.attrs['purpose']}.",
                      [fid(i, "manufacturer"), fid(i, "purpose")])
        members = [w[x] for x in o.links.get("member", [])]
        if members:
            d.add("Members have included " + join_list(
                [f"{p.name} ({p.attrs['birth_year']}-{p.attrs['death_year']}), "
                 f"{article(p.attrs['occupation'])}" for p in members]) + ".",
                [fid(p, x) for p in members
                 for x in ("employer", "occupation", "birth_year", "death_year")])
        self.filler(d, ["{O} publishes a yearly report.",
                        "{O} keeps a library open to the public.",
                        "The rules of {o} were rewritten several times.",
                        "{O} awards a medal every ten years."], k=(1, 2), **kw)
        self.compare(d, o)
        return d

    def species(self, s: Entity) -> Draft:
        a = s.attrs
        d = Draft(f"article:{s.id}", s.name, "article", s.id)
        hab = self.world[a["habitat"]]
        habitat, hfacts = self.mention(hab, 0.6)
        where = (f"along {habitat}" if hab.kind == "river" else f"on the slopes of {habitat}")
        kw = dict(sp=self.ref(s), Sp=cap(self.ref(s)), an=s.name.split()[-1], col=a["colour"],
                  a_col=article(a["colour"]), diet=a["diet"], y=a["discovery_year"],
                  where=where)
        lead = self.pick(["{Sp} is {a_col} {an} that feeds on {diet}.",
                          "{Sp} is a species of {an}, {col} in colour."], **kw)
        if a["diet"] in lead:
            d.lead.append(Sentence(lead, (fid(s, "colour"), fid(s, "diet"))))
        else:
            d.lead.append(Sentence(lead, (fid(s, "colour"),)))
            d.add(self.pick(["It feeds mainly on {diet}.", "Its diet consists of {diet}."],
                            **kw), [fid(s, "diet")])
        p, facts = self.mention(a["discovered_by"], 0.8)
        d.add(self.pick(["It was first described in {y} by {p}.", "It was discovered in {y} by {p}.",
                         "The species was found in {y} by {p}."], p=p, **kw),
              [fid(s, "discovered_by"), fid(s, "discovery_year")] + facts)
        d.add(self.pick(["Adults grow to about {cm} centimetres.",
                         "It reaches a length of {cm} centimetres."], cm=a["length_cm"], **kw),
              [fid(s, "length_cm")])
        d.add(self.pick(["It lives {where}.", "The {an} is found {where}."], **kw),
              [fid(s, "habitat")] + hfacts)
        self.filler(d, ["The {an} is shy and rarely seen.",
                        "Its numbers have fallen in recent years.",
                        "Young ones stay close to the nest.",
                        "It is most active at dusk."], k=(1, 2), **kw)
        self.compare(d, s)
        return d

    def invention(self, i: Entity) -> Draft:
        a = i.attrs
        d = Draft(f"article:{i.id}", i.name, "article", i.id)
        p, pfacts = self.mention(a["inventor"], 0.8)
        kw = dict(inv=self.ref(i), Inv=cap(self.ref(i)), p=p, y=a["year"],
                  purpose=a["purpose"], mat=a["material"])
        if self.rng.random() < 0.5:
            d.lead.append(Sentence(self.pick(["{Inv} is a device for {purpose}."], **kw),
                                   (fid(i, "purpose"),)))
            d.add(self.pick(["It was invented in {y} by {p}.", "The first one was built in {y} by {p}."],
                            **kw), [fid(i, "inventor"), fid(i, "year")] + pfacts)
        else:
            d.lead.append(Sentence(self.pick(["{Inv} was invented in {y} by {p}."], **kw),
                                   tuple([fid(i, "inventor"), fid(i, "year")] + pfacts)))
            d.add(self.pick(["It was used for {purpose}.", "Its purpose was {purpose}."], **kw),
                  [fid(i, "purpose")])
        if "manufacturer" in a:
            org, facts = self.mention(a["manufacturer"], 0.6)
            d.add(self.pick(["It was produced by {org}.", "For many years it was made by {org}."],
                            org=org, **kw), [fid(i, "manufacturer")] + facts)
        d.add(self.pick(["Early models were made of {mat}.", "It was built from {mat}.",
                         "The frame was {mat}."], **kw), [fid(i, "material")])
        self.filler(d, ["Copies of {inv} spread quickly.", "Later versions were larger.",
                        "Few original examples survive.", "It needed two people to work it."],
                    k=(1, 2), **kw)
        self.compare(d, i)
        return d

    def articles(self) -> List[Draft]:
        """One article per entity, in the world's order."""
        article_of = {"person": self.person, "city": self.city, "country": self.country,
                      "river": self.river, "mountain": self.mountain,
                      "organisation": self.organisation, "species": self.species,
                      "invention": self.invention}
        return [article_of[e.kind](e) for e in self.world.values()]


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
