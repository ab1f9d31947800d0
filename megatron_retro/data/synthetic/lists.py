"""List, timeline and history pages of the synthetic encyclopedia.

Each page restates facts already written in the articles (``articles.py``), grouped another
way: births by decade, events by decade, people by occupation and by country, foundations,
discoveries and inventions by century, rivers by length, mountains by height, countries, and
a dated history of each country. Long lists are cut into pages of ``LIST_PAGE`` entries.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

from megatron_retro.data.synthetic.articles import Renderer
from megatron_retro.data.synthetic.prose import Draft, Sentence, article, fid, ordinal
from megatron_retro.data.synthetic.world import Entity

LIST_PAGE = 25  # entries per list page


def pages(key: str, title: str, intro: str, rows: List[Sentence]) -> List[Draft]:
    out = []
    for k in range(0, len(rows), LIST_PAGE):
        part = rows[k:k + LIST_PAGE]
        t = title if len(rows) <= LIST_PAGE else f"{title} (part {k // LIST_PAGE + 1})"
        out.append(Draft(f"list:{key}:{k // LIST_PAGE}", t, "list", None,
                         lead=[Sentence(intro)], body=part))
    return out

def grouped(rd: Renderer, kind: str, year_attr: str, unit: int):
    groups: Dict[int, List[Entity]] = {}
    for e in rd.by_kind.get(kind, []):
        if year_attr in e.attrs:
            groups.setdefault(int(e.attrs[year_attr]) // unit, []).append(e)
    for g in sorted(groups):
        yield g, sorted(groups[g], key=lambda e: (int(e.attrs[year_attr]), e.id))

def events(rd: Renderer) -> List[Tuple[int, Sentence]]:
    """(year, sentence) for every dated event, for the decade timelines."""
    r, out = rd.ref, []
    for p in rd.by_kind.get("person", []):
        a = p.attrs
        out.append((int(a["birth_year"]), Sentence(
            f"{a['birth_year']}: birth of the {a['occupation']} {p.name} in {r(a['birthplace'])}.",
            (fid(p, "birth_year"), fid(p, "occupation"), fid(p, "birthplace")))))
        out.append((int(a["death_year"]), Sentence(
            f"{a['death_year']}: death of {p.name} in {r(a['death_place'])}, "
            f"born {a['birth_year']}.",
            (fid(p, "death_year"), fid(p, "death_place"), fid(p, "birth_year")))))
    for c in rd.by_kind.get("city", []):
        if "founder" in c.attrs:
            out.append((int(c.attrs["founded_year"]), Sentence(
                f"{c.attrs['founded_year']}: {r(c.attrs['founder'])} founds {c.name} "
                f"in {r(c.attrs['country'])}.",
                (fid(c, "founded_year"), fid(c, "founder"), fid(c, "country")))))
    for o in rd.by_kind.get("organisation", []):
        out.append((int(o.attrs["founded_year"]), Sentence(
            f"{o.attrs['founded_year']}: {r(o.attrs['founder'])} founds {r(o)} "
            f"in {r(o.attrs['headquarters'])}.",
            (fid(o, "founded_year"), fid(o, "founder"), fid(o, "headquarters")))))
    for s in rd.by_kind.get("species", []):
        out.append((int(s.attrs["discovery_year"]), Sentence(
            f"{s.attrs['discovery_year']}: {r(s.attrs['discovered_by'])} describes {r(s)}.",
            (fid(s, "discovery_year"), fid(s, "discovered_by")))))
    for i in rd.by_kind.get("invention", []):
        out.append((int(i.attrs["year"]), Sentence(
            f"{i.attrs['year']}: {r(i.attrs['inventor'])} invents {r(i)}.",
            (fid(i, "year"), fid(i, "inventor")))))
    for p in rd.by_kind.get("person", []):
        out.append((int(p.attrs["work_year"]), Sentence(
            f"{p.attrs['work_year']}: {p.name} completes {p.attrs['work']}.",
            (fid(p, "work_year"), fid(p, "work")))))
    for o in rd.by_kind.get("organisation", []):
        if "leader" in o.attrs:
            out.append((int(o.attrs["leader_since"]), Sentence(
                f"{o.attrs['leader_since']}: {r(o.attrs['leader'])} becomes head of {r(o)}.",
                (fid(o, "leader_since"), fid(o, "leader")))))
    for m in rd.by_kind.get("mountain", []):
        out.append((int(m.attrs["first_ascent_year"]), Sentence(
            f"{m.attrs['first_ascent_year']}: first ascent of {r(m)} by "
            f"{r(m.attrs['first_ascent_by'])}.",
            (fid(m, "first_ascent_year"), fid(m, "first_ascent_by")))))
    return out

def list_drafts(rd: Renderer) -> List[Draft]:
    r, rng, out = rd.ref, rd.rng, []
    for dec, people in grouped(rd, "person", "birth_year", 10):
        row = rng.choice(["- {name} ({b}-{dd}), {occ}, born in {city}.",
                          "- {b}: {name}, {a_occ} from {city} (died {dd})."])
        rows = [Sentence(row.format(name=p.name, b=p.attrs["birth_year"],
                                    dd=p.attrs["death_year"], occ=p.attrs["occupation"],
                                    a_occ=article(p.attrs["occupation"]),
                                    city=r(p.attrs["birthplace"])),
                         tuple(fid(p, x) for x in ("birth_year", "death_year",
                                                   "occupation", "birthplace")))
                for p in people]
        out += pages(f"births:{dec * 10}", f"Births in the {dec * 10}s",
                          f"People born between {dec * 10} and {dec * 10 + 9}.", rows)
    by_decade: Dict[int, List[Tuple[int, Sentence]]] = {}
    for year, s in events(rd):
        by_decade.setdefault(year // 10, []).append((year, s))
    for dec in sorted(by_decade):
        rows = [s for _, s in sorted(by_decade[dec], key=lambda ys: ys[0])]
        out += pages(f"events:{dec * 10}", f"The {dec * 10}s",
                          f"Events of the years {dec * 10} to {dec * 10 + 9}.", rows)
    by_occ: Dict[str, List[Entity]] = {}
    for p in rd.by_kind.get("person", []):
        by_occ.setdefault(p.attrs["occupation"], []).append(p)
    for occ in sorted(by_occ):
        rows = []
        for p in sorted(by_occ[occ], key=lambda p: (int(p.attrs["birth_year"]), p.id)):
            a, facts = p.attrs, [fid(p, "birth_year"), fid(p, "death_year")]
            text = f"- {p.name} ({a['birth_year']}-{a['death_year']})"
            if "employer" in a:
                text += f", member of {r(a['employer'])}"
                facts.append(fid(p, "employer"))
            if "teacher" in a:
                text += f", pupil of {r(a['teacher'])}"
                facts.append(fid(p, "teacher"))
            rows.append(Sentence(text + ".", tuple(facts)))
        out += pages(f"occupation:{occ}", f"List of {occ}s",
                          f"Notable {occ}s, by year of birth.", rows)
    for n in rd.by_kind.get("country", []):
        people = sorted((rd.world[p] for c in n.links.get("city", [])
                         for p in rd.world[c].links.get("born_here", [])),
                        key=lambda p: (p.name, p.id))
        rows = [Sentence(f"- {p.name}, {p.attrs['occupation']}, of {r(p.attrs['birthplace'])}.",
                         (fid(p, "occupation"), fid(p, "birthplace"))) for p in people]
        if rows:
            out += pages(f"people:{n.id}", f"People of {n.name}",
                              f"People born in {n.name}, by name.", rows)
    for cen, people in grouped(rd, "person", "work_year", 100):
        rows = [Sentence(f"- {p.attrs['work']} ({p.attrs['work_year']}), by the "
                         f"{p.attrs['occupation']} {p.name}.",
                         (fid(p, "work"), fid(p, "work_year"), fid(p, "occupation")))
                for p in people]
        out += pages(f"works:{cen + 1}", f"Works of the {ordinal(cen + 1)} century",
                          "Books, maps and other works by the year they were finished.", rows)
    for n in rd.by_kind.get("country", []):
        out.append(history(rd, n))
    for cen, cities in grouped(rd, "city", "founded_year", 100):
        rows = []
        for c in cities:
            facts = [fid(c, "founded_year"), fid(c, "country")]
            text = f"- {c.name}, in {r(c.attrs['country'])}, founded in {c.attrs['founded_year']}"
            if "founder" in c.attrs:
                text += f" by {r(c.attrs['founder'])}"
                facts.append(fid(c, "founder"))
            rows.append(Sentence(text + ".", tuple(facts)))
        out += pages(f"cities:{cen + 1}", f"Cities founded in the {ordinal(cen + 1)} century",
                          "Towns and cities by the year of their foundation.", rows)
    for cen, orgs in grouped(rd, "organisation", "founded_year", 100):
        rows = [Sentence(f"- {o.name}: founded {o.attrs['founded_year']} by "
                         f"{r(o.attrs['founder'])} in {r(o.attrs['headquarters'])}; "
                         f"field: {o.attrs['field']}.",
                         (fid(o, "founded_year"), fid(o, "founder"), fid(o, "headquarters"),
                          fid(o, "field"))) for o in orgs]
        out += pages(f"orgs:{cen + 1}",
                          f"Organisations founded in the {ordinal(cen + 1)} century",
                          "Societies, guilds and companies with their founders and seats.",
                          rows)
    for cen, species in grouped(rd, "species", "discovery_year", 100):
        rows = [Sentence(f"- {s.name}: {s.attrs['colour']}, {s.attrs['length_cm']} cm, eats "
                         f"{s.attrs['diet']}, found at {r(s.attrs['habitat'])}; described by "
                         f"{r(s.attrs['discovered_by'])} in {s.attrs['discovery_year']}.",
                         tuple(fid(s, x) for x in ("colour", "length_cm", "diet", "habitat",
                                                   "discovered_by", "discovery_year")))
                for s in species]
        out += pages(f"species:{cen + 1}",
                          f"Species described in the {ordinal(cen + 1)} century",
                          "Animals by the year of their first description.", rows)
    for cen, invs in grouped(rd, "invention", "year", 100):
        rows = [Sentence(f"- {i.name} ({i.attrs['year']}), by {r(i.attrs['inventor'])}: "
                         f"{article(i.attrs['material'])} device for {i.attrs['purpose']}.",
                         tuple(fid(i, x) for x in ("year", "inventor", "material", "purpose")))
                for i in invs]
        out += pages(f"inventions:{cen + 1}", f"Inventions of the {ordinal(cen + 1)} century",
                          "Devices by the year of their invention.", rows)
    rivers = sorted(rd.by_kind.get("river", []),
                    key=lambda x: (-int(x.attrs["length_km"]), x.id))
    out += pages("rivers", "List of rivers by length", "Rivers, longest first.", [
        Sentence(f"- {r(x)[4:]}: {x.attrs['length_km']} km, in {r(x.attrs['country'])}, "
                 f"rising on {r(x.attrs['source'])}.",
                 (fid(x, "length_km"), fid(x, "country"), fid(x, "source"))) for x in rivers])
    mountains = sorted(rd.by_kind.get("mountain", []),
                       key=lambda x: (-int(x.attrs["height_m"]), x.id))
    out += pages("mountains", "List of mountains by height", "Mountains, highest first.", [
        Sentence(f"- {r(x)}: {x.attrs['height_m']} m, in {r(x.attrs['country'])}; first "
                 f"climbed {x.attrs['first_ascent_year']}.",
                 (fid(x, "height_m"), fid(x, "country"), fid(x, "first_ascent_year")))
        for x in mountains])
    countries = sorted(rd.by_kind.get("country", []), key=lambda x: x.name)
    out += pages("countries", "Countries of the world", "Capitals, languages and currencies.", [
        Sentence(f"- {x.name}: capital {r(x.attrs['capital'])}, language "
                 f"{x.attrs['language']}, currency the {x.attrs['currency']}, state since "
                 f"{x.attrs['founded_year']}.",
                 tuple(fid(x, k) for k in ("capital", "language", "currency", "founded_year")))
        for x in countries])
    return out

def history(rd: Renderer, n: Entity) -> Draft:
    """'History of <country>': dated events in its cities and mountains, in order."""
    w, r, rows = rd.world, rd.ref, []
    for cid in n.links.get("city", []):
        c = w[cid]
        y = c.attrs["founded_year"]
        if "founder" in c.attrs:
            rows.append((int(y), Sentence(f"In {y}, {r(c.attrs['founder'])} founded {c.name}.",
                                          (fid(c, "founded_year"), fid(c, "founder")))))
        else:
            rows.append((int(y), Sentence(f"{c.name} was first settled in {y}.",
                                          (fid(c, "founded_year"),))))
        for oid in c.links.get("org_here", []):
            o = w[oid]
            rows.append((int(o.attrs["founded_year"]), Sentence(
                f"In {o.attrs['founded_year']}, {r(o)} was founded in {c.name}.",
                (fid(o, "founded_year"), fid(o, "headquarters")))))
        for pid in c.links.get("born_here", [])[:6]:
            p = w[pid]
            rows.append((int(p.attrs["birth_year"]), Sentence(
                f"In {p.attrs['birth_year']}, the future {p.attrs['occupation']} {p.name} "
                f"was born in {c.name}.",
                (fid(p, "birth_year"), fid(p, "occupation"), fid(p, "birthplace")))))
    for mid in n.links.get("mountain", []):
        m = w[mid]
        rows.append((int(m.attrs["first_ascent_year"]), Sentence(
            f"In {m.attrs['first_ascent_year']}, {r(m.attrs['first_ascent_by'])} first "
            f"climbed {r(m)}.", (fid(m, "first_ascent_year"), fid(m, "first_ascent_by")))))
    rows.sort(key=lambda ys: ys[0])
    return Draft(f"list:history:{n.id}", f"History of {n.name}", "list", None,
                 lead=[Sentence(f"{n.name} became a state in {n.attrs['founded_year']}.",
                                (fid(n, "founded_year"),))],
                 body=[s for _, s in rows])
