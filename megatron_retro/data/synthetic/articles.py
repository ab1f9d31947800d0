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
from megatron_retro.data.synthetic.prose import Draft, Sentence, article, cap, fid, join_list
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

    def articles(self) -> List[Draft]:
        """One article per entity, in the world's order."""
        article_of = {"person": self.person, "city": self.city, "country": self.country,
                      "river": self.river, "mountain": self.mountain,
                      "organisation": self.organisation, "species": self.species,
                      "invention": self.invention}
        return [article_of[e.kind](e) for e in self.world.values()]

