"""The articles of places: cities, countries, rivers and mountains (see ``articles.py``)."""
from __future__ import annotations

from megatron_retro.data.synthetic.prose import Draft, Sentence, article, cap, fid, join_list
from megatron_retro.data.synthetic.world import Entity
from megatron_retro.data.synthetic.writer import Writer


class PlaceArticles(Writer):
    """One method per place kind: the entity -> its article's draft."""

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
