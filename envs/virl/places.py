"""The catalogue of landmark names, categories and sign colours that synthetic cities draw from.

Names are realistic (chains and typical independent shops of a large city); each has the sign
colour its brand is known for, so the same place looks the same in every picture. The catalogue is data:
`envs/virl/data/places.json` (category -> [name, [r, g, b]] entries).
"""

from __future__ import annotations

import json
from importlib.resources import files
from typing import NamedTuple


class PlaceKind(NamedTuple):
    """One catalogue entry: a landmark's name, category and sign colour (RGB)."""

    name: str
    category: str
    sign_colour: tuple[int, int, int]


_CATEGORIES: dict[str, list] = json.loads((files("envs.virl") / "data" / "places.json").read_text())
#: Every landmark kind, category by category, in the order of `envs/virl/data/places.json`.
CATALOGUE: tuple[PlaceKind, ...] = tuple(
    PlaceKind(name, category, tuple(colour)) for category, entries in _CATEGORIES.items() for name, colour in entries
)
