"""Street-view pictures: layout, signs, crossings, styles (envs.virl.render, envs.virl.styles)."""

import numpy as np
import pytest

from envs.virl.city import generate_city
from envs.virl.render import DEFAULT_VIEW_PX, GAP_PX, MIN_SIGN_FONT_PX, picture_shape, render_point
from envs.virl.route import PointView, Sighting, synthetic_route
from envs.virl.styles import OOD_STYLES, STYLES, TRAINING_STYLE, get_style

SIDES_TO_QUADRANT = {
    "front left": "front",
    "front right": "front",
    "front": "front",
    "right": "right",
    "back left": "back",
    "back right": "back",
    "back": "back",
    "left": "left",
}
QUADRANT = {"front": (0, 0), "right": (1, 0), "back": (0, 1), "left": (1, 1)}  # (column, row) in the grid
BAR = picture_shape()[0] // 2 - DEFAULT_VIEW_PX - GAP_PX // 2


def _route_points(n=5):
    route = synthetic_route(generate_city(0), np.random.default_rng(1), np.random.default_rng(2))
    return [p.view for p in route.points[:n]]


def _view_origin(view: str) -> tuple[int, int]:
    col, row = QUADRANT[view]
    return col * (DEFAULT_VIEW_PX + GAP_PX), row * (DEFAULT_VIEW_PX + BAR + GAP_PX) + BAR


def _everywhere_view(is_intersection=False) -> PointView:
    sightings = tuple(
        Sighting(f"Shop {i} {side.title()}", "store", (20 + 25 * i, 40, 120), side)
        for i, side in enumerate(SIDES_TO_QUADRANT)
    )
    return PointView((10.0, 20.0), 0.0, sightings, is_intersection)


def test_ood_styles_differ_measurably_from_training():
    views = _route_points()
    base = [render_point(v, TRAINING_STYLE).image.astype(float) for v in views]
    assert len(OOD_STYLES) >= 4
    for style in OOD_STYLES:
        other = [render_point(v, style).image.astype(float) for v in views]
        pixel_distance = np.mean([np.linalg.norm(a - b, axis=-1).mean() for a, b in zip(base, other, strict=True)])
        assert pixel_distance > 40.0, style.name  # mean per-pixel RGB distance, same rail points


@pytest.mark.parametrize("style", list(STYLES.values()), ids=list(STYLES))
def test_every_sign_is_drawn_readably_in_its_view(style):
    view = _everywhere_view()
    picture = render_point(view, style)
    assert picture.image.shape == picture_shape() and picture.image.dtype == np.uint8
    assert [s.text for s in picture.signs] == [s.name for s in view.sightings]
    for sign, sighting in zip(picture.signs, view.sightings, strict=True):
        assert sign.view == SIDES_TO_QUADRANT[sighting.side]
        # The stated size; wrapping a long name may shrink it a little, never below the minimum.
        assert sign.font_px >= max(MIN_SIGN_FONT_PX, style.sign_font_px - 3)
        x0, y0, x1, y1 = sign.box
        assert 0 <= x0 < x1 <= DEFAULT_VIEW_PX and 0 <= y0 < y1 <= DEFAULT_VIEW_PX
        ox, oy = _view_origin(sign.view)
        patch = picture.image[oy + y0 : oy + y1, ox + x0 : ox + x1].astype(int)
        on_sign = np.abs(patch - np.array(sighting.sign_colour)).sum(-1) < 10
        assert on_sign.mean() > 0.3  # the sign's own colour fills its box ...
        text_like = np.abs(patch - np.array(sighting.sign_colour)).sum(-1) > 200
        assert text_like.sum() > 30  # ... and contrasting text pixels are drawn on it


def test_sign_text_changes_the_pixels_in_its_box():
    view = _everywhere_view()
    renamed = PointView(
        view.position,
        view.heading,
        (Sighting("Totally Other", "store", view.sightings[0].sign_colour, view.sightings[0].side),)
        + view.sightings[1:],
        False,
    )
    a, b = render_point(view), render_point(renamed)
    ox, oy = _view_origin(a.signs[0].view)
    x0, y0, x1, y1 = a.signs[0].box
    assert not np.array_equal(
        a.image[oy + y0 : oy + y1, ox + x0 : ox + x1], b.image[oy + y0 : oy + y1, ox + x0 : ox + x1]
    )


def test_intersection_shows_a_crossing_street_in_the_front_view():
    plain, crossing = render_point(_everywhere_view(False)), render_point(_everywhere_view(True))
    ox, oy = _view_origin("front")
    lower_half = slice(oy + DEFAULT_VIEW_PX // 2, oy + DEFAULT_VIEW_PX)
    zebra = lambda image: (image[lower_half, ox : ox + DEFAULT_VIEW_PX] >= 235).all(-1).sum()  # noqa: E731
    assert zebra(crossing.image) > 500 and zebra(plain.image) < 50


def test_rendering_is_deterministic_and_sized_by_view_px():
    view = _route_points(1)[0]
    assert np.array_equal(render_point(view).image, render_point(view).image)
    assert render_point(view, view_px=160).image.shape == picture_shape(160)


def test_get_style_names_the_known_styles():
    assert get_style("neon_night").light == "night"
    with pytest.raises(ValueError, match="new_york_day"):
        get_style("mars")
