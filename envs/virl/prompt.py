"""The V-IRL prompt, shared by the RL environment and the SFT export (one function per turn kind).

Sections: task, numbered directions, (VL) the picture layout, action space, observation-action
history, output format. Everything is ASCII, so observations stay inside `envs.spaces.PROMPT_CHARSET`.
"""

from __future__ import annotations

from envs.virl.geometry import COMPASS, RELATIVE

MAX_PROMPT_CHARS = 8192  # bound of one system or user turn (a long route's prompt is ~4,000)
#: The picture's layout, as the renderer draws it (render.VIEW_ORDER).
PICTURE_LAYOUT = (
    "The picture is a 2x2 grid of street views around you, each labelled at its top: "
    "top-left = front, top-right = right, bottom-left = back, bottom-right = left. "
    "The signs on the buildings name the landmarks."
)
_EXAMPLE = (
    '{"current observation": "No landmarks nearby", "current instruction": '
    '"Move forward until you reach the next intersection.", "action": "forward()"}'
)


def system_prompt() -> str:
    """The system turn."""
    return "You are an expert navigator who follows route directions through a city on foot."


def action_space_text(relative_turns: bool) -> str:
    """The action space: absolute turns (8 compass directions) or relative turns (rule_ood)."""
    directions = ", ".join(RELATIVE if relative_turns else COMPASS)
    return (
        '"forward()": move forward along the street to the next point\n'
        f'"turn_direction(x)": turn to face x, where x is one of: {directions}\n'
        '"stop()": stop, you have reached the destination'
    )


def task_prompt(instructions: str, history: str, *, relative_turns: bool, picture: bool) -> str:
    """The user turn at a rail point: directions, (picture layout), action space, history, format."""
    observation = f"[Observation]\n{PICTURE_LAYOUT}\n\n" if picture else ""
    return (
        "[Task]\nFollow the directions below. Find the sentence of the directions that applies at "
        "your current position, then choose the action to take now.\n\n"
        f"[Directions]\n{instructions}\n\n{observation}"
        f"[Action space]\n{action_space_text(relative_turns)}\n\n"
        f"[Observations and actions so far]\n{history}\n\n"
        '[Output]\nAnswer with one JSON object with the keys "current observation" (what you '
        'observe now), "current instruction" (the sentence of the directions that applies now) '
        'and "action" (one action from the action space). Format example:\n'
        f"{_EXAMPLE}"
    )


def feedback_prompt(feedback: str) -> str:
    """The user turn after a wrong answer at the same rail point."""
    return f"You failed this trial because {feedback} Answer again with a new JSON object."
