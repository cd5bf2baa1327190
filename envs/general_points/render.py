"""Procedural pictures of a GeneralPoints hand: four cards side by side on green felt.

Each card is drawn once with Pillow shapes (suit symbols from ellipses and polygons) and Pillow's
built-in scalable font (`ImageFont.load_default(size=...)`, no font files), supersampled 2x for
smooth edges, and cached as a numpy sprite per (rank, suit, card size). A picture is then one copy
of the cached felt canvas plus four array slices, so rendering stays fast at 1200x1200.
Run `python -m envs.general_points.render out.png` to save an example.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont

FELT = (28, 110, 64)
CARD_FACE = (250, 250, 246)
CARD_EDGE = (150, 150, 150)
RED = (200, 30, 45)
BLACK = (20, 20, 20)
SUIT_COLOURS = {"spades": BLACK, "clubs": BLACK, "hearts": RED, "diamonds": RED}
_SUPERSAMPLE = 2


@dataclass(frozen=True)
class Layout:
    """Card size and the top-left corner of each card on a canvas."""

    card_width: int
    card_height: int
    corners: tuple[tuple[int, int], ...]


@lru_cache(maxsize=16)
def layout(width: int, height: int, n_cards: int = 4) -> Layout:
    """Cards of aspect 5:7 in a centred row, with gaps of a quarter card width."""
    card_width = min(int(width / (n_cards + (n_cards + 1) / 4)), int(height * 0.8 * 5 / 7))
    card_height = card_width * 7 // 5
    gap = (width - n_cards * card_width) // (n_cards + 1)
    top = (height - card_height) // 2
    corners = tuple((gap + i * (card_width + gap), top) for i in range(n_cards))
    return Layout(card_width, card_height, corners)


def render_hand(ranks: tuple[str, ...], suits: tuple[str, ...], *, size: tuple[int, int] = (1200, 1200)) -> np.ndarray:
    """The picture of a hand as an (H, W, 3) uint8 array; ``size`` is (width, height)."""
    width, height = size
    spots = layout(width, height, len(ranks))
    canvas = _felt(width, height).copy()  # (H, W, 3)
    for (x, y), rank, suit in zip(spots.corners, ranks, suits, strict=True):
        canvas[y : y + spots.card_height, x : x + spots.card_width] = card_sprite(
            rank, suit, (spots.card_width, spots.card_height)
        )
    return canvas


@lru_cache(maxsize=16)
def _felt(width: int, height: int) -> np.ndarray:
    """The empty green table, (H, W, 3) uint8, cached per size (callers copy it)."""
    canvas = np.empty((height, width, 3), dtype=np.uint8)
    canvas[:] = FELT
    canvas.flags.writeable = False
    return canvas


@lru_cache(maxsize=512)
def card_sprite(rank: str, suit: str, size: tuple[int, int]) -> np.ndarray:
    """One card of ``size`` (width, height) as an (height, width, 3) uint8 array, cached."""
    width, height = size
    scale = _SUPERSAMPLE
    w, h = width * scale, height * scale
    image = Image.new("RGB", (w, h), FELT)
    draw = ImageDraw.Draw(image)
    border = max(2, w // 120)
    draw.rounded_rectangle((0, 0, w - 1, h - 1), radius=w // 12, fill=CARD_FACE, outline=CARD_EDGE, width=border)
    colour = SUIT_COLOURS[suit]
    corner = _corner_index(rank, suit, colour=colour, card_width=w)
    margin = w // 22
    image.paste(corner, (margin, margin))
    image.paste(corner.rotate(180), (w - margin - corner.width, h - margin - corner.height))
    draw_suit(draw, suit, (w // 2, h // 2), size=w * 0.42, colour=colour)
    sprite = np.asarray(image.resize((width, height), Image.LANCZOS), dtype=np.uint8)
    sprite.flags.writeable = False
    return sprite


def _corner_index(rank: str, suit: str, *, colour: tuple[int, int, int], card_width: int) -> Image.Image:
    """The rank over a small suit symbol, as drawn in a card's corner."""
    font = ImageFont.load_default(size=max(8, int(card_width * 0.24)))
    box_width, box_height = int(card_width * 0.3), int(card_width * 0.46)
    corner = Image.new("RGB", (box_width, box_height), CARD_FACE)
    draw = ImageDraw.Draw(corner)
    draw.text((box_width // 2, 0), rank, font=font, fill=colour, anchor="mt")
    symbol = card_width * 0.14
    draw_suit(draw, suit, (box_width // 2, int(box_height - symbol / 2 - 2)), size=symbol, colour=colour)
    return corner


def draw_suit(draw: ImageDraw.ImageDraw, suit: str, centre: tuple[int, int], *, size: float, colour) -> None:
    """Draw one suit symbol of height ``size`` centred at ``centre``."""
    cx, cy = centre
    s = size / 2
    if suit == "diamonds":
        draw.polygon([(cx, cy - s), (cx + 0.75 * s, cy), (cx, cy + s), (cx - 0.75 * s, cy)], fill=colour)
    elif suit == "hearts":
        r = 0.5 * s
        for dx in (-r, r):
            draw.ellipse((cx + dx - r, cy - 0.9 * s, cx + dx + r, cy - 0.9 * s + 2 * r), fill=colour)
        draw.polygon([(cx - 1.95 * r, cy - 0.35 * s), (cx + 1.95 * r, cy - 0.35 * s), (cx, cy + s)], fill=colour)
    elif suit == "spades":
        r = 0.45 * s
        for dx in (-r, r):
            draw.ellipse((cx + dx - r, cy + 0.3 * s - r, cx + dx + r, cy + 0.3 * s + r), fill=colour)
        draw.polygon([(cx - 1.95 * r, cy + 0.2 * s), (cx + 1.95 * r, cy + 0.2 * s), (cx, cy - s)], fill=colour)
        draw.polygon([(cx, cy + 0.2 * s), (cx + 0.35 * s, cy + s), (cx - 0.35 * s, cy + s)], fill=colour)
    elif suit == "clubs":
        r = 0.38 * s
        for dx, dy in ((0.0, -0.5 * s), (-0.45 * s, 0.1 * s), (0.45 * s, 0.1 * s), (0.0, -0.05 * s)):
            draw.ellipse((cx + dx - r, cy + dy - r, cx + dx + r, cy + dy + r), fill=colour)
        draw.polygon([(cx, cy - 0.1 * s), (cx + 0.35 * s, cy + s), (cx - 0.35 * s, cy + s)], fill=colour)
    else:
        raise ValueError(f"unknown suit {suit!r}; use one of {sorted(SUIT_COLOURS)}")


if __name__ == "__main__":
    import sys

    picture = render_hand(("A", "10", "Q", "7"), ("spades", "hearts", "clubs", "diamonds"))
    Image.fromarray(picture).save(sys.argv[1] if len(sys.argv) > 1 else "hand.png")
