"""Solution tables: exact solvability, every listed solution is correct, known counts."""

import itertools
from fractions import Fraction

import numpy as np
import pytest

from envs.general_points.cards import (
    FACE_ORDINAL,
    FACE_TEN,
    RANKS,
    hand_values,
    normalise_rank,
    solution_table,
)  # fmt: skip
from envs.general_points.formula import parse_formula
from envs.general_points.verifier import RewardTable, judge


def _brute_force_solvable(values, target):
    """Independent check: reduce any two numbers with any operation until one is left."""

    def reduce(numbers):
        if len(numbers) == 1:
            return numbers[0] == target
        for i, j in itertools.permutations(range(len(numbers)), 2):
            rest = [n for k, n in enumerate(numbers) if k not in (i, j)]
            a, b = numbers[i], numbers[j]
            results = [a + b, a - b, a * b] + ([a / b] if b != 0 else [])
            if any(reduce(rest + [r]) for r in results):
                return True
        return False

    return reduce([Fraction(v) for v in values])


def test_3_3_8_8_is_solvable_only_by_the_exact_formula():
    table = solution_table(FACE_TEN, 24)
    assert table.is_solvable(["3", "3", "8", "8"])
    assert table.solutions(["8", "3", "8", "3"]) == ("8/(3-8/3)",)


def test_known_count_of_solvable_hands_with_1_to_13():
    # The classic 24 game over A..K = 1..13 has 1,362 solvable multisets out of 1,820.
    assert len(solution_table(FACE_ORDINAL, 24).solvable_ranks) == 1362


@pytest.mark.parametrize("face_cards", [FACE_TEN, FACE_ORDINAL])
def test_every_solution_in_the_table_scores_plus_5(face_cards):
    table = solution_table(face_cards, 24)
    rewards = RewardTable()
    for ranks in table.solvable_ranks:
        solutions = table.solutions(ranks)
        assert solutions, ranks
        for formula in solutions:
            verdict = judge(
                f'{{"formula": "{formula}"}}', ranks, face_cards, target=24, check_cards=False, rewards=rewards
            )
            assert verdict.reward == 5.0 and verdict.success, (ranks, formula, verdict.feedback)


@pytest.mark.parametrize("face_cards", [FACE_TEN, FACE_ORDINAL])
def test_solvability_agrees_with_a_brute_force_search(face_cards):
    table = solution_table(face_cards, 24)
    rng = np.random.default_rng(0)
    hands = [tuple(sorted(rng.choice(RANKS, size=4), key=RANKS.index)) for _ in range(80)]
    for ranks in hands + [("3", "3", "8", "8"), ("A", "A", "A", "A")]:
        assert table.is_solvable(ranks) == _brute_force_solvable(hand_values(ranks, face_cards), 24), ranks


def test_other_targets_build_their_own_table():
    table = solution_table(FACE_TEN, 10)
    assert table.is_solvable(["A", "2", "3", "4"])
    for formula in table.solutions(["A", "2", "3", "4"]):
        assert parse_formula(formula).value == 10


def test_table_lists_only_sorted_rank_multisets_and_no_duplicates():
    table = solution_table(FACE_TEN, 24)
    for ranks in table.solvable_ranks:
        assert list(ranks) == sorted(ranks, key=RANKS.index)
    for solutions in table.by_values.values():
        assert len(set(solutions)) == len(solutions)


@pytest.mark.parametrize(
    "written, rank",
    [("K", "K"), ("k", "K"), (" King ", "K"), (10, "10"), ("1", "A"), (1, "A"), ("ace", "A"), (13, "K"), ("q", "Q")],
)
def test_normalise_rank_reads_common_spellings(written, rank):
    assert normalise_rank(written) == rank


@pytest.mark.parametrize("written", ["Z", "14", 0, True, None, 3.0, "10 of spades", ["K"]])
def test_normalise_rank_rejects_non_cards(written):
    assert normalise_rank(written) is None
