"""Headings, wrapped differences and direction labels (envs.virl.geometry)."""

import pytest

from envs.virl.geometry import (
    COMPASS,
    bearing,
    compass_heading,
    compass_label,
    heading_change,
    relative_label,
    side_label,
    wrap_degrees,
)  # fmt: skip


@pytest.mark.parametrize(
    "delta, wrapped", [(0, 0), (180, -180), (-180, -180), (190, -170), (350, -10), (-350, 10), (720 + 45, 45)]
)
def test_wrap_degrees_lands_in_half_open_range(delta, wrapped):
    assert wrap_degrees(delta) == pytest.approx(wrapped)


@pytest.mark.parametrize("start, end, label", [
    (350, 10, "slightly right"),  # the paper's unwrapped code said "left"
    (10, 300, "left"),  # unwrapped: -70 -> left as well, but 10 -> 200 differs:
    (10, 200, "left"),  # wrapped -170
    (200, 10, "right"),  # wrapped +170
    (0, 45, "slightly right"), (0, 46, "right"), (0, -45, "slightly left"), (0, 315, "slightly left"),
    (90, 0, "left"), (270, 0, "right"), (0, 180, "left"),  # 180 wraps to -180
])  # fmt: skip
def test_relative_label_uses_wrapped_change(start, end, label):
    assert relative_label(start, end) == label


def test_heading_change_is_signed_and_wrapped():
    assert heading_change(350, 10) == pytest.approx(20)
    assert heading_change(10, 350) == pytest.approx(-20)


@pytest.mark.parametrize(
    "heading, label",
    [
        (0, "north"),
        (22.4, "north"),
        (22.6, "northeast"),
        (90, "east"),
        (181, "south"),
        (337.6, "north"),
        (359.9, "north"),
        (-90, "west"),
    ],
)
def test_compass_label_is_nearest_of_eight(heading, label):
    assert compass_label(heading) == label


def test_compass_heading_round_trips_and_rejects_unknown():
    assert [compass_label(compass_heading(c)) for c in COMPASS] == list(COMPASS)
    with pytest.raises(ValueError, match="unknown compass direction"):
        compass_heading("up")


def test_bearing_and_side_labels():
    assert bearing((0, 0), (0, 10)) == pytest.approx(0)
    assert bearing((0, 0), (10, 0)) == pytest.approx(90)
    assert bearing((0, 0), (-10, -10)) == pytest.approx(225)
    assert side_label(0, 45) == "front right"
    assert side_label(90, 0) == "left"
    assert side_label(350, 170) == "back"
    assert side_label(180, 135) == "front left"
