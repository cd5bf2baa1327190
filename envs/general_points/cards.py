"""Cards, face-card rules and the exact solution tables of GeneralPoints.

A hand is four ranks (A, 2-10, J, Q, K; repeats allowed). Its numbers depend on the face-card
rule: in-distribution J, Q, K count as 10, rule-OOD as 11, 12, 13; A is always 1. A hand is
solvable when some formula over its four numbers with + - * / and parentheses equals the target
exactly (fractions, so 3,3,8,8 is solvable by 8/(3-8/3)).

`solution_table(face_cards, target)` enumerates every solution of every one of the 1,820 rank
multisets once per (rule, target) and caches it, so dealing a hand is a dictionary lookup.
Solutions are found by splitting the multiset into two parts and looking up, for each value of the
smaller part, the six values of the other part that reach the target; parts of up to three numbers
are memoised across hands. Run `python -m envs.general_points.cards` to print table statistics.

`hand_split_key(ranks)` is a hand's key for the held-out split (`envs.splits`): its numbers under
the in-distribution rule, so all variants split the 1,820 multisets the same way.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import cache

RANKS: tuple[str, ...] = ("A", "2", "3", "4", "5", "6", "7", "8", "9", "10", "J", "Q", "K")
FACE_RANKS: frozenset[str] = frozenset({"J", "Q", "K"})
SUITS: tuple[str, ...] = ("spades", "clubs", "hearts", "diamonds")
BLACK_SUITS: tuple[str, ...] = ("spades", "clubs")
RED_SUITS: tuple[str, ...] = ("hearts", "diamonds")
FACE_TEN: tuple[int, int, int] = (10, 10, 10)  # values of J, Q, K in-distribution
FACE_ORDINAL: tuple[int, int, int] = (11, 12, 13)  # values of J, Q, K under the rule-OOD variant
HAND_SIZE = 4

_RANK_ALIASES: dict[str, str] = {
    **{rank: rank for rank in RANKS},
    "1": "A", "ACE": "A", "11": "J", "JACK": "J", "12": "Q", "QUEEN": "Q", "13": "K", "KING": "K",
}  # fmt: skip

_RANK_ORDER = {rank: i for i, rank in enumerate(RANKS)}
_ATOM, _MUL, _ADD = 3, 2, 1  # precedence of an expression's outermost operator
Expr = tuple[str, int]  # (text, precedence)


@cache
def rank_values(face_cards: tuple[int, int, int]) -> dict[str, int]:
    """Rank -> number under a face-card rule (cached; callers must not mutate it)."""
    values = {rank: int(rank) for rank in RANKS[1:10]}
    return {"A": 1, **values, **dict(zip("JQK", face_cards, strict=True))}


def hand_values(ranks: tuple[str, ...] | list[str], face_cards: tuple[int, int, int]) -> list[int]:
    """The numbers of a hand, in the order of its cards."""
    values = rank_values(tuple(face_cards))
    return [values[rank] for rank in ranks]


def sorted_ranks(ranks: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """A hand's ranks in the order of RANKS (the key of a rank multiset)."""
    return tuple(sorted(ranks, key=_RANK_ORDER.__getitem__))


def normalise_rank(card: object) -> str | None:
    """Read a card as a policy may write it ("K", "k", "King", "10", 10, 1 for A); None if not a card."""
    if isinstance(card, bool):
        return None
    if isinstance(card, int):
        card = str(card)
    if not isinstance(card, str) or len(card) > 8:
        return None
    return _RANK_ALIASES.get(card.strip().upper())


def hand_split_key(ranks: tuple[str, ...] | list[str]) -> str:
    """The hand's key for the held-out split: its sorted numbers under the in-distribution rule.

    Hands that differ only by swapping J, Q, K and 10 for one another pose the same
    in-distribution problem (all four count as 10), so they share a key and therefore a split.
    Every variant uses this key, so a rule-OOD or visual-OOD evaluation hand is never a training
    multiset either.
    """
    return "general_points:" + ",".join(str(value) for value in sorted(hand_values(ranks, FACE_TEN)))


@dataclass(frozen=True)
class SolutionTable:
    """All solutions of every hand for one face-card rule and target.

    ``by_values`` maps a sorted tuple of four numbers to its solution formulas (absent when the
    hand is unsolvable); ``solvable_ranks`` holds the sorted rank multisets that have a solution.
    """

    face_cards: tuple[int, int, int]
    target: int
    by_values: dict[tuple[int, ...], tuple[str, ...]]
    solvable_ranks: frozenset[tuple[str, ...]]

    def solutions(self, ranks: tuple[str, ...] | list[str]) -> tuple[str, ...]:
        """The solutions of a hand (any card order); empty when it has none."""
        return self.by_values.get(tuple(sorted(hand_values(ranks, self.face_cards))), ())

    def is_solvable(self, ranks: tuple[str, ...] | list[str]) -> bool:
        """Whether the hand (any card order) has at least one solution."""
        return sorted_ranks(ranks) in self.solvable_ranks


