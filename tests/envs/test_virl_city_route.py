"""Synthetic cities, routes, rails and instructions (envs.virl.city, route, instructions)."""

import numpy as np
import pytest

from envs.virl.city import generate_city, shortest_path
from envs.virl.geometry import bearing, compass_heading, heading_change, relative_label
from envs.virl.route import (
    INTERSECTION,
    MAX_INTERMEDIATE,
    MAX_TURNS,
    TURN_THRESHOLD_DEG,
    split_legs,
    synthetic_route,
)  # fmt: skip

SEEDS = range(12)
JITTER = 12.0


def _route(city_seed: int, seed: int):
    return synthetic_route(generate_city(city_seed), np.random.default_rng(seed), np.random.default_rng(seed + 1))


def test_same_seed_same_city_route_rail_and_instructions():
    generate_city.cache_clear()
    first = generate_city(5)
    generate_city.cache_clear()
    assert generate_city(5) == first
    assert _route(5, 3) == _route(5, 3)
    assert _route(5, 3) != _route(5, 4)
    assert generate_city(6) != first


def test_city_is_not_a_perfect_grid():
    city = generate_city(0)
    xs = np.array(city.positions)[:, 0].reshape(8, 8)  # rows of the generating grid
    assert np.ptp(xs, axis=0).max() > 1.0  # jittered columns
    headings = {round(bearing(city.positions[s.a], city.positions[s.b]) / 45) % 4 for s in city.streets}
    assert headings >= {0, 1, 2}  # north-south, east-west and diagonal avenues
    grid_segments = 2 * 8 * 7
    straight = [s for s in city.streets if s.name not in ("Broadway", "Bowery")]
    assert len(straight) < grid_segments  # some blocks removed
    assert len({s.name for s in city.streets}) >= 10
    assert len({p.name for p in city.places}) == len(city.places) > 30
    assert all(len(shortest_path(city, 0, node)) > 0 for node in range(len(city.positions)))  # connected


def test_places_have_names_categories_and_colours():
    city = generate_city(1)
    assert {p.category for p in city.places} >= {"bank", "cafe", "pharmacy"}
    assert all(len(p.sign_colour) == 3 and p.name for p in city.places)


@pytest.mark.parametrize("seed", SEEDS)
def test_rail_structure_matches_geometry(seed):
    route = _route(0, seed)
    points = route.points
    kinds = [p.kind for p in points]
    assert kinds[0] == "start" and kinds[-1] == "stop" and "stop" not in kinds[:-1]
    turns = [p for p in points if p.kind == "turn"]
    assert 2 <= len(turns) <= MAX_TURNS
    for point in turns:  # turns only at intersections (and the start)
        assert point.view.is_intersection and INTERSECTION in point.observation_text
    for point in points:
        if point.kind == "forward":
            assert point.absolute_action == point.relative_action == "forward()"
            assert point.observation_text == "No landmarks nearby" and not point.view.is_intersection
        if point.kind == "stop":
            assert point.absolute_action == point.relative_action == "stop()"
        if point.kind in ("start", "turn"):
            assert point.absolute_action.startswith("turn_direction(")
    assert len(route.instructions) == 2 * (len(turns) + 1)


@pytest.mark.parametrize("seed", range(40))
def test_expected_turns_follow_headings_of_the_next_street(seed):
    route = _route(0, seed)
    points = route.points
    # A turn followed by an intermediate point: that point's heading is the new street's heading,
    # up to the jitter of intersections the leg passes straight through (< JITTER degrees).
    turn_indices = [
        i for i, p in enumerate(points[:-1]) if p.kind in ("start", "turn") and points[i + 1].kind == "forward"
    ]
    for i in turn_indices:
        new_heading = points[i + 1].view.heading
        label = points[i].absolute_action[len("turn_direction(") : -1]
        assert abs(heading_change(compass_heading(label), new_heading)) <= 22.5 + JITTER
        relative = points[i].relative_action[len("turn_direction(") : -1]
        change = heading_change(points[i].view.heading, new_heading)
        if abs(abs(change) - 45) > JITTER and abs(change) > JITTER:
            assert relative == relative_label(points[i].view.heading, new_heading)
        sentence = route.instructions[points[i].instruction_index - 1]
        assert sentence.endswith(f"turn {relative} to face {label}.") or sentence == f"Turn {relative} to face {label}."


def test_instructions_number_milestones_and_name_landmarks():
    route = _route(0, 2)
    assert route.instructions[0].startswith("First, turn ")
    assert route.instructions[-1].startswith("Move forward until you reach the destination where ")
    for sentence in route.instructions[1:-1:2]:
        assert sentence.startswith("Move forward until you reach the next intersection")
    destination = route.points[-1]
    assert route.instructions[-1].endswith(f"{destination.view.sightings[0].sentence}.")
    assert all(p.instruction_index == len(route.instructions) for p in route.points[-2:] if p.kind != "turn")


def test_intermediate_counts_come_from_the_rail_rng():
    city = generate_city(0)
    counts = set()
    for rail_seed in range(20):
        route = synthetic_route(city, np.random.default_rng(0), np.random.default_rng(rail_seed))
        counts.add(sum(p.kind == "forward" for p in route.points))
    assert len(counts) > 3  # same route plan, different rails
    assert max(counts) <= MAX_INTERMEDIATE * (MAX_TURNS + 1)


def test_split_legs_turns_only_at_large_heading_changes():
    city = generate_city(0)
    path = shortest_path(city, 0, 63)
    legs = split_legs(city, path)
    assert [node for leg in legs for node in leg[:-1]] + [path[-1]] == path  # legs tile the path
    for leg in legs[1:]:
        node = leg[0]
        i = path.index(node)
        before = bearing(city.positions[path[i - 1]], city.positions[node])
        after = bearing(city.positions[node], city.positions[path[i + 1]])
        assert abs(heading_change(before, after)) >= TURN_THRESHOLD_DEG
