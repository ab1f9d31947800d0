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
