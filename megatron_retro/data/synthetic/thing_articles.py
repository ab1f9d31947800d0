"""The articles of organisations, species and inventions (see ``articles.py``)."""
from __future__ import annotations

from megatron_retro.data.synthetic.prose import Draft, Sentence, article, cap, fid, join_list
from megatron_retro.data.synthetic.world import Entity
from megatron_retro.data.synthetic.writer import Writer


class ThingArticles(Writer):
    """One method per kind: the entity -> its article's draft."""

    def organisation(self, o: Entity) -> Draft:
        a, w = o.attrs, self.world
        d = Draft(f"article:{o.id}", o.name, "article", o.id)
        kw = dict(o=self.ref(o), O=cap(self.ref(o)), y=a["founded_year"], field=a["field"])
        self.say_lead(d, ["{O} is an organisation devoted to {field}.", "{O} is a society working in {field}."],
                      [fid(o, "field")], **kw)
        self.say_naming(d, "f", a["founder"], 0.8, ["It was founded in {y} by {f}.",
                                                    "It was established in {y} by {f}.",
                                                    "{O} was set up in {y}; its founder was {f}."],
                        [fid(o, "founder"), fid(o, "founded_year")], **kw)
        self.say_naming(d, "hq", a["headquarters"], 0.6, ["Its headquarters are in {hq}.", "{O} has its seat in {hq}.",
                                                          "The society meets in {hq}."],
                        [fid(o, "headquarters")], **kw)
        if "leader" in a:
            self.say_naming(d, "l", a["leader"], 0.6, ["From {ly} it was led by {l}.",
                                                       "In {ly}, leadership passed to {l}."],
                            [fid(o, "leader"), fid(o, "leader_since")], ly=a["leader_since"], **kw)
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
        kw = dict(diet=a["diet"], y=a["discovery_year"], where=where, **self.species_words(s))
        lead = self.pick(["{Sp} is {a_col} {an} that feeds on {diet}.",
                          "{Sp} is a species of {an}, {col} in colour."], **kw)
        if a["diet"] in lead:
            d.lead.append(Sentence(lead, (fid(s, "colour"), fid(s, "diet"))))
        else:
            d.lead.append(Sentence(lead, (fid(s, "colour"),)))
            self.say(d, ["It feeds mainly on {diet}.", "Its diet consists of {diet}."], [fid(s, "diet")], **kw)
        self.say_naming(d, "p", a["discovered_by"], 0.8, ["It was first described in {y} by {p}.",
                                                          "It was discovered in {y} by {p}.",
                                                          "The species was found in {y} by {p}."],
                        [fid(s, "discovered_by"), fid(s, "discovery_year")], **kw)
        self.say(d, ["Adults grow to about {cm} centimetres.", "It reaches a length of {cm} centimetres."],
                 [fid(s, "length_cm")], cm=a["length_cm"], **kw)
        self.say(d, ["It lives {where}.", "The {an} is found {where}."], [fid(s, "habitat")] + hfacts, **kw)
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
            self.say_lead(d, ["{Inv} is a device for {purpose}."], [fid(i, "purpose")], **kw)
            self.say(d, ["It was invented in {y} by {p}.", "The first one was built in {y} by {p}."],
                     [fid(i, "inventor"), fid(i, "year")] + pfacts, **kw)
        else:
            self.say_lead(d, ["{Inv} was invented in {y} by {p}."], [fid(i, "inventor"), fid(i, "year")] + pfacts,
                          **kw)
            self.say(d, ["It was used for {purpose}.", "Its purpose was {purpose}."], [fid(i, "purpose")], **kw)
        if "manufacturer" in a:
            self.say_naming(d, "org", a["manufacturer"], 0.6, ["It was produced by {org}.",
                                                               "For many years it was made by {org}."],
                            [fid(i, "manufacturer")], **kw)
        self.say(d, ["Early models were made of {mat}.", "It was built from {mat}.", "The frame was {mat}."],
                 [fid(i, "material")], **kw)
        self.filler(d, ["Copies of {inv} spread quickly.", "Later versions were larger.",
                        "Few original examples survive.", "It needed two people to work it."],
                    k=(1, 2), **kw)
        self.compare(d, i)
        return d
