"""The observation-action history shown to the policy: "O_1: ... A_1: ... O_n: ... A_n:".

Past observations are the full text observations of the rail points already passed, each with
the (correct) action that moved the agent on. The current observation is the text observation for
V-IRL-L, and for V-IRL-VL a pointer to the picture (the picture is the observation there) followed,
at an intersection, by the sentence "You observe an intersection", which the paper's code gives in
text next to the picture (spec "Fidelity").
"""

from __future__ import annotations

from envs.virl.route import INTERSECTION

PICTURE_OBSERVATION = "the four street views in the picture"


def picture_observation(is_intersection: bool) -> str:
    """The V-IRL-VL current observation: the picture pointer, plus the intersection cue at one."""
    return f"{PICTURE_OBSERVATION}; {INTERSECTION}" if is_intersection else PICTURE_OBSERVATION


def history_text(past: list[tuple[str, str]], current: str) -> str:
    """Numbered lines; the last observation has an empty action slot for the policy to fill."""
    lines = []
    for i, (observation, action) in enumerate(past, start=1):
        lines += [f"O_{i}: {observation}", f"A_{i}: {action}"]
    n = len(past) + 1
    lines += [f"O_{n}: {current}", f"A_{n}:"]
    return "\n".join(lines)
