"""The knowledge of the synthetic encyclopedia: fictional entities and their attributes.

``build_world(num_entities, rng)`` draws countries, cities, rivers, mountains, people,
organisations, species and inventions, and links them (a person is born in a city, founds an
organisation, discovers a species, ...). Attribute values are plain strings; a value that is
another entity is its entity id (``"city:0012"``). Dates are kept plausible (a founder is born
20-60 years before the founding). Rendering to prose lives in ``articles.py``.
"""
from __future__ import annotations

import bisect
import random
from dataclasses import dataclass, field
from typing import Dict, List

from megatron_retro.data.synthetic.names import (CITY_SUFFIXES, COUNTRY_SUFFIXES, LANGUAGE_SUFFIXES,
                                       NameBank)

KINDS = ["country", "city", "river", "mountain", "organisation", "species", "invention", "person"]
# Share of each kind in the entity count (people take the rest); minimum 1 of each.
_SHARES = {"country": 0.03, "city": 0.15, "river": 0.07, "mountain": 0.07,
           "organisation": 0.10, "species": 0.10, "invention": 0.08}

OCCUPATIONS = ["cartographer", "astronomer", "botanist", "engineer", "poet", "merchant",
               "physician", "architect", "composer", "painter", "explorer", "mathematician",
               "chemist", "historian", "sculptor", "philosopher", "navigator", "weaver",
               "clockmaker", "linguist", "surveyor", "glassblower", "printer", "diplomat"]
FIELDS = ["astronomy", "shipbuilding", "medicine", "cartography", "textiles", "banking",
          "printing", "glassmaking", "botany", "music", "mining", "clockmaking", "education",
          "law", "brewing", "metallurgy", "navigation", "pottery"]
ORG_TYPES = ["Guild", "Society", "Company", "Institute", "Academy", "Consortium", "House",
             "League", "Collective", "Works", "Circle", "Union"]
ANIMALS = ["finch", "moth", "beetle", "newt", "heron", "trout", "lizard", "bat", "owl", "frog",
           "snail", "crab", "eel", "wren", "hare", "vole", "toad", "swift", "carp", "gecko"]
COLOURS = ["red", "blue", "green", "yellow", "orange", "violet", "grey", "brown", "black",
           "white", "silver", "amber", "crimson", "teal"]
DIETS = ["insects", "seeds", "nectar", "fish", "algae", "small rodents", "leaves", "fruit",
         "carrion", "plankton", "worms", "mosses"]
DEVICES = ["loom", "lamp", "engine", "press", "compass", "clock", "pump", "telescope", "kiln",
           "lens", "valve", "sextant", "furnace", "bellows", "winch", "scale", "still", "drill"]
PURPOSES = ["measuring tides", "grinding grain", "spinning wool", "signalling ships",
            "purifying water", "recording sound", "heating glass", "mapping stars", "drying tea",
            "weighing ore", "lifting stone", "cooling cellars", "cutting gems", "pressing oil",
            "counting coins", "sorting letters", "draining mines", "timing races"]
WORK_NOUNS = ["Letters", "Atlas", "Songs", "Tables", "Voyage", "Chronicle", "Garden",
              "Treatise", "Harbour", "Towers", "Book", "Winter", "Maps", "Elements", "Dialogues"]
MATERIALS = ["bronze", "oak", "glass", "copper", "iron", "brass", "ceramic", "whalebone",
             "silver", "cedar", "pewter", "walnut", "tin", "ivory"]


@dataclass
class Entity:
    """One fictional thing with a unique name; ``attrs`` holds its facts (see module doc)."""

    id: str      # "<kind>:<4-digit index>", e.g. "person:0007"
    kind: str
    name: str    # display name as it opens a sentence, e.g. "the Ossel River"
    attrs: Dict[str, str] = field(default_factory=dict)
    # Reverse links filled by build_world (e.g. a city's "born_here" people); not facts.
    links: Dict[str, List[str]] = field(default_factory=dict)

    def link(self, key: str, other_id: str) -> None:
        self.links.setdefault(key, []).append(other_id)


def kind_counts(num_entities: int) -> Dict[str, int]:
    """How many entities of each kind a world of ``num_entities`` holds (sums to it)."""
    if num_entities < len(KINDS):
        raise ValueError(f"num_entities={num_entities}: must be >= {len(KINDS)}")
    counts = {k: max(1, round(s * num_entities)) for k, s in _SHARES.items()}
    counts["person"] = num_entities - sum(counts.values())
    return counts


