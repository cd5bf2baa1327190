"""Street-view pictures for V-IRL-VL, drawn with Pillow only.

A picture is a 2x2 grid of four labelled views around the agent, laid out exactly as the prompt
says: top-left = front, top-right = right, bottom-left = back, bottom-right = left. Each view has
sky, street, sidewalks and building facades in true perspective (camera 2.5 m above the street
centre, 90-degree field of view) and the sign of every landmark on that side. An intersection
shows as a crossing street (with a zebra crossing) in the front view. Backgrounds are drawn once
per (style, kind, variant, size) and cached; a picture pastes four of them and draws the signs, so
rendering is fast (see tests/bench/bench_virl.py).

    python -c "from envs.virl.render import demo; demo('virl.png')"
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from envs.virl.route import PointView, Sighting
from envs.virl.styles import TRAINING_STYLE, Style

DEFAULT_VIEW_PX = 320
#: Grid order; the prompt describes the same layout (prompt.PICTURE_LAYOUT).
VIEW_ORDER = ("front", "right", "back", "left")
GAP_PX = 4
MIN_SIGN_FONT_PX = 14
_CAMERA_M = 2.5
_FACADE_M = 9.0
_ROAD_M = 6.0
_CROSSING_Z = (8.0, 16.0)
_ZEBRA = (240, 240, 240)
_N_VARIANTS = 4
Kind = Literal["ahead", "crossing", "frontal"]
Slot = Literal["left", "right", "centre"]
# Which view and where in it a landmark's sign appears, by the side it is on.
_SIGN_PLACE: dict[str, tuple[str, Slot]] = {
    "front": ("front", "centre"),
    "front right": ("front", "right"),
    "right": ("right", "centre"),
    "back right": ("back", "left"),
    "back": ("back", "centre"),
    "back left": ("back", "right"),
    "left": ("left", "centre"),
    "front left": ("front", "left"),
}


@dataclass(frozen=True)
class SignBox:
    """Where a sign's text was drawn: its view, box (x0, y0, x1, y1 in view pixels), font size."""

    text: str
    view: str
    box: tuple[int, int, int, int]
    font_px: int


class Views(NamedTuple):
    """The four views (front, right, back, left) of a point and the signs drawn in them."""

    images: dict[str, Image.Image]
    signs: tuple[SignBox, ...]


class _Wrapped(NamedTuple):
    lines: list[str]
    font_px: int


@dataclass(frozen=True)
class Picture:
    """A rendered 2x2 picture (H, W, 3) uint8 and the signs drawn in it."""

    image: np.ndarray
    signs: tuple[SignBox, ...]


def picture_shape(view_px: int = DEFAULT_VIEW_PX) -> tuple[int, int, int]:
    """(H, W, 3) of the 2x2 picture for a view size."""
    bar = _label_bar_px(view_px)
    return (2 * (view_px + bar) + GAP_PX, 2 * view_px + GAP_PX, 3)


def _label_bar_px(view_px: int) -> int:
    return max(16, round(view_px * 0.09))


