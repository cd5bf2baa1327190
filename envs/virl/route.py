"""Routes, milestones and the rail of points the agent visits, with the expert action at each.

A route runs from a start place to a destination place along a shortest path with at least two
turns. The rail is: the start (turn to face the first street), 0-4 intermediate points per leg
(forward), each milestone intersection (turn) and the destination (stop). `assemble_rail` is
shared with the real-data loader; `synthetic_route` builds a route in a generated city.

A route's identity for the held-out split (`envs.splits`) is its `split_key`: for a synthetic
route the city seed, the start place and the destination place (`route_split_key`), whatever the
initial heading and the intermediate points of one episode's rail.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np

from envs.splits import Split, in_split
from envs.virl.city import City, shortest_path
from envs.virl.geometry import SIDES, bearing, compass_label, heading_change, side_label
from envs.virl.instructions import Leg, absolute_turn, build_instructions, relative_turn

#: A heading change of at least this many degrees at a node is a turn (a milestone).
TURN_THRESHOLD_DEG = 30.0
#: Intersection-to-intersection fractions where intermediate points may sit (away from corners).
_SLOTS = (0.3, 0.5, 0.7)
MAX_INTERMEDIATE = 4
MAX_TURNS = 5
NO_LANDMARKS = "No landmarks nearby"
INTERSECTION = "You observe an intersection"


@dataclass(frozen=True)
class Sighting:
    """A landmark seen from a rail point, and on which side of the agent."""

    name: str
    category: str
    sign_colour: tuple[int, int, int]
    side: str

    @property
    def sentence(self) -> str:
        """'Chase Bank is on your right'; a real-data sentence without a side is kept as written."""
        return f"{self.name} is on your {self.side}" if self.side else self.name


@dataclass(frozen=True)
class PointView:
    """What is at a position for an agent with a heading (before any action)."""

    position: tuple[float, float]
    heading: float
    sightings: tuple[Sighting, ...]
    is_intersection: bool


@dataclass(frozen=True)
class RailPoint:
    """One point of the rail and its expert action in both action spaces."""

    view: PointView
    kind: Literal["start", "forward", "turn", "stop"]
    instruction_index: int
    absolute_action: str
    relative_action: str

    @property
    def observation_text(self) -> str:
        """The full text observation: landmark sentences, then the intersection sentence."""
        parts = [s.sentence for s in self.view.sightings] or [NO_LANDMARKS]
        if self.view.is_intersection:
            parts.append(INTERSECTION)
        return "; ".join(parts)


@dataclass(frozen=True)
class LegGeometry:
    """A leg's directions plus the intermediate (position, heading) pairs and its end view."""

    leg: Leg
    intermediates: tuple[tuple[tuple[float, float], float], ...]
    end: PointView


@dataclass(frozen=True)
class Route:
    """Instructions and rail of one episode.

    `city` names where it is (for `info`); `split_key` identifies the route (its start and
    destination) for the held-out split.
    """

    instructions: tuple[str, ...]
    points: tuple[RailPoint, ...]
    city: str
    split_key: str

    def expected_action(self, index: int, variant: str) -> str:
        """The expert action at rail point ``index``: relative turns for rule_ood, absolute otherwise."""
        point = self.points[index]
        return point.relative_action if variant == "rule_ood" else point.absolute_action


def assemble_rail(start: PointView, legs: list[LegGeometry], *, city: str, split_key: str) -> Route:
    """Number the instructions and lay out the rail; instruction indices are 1-based."""
    instructions = build_instructions([g.leg for g in legs])
    first = legs[0].leg
    points = [RailPoint(start, "start", 1, absolute_turn(first.to_label), relative_turn(first))]
    for i, geometry in enumerate(legs):
        move_index = 2 * i + 2
        for position, heading in geometry.intermediates:
            view = PointView(position, heading, (), False)
            points.append(RailPoint(view, "forward", move_index, "forward()", "forward()"))
        if i + 1 < len(legs):
            nxt = legs[i + 1].leg
            points.append(
                RailPoint(geometry.end, "turn", move_index + 1, absolute_turn(nxt.to_label), relative_turn(nxt))
            )
        else:
            points.append(RailPoint(geometry.end, "stop", move_index, "stop()", "stop()"))
    return Route(instructions, tuple(points), city, split_key)


def sightings_at(city: City, node: int, heading: float) -> tuple[Sighting, ...]:
    """The places at an intersection, as seen facing `heading`, front-most first."""
    position = city.positions[node]
    seen = [
        Sighting(p.name, p.category, p.sign_colour, side_label(heading, bearing(position, p.position)))
        for p in (city.places[i] for i in city.places_at[node])
    ]
    return tuple(sorted(seen, key=lambda s: (SIDES.index(s.side), s.name)))