def build_world(num_entities: int, rng: random.Random) -> Dict[str, Entity]:
    """All entities keyed by id, in a deterministic insertion order."""
    counts = kind_counts(num_entities)
    names = NameBank(rng)
    world: Dict[str, Entity] = {}
    by_kind: Dict[str, List[Entity]] = {k: [] for k in KINDS}

    def new(kind: str, name: str) -> Entity:
        e = Entity(f"{kind}:{len(by_kind[kind]):04d}", kind, name)
        world[e.id] = e
        by_kind[kind].append(e)
        return e

    for _ in range(counts["country"]):
        c = new("country", names.word(2, 2, COUNTRY_SUFFIXES))
        c.attrs["language"] = names.word(2, 2, LANGUAGE_SUFFIXES)
        c.attrs["currency"] = names.word(2, 2).lower()
        c.attrs["founded_year"] = str(rng.randint(900, 1700))
    countries = by_kind["country"]
    for _ in range(counts["city"]):
        new("city", names.word(2, 3, CITY_SUFFIXES))
    for _ in range(counts["river"]):
        new("river", names.word(2, 2))
    for _ in range(counts["mountain"]):
        new("mountain", names.word(2, 2))
    for _ in range(counts["organisation"]):
        new("organisation", f"{names.word(2, 3)} {rng.choice(ORG_TYPES)}")
    for _ in range(counts["species"]):
        new("species", f"{names.word(2, 2)} {rng.choice(ANIMALS)}")
    for _ in range(counts["invention"]):
        new("invention", f"{names.word(2, 2)} {rng.choice(DEVICES)}")
    for _ in range(counts["person"]):
        new("person", names.person())

    cities, rivers = by_kind["city"], by_kind["river"]
    mountains, people = by_kind["mountain"], by_kind["person"]

    # Geography: every city, river and mountain lies in a country; each country has a capital.
    for group in (cities, rivers, mountains):
        for i, e in enumerate(group):
            country = countries[i % len(countries)] if i < len(countries) else rng.choice(countries)
            e.attrs["country"] = country.id
            country.link(e.kind, e.id)
    for country in countries:
        capital = rng.choice([world[c] for c in country.links["city"]])
        country.attrs["capital"] = capital.id
        capital.link("capital_of", country.id)
    for m in mountains:
        m.attrs["height_m"] = str(rng.randint(800, 7900))
    for r in rivers:
        r.attrs["length_km"] = str(rng.randint(40, 2900))
        home = [world[m] for m in world[r.attrs["country"]].links.get("mountain", [])]
        source = rng.choice(home or mountains)
        r.attrs["source"] = source.id
        source.link("river_source", r.id)
    for c in cities:
        c.attrs["population"] = f"{rng.randint(800, 900_000):,}"
        home = [world[x] for x in world[c.attrs["country"]].links.get("river", [])]
        if home and rng.random() < 0.7:
            river = rng.choice(home)
            c.attrs["river"] = river.id
            river.link("city", c.id)

    # People: a life span and an occupation first (founding dates depend on them).
    for p in people:
        birth = rng.randint(1480, 1880)
        p.attrs["birth_year"] = str(birth)
        p.attrs["death_year"] = str(birth + rng.randint(30, 92))
        p.attrs["occupation"] = rng.choice(OCCUPATIONS)
        p.attrs["work"] = f"{rng.choice(WORK_NOUNS)} of {names.word(2, 2)}"
        p.attrs["work_year"] = str(min(birth + rng.randint(22, 60), int(p.attrs["death_year"])))

    def year_in_life(person: Entity) -> int:
        return int(person.attrs["birth_year"]) + rng.randint(20, 29)

    def existing(group: List[Entity], attr: str, year: int) -> List[Entity]:
        """Members of ``group`` whose ``attr`` year is <= ``year`` (else the oldest one),
        in the order of ``group``."""
        ok = [e for e in group if int(e.attrs[attr]) <= year]
        return ok or [min(group, key=lambda e: (int(e.attrs[attr]), e.id))]

    # Cities: founded by a person in their twenties, or in older times.
    for c in cities:
        if rng.random() < 0.6:
            founder = rng.choice(people)
            c.attrs["founder"] = founder.id
            c.attrs["founded_year"] = str(year_in_life(founder))
            founder.link("founded_city", c.id)
        else:
            c.attrs["founded_year"] = str(rng.randint(600, 1500))
    distance: Dict[tuple, str] = {}  # one distance per pair of cities, whichever way round
    for country in countries:  # a city's nearest neighbour in the same country
        home = [world[x] for x in country.links["city"]]
        for c in home:
            others = [x for x in home if x is not c]
            if others:
                other = rng.choice(others)
                pair = tuple(sorted((c.id, other.id)))
                distance.setdefault(pair, str(rng.randint(5, 400)))
                c.attrs["neighbour"] = other.id
                c.attrs["distance_km"] = distance[pair]
                other.link("neighbour_of", c.id)
    # Born in and died in a city that existed at the time; a teacher born 15-45 years earlier.
    by_birth = sorted(people, key=lambda e: (int(e.attrs["birth_year"]), e.id))
    births = [int(e.attrs["birth_year"]) for e in by_birth]
    for p in people:
        birth, death = int(p.attrs["birth_year"]), int(p.attrs["death_year"])
        city = rng.choice(existing(cities, "founded_year", birth))
        p.attrs["birthplace"] = city.id
        city.link("born_here", p.id)
        place = city if rng.random() < 0.3 else rng.choice(existing(cities, "founded_year", death))
        p.attrs["death_place"] = place.id
        place.link("died_here", p.id)
        teachers = [t for t in by_birth[bisect.bisect_left(births, birth - 45):
                                        bisect.bisect_right(births, birth - 15)]
                    if int(t.attrs["death_year"]) >= birth + 12]  # alive to teach
        if teachers and rng.random() < 0.7:
            teacher = rng.choice(teachers)
            p.attrs["teacher"] = teacher.id
            teacher.link("pupil", p.id)

    # Organisations, discoveries, inventions, first ascents: a person in their twenties.
    orgs = by_kind["organisation"]
    for o in orgs:
        founder = rng.choice(people)
        year = year_in_life(founder)
        o.attrs["founder"] = founder.id
        o.attrs["founded_year"] = str(year)
        o.attrs["headquarters"] = rng.choice(existing(cities, "founded_year", year)).id
        o.attrs["field"] = rng.choice(FIELDS)
        founder.link("founded_org", o.id)
        world[o.attrs["headquarters"]].link("org_here", o.id)
        leaders = [p for p in people if p is not founder
                   and int(p.attrs["birth_year"]) + 30 >= year
                   and int(p.attrs["birth_year"]) + 30 <= int(p.attrs["death_year"])]
        if leaders and rng.random() < 0.8:
            leader = rng.choice(leaders)
            o.attrs["leader"] = leader.id
            o.attrs["leader_since"] = str(int(leader.attrs["birth_year"]) + rng.randint(30, 39))
            if int(o.attrs["leader_since"]) > int(leader.attrs["death_year"]):
                o.attrs["leader_since"] = leader.attrs["death_year"]
            leader.link("led", o.id)
    for s in by_kind["species"]:
        finder = rng.choice(people)
        s.attrs["discovered_by"] = finder.id
        s.attrs["discovery_year"] = str(year_in_life(finder))
        habitat = rng.choice(rivers + mountains)
        s.attrs["habitat"] = habitat.id
        s.attrs["colour"] = rng.choice(COLOURS)
        s.attrs["diet"] = rng.choice(DIETS)
        s.attrs["length_cm"] = str(rng.randint(2, 180))
        finder.link("discovered", s.id)
        habitat.link("species", s.id)
    for inv in by_kind["invention"]:
        inventor = rng.choice(people)
        year = year_in_life(inventor)
        inv.attrs["inventor"] = inventor.id
        inv.attrs["year"] = str(year)
        inv.attrs["purpose"] = rng.choice(PURPOSES)
        inv.attrs["material"] = rng.choice(MATERIALS)
        inventor.link("invented", inv.id)
        makers = [o for o in orgs if int(o.attrs["founded_year"]) <= year + 30]
        if makers and rng.random() < 0.7:
            maker = rng.choice(makers)
            inv.attrs["manufacturer"] = maker.id
            maker.link("made", inv.id)
    for m in mountains:
        climber = rng.choice(people)
        m.attrs["first_ascent_by"] = climber.id
        m.attrs["first_ascent_year"] = str(year_in_life(climber))
        climber.link("climbed", m.id)
    # Employers: most people were members of an organisation that existed in their lifetime.
    for p in people:
        birth = int(p.attrs["birth_year"])
        options = [o for o in orgs if birth - 150 <= int(o.attrs["founded_year"]) <= birth + 40]
        if options and rng.random() < 0.6:
            org = rng.choice(options)
            p.attrs["employer"] = org.id
            org.link("member", p.id)
    return world
