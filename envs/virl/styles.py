"""City styles: how a city looks (palette, architecture, signs, light), never how it works.

`TRAINING_STYLE` is the in-distribution look (a New York-like day); `OOD_STYLES` are the looks of
the visual_ood cities. They differ in ways a vision model can notice (sky, facades, windows,
building heights, sign shapes, light) while every sign stays readable: its text is drawn with
Pillow's built-in scalable font at `sign_font_px` (at the default 320-pixel view; scaled with the
view size, never below 14 px).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RGB = tuple[int, int, int]


@dataclass(frozen=True)
class Style:
    """Everything the renderer needs to draw a city's streets."""

    name: str
    sky_top: RGB
    sky_bottom: RGB
    road: RGB
    sidewalk: RGB
    marking: RGB
    facades: tuple[RGB, ...]
    window: RGB
    window_pattern: Literal["grid", "arched", "bands", "sparse"]
    storeys: tuple[int, int]
    sign_shape: Literal["rect", "rounded", "pill", "banner"]
    sign_font_px: int
    sign_text: RGB
    sign_border: RGB
    light: Literal["day", "dusk", "night"]
    lit_window: RGB = (255, 214, 120)


TRAINING_STYLE = Style(
    name="new_york_day",
    sky_top=(110, 160, 220),
    sky_bottom=(200, 225, 245),
    road=(70, 70, 74),
    sidewalk=(170, 168, 160),
    marking=(235, 220, 90),
    facades=((150, 80, 60), (120, 70, 55), (190, 180, 160), (140, 130, 120), (170, 100, 70)),
    window=(60, 80, 100),
    window_pattern="grid",
    storeys=(5, 9),
    sign_shape="rect",
    sign_font_px=20,
    sign_text=(255, 255, 255),
    sign_border=(30, 30, 30),
    light="day",
)

OOD_STYLES: tuple[Style, ...] = (
    Style(
        name="desert_dusk",
        sky_top=(90, 60, 120),
        sky_bottom=(250, 150, 80),
        road=(150, 120, 90),
        sidewalk=(210, 180, 140),
        marking=(250, 250, 240),
        facades=((220, 170, 110), (200, 140, 90), (230, 200, 150)),
        window=(90, 60, 40),
        window_pattern="sparse",
        storeys=(1, 3),
        sign_shape="rounded",
        sign_font_px=20,
        sign_text=(255, 250, 235),
        sign_border=(80, 40, 20),
        light="dusk",
    ),
    Style(
        name="neon_night",
        sky_top=(5, 5, 25),
        sky_bottom=(30, 20, 60),
        road=(25, 25, 30),
        sidewalk=(55, 55, 65),
        marking=(240, 240, 240),
        facades=((40, 40, 55), (30, 35, 45), (55, 45, 60)),
        window=(20, 20, 30),
        window_pattern="grid",
        storeys=(6, 12),
        sign_shape="pill",
        sign_font_px=21,
        sign_text=(255, 255, 255),
        sign_border=(255, 60, 220),
        light="night",
    ),
    Style(
        name="nordic_winter",
        sky_top=(200, 205, 215),
        sky_bottom=(235, 238, 242),
        road=(120, 125, 130),
        sidewalk=(245, 245, 250),
        marking=(255, 255, 255),
        facades=((180, 50, 40), (230, 190, 60), (60, 130, 130), (235, 230, 215)),
        window=(40, 50, 60),
        window_pattern="arched",
        storeys=(3, 5),
        sign_shape="banner",
        sign_font_px=20,
        sign_text=(255, 255, 255),
        sign_border=(20, 20, 20),
        light="day",
    ),
    Style(
        name="tropical_noon",
        sky_top=(0, 110, 230),
        sky_bottom=(120, 200, 255),
        road=(130, 130, 125),
        sidewalk=(240, 225, 200),
        marking=(255, 255, 255),
        facades=((250, 170, 190), (150, 230, 200), (255, 230, 140)),
        window=(40, 120, 140),
        window_pattern="bands",
        storeys=(2, 4),
        sign_shape="rounded",
        sign_font_px=22,
        sign_text=(255, 255, 255),
        sign_border=(255, 255, 255),
        light="day",
    ),
    Style(
        name="old_town_rain",
        sky_top=(55, 65, 80),
        sky_bottom=(110, 120, 130),
        road=(55, 50, 45),
        sidewalk=(100, 95, 85),
        marking=(200, 200, 190),
        facades=((205, 185, 135), (180, 160, 115), (215, 200, 160)),
        window=(35, 35, 40),
        window_pattern="arched",
        storeys=(3, 5),
        sign_shape="banner",
        sign_font_px=19,
        sign_text=(250, 245, 230),
        sign_border=(60, 50, 40),
        light="dusk",
    ),
)

STYLES = {s.name: s for s in (TRAINING_STYLE, *OOD_STYLES)}


def get_style(name: str) -> Style:
    """The style called `name`; ValueError lists the known names."""
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown city style {name!r}; use one of {sorted(STYLES)}") from None