def _edge_heading(city: City, a: int, b: int) -> float:
    return bearing(city.positions[a], city.positions[b])


def split_legs(city: City, path: list[int]) -> list[list[int]]:
    """Split a node path at the nodes where the heading turns by >= TURN_THRESHOLD_DEG."""
    legs, current = [], [path[0]]
    for j in range(1, len(path) - 1):
        current.append(path[j])
        before = _edge_heading(city, path[j - 1], path[j])
        after = _edge_heading(city, path[j], path[j + 1])
        if abs(heading_change(before, after)) >= TURN_THRESHOLD_DEG:
            legs.append(current)
            current = [path[j]]
    legs.append(current + [path[-1]])
    return legs


class RoutePlan(NamedTuple):
    """Start and destination place indices and the node lists of the legs between them."""

    start_place: int
    dest_place: int
    legs: list[list[int]]


def route_split_key(city_seed: int, start_place: int, dest_place: int) -> str:
    """A synthetic route's key for the held-out split: the city's seed and the two place indices."""
    return f"virl:city{city_seed}:{start_place}->{dest_place}"


def route_legs(city: City, start_place: int, dest_place: int) -> list[list[int]] | None:
    """The legs of the route between two places, or None when it is no route of the task.

    A route is a shortest path with 2..MAX_TURNS turns, all at intersections, between places at
    different intersections.
    """
    a, b = city.places[start_place].node, city.places[dest_place].node
    if a == b:
        return None
    legs = split_legs(city, shortest_path(city, a, b))
    turns = [leg[0] for leg in legs[1:]]
    if 2 <= len(turns) <= MAX_TURNS and all(city.is_intersection(t) for t in turns):
        return legs
    return None


def plan_route(city: City, rng: np.random.Generator, *, split: Split = "all", max_tries: int = 1000) -> RoutePlan:
    """Draw place pairs with ``rng`` until one is a route (`route_legs`) of the split ``split``."""
    n = len(city.places)
    for _ in range(max_tries):
        start, dest = (int(i) for i in rng.choice(n, size=2, replace=False))
        if not in_split(route_split_key(city.seed, start, dest), split):
            continue
        legs = route_legs(city, start, dest)
        if legs is not None:
            return RoutePlan(start, dest, legs)
    raise RuntimeError(
        f"no route with 2..{MAX_TURNS} turns in split={split!r} found in {city.name} after {max_tries} tries"
    )


def _intermediates(city: City, leg: list[int], count: int) -> tuple[tuple[tuple[float, float], float], ...]:
    """`count` points spread evenly over the slots of the leg's street segments."""
    slots = [(leg[j], leg[j + 1], f) for j in range(len(leg) - 1) for f in _SLOTS]
    picked = sorted({min(len(slots) - 1, int((k + 0.5) * len(slots) / count)) for k in range(count)})
    points = []
    for index in picked:
        a, b, f = slots[index]
        (xa, ya), (xb, yb) = city.positions[a], city.positions[b]
        points.append(((xa + f * (xb - xa), ya + f * (yb - ya)), _edge_heading(city, a, b)))
    return tuple(points)


def synthetic_route(
    city: City, plan_rng: np.random.Generator, rail_rng: np.random.Generator, *, split: Split = "all"
) -> Route:
    """A route of the split ``split`` in `city`, with its rail.

    `plan_rng` picks places and path, `rail_rng` the initial heading and the number of
    intermediate points per leg (0..MAX_INTERMEDIATE).
    """
    plan = plan_route(city, plan_rng, split=split)
    node_legs, destination = plan.legs, city.places[plan.dest_place].name
    initial = float(rail_rng.integers(0, 360))
    start_node = node_legs[0][0]
    start = PointView(
        city.positions[start_node], initial, sightings_at(city, start_node, initial), city.is_intersection(start_node)
    )
    previous, legs = initial, []
    for i, nodes in enumerate(node_legs):
        heading = _edge_heading(city, nodes[0], nodes[1])
        arrival = _edge_heading(city, nodes[-2], nodes[-1])
        sightings = sightings_at(city, nodes[-1], arrival)
        last = i == len(node_legs) - 1
        if last:  # the destination place leads the sentence of the last instruction
            sightings = tuple(sorted(sightings, key=lambda s: s.name != destination))
        end = PointView(city.positions[nodes[-1]], arrival, sightings, city.is_intersection(nodes[-1]))
        landmark = sightings[0].sentence if sightings else None
        leg = Leg(previous, heading, compass_label(heading), landmark, last)
        count = int(rail_rng.integers(0, MAX_INTERMEDIATE + 1))
        legs.append(LegGeometry(leg, _intermediates(city, nodes, count), end))
        previous = arrival
    split_key = route_split_key(city.seed, plan.start_place, plan.dest_place)
    return assemble_rail(start, legs, city=city.name, split_key=split_key)
