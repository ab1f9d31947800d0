"""The articles of places: cities, countries, rivers and mountains (see ``articles.py``)."""
from __future__ import annotations

from megatron_retro.data.synthetic.prose import Draft, article, cap, fid, join_list
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
            self.say_lead(d, ["{c} is a city in {country}.", "{c} is a town in the country of {country}."],
                          [fid(c, "country")], **kw)
            self.say(d, ["About {pop} people live in {c}.", "Its population is {pop}.", "{c} has {pop} inhabitants."],
                     [fid(c, "population")], **kw)
        else:
            self.say_lead(d, ["{c} is a city of {pop} inhabitants in {country}.",
                              "{c}, a town of {country}, has a population of {pop}."],
                          [fid(c, "country"), fid(c, "population")], **kw)
        if "river" in a:
            self.say_naming(d, "r", a["river"], 0.7, ["It lies on the banks of {r}.", "The town stands on {r}.",
                                                      "{c} was built where the land meets {r}."],
                            [fid(c, "river")], **kw)
        if "founder" in a:
            self.say_naming(d, "f", a["founder"], 0.7, ["{c} was founded in {y} by {f}.",
                                                        "The settlement was founded in {y} by {f}.",
                                                        "The town traces its origin to {y}; its founder was {f}."],
                            [fid(c, "founded_year"), fid(c, "founder")], **kw)
        else:
            self.say(d, ["{c} was founded in {y}.", "The town dates from {y}.", "{c} was first settled in {y}."],
                     [fid(c, "founded_year")], **kw)
        country = w[a["country"]]
        for nid in c.links.get("capital_of", []):
            n = w[nid]
            self.say(d, [
                "{c} is the capital of {n}, whose people speak {lang}.",
                "As the capital of {n}, {c} is the seat of its government; {lang} is spoken in its streets.",
            ], [fid(n, "capital"), fid(n, "language")], n=n.name, lang=n.attrs["language"], **kw)
        if not c.links.get("capital_of"):
            self.say_naming(d, "n", country, 0.8, ["{c} belongs to {n}.", "The town is part of {n}."],
                            [fid(c, "country")], [fid(country, "currency")], **kw)
        people = [w[x] for x in c.links.get("born_here", [])]
        if len(people) > 3:
            d.add(f"Notable people born in {c.name} include " + join_list(
                [f"{p.name} (born {p.attrs['birth_year']}), {article(p.attrs['occupation'])}"
                 for p in people]) + ".",
                [fid(p, x) for p in people for x in ("birthplace", "birth_year", "occupation")])
        else:
            for p in people:
                self.say(d, ["The {occ} {name} was born here in {b}.", "{name}, {a_occ}, was born in {c} in {b}."],
                         [fid(p, "birthplace"), fid(p, "birth_year"), fid(p, "occupation")],
                         occ=p.attrs["occupation"], a_occ=article(p.attrs["occupation"]), name=p.name,
                         b=p.attrs["birth_year"], **kw)
        dead = [w[x] for x in c.links.get("died_here", [])]
        if len(dead) > 3:
            d.add(f"Among those who died in {c.name} are " + join_list(
                [f"{p.name} ({p.attrs['death_year']})" for p in dead]) + ".",
                [fid(p, x) for p in dead for x in ("death_place", "death_year")])
        else:
            for p in dead:
                self.say(d, ["{name} died in {c} in {dd}.", "In {dd}, {name} died here."],
                         [fid(p, "death_place"), fid(p, "death_year")], name=p.name, dd=p.attrs["death_year"], **kw)
        if "neighbour" in a:
            self.say(d, ["{c} lies {km} kilometres from {nb}.", "The nearest town, {nb}, is {km} kilometres away."],
                     [fid(c, "neighbour"), fid(c, "distance_km")], km=a["distance_km"], nb=self.ref(a["neighbour"]),
                     **kw)
        for oid in c.links.get("neighbour_of", []):
            o = w[oid]
            self.say(d, ["{o} lies {km} kilometres away.", "From {o} it is {km} kilometres to {c}."],
                     [fid(o, "neighbour"), fid(o, "distance_km")], o=o.name, km=o.attrs["distance_km"], **kw)
        for oid in c.links.get("org_here", []):
            headquarters = [fid(w[oid], "headquarters")]
            self.say_naming(d, "o", oid, 0.7, ["{c} is home to the headquarters of {o}.",
                                               "The town is the seat of {o}."], headquarters, headquarters, **kw)
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
        self.say_lead(d, [
            "{n} is a country founded in {y}.",
            "{n} is a nation whose history as a state begins in {y}.",
            "{n} became a state in {y}.",
        ], [fid(n, "founded_year")], **kw)
        self.say_naming(d, "cap", a["capital"], 0.8, ["Its capital is {cap}.", "The capital of {n} is {cap}.",
                                                      "The seat of government is {cap}."],
                        [fid(n, "capital")], [fid(w[a["capital"]], "country")], **kw)
        self.say(d, ["The official language of {n} is {lang}.", "Most people in {n} speak {lang}."],
                 [fid(n, "language")], **kw)
        self.say(d, ["The currency of {n} is the {cur}.", "Trade in {n} is conducted in the {cur}."],
                 [fid(n, "currency")], **kw)
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
        self.say_lead(d, ["{R} is a river in {n}.", "{R} is one of the rivers of {n}."], [fid(r, "country")], **kw)
        self.say(d, ["It is {km} kilometres long.", "The river runs for {km} kilometres.",
                     "{R} has a length of {km} kilometres."], [fid(r, "length_km")], **kw)
        self.say_naming(d, "m", a["source"], 0.7, ["It rises on the slopes of {m}.", "Its source lies on {m}.",
                                                   "{R} springs from {m}."], [fid(r, "source")], **kw)
        cities = [w[x] for x in r.links.get("city", [])]
        if cities:
            self.say(d, ["Cities on {r} include {cs}.", "{R} passes {cs}."],
                     [fid(x, k) for x in cities for k in ("river", "population")],
                     cs=join_list([f"{x.name} ({x.attrs['population']} people)" for x in cities]), **kw)
        for sid in r.links.get("species", []):
            s = w[sid]
            self.say(d, ["{R} is home to {sp}, {a_col} {an} that feeds on {diet}.",
                         "{Sp}, which is {col}, lives along {r} and eats {diet}."],
                     [fid(s, "habitat"), fid(s, "colour"), fid(s, "diet")], diet=s.attrs["diet"],
                     **self.species_words(s), **kw)
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
            self.say_lead(d, ["{m} is a mountain in {n}, {h} metres high."],
                          [fid(m, "country"), fid(m, "height_m")], **kw)
        else:
            self.say_lead(d, ["{m} is a mountain in {n}.", "{m} is a peak of {n}."], [fid(m, "country")], **kw)
            self.say(d, ["It rises to {h} metres.", "Its summit stands {h} metres above the sea."],
                     [fid(m, "height_m")], **kw)
        self.say_naming(d, "p", a["first_ascent_by"], 0.8, ["It was first climbed in {y} by {p}.",
                                                            "The summit was first reached in {y} by {p}.",
                                                            "The first ascent was made in {y} by {p}."],
                        [fid(m, "first_ascent_by"), fid(m, "first_ascent_year")], **kw)
        for rid in m.links.get("river_source", []):
            rv = w[rid]
            self.say(d, ["{R}, {km} kilometres long, rises on its slopes.",
                         "The source of {r} lies on {m}; the river is {km} kilometres long."],
                     [fid(rv, "source"), fid(rv, "length_km")],
                     r=self.ref(rv), R=cap(self.ref(rv)), km=rv.attrs["length_km"], **kw)
        for sid in m.links.get("species", []):
            s = w[sid]
            self.say(d, ["{Sp}, {a_col} {an}, lives on its slopes.",
                         "The slopes of {m} are home to {sp}, which is {col}."],
                     [fid(s, "habitat"), fid(s, "colour")], **self.species_words(s), **kw)
        self.filler(d, ["Snow lies on {m} for half the year.",
                        "Shepherds graze flocks on the lower slopes of {m}.",
                        "The path to the summit of {m} is steep.",
                        "Storms often hide the top of {m}."], k=(1, 3), **kw)
        self.compare(d, m)
        return d
