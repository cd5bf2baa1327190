"""Seeded synthetic cities: a street graph that is not a perfect grid, with landmarks at corners.

`generate_city(seed)` builds the same city for the same seed: a jittered grid of intersections
with uneven block sizes, a few removed blocks, one or two diagonal avenues, named streets, and
places (banks, cafes, pharmacies, ...) at street corners. `shortest_path` finds routes on it.

    python -c "from envs.virl.city import generate_city; c = generate_city(0); print(c.name, len(c.places))"
"""

from __future__ import annotations

import functools
import heapq
from dataclasses import dataclass

import numpy as np

from envs.virl.geometry import distance
from envs.virl.places import CATALOGUE

_CITY_NAMES = (
    "Harbor City",
    "Northbridge",
    "Easton",
    "Riverside",
    "Port Albany",
    "Lakemont",
    "Fairhaven",
    "Westbury",
    "Kingsport",
    "Brookfield",
    "Ashford",
    "Milltown",
)
_AVENUES = (
    "Lexington Avenue",
    "Madison Avenue",
    "Park Avenue",
    "Amsterdam Avenue",
    "Columbus Avenue",
    "Lenox Avenue",
    "Bedford Avenue",
    "Atlantic Avenue",
    "Franklin Avenue",
    "Union Avenue",
    "Grand Avenue",
    "Central Avenue",
)
_DIAGONALS = ("Broadway", "Bowery", "Old Post Road", "Kingsway")
#: Corner offsets (east, north) in metres: where a place sits relative to its intersection.
_CORNERS = ((11.0, 11.0), (11.0, -11.0), (-11.0, -11.0), (-11.0, 11.0))


@dataclass(frozen=True)
class Place:
    """A landmark at a street corner. `node` is the intersection it belongs to."""

    name: str
    category: str
    sign_colour: tuple[int, int, int]
    position: tuple[float, float]
    node: int


@dataclass(frozen=True)
class Street:
    """A street segment between two intersections."""

    a: int
    b: int
    name: str


@dataclass(frozen=True)
class City:
    """A generated city. `positions[i]` is intersection i in metres (x east, y north)."""

    name: str
    seed: int
    positions: tuple[tuple[float, float], ...]
    streets: tuple[Street, ...]
    neighbours: tuple[tuple[int, ...], ...]
    places: tuple[Place, ...]
    places_at: tuple[tuple[int, ...], ...]

    def is_intersection(self, node: int) -> bool:
        """True where at least three street segments meet."""
        return len(self.neighbours[node]) >= 3


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix} Street"


def _grid_positions(rng: np.random.Generator, cols: int, rows: int) -> list[tuple[float, float]]:
    xs = np.concatenate([[0.0], np.cumsum(rng.uniform(90.0, 140.0, cols - 1))])
    ys = np.concatenate([[0.0], np.cumsum(rng.uniform(80.0, 120.0, rows - 1))])
    jitter = rng.uniform(-8.0, 8.0, size=(rows, cols, 2))
    return [(float(xs[c] + jitter[r, c, 0]), float(ys[r] + jitter[r, c, 1])) for r in range(rows) for c in range(cols)]


def _grid_streets(rng: np.random.Generator, cols: int, rows: int) -> list[Street]:
    first_street = int(rng.integers(1, 60))
    avenues = rng.permutation(len(_AVENUES))
    streets = []
    for r in range(rows):
        for c in range(cols):
            node = r * cols + c
            if c + 1 < cols:
                streets.append(Street(node, node + 1, _ordinal(first_street + r)))
            if r + 1 < rows:
                streets.append(Street(node, node + cols, _AVENUES[avenues[c % len(_AVENUES)]]))
    return streets


def _diagonal_streets(rng: np.random.Generator, cols: int, rows: int) -> list[Street]:
    """One or two parallel diagonal avenues; parallel ones never cross inside a block."""
    offsets = rng.choice(np.arange(-(rows - 3), cols - 2), size=int(rng.integers(1, 3)), replace=False)
    streets = []
    for k, offset in enumerate(sorted(int(o) for o in offsets)):
        for r in range(rows - 1):
            c = r + offset
            if 0 <= c < cols - 1:
                streets.append(Street(r * cols + c, (r + 1) * cols + c + 1, _DIAGONALS[k]))
    return streets


