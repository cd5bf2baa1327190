"""Judge one V-IRL answer: reward, correctness and feedback (spec-virl.md, "Reward").

The answer is read leniently (`envs.answer_json.extract_answer`); the action must equal the
expert action after normalising whitespace and case (`turn_direction( North )` =
`turn_direction(north)`). A wrong action costs `wrong_action`, or `wrong_observation` instead when
the answer's `current observation` claims an intersection where there is none or denies one where
there is (compared with the full observation, intersection sentence included). Answers without a
readable object or without a string `current observation` are judged on the action only.
Feedback sentences hold only text we write, never the policy's characters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from envs.answer_json import extract_answer
from envs.spaces import MAX_ANSWER_CHARS
from envs.virl.route import INTERSECTION

_PAREN_SPACE = re.compile(r"\s*([()])\s*")
_MENTION = re.compile(r"\bintersections?\b")
# A negation at most three words before "intersection": "no intersection", "not at an intersection".
_NEGATED = re.compile(r"(?:\b(?:no|not|without|never)|n't)(?:\s+\w+){0,3}\s+intersections?\b")


@dataclass(frozen=True)
class RewardTable:
    """Reward per outcome; the defaults are the paper's values (Chu et al., 2025, Sec. 5)."""

    correct: float = 1.0
    wrong_action: float = -1.0
    wrong_observation: float = -1.5


@dataclass(frozen=True)
class Verdict:
    """The judgement of one answer. `answer` holds the fields read (None when absent)."""

    reward: float
    correct: bool
    feedback: str
    answer: dict


def normalise_action(action: str) -> str:
    """Lower case, single spaces, no spaces around parentheses."""
    return _PAREN_SPACE.sub(r"\1", " ".join(action.lower().split()))


def claims_intersection(observation: str) -> bool:
    """Whether an observation sentence says the agent is at an intersection (negations count)."""
    text = observation.lower()
    return bool(_MENTION.search(text)) and not _NEGATED.search(text)


def judge(text: str, *, expected_action: str, observation_text: str, rewards: RewardTable) -> Verdict:
    """Judge the policy's raw `text` at a rail point; never raises on a str."""
    obj = extract_answer(text, max_chars=MAX_ANSWER_CHARS) if isinstance(text, str) else None
    obj = obj or {}
    answer = {key: obj.get(key) for key in ("current observation", "current instruction", "action")}
    action = answer["action"]
    if not isinstance(action, str):
        return Verdict(
            rewards.wrong_action, False, 'no JSON object with a string "action" was found in your answer.', answer
        )
    if normalise_action(action) == normalise_action(expected_action):
        return Verdict(rewards.correct, True, "", answer)
    observed = answer["current observation"]
    at_intersection = INTERSECTION in observation_text
    if isinstance(observed, str) and claims_intersection(observed) != at_intersection:
        where = "you are at an intersection" if at_intersection else "you are not at an intersection"
        return Verdict(
            rewards.wrong_observation,
            False,
            f"your current observation is wrong ({where}) and so is your action.",
            answer,
        )
    return Verdict(rewards.wrong_action, False, "your action is not the right one at this point.", answer)
