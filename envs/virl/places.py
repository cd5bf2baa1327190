"""The catalogue of landmark names, categories and sign colours that synthetic cities draw from.

Names are realistic (chains and typical independent shops of a large city); each has the sign
colour its brand is known for, so the same place looks the same in every picture.
"""

from __future__ import annotations

from typing import NamedTuple


class PlaceKind(NamedTuple):
    """One catalogue entry: a landmark's name, category and sign colour (RGB)."""

    name: str
    category: str
    sign_colour: tuple[int, int, int]


def _kinds(category: str, entries: list[tuple[str, tuple[int, int, int]]]) -> list[PlaceKind]:
    return [PlaceKind(name, category, colour) for name, colour in entries]


CATALOGUE: tuple[PlaceKind, ...] = tuple(
    _kinds(
        "bank",
        [
            ("Chase Bank", (17, 94, 169)),
            ("Citibank", (0, 61, 121)),
            ("Bank of America", (200, 16, 46)),
            ("TD Bank", (44, 136, 56)),
            ("Wells Fargo", (205, 17, 25)),
            ("Capital One", (0, 65, 106)),
            ("HSBC", (219, 0, 17)),
            ("Santander", (236, 0, 0)),
        ],
    )
    + _kinds(
        "cafe",
        [
            ("Starbucks", (0, 112, 74)),
            ("Dunkin'", (255, 103, 31)),
            ("Blue Bottle Coffee", (0, 132, 202)),
            ("Joe Coffee", (40, 40, 40)),
            ("Gregorys Coffee", (0, 85, 150)),
            ("Birch Coffee", (120, 80, 50)),
            ("Le Pain Quotidien", (150, 110, 70)),
            ("Tim Hortons", (200, 16, 46)),
        ],
    )
    + _kinds(
        "pharmacy",
        [
            ("CVS Pharmacy", (204, 0, 0)),
            ("Walgreens", (227, 24, 55)),
            ("Duane Reade", (0, 84, 147)),
            ("Rite Aid", (0, 71, 171)),
            ("Boots Pharmacy", (0, 80, 160)),
        ],
    )
    + _kinds(
        "museum",
        [
            ("City Museum", (90, 60, 120)),
            ("Museum of Modern Art", (20, 20, 20)),
            ("Natural History Museum", (100, 80, 40)),
            ("Transit Museum", (0, 100, 140)),
            ("Museum of Design", (180, 40, 90)),
        ],
    )
    + _kinds(
        "restaurant",
        [
            ("Shake Shack", (90, 150, 40)),
            ("Chipotle", (140, 30, 20)),
            ("Joe's Pizza", (190, 30, 30)),
            ("Katz's Deli", (170, 40, 40)),
            ("Sweetgreen", (40, 120, 60)),
            ("Five Guys", (200, 20, 40)),
            ("Panda Express", (200, 20, 30)),
            ("Olive Garden", (90, 110, 40)),
            ("Ippudo Ramen", (30, 30, 30)),
            ("Taco Bell", (100, 40, 140)),
        ],
    )
    + _kinds(
        "grocery",
        [
            ("Whole Foods Market", (0, 103, 71)),
            ("Trader Joe's", (200, 30, 40)),
            ("Key Food", (220, 30, 40)),
            ("Westside Market", (30, 90, 60)),
            ("Morton Williams", (150, 20, 30)),
            ("7-Eleven", (0, 120, 80)),
        ],
    )
    + _kinds(
        "hotel",
        [
            ("Hilton Hotel", (16, 50, 110)),
            ("Marriott", (160, 30, 50)),
            ("Hyatt", (100, 70, 40)),
            ("Holiday Inn", (0, 120, 60)),
            ("The Standard", (20, 20, 20)),
        ],
    )
    + _kinds(
        "bookstore",
        [
            ("Barnes & Noble", (40, 80, 60)),
            ("Strand Books", (180, 20, 30)),
            ("McNally Jackson", (60, 60, 60)),
            ("Book Culture", (110, 40, 90)),
        ],
    )
    + _kinds(
        "gym",
        [
            ("Equinox", (20, 20, 20)),
            ("Planet Fitness", (90, 40, 140)),
            ("Blink Fitness", (0, 150, 200)),
            ("Crunch Fitness", (210, 60, 20)),
        ],
    )
    + _kinds(
        "store",
        [
            ("Apple Store", (120, 120, 125)),
            ("Best Buy", (0, 70, 190)),
            ("Target", (204, 0, 0)),
            ("Uniqlo", (255, 0, 0)),
            ("Zara", (30, 30, 30)),
            ("Sephora", (25, 25, 25)),
            ("Staples", (204, 0, 0)),
            ("Home Depot", (240, 100, 20)),
            ("GameStop", (200, 0, 0)),
            ("Foot Locker", (40, 40, 40)),
        ],
    )
    + _kinds(
        "post office", [("US Post Office", (0, 50, 120)), ("FedEx Office", (77, 20, 140)), ("UPS Store", (80, 50, 20))]
    )
    + _kinds(
        "cinema",
        [("AMC Theatres", (200, 20, 40)), ("Regal Cinemas", (120, 20, 30)), ("Angelika Film Center", (30, 30, 60))],
    )
)
