"""The GeneralPoints oracle: a correct JSON answer for any solvable hand.

It picks one of the hand's solutions from the solution table with the caller's RNG (the env passes
its own ``np_random``, so seeded episodes give the same answers) and writes the answer the prompt
asks for, without spaces: ``{"cards":["3","3","8","8"],"number":[3,3,8,8],"formula":"8/(3-8/3)"}``.
"""

from __future__ import annotations

import json

import numpy as np

from envs.general_points.cards import hand_values, solution_table


def oracle_answer(
    cards: tuple[str, ...] | list[str], *, face_cards: tuple[int, int, int], target: int, rng: np.random.Generator
) -> str:
    """A correct answer text for ``cards`` (ranks as written); ValueError if the hand has no solution."""
    solutions = solution_table(tuple(face_cards), target).solutions(cards)
    if not solutions:
        raise ValueError(f"the hand {list(cards)} has no solution for target {target} with J,Q,K={face_cards}")
    formula = solutions[int(rng.integers(len(solutions)))]
    answer = {"cards": list(cards), "number": hand_values(cards, face_cards), "formula": formula}
    return json.dumps(answer, separators=(",", ":"))