def _remove_blocks(rng: np.random.Generator, streets: list[Street], n_nodes: int) -> list[Street]:
    """Drop ~8% of segments where both ends keep >= 3 segments and the graph stays connected."""
    kept = list(streets)
    for index in rng.permutation(len(streets))[: max(1, len(streets) // 12)]:
        candidate = streets[index]
        trial = [s for s in kept if s is not candidate]
        degree = np.bincount([n for s in trial for n in (s.a, s.b)], minlength=n_nodes)
        if degree[candidate.a] >= 3 and degree[candidate.b] >= 3 and _connected(trial, n_nodes):
            kept = trial
    return kept


def _connected(streets: list[Street], n_nodes: int) -> bool:
    adjacency = _adjacency(streets, n_nodes)
    seen, stack = {0}, [0]
    while stack:
        for nxt in adjacency[stack.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    return len(seen) == n_nodes


def _adjacency(streets: list[Street], n_nodes: int) -> tuple[tuple[int, ...], ...]:
    adjacency: list[list[int]] = [[] for _ in range(n_nodes)]
    for s in streets:
        adjacency[s.a].append(s.b)
        adjacency[s.b].append(s.a)
    return tuple(tuple(sorted(a)) for a in adjacency)


def _places(rng: np.random.Generator, positions: list[tuple[float, float]]) -> list[Place]:
    order = rng.permutation(len(CATALOGUE))
    places: list[Place] = []
    for node, (x, y) in enumerate(positions):
        count = int(rng.choice([0, 1, 1, 2, 2]))
        for corner in rng.choice(4, size=count, replace=False):
            if len(places) == len(order):
                return places
            kind = CATALOGUE[order[len(places)]]
            dx, dy = _CORNERS[int(corner)]
            places.append(Place(kind.name, kind.category, kind.sign_colour, (x + dx, y + dy), node))
    return places


@functools.lru_cache(maxsize=64)
def generate_city(seed: int, *, cols: int = 8, rows: int = 8) -> City:
    """The city for `seed` (cached: the same seed returns the same object)."""
    if cols < 4 or rows < 4:
        raise ValueError(f"a city needs at least 4x4 intersections, got cols={cols}, rows={rows}")
    rng = np.random.default_rng([seed, 0x5C17])
    positions = _grid_positions(rng, cols, rows)
    streets = _remove_blocks(rng, _grid_streets(rng, cols, rows), len(positions))
    streets += _diagonal_streets(rng, cols, rows)
    places = _places(rng, positions)
    places_at: list[list[int]] = [[] for _ in positions]
    for i, place in enumerate(places):
        places_at[place.node].append(i)
    name = f"{_CITY_NAMES[int(rng.integers(len(_CITY_NAMES)))]} #{seed}"
    return City(
        name,
        seed,
        tuple(positions),
        tuple(streets),
        _adjacency(streets, len(positions)),
        tuple(places),
        tuple(tuple(p) for p in places_at),
    )


def shortest_path(city: City, start: int, goal: int) -> list[int]:
    """Node list of a shortest path (Dijkstra on street length); [] when unreachable."""
    best = {start: 0.0}
    previous: dict[int, int] = {}
    queue = [(0.0, start)]
    while queue:
        cost, node = heapq.heappop(queue)
        if node == goal:
            path = [goal]
            while path[-1] != start:
                path.append(previous[path[-1]])
            return path[::-1]
        if cost > best[node]:
            continue
        for nxt in city.neighbours[node]:
            new_cost = cost + distance(city.positions[node], city.positions[nxt])
            if new_cost < best.get(nxt, float("inf")):
                best[nxt] = new_cost
                previous[nxt] = node
                heapq.heappush(queue, (new_cost, nxt))
    return []
