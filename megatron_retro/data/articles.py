"""Renders the world (``world.py``) as encyclopedia documents in varied prose.

Every fact is written into several documents with different wording, as in a real
encyclopedia: the entity's own article, the articles of related entities (a city lists the
people born there, a person's article tells what they founded or discovered), and list
articles (births by decade, foundations by century, rivers by length, ...). Each site has its
own templates, several per fact, picked at random; body sentences are shuffled. Each sentence
records the ids of the facts it states (``"<entity id>.<attribute>"``), so that the facts table
and the gold documents of the QA pairs come from what was actually written.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from megatron_retro.data.world import Entity

LIST_PAGE = 25  # entries per list article page


@dataclass
class Sentence:
    text: str
    facts: Tuple[str, ...] = ()


@dataclass
class Draft:
    """A document before shuffling and numbering."""

    key: str                 # stable name, e.g. "article:person:0007", "list:births:1740"
    title: str
    kind: str                # "article" or "list"
    entity: Optional[str] = None
    lead: List[Sentence] = field(default_factory=list)
    body: List[Sentence] = field(default_factory=list)

    def add(self, text: str, *facts: str) -> None:
        self.body.append(Sentence(text, tuple(facts)))


def fid(e: Entity, attr: str) -> str:
    return f"{e.id}.{attr}"


def cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def century(year: str) -> int:
    return (int(year) - 1) // 100 + 1


def join_list(items: Sequence[str]) -> str:
    items = list(items)
    if len(items) <= 2:
        return " and ".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


class Renderer:
    """Writes the drafts of all documents; ``rng`` decides templates and orders."""

    def __init__(self, world: Dict[str, Entity], rng: random.Random) -> None:
        self.world = world
        self.rng = rng

    # -- names -------------------------------------------------------------------------
    def ref(self, x) -> str:
        """How an entity (or id) is named inside a sentence."""
        e = self.world[x] if isinstance(x, str) else x
        return {"river": f"the {e.name} River", "mountain": f"Mount {e.name}",
                "organisation": f"the {e.name}", "species": f"the {e.name}",
                "invention": f"the {e.name}"}.get(e.kind, e.name)

    def short(self, e: Entity) -> str:
        """A person's family name, anything else's reference."""
        return e.name.split()[-1] if e.kind == "person" else self.ref(e)

    def pick(self, templates: Sequence[str], **kw) -> str:
        return cap(self.rng.choice(templates).format(**kw))

    def of_kind(self, kind: str) -> List[Entity]:
        return [e for e in self.world.values() if e.kind == kind]

    # -- articles of single entities -----------------------------------------------------
    def person(self, p: Entity) -> Draft:
        a, w = p.attrs, self.world
        d = Draft(f"article:{p.id}", p.name, "article", p.id)
        kw = dict(name=p.name, fam=self.short(p), b=a["birth_year"], dd=a["death_year"],
                  occ=a["occupation"], city=self.ref(a["birthplace"]),
                  country=self.ref(w[a["birthplace"]].attrs["country"]))
        life = (fid(p, "birth_year"), fid(p, "death_year"), fid(p, "occupation"),
                fid(p, "birthplace"))
        d.lead.append(Sentence(self.pick([
            "{name} ({b}-{dd}) was a {occ} from {city}.",
            "{name} was a {occ} of {country}. Born in {city} in {b}, {fam} died in {dd}.",
            "{name} (born {b} in {city}, died {dd}) was a {occ} in {country}.",
            "{name} was a {occ}, born in {b} in the city of {city}; {fam} died in {dd}.",
        ], **kw), life))
        if "employer" in a:
            d.add(self.pick([
                "{fam} worked for {org} for many years.",
                "For most of a long career, {fam} was a member of {org}.",
                "{fam} joined {org} as a young {occ}.",
                "As a member of {org}, {fam} trained several apprentices.",
            ], org=self.ref(a["employer"]), **kw), fid(p, "employer"))
        for oid in p.links.get("founded_org", []):
            o = w[oid]
            d.add(self.pick([
                "In {y}, {fam} founded {org}, devoted to {field}.",
                "{fam} established {org} in {y}.",
                "{org} was set up by {fam} in {y}.",
            ], y=o.attrs["founded_year"], org=self.ref(o), field=o.attrs["field"], **kw),
                fid(o, "founder"), fid(o, "founded_year"))
        for cid in p.links.get("founded_city", []):
            c = w[cid]
            d.add(self.pick([
                "{fam} is remembered as the founder of {c}, established in {y}.",
                "In {y} {fam} founded the settlement of {c}.",
                "The city of {c} was founded by {fam} in {y}.",
            ], c=self.ref(c), y=c.attrs["founded_year"], **kw),
                fid(c, "founder"), fid(c, "founded_year"))
        for sid in p.links.get("discovered", []):
            s = w[sid]
            d.add(self.pick([
                "{fam} first described {sp} in {y}.",
                "In {y}, {fam} discovered {sp}.",
                "{sp} was discovered by {fam} in {y}.",
            ], sp=self.ref(s), y=s.attrs["discovery_year"], **kw),
                fid(s, "discovered_by"), fid(s, "discovery_year"))
        for iid in p.links.get("invented", []):
            i = w[iid]
            d.add(self.pick([
                "In {y} {fam} built the first {iname}, a device for {purpose}.",
                "{fam} invented {inv} in {y}.",
                "{inv}, a machine for {purpose}, was invented by {fam} in {y}.",
            ], inv=self.ref(i), iname=i.name, y=i.attrs["year"], purpose=i.attrs["purpose"], **kw),
                fid(i, "inventor"), fid(i, "year"))
        for mid in p.links.get("climbed", []):
            m = w[mid]
            d.add(self.pick([
                "{fam} made the first ascent of {m} in {y}.",
                "In {y}, {fam} became the first to reach the summit of {m}.",
            ], m=self.ref(m), y=m.attrs["first_ascent_year"], **kw),
                fid(m, "first_ascent_by"), fid(m, "first_ascent_year"))
        self.filler(d, p, [
            "{fam} corresponded with scholars across {country}.",
            "Letters written by {fam} survive in several archives.",
            "{fam} was known for a patient and careful manner.",
            "A street in {city} is named after {fam}.",
            "Late in life {fam} travelled widely.",
        ], **kw)
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
                             "{c} has {pop} inhabitants."], **kw), fid(c, "population"))
        else:
            d.lead.append(Sentence(self.pick([
                "{c} is a city of {pop} inhabitants in {country}.",
                "{c}, a town of {country}, has a population of {pop}.",
            ], **kw), (fid(c, "country"), fid(c, "population"))))
        if "river" in a:
            d.add(self.pick(["It lies on the banks of {r}.", "{r} flows through {c}.",
                             "{c} was built where {r} bends to the south."],
                            r=self.ref(a["river"]), **kw), fid(c, "river"))
        if "founder" in a:
            d.add(self.pick(["{c} was founded in {y} by {f}.",
                             "{f} founded the settlement in {y}.",
                             "The town traces its origin to {y}, when {f} founded it."],
                            f=self.ref(a["founder"]), **kw),
                  fid(c, "founded_year"), fid(c, "founder"))
        else:
            d.add(self.pick(["{c} was founded in {y}.", "The town dates from {y}.",
                             "{c} was first settled in {y}."], **kw), fid(c, "founded_year"))
        for nid in c.links.get("capital_of", []):
            n = w[nid]
            d.add(self.pick([
                "{c} is the capital of {n}, whose people speak {lang}.",
                "As the capital of {n}, {c} is the seat of its government; {lang} is spoken in its streets.",
            ], n=n.name, lang=n.attrs["language"], **kw),
                fid(n, "capital"), fid(n, "language"))
        people = [w[x] for x in c.links.get("born_here", [])]
        if len(people) > 3:
            d.add(f"Notable people born in {c.name} include " + join_list(
                [f"{p.name} (born {p.attrs['birth_year']}), a {p.attrs['occupation']}"
                 for p in people]) + ".",
                *[fid(p, x) for p in people for x in ("birthplace", "birth_year", "occupation")])
        else:
            for p in people:
                d.add(self.pick(["The {occ} {name} was born here in {b}.",
                                 "{name}, a {occ}, was born in {c} in {b}."],
                                occ=p.attrs["occupation"], name=p.name,
                                b=p.attrs["birth_year"], **kw),
                      fid(p, "birthplace"), fid(p, "birth_year"), fid(p, "occupation"))
        for oid in c.links.get("org_here", []):
            d.add(self.pick(["{c} is home to the headquarters of {o}.",
                             "{o} has its seat in {c}."], o=self.ref(oid), **kw),
                  fid(w[oid], "headquarters"))
        self.filler(d, c, [
            "The old market of {c} is busy on feast days.",
            "Winters in {c} are long and wet.",
            "{c} holds a fair every autumn.",
            "Many houses in {c} are built of grey stone.",
            "A stone bridge links the two halves of {c}.",
        ], **kw)
        return d

    def country(self, n: Entity) -> Draft:
        a, w = n.attrs, self.world
        d = Draft(f"article:{n.id}", n.name, "article", n.id)
        kw = dict(n=n.name, y=a["founded_year"], cap=self.ref(a["capital"]),
                  lang=a["language"], cur=a["currency"])
        d.lead.append(Sentence(self.pick([
            "{n} is a country founded in {y}.",
            "{n} is a nation whose history as a state begins in {y}.",
            "{n} became a state in {y}.",
        ], **kw), (fid(n, "founded_year"),)))
        d.add(self.pick(["Its capital is {cap}.", "The capital of {n} is {cap}.",
                         "The seat of government is {cap}."], **kw), fid(n, "capital"))
        d.add(self.pick(["The official language of {n} is {lang}.",
                         "Most people in {n} speak {lang}."], **kw), fid(n, "language"))
        d.add(self.pick(["The currency of {n} is the {cur}.",
                         "Trade in {n} is conducted in the {cur}."], **kw), fid(n, "currency"))
        cities = [w[x] for x in n.links.get("city", [])]
        if cities:
            d.add(f"Cities of {n.name} include " + join_list(
                [f"{x.name} (population {x.attrs['population']})" for x in cities]) + ".",
                *[fid(x, k) for x in cities for k in ("country", "population")])
        for kind, intro in (("river", "Rivers of {n} include "),
                            ("mountain", "The mountains of {n} include ")):
            items = [w[x] for x in n.links.get(kind, [])]
            if items:
                d.add(intro.format(n=n.name) + join_list([self.ref(x) for x in items]) + ".",
                      *[fid(x, "country") for x in items])
        return d

    def river(self, r: Entity) -> Draft:
        a, w = r.attrs, self.world
        d = Draft(f"article:{r.id}", self.ref(r)[4:], "article", r.id)
        kw = dict(r=self.ref(r), n=self.ref(a["country"]), km=a["length_km"],
                  m=self.ref(a["source"]))
        d.lead.append(Sentence(self.pick(["{r} is a river in {n}.",
                                          "{r} is one of the rivers of {n}."], **kw),
                               (fid(r, "country"),)))
        d.add(self.pick(["It is {km} kilometres long.", "The river runs for {km} kilometres.",
                         "{r} has a length of {km} kilometres."], **kw), fid(r, "length_km"))
        d.add(self.pick(["It rises on the slopes of {m}.", "Its source lies on {m}.",
                         "{r} springs from {m}."], **kw), fid(r, "source"))
        cities = [w[x] for x in r.links.get("city", [])]
        if cities:
            d.add(self.pick(["Cities on {r} include {cs}.", "{r} passes {cs}."],
                            cs=join_list([x.name for x in cities]), **kw),
                  *[fid(x, "river") for x in cities])
        for sid in r.links.get("species", []):
            s = w[sid]
            d.add(self.pick(["{r} is home to {sp}, a {col} {an}.",
                             "{sp}, which is {col}, lives along {r}."],
                            sp=self.ref(s), col=s.attrs["colour"], an=s.name.split()[-1], **kw),
                  fid(s, "habitat"), fid(s, "colour"))
        self.filler(d, r, ["Barges once carried timber down {r}.",
                           "{r} floods in most springs.",
                           "Fishing on {r} is regulated."], **kw)
        return d

    def mountain(self, m: Entity) -> Draft:
        a, w = m.attrs, self.world
        d = Draft(f"article:{m.id}", self.ref(m), "article", m.id)
        kw = dict(m=self.ref(m), n=self.ref(a["country"]), h=a["height_m"],
                  p=self.ref(a["first_ascent_by"]), y=a["first_ascent_year"])
        if self.rng.random() < 0.5:
            d.lead.append(Sentence(self.pick(["{m} is a mountain in {n}, {h} metres high."],
                                             **kw), (fid(m, "country"), fid(m, "height_m"))))
        else:
            d.lead.append(Sentence(self.pick(["{m} is a mountain in {n}.",
                                              "{m} is a peak of {n}."], **kw),
                                   (fid(m, "country"),)))
            d.add(self.pick(["It rises to {h} metres.",
                             "Its summit stands {h} metres above the sea."], **kw),
                  fid(m, "height_m"))
        d.add(self.pick(["It was first climbed in {y} by {p}.",
                         "{p} reached the summit first, in {y}.",
                         "The first ascent was made by {p} in {y}."], **kw),
              fid(m, "first_ascent_by"), fid(m, "first_ascent_year"))
        for rid in m.links.get("river_source", []):
            d.add(self.pick(["{r} rises on its slopes.", "The source of {r} lies on {m}."],
                            r=self.ref(rid), **kw), fid(w[rid], "source"))
        for sid in m.links.get("species", []):
            s = w[sid]
            d.add(self.pick(["{sp}, a {col} {an}, lives on its slopes.",
                             "The slopes of {m} are home to {sp}, which is {col}."],
                            sp=self.ref(s), col=s.attrs["colour"], an=s.name.split()[-1], **kw),
                  fid(s, "habitat"), fid(s, "colour"))
        self.filler(d, m, ["Snow lies on {m} for half the year.",
                           "Shepherds graze flocks on the lower slopes of {m}.",
                           "The path to the summit of {m} is steep."], **kw)
        return d

    def organisation(self, o: Entity) -> Draft:
        a, w = o.attrs, self.world
        d = Draft(f"article:{o.id}", o.name, "article", o.id)
        kw = dict(o=self.ref(o), f=self.ref(a["founder"]), y=a["founded_year"],
                  hq=self.ref(a["headquarters"]), field=a["field"])
        d.lead.append(Sentence(self.pick(["{o} is an organisation devoted to {field}.",
                                          "{o} is a society working in {field}."], **kw),
                               (fid(o, "field"),)))
        d.add(self.pick(["It was founded in {y} by {f}.", "{f} established it in {y}.",
                         "{o} was set up in {y}; its founder was {f}."], **kw),
              fid(o, "founder"), fid(o, "founded_year"))
        d.add(self.pick(["Its headquarters are in {hq}.", "{o} has its seat in {hq}.",
                         "The society meets in {hq}."], **kw), fid(o, "headquarters"))
        members = [w[x] for x in o.links.get("member", [])]
        if members:
            d.add("Members have included " + join_list(
                [f"{p.name}, a {p.attrs['occupation']}" for p in members]) + ".",
                *[fid(p, x) for p in members for x in ("employer", "occupation")])
        self.filler(d, o, ["{o} publishes a yearly report.",
                           "{o} keeps a library open to the public.",
                           "The rules of {o} were rewritten several times."], **kw)
        return d

    def species(self, s: Entity) -> Draft:
        a = s.attrs
        d = Draft(f"article:{s.id}", s.name, "article", s.id)
        hab = self.world[a["habitat"]]
        where = (f"along {self.ref(hab)}" if hab.kind == "river"
                 else f"on the slopes of {self.ref(hab)}")
        kw = dict(sp=self.ref(s), an=s.name.split()[-1], col=a["colour"], diet=a["diet"],
                  p=self.ref(a["discovered_by"]), y=a["discovery_year"], where=where)
        lead = self.pick(["{sp} is a {col} {an} that feeds on {diet}.",
                          "{sp} is a species of {an}, {col} in colour."], **kw)
        if "{diet}".format(**kw) in lead:
            d.lead.append(Sentence(lead, (fid(s, "colour"), fid(s, "diet"))))
        else:
            d.lead.append(Sentence(lead, (fid(s, "colour"),)))
            d.add(self.pick(["It feeds mainly on {diet}.", "Its diet consists of {diet}."],
                            **kw), fid(s, "diet"))
        d.add(self.pick(["It was first described by {p} in {y}.", "{p} discovered it in {y}.",
                         "The species was found in {y} by {p}."], **kw),
              fid(s, "discovered_by"), fid(s, "discovery_year"))
        d.add(self.pick(["It lives {where}.", "The {an} is found {where}."], **kw),
              fid(s, "habitat"))
        self.filler(d, s, ["The {an} is shy and rarely seen.",
                           "Its numbers have fallen in recent years.",
                           "Young ones stay close to the nest."], **kw)
        return d

    def invention(self, i: Entity) -> Draft:
        a = i.attrs
        d = Draft(f"article:{i.id}", i.name, "article", i.id)
        kw = dict(inv=self.ref(i), p=self.ref(a["inventor"]), y=a["year"],
                  purpose=a["purpose"], mat=a["material"])
        if self.rng.random() < 0.5:
            d.lead.append(Sentence(self.pick(["{inv} is a device for {purpose}."], **kw),
                                   (fid(i, "purpose"),)))
            d.add(self.pick(["It was invented in {y} by {p}.", "{p} built the first one in {y}."],
                            **kw), fid(i, "inventor"), fid(i, "year"))
        else:
            d.lead.append(Sentence(self.pick(["{inv} was invented in {y} by {p}.",
                                              "{p} invented {inv} in {y}."], **kw),
                                   (fid(i, "inventor"), fid(i, "year"))))
            d.add(self.pick(["It was used for {purpose}.", "Its purpose was {purpose}."], **kw),
                  fid(i, "purpose"))
        d.add(self.pick(["Early models were made of {mat}.", "It was built from {mat}.",
                         "The frame was {mat}."], **kw), fid(i, "material"))
        self.filler(d, i, ["Copies of {inv} spread quickly.",
                           "Later versions were larger.",
                           "Few original examples survive."], **kw)
        return d

    def filler(self, d: Draft, e: Entity, templates: Sequence[str], **kw) -> None:
        """One or two sentences that state no tracked fact (texture, not knowledge)."""
        for t in self.rng.sample(list(templates), self.rng.randint(1, 2)):
            d.add(cap(t.format(**kw)))

    # -- list articles ------------------------------------------------------------------
    def pages(self, key: str, title: str, intro: str, rows: List[Sentence]) -> List[Draft]:
        out = []
        for k in range(0, len(rows), LIST_PAGE):
            part = rows[k:k + LIST_PAGE]
            t = title if len(rows) <= LIST_PAGE else f"{title} (part {k // LIST_PAGE + 1})"
            d = Draft(f"list:{key}:{k // LIST_PAGE}", t, "list", None,
                      lead=[Sentence(intro)], body=part)
            out.append(d)
        return out

    def lists(self) -> List[Draft]:
        w, rng, out = self.world, self.rng, []

        def grouped(kind: str, year_attr: str, unit: int):
            groups: Dict[int, List[Entity]] = {}
            for e in self.of_kind(kind):
                if year_attr in e.attrs:
                    groups.setdefault(int(e.attrs[year_attr]) // unit, []).append(e)
            for g in sorted(groups):
                yield g, sorted(groups[g], key=lambda e: (int(e.attrs[year_attr]), e.id))

        fmt = rng.choice
        for dec, people in grouped("person", "birth_year", 10):
            row = fmt(["- {name} ({b}-{dd}), {occ}, born in {city}.",
                       "- {b}: {name}, a {occ} from {city} (died {dd})."])
            rows = [Sentence(row.format(name=p.name, b=p.attrs["birth_year"],
                                        dd=p.attrs["death_year"], occ=p.attrs["occupation"],
                                        city=self.ref(p.attrs["birthplace"])),
                             tuple(fid(p, x) for x in ("birth_year", "death_year",
                                                       "occupation", "birthplace")))
                    for p in people]
            out += self.pages(f"births:{dec * 10}", f"Births in the {dec * 10}s",
                              f"People born between {dec * 10} and {dec * 10 + 9}.", rows)
        for cen, cities in grouped("city", "founded_year", 100):
            rows = []
            for c in cities:
                facts = [fid(c, "founded_year"), fid(c, "country")]
                text = f"- {c.name}, in {self.ref(c.attrs['country'])}, founded in {c.attrs['founded_year']}"
                if "founder" in c.attrs:
                    text += f" by {self.ref(c.attrs['founder'])}"
                    facts.append(fid(c, "founder"))
                rows.append(Sentence(text + ".", tuple(facts)))
            out += self.pages(f"cities:{cen + 1}", f"Cities founded in the {ordinal(cen + 1)} century",
                              "Towns and cities by the year of their foundation.", rows)
        for cen, orgs in grouped("organisation", "founded_year", 100):
            rows = [Sentence(f"- {o.name}: founded {o.attrs['founded_year']} by "
                             f"{self.ref(o.attrs['founder'])} in {self.ref(o.attrs['headquarters'])}; "
                             f"field: {o.attrs['field']}.",
                             (fid(o, "founded_year"), fid(o, "founder"), fid(o, "headquarters"),
                              fid(o, "field"))) for o in orgs]
            out += self.pages(f"orgs:{cen + 1}",
                              f"Organisations founded in the {ordinal(cen + 1)} century",
                              "Societies, guilds and companies with their founders and seats.",
                              rows)
        for cen, species in grouped("species", "discovery_year", 100):
            rows = [Sentence(f"- {s.name}: {s.attrs['colour']}, eats {s.attrs['diet']}, found at "
                             f"{self.ref(s.attrs['habitat'])}; described by "
                             f"{self.ref(s.attrs['discovered_by'])} in {s.attrs['discovery_year']}.",
                             tuple(fid(s, x) for x in ("colour", "diet", "habitat",
                                                       "discovered_by", "discovery_year")))
                    for s in species]
            out += self.pages(f"species:{cen + 1}",
                              f"Species described in the {ordinal(cen + 1)} century",
                              "Animals by the year of their first description.", rows)
        for cen, invs in grouped("invention", "year", 100):
            rows = [Sentence(f"- {i.name} ({i.attrs['year']}), by {self.ref(i.attrs['inventor'])}: "
                             f"a {i.attrs['material']} device for {i.attrs['purpose']}.",
                             tuple(fid(i, x) for x in ("year", "inventor", "material", "purpose")))
                    for i in invs]
            out += self.pages(f"inventions:{cen + 1}", f"Inventions of the {ordinal(cen + 1)} century",
                              "Devices by the year of their invention.", rows)
        rivers = sorted(self.of_kind("river"), key=lambda r: (-int(r.attrs["length_km"]), r.id))
        out += self.pages("rivers", "List of rivers by length", "Rivers, longest first.", [
            Sentence(f"- {self.ref(r)[4:]}: {r.attrs['length_km']} km, in {self.ref(r.attrs['country'])}.",
                     (fid(r, "length_km"), fid(r, "country"))) for r in rivers])
        mountains = sorted(self.of_kind("mountain"), key=lambda m: (-int(m.attrs["height_m"]), m.id))
        out += self.pages("mountains", "List of mountains by height", "Mountains, highest first.", [
            Sentence(f"- {self.ref(m)}: {m.attrs['height_m']} m, in {self.ref(m.attrs['country'])}.",
                     (fid(m, "height_m"), fid(m, "country"))) for m in mountains])
        countries = sorted(self.of_kind("country"), key=lambda n: n.name)
        out += self.pages("countries", "Countries of the world", "Capitals, languages and currencies.", [
            Sentence(f"- {n.name}: capital {self.ref(n.attrs['capital'])}, language "
                     f"{n.attrs['language']}, currency the {n.attrs['currency']}, state since "
                     f"{n.attrs['founded_year']}.",
                     tuple(fid(n, x) for x in ("capital", "language", "currency", "founded_year")))
            for n in countries])
        return out

    def all_drafts(self) -> List[Draft]:
        article = {"person": self.person, "city": self.city, "country": self.country,
                   "river": self.river, "mountain": self.mountain,
                   "organisation": self.organisation, "species": self.species,
                   "invention": self.invention}
        drafts = [article[e.kind](e) for e in self.world.values()]
        return drafts + self.lists()


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
