"""Headings and direction labels for V-IRL navigation.

Headings are compass degrees: 0 = north, clockwise (90 = east). Positions in synthetic cities are
metres in a plane with x pointing east and y pointing north. Everything here is pure arithmetic, so
`python -m pytest tests/envs/test_virl_geometry.py` covers it.
"""

from __future__ import annotations

import math

COMPASS = ("north", "northeast", "east", "southeast", "south", "southwest", "west", "northwest")
RELATIVE = ("left", "right", "slightly left", "slightly right")
SIDES = ("front", "front right", "right", "back right", "back", "back left", "left", "front left")

#: A heading change of at most this many degrees is "slightly" left/right (spec-virl.md).
SLIGHT_TURN_DEG = 45.0


def wrap_degrees(delta: float) -> float:
    """Wrap an angle difference into [-180, 180)."""
    return (delta + 180.0) % 360.0 - 180.0


def heading_change(from_heading: float, to_heading: float) -> float:
    """Signed turn from one heading to another, wrapped to [-180, 180); positive = clockwise."""
    return wrap_degrees(to_heading - from_heading)


def compass_label(heading: float) -> str:
    """The nearest of the 8 compass directions ("north", "northeast", ...)."""
    return COMPASS[int(((heading % 360.0) + 22.5) // 45.0) % 8]


def relative_label(from_heading: float, to_heading: float) -> str:
    """Name the wrapped heading change: "left", "right", "slightly left" or "slightly right".

    The paper's code did not wrap, so 350 -> 10 came out "left"; here it is "slightly right", and
    10 -> 300 is "left". A change of exactly 0 counts as "slightly right".
    """
    delta = heading_change(from_heading, to_heading)
    side = "left" if delta < 0 else "right"
    return f"slightly {side}" if abs(delta) <= SLIGHT_TURN_DEG else side


def side_label(heading: float, bearing: float) -> str:
    """Where something at compass `bearing` is for an agent facing `heading` (8 sectors)."""
    return SIDES[int((heading_change(heading, bearing) % 360.0 + 22.5) // 45.0) % 8]


def bearing(origin: tuple[float, float], target: tuple[float, float]) -> float:
    """Compass heading in [0, 360) from `origin` to `target` (planar metres, x east, y north)."""
    return math.degrees(math.atan2(target[0] - origin[0], target[1] - origin[1])) % 360.0


def distance(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Euclidean distance in metres."""
    return math.hypot(b[0] - a[0], b[1] - a[1])


def compass_heading(label: str) -> float:
    """The heading in degrees of a compass label ("northeast" -> 45.0); ValueError otherwise."""
    try:
        return 45.0 * COMPASS.index(label.strip().lower())
    except ValueError:
        raise ValueError(f"unknown compass direction {label!r}; use one of {COMPASS}") from None