@functools.lru_cache(maxsize=16)
def font(size_px: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font at `size_px` (no font files needed)."""
    return ImageFont.load_default(size=size_px)


class _Camera:
    """Pinhole projection of street coordinates (X right, Y up, Z ahead; metres) to pixels."""

    def __init__(self, size: int):
        self.size = size
        self.focal = size / 2.0  # 90-degree field of view
        self.horizon = size / 2.0

    def __call__(self, x: float, y: float, z: float) -> tuple[float, float]:
        return (self.size / 2.0 + self.focal * x / z, self.horizon + self.focal * (_CAMERA_M - y) / z)

    def quad(self, x: float, ys: tuple[float, float], zs: tuple[float, float]) -> list[tuple[float, float]]:
        """A vertical rectangle in the plane X = x, spanning heights `ys` and depths `zs`."""
        (y0, y1), (z0, z1) = ys, zs
        return [self(x, y0, z0), self(x, y0, z1), self(x, y1, z1), self(x, y1, z0)]


def _sky(style: Style, size: int) -> Image.Image:
    ramp = np.linspace(0.0, 1.0, size)[:, None]  # (H, 1)
    top, bottom = np.array(style.sky_top, float), np.array(style.sky_bottom, float)
    rows = (top * (1 - ramp) + bottom * ramp).astype(np.uint8)  # (H, 3)
    return Image.fromarray(np.repeat(rows[:, None, :], size, axis=1), "RGB")


def _windows(
    draw: ImageDraw.ImageDraw,
    style: Style,
    rng: np.random.Generator,
    *,
    face: Callable[..., list],
    storeys: int,
    columns: int,
) -> None:
    """Windows on a facade given as face((u0, u1), (v0, v1)) -> polygon, u along, v up (0..1)."""
    for storey in range(1, storeys):
        v0, v1 = (storey + 0.3) / storeys, (storey + 0.75) / storeys
        if style.window_pattern == "bands":
            draw.polygon(face((0.05, 0.95), (v0, v1)), fill=_window_colour(style, rng))
            continue
        for col in range(columns):
            if style.window_pattern == "sparse" and rng.random() < 0.5:
                continue
            u0, u1 = (col + 0.25) / columns, (col + 0.75) / columns
            colour = _window_colour(style, rng)
            draw.polygon(face((u0, u1), (v0, v1)), fill=colour)
            if style.window_pattern == "arched":
                draw.polygon(face((u0, u1), (v1, v1 + 0.12 / storeys)), fill=colour)


def _window_colour(style: Style, rng: np.random.Generator) -> tuple[int, int, int]:
    lit = {"day": 0.0, "dusk": 0.3, "night": 0.6}[style.light]
    return style.lit_window if rng.random() < lit else style.window


def _street_side(draw, camera, style, *, rng, side: float, gap: tuple[float, float] | None) -> None:
    """Buildings along one side of the street (side = -1 left, +1 right), from near to far."""
    z = 2.0
    while z < 140.0:
        width = float(rng.uniform(8.0, 16.0))
        z0, z1 = z, z + width
        z = z1
        if gap and z1 > gap[0] and z0 < gap[1]:
            z0, z1 = (z0, gap[0]) if z0 < gap[0] else (gap[1], z1)
            if z1 - z0 < 2.0:
                continue
        storeys = int(rng.integers(style.storeys[0], style.storeys[1] + 1))
        height = 3.3 * storeys
        facade = style.facades[int(rng.integers(len(style.facades)))]
        x = side * _FACADE_M
        draw.polygon(camera.quad(x, (0.0, height), (z0, z1)), fill=facade)
        if z0 < 60.0:

            def face(us, vs, x=x, z0=z0, z1=z1, height=height):
                depth = z1 - z0
                return camera.quad(x, (vs[0] * height, vs[1] * height), (z0 + us[0] * depth, z0 + us[1] * depth))

            _windows(draw, style, rng, face=face, storeys=storeys, columns=max(1, round((z1 - z0) / 4)))


def _cross_street_facades(draw, camera, style, *, rng, z: float) -> None:
    """The buildings across the crossing street, facing the camera (seen through the gap)."""
    for side in (-1.0, 1.0):
        x = _FACADE_M
        while x < 90.0:
            width = float(rng.uniform(8.0, 15.0))
            height = 3.3 * int(rng.integers(style.storeys[0], style.storeys[1] + 1))
            x0, x1 = side * x, side * (x + width)
            draw.polygon(
                [camera(x0, 0, z), camera(x1, 0, z), camera(x1, height, z), camera(x0, height, z)],
                fill=style.facades[int(rng.integers(len(style.facades)))],
            )
            x += width


def _ahead(style: Style, size: int, rng: np.random.Generator, *, crossing: bool) -> Image.Image:
    image = _sky(style, size)
    draw = ImageDraw.Draw(image)
    camera = _Camera(size)
    far = 160.0
    draw.polygon(
        [camera(-30, 0, 1.0), camera(30, 0, 1.0), camera(30, 0, far), camera(-30, 0, far)], fill=style.sidewalk
    )
    draw.polygon(
        [camera(-_ROAD_M, 0, 1.0), camera(_ROAD_M, 0, 1.0), camera(_ROAD_M, 0, far), camera(-_ROAD_M, 0, far)],
        fill=style.road,
    )
    for z in np.arange(3.0, far, 8.0):  # dashed centre line
        draw.polygon(
            [camera(-0.1, 0, z), camera(0.1, 0, z), camera(0.1, 0, z + 3), camera(-0.1, 0, z + 3)], fill=style.marking
        )
    gap = _CROSSING_Z if crossing else None
    if crossing:
        near, back = _CROSSING_Z
        draw.polygon(
            [camera(-400, 0, near), camera(400, 0, near), camera(400, 0, back), camera(-400, 0, back)], fill=style.road
        )
        for x in np.arange(-_ROAD_M + 0.4, _ROAD_M, 1.2):  # zebra crossing
            draw.polygon(
                [
                    camera(x, 0, near - 2.5),
                    camera(x + 0.6, 0, near - 2.5),
                    camera(x + 0.6, 0, near - 0.3),
                    camera(x, 0, near - 0.3),
                ],
                fill=_ZEBRA,
            )
        _cross_street_facades(draw, camera, style, rng=rng, z=back + 3.0)
    draw.polygon(
        [
            camera(-_FACADE_M, 0, far),
            camera(_FACADE_M, 0, far),
            camera(_FACADE_M, 30.0, far),
            camera(-_FACADE_M, 30.0, far),
        ],
        fill=style.facades[0],
    )  # the block closing the street
    for side in (-1.0, 1.0):
        _street_side(draw, camera, style, rng=rng, side=side, gap=gap)
    return image


def _frontal(style: Style, size: int, rng: np.random.Generator) -> Image.Image:
    image = _sky(style, size)
    draw = ImageDraw.Draw(image)
    camera = _Camera(size)
    foot = camera(0, 0, _FACADE_M)[1]
    draw.rectangle([0, foot, size, size], fill=style.sidewalk)
    draw.rectangle([0, camera(0, 0, _FACADE_M - 3.0)[1], size, size], fill=style.road)
    scale = camera.focal / _FACADE_M  # pixels per metre on the facade plane
    x = -float(rng.uniform(0.0, 6.0)) * scale
    while x < size:
        width = float(rng.uniform(8.0, 15.0)) * scale
        storeys = int(rng.integers(style.storeys[0], style.storeys[1] + 1))
        top = foot - 3.3 * storeys * scale
        draw.rectangle([x, top, x + width - 2, foot], fill=style.facades[int(rng.integers(len(style.facades)))])

        def face(us, vs, x=x, width=width, top=top):
            (x0, x1), (y0, y1) = ((x + u * width for u in us), (foot - v * (foot - top) for v in vs))
            return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]

        _windows(draw, style, rng, face=face, storeys=storeys, columns=max(2, round(width / scale / 3)))
        door = x + width / 2
        draw.rectangle([door - 0.8 * scale, foot - 2.4 * scale, door + 0.8 * scale, foot], fill=style.window)
        x += width
    return image


@functools.lru_cache(maxsize=256)
def _background(style: Style, kind: Kind, variant: int, size: int) -> Image.Image:
    rng = np.random.default_rng([variant, size, sum(map(ord, style.name)), len(kind)])
    if kind == "frontal":
        return _frontal(style, size, rng)
    return _ahead(style, size, rng, crossing=kind == "crossing")


def _wrap(text: str, size_px: int, max_width: float) -> _Wrapped:
    """Word-wrap `text` to fit `max_width`, shrinking the font (never below the minimum)."""
    for px in range(size_px, MIN_SIGN_FONT_PX - 1, -1):
        lines: list[str] = []
        for word in text.split():
            trial = f"{lines[-1]} {word}" if lines else word
            if lines and font(px).getlength(trial) <= max_width:
                lines[-1] = trial
            else:
                lines.append(word)
        if max(font(px).getlength(line) for line in lines) <= max_width:
            return _Wrapped(lines, px)
    return _Wrapped(lines, MIN_SIGN_FONT_PX)


def _text_colour(style: Style, background: tuple[int, int, int]) -> tuple[int, int, int]:
    luminance = 0.299 * background[0] + 0.587 * background[1] + 0.114 * background[2]
    return (20, 20, 20) if luminance > 170 else style.sign_text


def _draw_sign(
    draw: ImageDraw.ImageDraw, sighting: Sighting, style: Style, *, view: str, slot: Slot, top: float, size: int
) -> SignBox:
    """Draw one upright sign; returns where its text went."""
    px = max(MIN_SIGN_FONT_PX, round(style.sign_font_px * size / DEFAULT_VIEW_PX))
    lines, px = _wrap(sighting.name, px, 0.42 * size)
    pad = max(3, px // 3)
    line_h = round(px * 1.15)
    width = max(font(px).getlength(line) for line in lines) + 2 * pad
    height = line_h * len(lines) + 2 * pad
    margin = size * 0.03
    x0 = {"left": margin, "right": size - margin - width, "centre": (size - width) / 2}[slot]
    box = [x0, top, x0 + width, top + height]
    radius = {"rect": 0, "rounded": pad * 2, "pill": height / 2, "banner": 0}[style.sign_shape]
    if style.sign_shape == "banner":
        draw.line([(x0 + width / 2, top - pad * 2), (x0 + width / 2, top)], fill=style.sign_border, width=2)
    draw.rounded_rectangle(
        box,
        radius=radius,
        fill=sighting.sign_colour,
        outline=style.sign_border,
        width=2 if style.sign_shape != "pill" else 3,
    )
    colour = _text_colour(style, sighting.sign_colour)
    for i, line in enumerate(lines):
        draw.text((x0 + pad, top + pad + i * line_h), line, font=font(px), fill=colour)
    return SignBox(sighting.name, view, (round(x0), round(top), round(x0 + width), round(top + height)), px)


def draw_views(view: PointView, style: Style, *, view_px: int = DEFAULT_VIEW_PX) -> Views:
    """The four views (front, right, back, left) of a rail point, with the signs drawn."""
    variant = int(abs(view.position[0] * 7.0 + view.position[1] * 13.0)) % _N_VARIANTS
    kinds: dict[str, Kind] = {
        "front": "crossing" if view.is_intersection else "ahead",
        "back": "ahead",
        "right": "crossing" if view.is_intersection else "frontal",
        "left": "crossing" if view.is_intersection else "frontal",
    }
    images = {
        name: _background(style, kinds[name], (variant + i) % _N_VARIANTS, view_px).copy()
        for i, name in enumerate(VIEW_ORDER)
    }
    signs, next_top = [], {}
    for sighting in view.sightings:
        name, slot = _SIGN_PLACE[sighting.side]
        top = next_top.get((name, slot), view_px * 0.22)
        sign = _draw_sign(ImageDraw.Draw(images[name]), sighting, style, view=name, slot=slot, top=top, size=view_px)
        next_top[(name, slot)] = sign.box[3] + view_px * 0.03
        signs.append(sign)
    return Views(images, tuple(signs))


@functools.lru_cache(maxsize=8)
def _label_bar(label: str, view_px: int) -> Image.Image:
    bar = _label_bar_px(view_px)
    image = Image.new("RGB", (view_px, bar), (25, 25, 25))
    text_font = font(max(12, round(bar * 0.7)))
    draw = ImageDraw.Draw(image)
    draw.text(((view_px - text_font.getlength(label)) / 2, bar * 0.12), label, font=text_font, fill=(255, 255, 255))
    return image


def compose_grid(views: dict[str, Image.Image], *, view_px: int) -> np.ndarray:
    """Lay four views out as front | right over back | left, each under its label: (H, W, 3)."""
    height, width, _ = picture_shape(view_px)
    canvas = Image.new("RGB", (width, height), (0, 0, 0))
    bar = _label_bar_px(view_px)
    for i, name in enumerate(VIEW_ORDER):
        x, y = (i % 2) * (view_px + GAP_PX), (i // 2) * (view_px + bar + GAP_PX)
        canvas.paste(_label_bar(name, view_px), (x, y))
        canvas.paste(views[name], (x, y + bar))
    return np.asarray(canvas)


def render_point(view: PointView, style: Style = TRAINING_STYLE, *, view_px: int = DEFAULT_VIEW_PX) -> Picture:
    """The 2x2 street-view picture of a rail point."""
    views, signs = draw_views(view, style, view_px=view_px)
    return Picture(compose_grid(views, view_px=view_px), signs)


def demo(path: str) -> None:
    """Save the start picture of a training-style route to `path` (a quick visual check)."""
    from envs.virl.city import generate_city
    from envs.virl.route import synthetic_route

    route = synthetic_route(generate_city(0), np.random.default_rng(0), np.random.default_rng(0))
    Image.fromarray(render_point(route.points[0].view).image).save(path)
