"""City styles: how a city looks (palette, architecture, signs, light), never how it works.

`TRAINING_STYLE` is the in-distribution look (a New York-like day); `OOD_STYLES` are the looks of
the visual_ood cities. They differ in ways a vision model can notice (sky, facades, windows,
building heights, sign shapes, light) while every sign stays readable: its text is drawn with
Pillow's built-in scalable font at `sign_font_px` (at the default 320-pixel view; scaled with the
view size, never below 14 px). The styles themselves are data: `envs/virl/data/styles.json` (the
training style, then the OOD styles), one key per `Style` field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
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


def _style(fields: dict) -> Style:
    """A Style from its JSON form (lists become the tuples the dataclass declares)."""
    return Style(**{key: _tuples(value) for key, value in fields.items()})


def _tuples(value):
    return tuple(_tuples(item) for item in value) if isinstance(value, list) else value


_STYLES = json.loads((files("envs.virl") / "data" / "styles.json").read_text())
TRAINING_STYLE: Style = _style(_STYLES["training"])
OOD_STYLES: tuple[Style, ...] = tuple(_style(fields) for fields in _STYLES["ood"])

STYLES = {s.name: s for s in (TRAINING_STYLE, *OOD_STYLES)}


def get_style(name: str) -> Style:
    """The style called `name`; ValueError lists the known names."""
    try:
        return STYLES[name]
    except KeyError:
        raise ValueError(f"unknown city style {name!r}; use one of {sorted(STYLES)}") from None
