"""Renders the world (``world.py``) as encyclopedia documents in varied prose.

Every fact is written into several documents with different wording, as in a real
encyclopedia: the entity's own article, the articles of related entities (a city lists the
people born there, a person's article tells what they founded or discovered), descriptive
asides wherever an entity is mentioned ("Tarvenholm, a city of 12,400 people in Kelvaria"),
and the list pages of ``lists.py``. Each site has its own templates, several per fact, picked
at random; body sentences are shuffled. Each sentence records the ids of the facts it states
(``"<entity id>.<attribute>"``), so that the facts table and the gold documents of the QA pairs
come from what was actually written.

Split by purpose: ``prose.py`` (sentences, drafts, English helpers), ``writer.py`` (names, asides,
template picking), ``place_articles.py`` and ``thing_articles.py`` (one method per kind); this
module holds the person article and ``Renderer``, which writes one article per entity.
"""
from __future__ import annotations

import bisect
from typing import List

from megatron_retro.data.synthetic.place_articles import PlaceArticles
from megatron_retro.data.synthetic.prose import Draft, article, cap, fid, join_list
from megatron_retro.data.synthetic.thing_articles import ThingArticles
from megatron_retro.data.synthetic.world import Entity


class Renderer(PlaceArticles, ThingArticles):
    """Writes the drafts of all documents; ``rng`` decides templates, asides and orders."""

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
        self.say_lead(d, [
            "{name} ({b}-{dd}) was {a_occ} from {city}.",
            "{name} was {a_occ} of {country}. Born in {city} in {b}, {fam} died in {dd}.",
            "{name} (born {b} in {city}, died {dd}) was {a_occ} in {country}.",
            "{name} was {a_occ}, born in {b} in the city of {city}; {fam} died in {dd}.",
        ], life, **kw)
        self.say_naming(d, "town", city, 0.8, ["{fam} grew up in {town}.", "{fam} spent a childhood in {town}.",
                                               "The family of {fam} lived in {town}."], **kw)
        self.filler(d, ["The parents of {fam} were {par}.", "As a child {fam} {hobby}.",
                        "{fam} learned the trade of {a_occ} from an uncle.",
                        "{fam} was educated at home."],
                    k=(1, 1), par=rng.choice(["farmers", "weavers", "traders", "teachers",
                                              "fishers", "bakers"]),
                    hobby=rng.choice(["collected stones", "drew maps", "kept bees",
                                      "read every book in the house", "played the flute"]),
                    **kw)
        if "teacher" in a:
            self.say_naming(d, "t", a["teacher"], 0.7, ["{fam} studied under {t}.", "{fam} was taught by {t}.",
                                                        "The teacher of the young {fam} was {t}."],
                            [fid(p, "teacher")], **kw)
        pupils = [w[x] for x in p.links.get("pupil", [])]
        if pupils:
            d.add("Pupils of " + kw["fam"] + " included " + join_list(
                [f"{x.name}, {article(x.attrs['occupation'])}" for x in pupils]) + ".",
                [fid(x, k) for x in pupils for k in ("teacher", "occupation")])
        for oid in p.links.get("led", []):
            o = w[oid]
            self.say_naming(d, "org", o, 0.5, ["From {y}, {fam} led {org}.", "In {y} {fam} became head of {org}."],
                            [fid(o, "leader"), fid(o, "leader_since")], [fid(o, "leader")],
                            y=o.attrs["leader_since"], **kw)
        if "employer" in a:
            self.say_naming(d, "org", a["employer"], 0.7, [
                "{fam} worked for {org}.",
                "For most of a long career, {fam} was a member of {org}.",
                "As a young {occ}, {fam} joined {org}.",
            ], [fid(p, "employer")], [fid(p, "employer")], **kw)
        for oid in p.links.get("founded_org", []):
            o = w[oid]
            self.say(d, [
                "In {y}, {fam} founded {org}, devoted to {field}.",
                "{fam} established {org} in {y}; it works in {field}.",
                "{Org} was set up by {fam} in {y} to further {field}.",
            ], [fid(o, "founder"), fid(o, "founded_year"), fid(o, "field")],
                y=o.attrs["founded_year"], org=self.ref(o), Org=cap(self.ref(o)), field=o.attrs["field"], **kw)
            self.say_naming(d, "hq", o.attrs["headquarters"], 0.5, ["{fam} placed the seat of {org} in {hq}.",
                                                                    "As the home of {org}, {fam} chose {hq}."],
                            [fid(o, "headquarters")], org=self.ref(o), **kw)
        for cid in p.links.get("founded_city", []):
            c = w[cid]
            self.say(d, [
                "{fam} is remembered as the founder of {c}, established in {y}.",
                "In {y} {fam} founded the settlement of {c}.",
                "The city of {c} was founded by {fam} in {y}.",
            ], [fid(c, "founder"), fid(c, "founded_year")], c=self.ref(c), y=c.attrs["founded_year"], **kw)
        for sid in p.links.get("discovered", []):
            s = w[sid]
            self.say_naming(d, "sp", s, 0.7, [
                "In {y}, {fam} first described {sp}.",
                "In {y}, {fam} discovered {sp}.",
                "A journey in {y} led {fam} to discover {sp}.",
            ], [fid(s, "discovered_by"), fid(s, "discovery_year")], [fid(s, "discovered_by")],
                y=s.attrs["discovery_year"], **kw)
        for iid in p.links.get("invented", []):
            i = w[iid]
            self.say(d, [
                "In {y} {fam} built the first {iname}, {a_mat} device for {purpose}.",
                "{fam} invented {inv} in {y}; it was made of {mat} and used for {purpose}.",
                "{Inv}, a {mat} machine for {purpose}, was invented by {fam} in {y}.",
            ], [fid(i, "inventor"), fid(i, "year"), fid(i, "purpose"), fid(i, "material")],
                inv=self.ref(i), Inv=cap(self.ref(i)), iname=i.name, y=i.attrs["year"],
                purpose=i.attrs["purpose"], mat=i.attrs["material"], a_mat=article(i.attrs["material"]), **kw)
        for mid in p.links.get("climbed", []):
            m = w[mid]
            self.say_naming(d, "m", m, 0.7, [
                "In {y}, {fam} made the first ascent of {m}.",
                "In {y}, {fam} became the first to reach the summit of {m}.",
            ], [fid(m, "first_ascent_by"), fid(m, "first_ascent_year")], [fid(m, "first_ascent_by")],
                y=m.attrs["first_ascent_year"], **kw)
        self.say(d, ["The best-known work of {fam} is {work}, completed in {wy}.",
                     "In {wy} {fam} completed {work}.",
                     "{fam} is remembered above all for {work}, finished in {wy}."],
                 [fid(p, "work"), fid(p, "work_year")], work=a["work"], wy=a["work_year"], **kw)
        born = int(a["birth_year"])
        peers = [x for x in self.by_birth[bisect.bisect_left(self.births, born - 25):
                                          bisect.bisect_right(self.births, born + 25)]
                 if x is not p]  # contemporaries: born within 25 years, adults together
        for x in self.rng.sample(peers, min(3, len(peers))):
            self.say_naming(d, "o", x, 0.9, ["{fam} once met {o}.", "Among the friends of {fam} was {o}.",
                                             "{fam} exchanged letters with {o}.", "A rival of {fam} was {o}."], **kw)
        self.say_naming(d, "place", a["death_place"], 0.4, [
            "In {dd}, at the age of about {age}, {fam} died in {place}.",
            "{fam} died in {dd} in {place}.",
            "In {dd} {fam} died in {place}.",
        ], [fid(p, "death_year"), fid(p, "death_place")], **kw)
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

    def articles(self) -> List[Draft]:
        """One article per entity, in the world's order."""
        article_of = {"person": self.person, "city": self.city, "country": self.country,
                      "river": self.river, "mountain": self.mountain,
                      "organisation": self.organisation, "species": self.species,
                      "invention": self.invention}
        return [article_of[e.kind](e) for e in self.world.values()]

