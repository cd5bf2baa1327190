"""The GeneralPoints prompt: one function per turn kind, shared by the RL env and the SFT export.

Every text here is ASCII, so observations stay inside `envs.spaces.PROMPT_CHARSET`. GP-L lists
the cards in the task; GP-VL says they are in the image and lists nothing. The answer format is
a schema without values (spec "Fidelity"): a worked example would state face-card values, and
under rule OOD those would contradict the rule the prompt states.
"""

from __future__ import annotations

MAX_PROMPT_CHARS = 2048  # bound of one system or user turn (the task is ~500 characters)

#: The answer's format, the task's last line(s): a schema whose slots carry no values.
ANSWER_FORMAT = (
    'Answer with one JSON object of the form {"cards": [...], "number": [...], "formula": "..."}: '
    '"cards" lists the cards you see as written on them, "number" their numbers under the rule above '
    'in the same order, and "formula" is your formula.'
)


def system_prompt(target: int) -> str:
    """The system turn."""
    return f"You are an expert player of the {target}-points card game."


def face_rule(face_cards: tuple[int, int, int]) -> str:
    """The face-card rule as one sentence."""
    if len(set(face_cards)) == 1:
        return f"A counts as 1, and J, Q and K each count as {face_cards[0]}."
    j, q, k = face_cards
    return f"A counts as 1, J counts as {j}, Q as {q} and K as {k}."


def task_prompt(ranks: tuple[str, ...] | None, face_cards: tuple[int, int, int], *, target: int) -> str:
    """The first user turn; ``ranks=None`` for the image modality (the cards are in the picture)."""
    if ranks is None:
        cards = "The image shows four playing cards."
    else:
        cards = f"You are given four playing cards: {', '.join(ranks)}."
    return (
        f"{cards} {face_rule(face_cards)} Write one formula that uses the number of each card "
        f"exactly once, with only + - * / and parentheses, and equals {target}.\n{ANSWER_FORMAT}"
    )


def feedback_prompt(feedback: str) -> str:
    """The user turn after a wrong answer (sequential revision)."""
    return f"You failed this trial because {feedback} Try again with a new JSON answer."
