"""The V-IRL oracle: the correct answer at a rail point, as the prompt asks for it.

`{"current observation": <full text observation>, "current instruction": <the sentence that
applies>, "action": <the expert action of the variant>}`.
"""

from __future__ import annotations

import json

from envs.virl.route import Route


def oracle_answer(route: Route, point_index: int, *, variant: str) -> str:
    """The correct JSON answer text at `route.points[point_index]`."""
    point = route.points[point_index]
    return json.dumps(
        {
            "current observation": point.observation_text,
            "current instruction": route.instructions[point.instruction_index - 1],
            "action": route.expected_action(point_index, variant),
        }
    )
