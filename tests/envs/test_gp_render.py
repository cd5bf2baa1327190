"""Card pictures: deterministic, distinct per card, rank and suit drawn where expected, suit colours."""

import gymnasium as gym
import numpy as np
import pytest

import envs  # noqa: F401  (registers the ids)
from envs.general_points.render import FELT, card_sprite, layout, render_hand

SIZE = (600, 600)
HAND = ("A", "10", "Q", "7")


def _card_box(index, size=SIZE):
    spots = layout(*size)
    x, y = spots.corners[index]
    return slice(y, y + spots.card_height), slice(x, x + spots.card_width)


def test_picture_shape_dtype_and_felt_background():
    picture = render_hand(HAND, ("spades",) * 4, size=(640, 480))
    assert picture.shape == (480, 640, 3) and picture.dtype == np.uint8
    assert tuple(picture[2, 2]) == FELT and tuple(picture[-3, -3]) == FELT


def test_cards_lie_inside_the_canvas_without_overlap():
    for size in [(1200, 1200), (600, 300), (300, 900)]:
        spots = layout(*size)
        xs = [x for x, _ in spots.corners]
        assert all(b - a >= spots.card_width for a, b in zip(xs, xs[1:], strict=False))  # consecutive pairs
        assert xs[-1] + spots.card_width <= size[0] and spots.corners[0][1] + spots.card_height <= size[1]


def test_same_hand_same_picture_and_different_hands_differ():
    base = render_hand(HAND, ("spades", "clubs", "spades", "clubs"), size=SIZE)
    assert np.array_equal(base, render_hand(HAND, ("spades", "clubs", "spades", "clubs"), size=SIZE))
    pictures = {
        render_hand(h, ("spades",) * 4, size=SIZE).tobytes()
        for h in [HAND, ("A", "10", "Q", "8"), ("2", "10", "Q", "7"), HAND[::-1]]
    }
    assert len(pictures) == 4


def test_every_card_sprite_is_distinct():
    sprites = {card_sprite(rank, suit, (100, 140)).tobytes() for rank in
               ("A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K")
               for suit in ("spades", "clubs", "hearts", "diamonds")}  # fmt: skip
    assert len(sprites) == 52


def test_rank_changes_pixels_in_the_corners_only_and_suit_in_the_centre():
    w, h = 200, 280
    ace, king = card_sprite("A", "spades", (w, h)), card_sprite("K", "spades", (w, h))
    ace_clubs = card_sprite("A", "clubs", (w, h))
    corner = (slice(0, h // 4), slice(0, w // 3))
    centre = (slice(h // 3, 2 * h // 3), slice(w // 4, 3 * w // 4))
    assert np.abs(ace[corner].astype(int) - king[corner]).sum() > 0  # rank drawn in the corner
    assert np.array_equal(ace[centre], king[centre])  # the centre pip does not depend on rank
    assert np.abs(ace[centre].astype(int) - ace_clubs[centre]).sum() > 0  # suit drawn in the centre
    rank_area = (slice(0, h // 10), slice(0, w // 3))
    assert np.array_equal(ace[rank_area], ace_clubs[rank_area])  # the rank glyph is the same for both suits


def test_changing_one_card_changes_only_its_slot():
    a = render_hand(HAND, ("spades",) * 4, size=SIZE)
    b = render_hand(("A", "10", "K", "7"), ("spades",) * 4, size=SIZE)
    changed = np.argwhere((a != b).any(axis=2))
    rows, cols = _card_box(2)
    assert len(changed) > 0
    assert changed[:, 0].min() >= rows.start and changed[:, 0].max() < rows.stop
    assert changed[:, 1].min() >= cols.start and changed[:, 1].max() < cols.stop


def _ink(picture):
    """(red ink, dark neutral ink) pixel counts inside the cards."""
    counts = np.zeros(2, dtype=int)
    for index in range(4):
        card = picture[_card_box(index)].astype(int)
        r, g, b = card[..., 0], card[..., 1], card[..., 2]
        counts[0] += int(((r - g > 80) & (r - b > 60)).sum())
        counts[1] += int(((card.max(axis=2) - card.min(axis=2) < 30) & (card.max(axis=2) < 120)).sum())
    return counts


@pytest.mark.parametrize("variant, red", [("visual_ood", True), ("id", False), ("rule_ood", False)])
def test_suit_colours_match_the_variant(variant, red):
    env = gym.make("sftrl/GeneralPoints-v0", variant=variant, modality="image", image_size=SIZE)
    for seed in range(12):
        obs, _ = env.reset(seed=seed)
        red_ink, dark_ink = _ink(obs["image"])
        if red:
            assert red_ink > 500 and dark_ink == 0, (seed, red_ink, dark_ink)
        else:
            assert dark_ink > 500 and red_ink == 0, (seed, red_ink, dark_ink)


def test_the_ink_detector_sees_both_colours_in_a_mixed_hand():
    red_ink, dark_ink = _ink(render_hand(HAND, ("spades", "hearts", "clubs", "diamonds"), size=SIZE))
    assert red_ink > 500 and dark_ink > 500


def test_render_mode_rgb_array_returns_the_picture_for_text_envs_too():
    env = gym.make("sftrl/GeneralPoints-v0", modality="text", image_size=SIZE, render_mode="rgb_array")
    _, info = env.reset(seed=4)
    assert np.array_equal(env.render(), render_hand(tuple(info["cards"]), tuple(info["suits"]), size=SIZE))