@cache
def solution_table(face_cards: tuple[int, int, int], target: int) -> SolutionTable:
    """Build (once per process and arguments) the solution table over all 1,820 rank multisets."""
    by_values: dict[tuple[int, ...], tuple[str, ...]] = {}
    solvable: set[tuple[str, ...]] = set()
    goal = Fraction(target)
    for ranks in itertools.combinations_with_replacement(RANKS, HAND_SIZE):
        values = tuple(sorted(hand_values(ranks, face_cards)))
        if values not in by_values:
            by_values[values] = _solutions(values, goal)
        if by_values[values]:
            solvable.add(ranks)
    by_values = {values: found for values, found in by_values.items() if found}
    return SolutionTable(face_cards, target, by_values, frozenset(solvable))


def _solutions(values: tuple[int, ...], goal: Fraction) -> tuple[str, ...]:
    """Every formula over ``values`` (each used once) that equals ``goal``, sorted, no duplicates."""
    found: set[str] = set()
    for left, right in _splits(values):
        small, large = _expressions(left), _expressions(right)
        for x, x_exprs in small.items():
            for y, make in _completions(x, goal):
                for y_expr in large.get(y, ()):
                    found.update(make(x_expr, y_expr)[0] for x_expr in x_exprs)
    return tuple(sorted(found, key=lambda text: (len(text), text)))


def _completions(x: Fraction, goal: Fraction) -> Iterator[tuple[Fraction, Callable[[Expr, Expr], Expr]]]:
    """The values y with ``x op y == goal`` or ``y op x == goal``, each with its formula builder."""
    yield goal - x, lambda a, b: _join(a, "+", b)
    yield x - goal, lambda a, b: _join(a, "-", b)
    yield x + goal, lambda a, b: _join(b, "-", a)
    if x != 0:
        yield goal / x, lambda a, b: _join(a, "*", b)
        yield goal * x, lambda a, b: _join(b, "/", a)
    if x != 0 and goal != 0:
        yield x / goal, lambda a, b: _join(a, "/", b)


@cache
def _expressions(values: tuple[int, ...]) -> dict[Fraction, tuple[Expr, ...]]:
    """All expressions over a sorted multiset of up to three numbers, grouped by exact value."""
    if len(values) == 1:
        return {Fraction(values[0]): ((str(values[0]), _ATOM),)}
    grouped: dict[Fraction, set[Expr]] = defaultdict(set)
    for left, right in _splits(values):
        for x, x_exprs in _expressions(left).items():
            for y, y_exprs in _expressions(right).items():
                for a, b in itertools.product(x_exprs, y_exprs):
                    for value, expr in _combine(x, a, y, b):
                        grouped[value].add(expr)
    return {value: tuple(sorted(exprs)) for value, exprs in grouped.items()}


def _combine(x: Fraction, a: Expr, y: Fraction, b: Expr) -> Iterator[tuple[Fraction, Expr]]:
    """The six ways to join two expressions (both orders for - and /, one for + and *)."""
    first, second = (a, b) if a <= b else (b, a)
    yield x + y, _join(first, "+", second)
    yield x * y, _join(first, "*", second)
    yield x - y, _join(a, "-", b)
    yield y - x, _join(b, "-", a)
    if y != 0:
        yield x / y, _join(a, "/", b)
    if x != 0:
        yield y / x, _join(b, "/", a)


def _join(a: Expr, op: str, b: Expr) -> Expr:
    """Write ``a op b`` with the fewest parentheses that keep its meaning."""
    prec = _ADD if op in "+-" else _MUL
    left = a[0] if a[1] >= prec else f"({a[0]})"
    right_ok = b[1] > prec if op in "-/" else b[1] >= prec
    right = b[0] if right_ok else f"({b[0]})"
    return f"{left}{op}{right}", prec


def _splits(values: tuple[int, ...]) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """Distinct ways to split a sorted multiset in two non-empty parts, smaller part first."""
    seen: set[tuple[tuple[int, ...], tuple[int, ...]]] = set()
    for size in range(1, len(values) // 2 + 1):
        for picked in itertools.combinations(range(len(values)), size):
            left = tuple(values[i] for i in picked)
            right = tuple(v for i, v in enumerate(values) if i not in picked)
            seen.add((left, right) if size < len(values) - size else tuple(sorted((left, right))))
    return sorted(seen)


def multiset_difference(have: list[str], want: list[str]) -> tuple[list[str], list[str]]:
    """(items in ``have`` beyond ``want``, items in ``want`` missing from ``have``), as multisets."""
    extra = Counter(have) - Counter(want)
    missing = Counter(want) - Counter(have)
    return sorted(extra.elements(), key=RANKS.index), sorted(missing.elements(), key=RANKS.index)


if __name__ == "__main__":
    import time

    from envs.splits import split_of

    for rule in (FACE_TEN, FACE_ORDINAL):
        start = time.perf_counter()
        table = solution_table(rule, 24)
        n_solutions = sum(len(found) for found in table.by_values.values())
        n_eval = sum(split_of(hand_split_key(ranks)) == "eval" for ranks in table.solvable_ranks)
        print(
            f"J,Q,K={rule}: {len(table.solvable_ranks)}/1820 rank multisets solvable ({n_eval} in the eval split), "
            f"{n_solutions} solutions, built in {time.perf_counter() - start:.2f} s"
        )
