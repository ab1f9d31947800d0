"""Pronounceable made-up names for the synthetic encyclopedia (seeded, globally unique).

Names are built from syllables (onset + vowel + coda) so that they read like words of an
unknown language; a ``NameBank`` hands out names that are unique over the whole world *as
words*: no name word equals another, so an answer can be found in a text by word matching.
"""
from __future__ import annotations

import random
from typing import Set

_ONSETS = ["b", "d", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br",
           "dr", "kr", "gr", "tr", "th", "sh", "st", "sk", "vr", "j", "c", "w", "fl", "pl"]
_VOWELS = ["a", "e", "i", "o", "u", "a", "e", "o", "ai", "ei", "ou", "ia", "ae", "y"]
_CODAS = ["", "", "", "n", "r", "l", "s", "th", "m", "k", "nd", "rn", "st", "v", "sh", "x"]

# Suffixes that give a kind of place its flavour (a city named "Tarvenholm").
CITY_SUFFIXES = ["", "", "", "holm", "port", "mere", "vale", "ford", "wick", "stead", "by", "gard"]
COUNTRY_SUFFIXES = ["ia", "and", "ara", "esh", "istan", "ora", "uvia", "enland"]
LANGUAGE_SUFFIXES = ["ic", "ese", "an", "i", "ish", "ol"]


class NameBank:
    """Draws unique capitalised names from a seeded ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: Set[str] = set()

    def _syllable(self) -> str:
        r = self.rng
        return r.choice(_ONSETS) + r.choice(_VOWELS) + r.choice(_CODAS)

    def _word(self, min_syl: int, max_syl: int, suffix: str = "") -> str:
        n = self.rng.randint(min_syl, max_syl)
        word = "".join(self._syllable() for _ in range(n)) + suffix
        return word[:1].upper() + word[1:]

    def word(self, min_syl: int = 2, max_syl: int = 3, suffixes=("",)) -> str:
        """A new word not handed out before (case-insensitive)."""
        for _ in range(10_000):
            w = self._word(min_syl, max_syl, self.rng.choice(list(suffixes)))
            if 4 <= len(w) <= 14 and w.lower() not in self.used:
                self.used.add(w.lower())
                return w
        raise RuntimeError("name space exhausted")  # pragma: no cover - 30^3 x 14^3 names

    def person(self) -> str:
        """'Given Family', both unique words."""
        return f"{self.word(1, 2)} {self.word(2, 3)}"
