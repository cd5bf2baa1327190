"""The GeneralPoints Gymnasium environment (`sftrl/GeneralPoints-v0`); the class docstring is its manual.

import gymnasium, envs
env = gymnasium.make("sftrl/GeneralPoints-v0", variant="id", modality="image")
obs, info = env.reset(options={"cards": ["3", "3", "8", "8"]})  # obs["image"]: the hand, (H, W, 3)
answer = '{"cards": ["3", "3", "8", "8"], "number": [3, 3, 8, 8], "formula": "8/(3-8/3)"}'
obs, reward, terminated, truncated, info = env.step(answer)  # reward 5.0, terminated
"""

from __future__ import annotations

from typing import Any

import numpy as np

from envs import GENERAL_POINTS_MAX_EPISODE_STEPS, spaces
from envs.arguments import check_common_arguments, check_episode_bound
from envs.general_points.cards import (
    BLACK_SUITS,
    FACE_ORDINAL,
    FACE_RANKS,
    FACE_TEN,
    RANKS,
    RED_SUITS,
    SUITS,
    hand_split_key,
    hand_values,
    normalise_rank,
    solution_table,
)  # fmt: skip
from envs.general_points.oracle import oracle_answer
from envs.general_points.prompt import MAX_PROMPT_CHARS, feedback_prompt, system_prompt, task_prompt
from envs.general_points.render import render_hand
from envs.general_points.verifier import CATEGORIES, RewardTable, cards_match_hand, judge
from envs.spaces import MAX_ANSWER_CHARS, ChatEnv, Modality, Variant
from envs.splits import Split, in_split, split_of

# variant -> (J/Q/K values, suits of image hands, hand must hold a face card)
VARIANTS: dict[str, tuple[tuple[int, int, int], tuple[str, ...], bool]] = {
    "id": (FACE_TEN, BLACK_SUITS, False),
    "rule_ood": (FACE_ORDINAL, BLACK_SUITS, True),
    "visual_ood": (FACE_TEN, RED_SUITS, False),
}
FACE_CARD_RANKS = RANKS[-3:]  # J, Q, K: the rank a rule_ood hand is sure to hold is drawn from these


class GeneralPointsEnv(ChatEnv):
    """GeneralPoints: write one formula over four cards' numbers that equals the target.

    ## Description
    The arithmetic card game of "SFT Memorizes, RL Generalizes" (Chu et al., 2025), a
    generalisation of "24": the policy sees four cards and writes one formula that uses each
    card's number exactly once and equals the target. GP-L lists the cards in the prompt; GP-VL
    shows them only in a picture. Only solvable hands are dealt (exact rational arithmetic).

    ## Action Space
    The policy's raw text (`str`); `step` accepts any str and never raises on one. Declared as
    `Text(max_length=4096, min_length=0, charset=string.printable)`. The answer is one JSON object
    with `cards`, `number` and `formula`, e.g.
    `{"cards": ["3", "3", "8", "8"], "number": [3, 3, 8, 8], "formula": "8/(3-8/3)"}`.
    Parsing is lenient (code fences, single quotes, trailing commas, text around the object; a
    trailing `= 24` in the formula), judging strict (tokens: whole numbers, + - * / and parentheses).

    ## Observation Space
    `Dict(messages=ChatMessages)`, plus `image=Box(0, 255, (H, W, 3), uint8)` for
    `modality="image"`. `messages` is the chat so far (system turn, task turn, then alternating
    answers and "You failed this trial because ..." turns), ready for a chat template; with an
    image, the first user content is `[{"type": "image"}, {"type": "text", "text": ...}]`.
    System and user texts are ASCII (`string.printable`) of at most 2048 characters.

    ## Starting State
    Four ranks drawn uniformly with replacement from A, 2-10, J, Q, K with `self.np_random`; for
    `rule_ood` (as in the paper's code) three ranks drawn that way plus one drawn from J, Q, K, in
    an order shuffled with `self.np_random`. The hand is redrawn until it is solvable under the variant's
    rule and belongs to the env's `split`. Suits are drawn uniformly from the variant's suits.
    `reset(options={"cards": ["3", "3", "8", "8"]})` deals that hand (ValueError if it is
    unsolvable, lacks a face card under `rule_ood`, or lies outside the split).

    ## Rewards
    | outcome (first failing check decides) | reward |
    |---|---|
    | VL only: `cards` read differ from the hand (formula not judged) | -1.5 |
    | illegal formula / no answer object / no `formula` string | -3 |
    | number misuse, per kind (number on no card, used too often, not used) | -2 each |
    | legal formula, wrong value (or division by zero) | -1 |
    | formula equals the target | +5 |

    A wrong value's feedback gives the paper's hint: the longest beginning of the formula that
    begins a known solution ("... is partially correct but the full formula does not match any
    solution"), or that no part of it matches one; not the value reached.

    ## Episode End
    - Termination: an answer equals the target.
    - Truncation: the `max_attempts`-th answer failed (no extra call after the last failure).
    The registration's `max_episode_steps` (32) is a safety net: `max_attempts` may not exceed it.

    ## Information
    `cards` (ranks), `suits`, `numbers` (values under the rule), `target`, `variant`, `attempt`
    (answers judged so far), `success`, `feedback` (verifier sentence, "" on success or at reset),
    `reward_breakdown` (category -> reward, every category, zeros at reset), `answer` (`cards`, `number`, `formula`
    as read; {} at reset or when nothing was read), and the evaluation counts `eval_hits` /
    `eval_trials` (metric -> count; evaluation reports sum(hits) / sum(trials) over episodes):
    `card_accuracy`, whether the first answer's `cards` are the hand as a multiset, read with the
    verifier's own card names ("K", "king", 13, ...), and `legal_formula`, whether the first answer's
    formula is well-formed and uses each of the hand's numbers under the variant's rule exactly once
    (its value may be wrong: the verdict is `wrong_value` or success; J, Q, K written as 10 under
    rule_ood is a misuse); each 0 / 0 at reset, then hits 0 or 1 of 1 trial, in both modalities.

    ## Arguments
    - `variant`: "id" (J, Q, K = 10), "rule_ood" (J, Q, K = 11, 12, 13; a face card in every
      hand), "visual_ood" (image only: red suits instead of black).
    - `modality`: "text" or "image".
    - `split` ("all"): the held-out split of rank multisets (`envs.splits`, key
      `cards.hand_split_key`: the hand's numbers under J, Q, K = 10, the same for every variant,
      about 20% of multisets "eval"). "train" deals training multisets only, "eval" held-out ones
      only, "all" every multiset (the paper's no-split protocol; for id and visual_ood the same
      hands for the same seed as before splits existed). Drivers pass "train" for RL training and SFT export, "eval" for
      evaluation.
    - `target` (24), `max_attempts` (5, at most 32), `image_size` ((1200, 1200), width x height),
      `rewards` (`RewardTable`), `render_mode` (None or "rgb_array").

    ## Version History
    - v0: initial version; held-out `split` by card multiset; rule-OOD hands hold one forced face card.
    """

    def __init__(
        self,
        variant: Variant = "id",
        modality: Modality = "text",
        *,
        target: int = 24,
        max_attempts: int = 5,
        image_size: tuple[int, int] = (1200, 1200),
        rewards: RewardTable | None = None,
        split: Split = "all",
        render_mode: str | None = None,
    ):
        _check_arguments(
            variant, modality, split=split, target=target, max_attempts=max_attempts, image_size=image_size,
            render_mode=render_mode,
        )  # fmt: skip
        self.variant, self.modality, self.split, self.target = variant, modality, split, target
        self.face_cards, image_suits, self.face_required = VARIANTS[variant]
        self.suits = image_suits if modality == "image" else SUITS
        self.max_attempts = max_attempts
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.rewards = rewards or RewardTable()
        self.render_mode = render_mode
        self.table = solution_table(self.face_cards, target)
        self.action_space = spaces.answer_space()
        width, height = self.image_size
        self.observation_space = spaces.chat_observation_space(
            max_prompt_chars=MAX_PROMPT_CHARS,
            max_attempts=max_attempts,
            image_shape=(height, width, 3) if modality == "image" else None,
        )
        self._ranks: tuple[str, ...] = ()
        self._hand_suits: tuple[str, ...] = ()
        self._numbers: list[int] = []
        self._messages: list[dict] = []
        self._image: np.ndarray | None = None
        self._attempt = 0
        self._first_cards_read: bool | None = None  # None until the first answer is judged
        self._first_formula_legal = False
        self._done = True

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        """Deal a hand (``options={"cards": [...]}`` picks it) and return the first observation and info."""
        super().reset(seed=seed)
        options = options or {}
        unknown = set(options) - {"cards"}
        if unknown:
            raise ValueError(f"unknown reset options {sorted(unknown)}; the only option is 'cards'")
        self._ranks = self._hand_from(options["cards"]) if "cards" in options else self._deal()
        self._numbers = hand_values(self._ranks, self.face_cards)
        self._hand_suits = tuple(self.suits[i] for i in self._uniform_indices(len(self.suits), len(self._ranks)))
        self._attempt, self._first_cards_read, self._first_formula_legal, self._done = 0, None, False, False
        picture = self.modality == "image"
        task = task_prompt(None if picture else self._ranks, self.face_cards, target=self.target)
        if picture:
            self._image = render_hand(self._ranks, self._hand_suits, size=self.image_size)
        self._messages = spaces.opening_messages(system_prompt(self.target), task, with_image=picture)
        breakdown = dict.fromkeys(CATEGORIES, 0.0)
        return self._observation(), self._info(success=False, feedback="", breakdown=breakdown, answer={})

    def _deal(self) -> tuple[str, ...]:
        """Draw hands until one is solvable and in the env's split (rejection sampling)."""
        while True:
            ranks = self._draw_with_face_card() if self.face_required else self._draw_ranks(4)
            if self.table.is_solvable(ranks) and in_split(hand_split_key(ranks), self.split):
                return ranks

    def _draw_ranks(self, count: int) -> tuple[str, ...]:
        """``count`` ranks drawn uniformly with replacement."""
        return tuple(RANKS[i] for i in self._uniform_indices(len(RANKS), count))

    def _draw_with_face_card(self) -> tuple[str, ...]:
        """The paper's rule-OOD draw: three free ranks plus one of J, Q, K, in a shuffled order.

        Rejecting free draws until one holds a face card would deal fewer face cards (issue 11).
        """
        face = FACE_CARD_RANKS[int(self.np_random.integers(len(FACE_CARD_RANKS)))]
        hand = (*self._draw_ranks(3), face)
        return tuple(hand[i] for i in self.np_random.permutation(len(hand)))

    def _uniform_indices(self, n_choices: int, count: int) -> list[int]:
        """``count`` independent uniform draws from range(n_choices), from one integer draw (fast)."""
        code = int(self.np_random.integers(n_choices**count))
        return [(code // n_choices**k) % n_choices for k in range(count)]

    def _hand_from(self, cards: Any) -> tuple[str, ...]:
        """Validate a hand given in `options["cards"]`."""
        if not isinstance(cards, (list, tuple)) or len(cards) != 4:
            raise ValueError(f"options['cards'] must list 4 cards, e.g. ['3', '3', '8', '8']; got {cards!r}")
        ranks = tuple(normalise_rank(rank) for rank in cards)
        if None in ranks:
            raise ValueError(f"options['cards'] = {cards!r} holds a value that is not a rank; use {list(RANKS)}")
        if self.face_required and not FACE_RANKS.intersection(ranks):
            raise ValueError(f"rule_ood hands hold a face card (J, Q or K); {list(ranks)} has none")
        if not self.table.is_solvable(ranks):
            raise ValueError(f"the hand {list(ranks)} has no solution for {self.target} under J,Q,K={self.face_cards}")
        key = hand_split_key(ranks)
        if not in_split(key, self.split):
            home = split_of(key)
            raise ValueError(
                f"the hand {list(ranks)} belongs to the {home!r} split and this env deals split={self.split!r} "
                f"hands only; build the env with split={home!r} or split='all' to deal it"
            )
        return ranks

    def step(self, action: str):
        """Judge one answer text; a failed one adds the verifier's feedback as the next user turn."""
        if self._done:
            raise RuntimeError("the episode is over (or was never started); call reset() before step()")
        if not isinstance(action, str):
            raise TypeError(f"the action must be the policy's text (str), got {type(action).__name__}")
        verdict = judge(
            action, self._ranks, self.face_cards,
            target=self.target, check_cards=self.modality == "image", rewards=self.rewards,
        )  # fmt: skip
        self._attempt += 1
        if self._first_cards_read is None:
            self._first_cards_read = cards_match_hand(verdict.answer.get("cards"), self._ranks)
            self._first_formula_legal = verdict.success or verdict.breakdown["wrong_value"] != 0
        # The echo is clipped to the space's bound; longer answers were judged illegal unread.
        self._messages = [*self._messages, {"role": "assistant", "content": action[:MAX_ANSWER_CHARS]}]
        terminated = verdict.success
        truncated = not terminated and self._attempt >= self.max_attempts
        if not terminated:
            self._messages.append({"role": "user", "content": feedback_prompt(verdict.feedback)})
        self._done = terminated or truncated
        info = self._info(
            success=verdict.success, feedback=verdict.feedback, breakdown=verdict.breakdown, answer=verdict.answer
        )
        return self._observation(), verdict.reward, terminated, truncated, info

    def _observation(self) -> dict[str, Any]:
        return spaces.chat_observation(self._messages, self._image)

    def _info(self, *, success: bool, feedback: str, breakdown: dict, answer: dict) -> dict[str, Any]:
        judged = self._first_cards_read is not None
        return {
            "cards": list(self._ranks), "suits": list(self._hand_suits),
            "numbers": list(self._numbers), "target": self.target,
            "variant": self.variant, "attempt": self._attempt, "success": success, "feedback": feedback,
            "reward_breakdown": dict(breakdown), "answer": dict(answer),
            "eval_hits": {
                "card_accuracy": int(bool(self._first_cards_read)), "legal_formula": int(self._first_formula_legal)
            },
            "eval_trials": {"card_accuracy": int(judged), "legal_formula": int(judged)},
        }  # fmt: skip

    def oracle_action(self) -> str:
        """A correct answer for the current hand (a solution drawn with `self.np_random`)."""
        if not self._ranks:
            raise RuntimeError("no hand dealt yet; call reset() before oracle_action()")
        return oracle_answer(self._ranks, face_cards=self.face_cards, target=self.target, rng=self.np_random)

    def render(self) -> np.ndarray | None:
        """The picture of the current hand (`render_mode="rgb_array"`), or None before reset."""
        if self.render_mode != "rgb_array" or not self._ranks:
            return None
        if self._image is not None:
            return self._image
        return render_hand(self._ranks, self._hand_suits, size=self.image_size)


def _check_arguments(variant, modality, *, split, target, max_attempts, image_size, render_mode) -> None:
    """Raise ValueError naming the bad constructor argument and the fix."""
    check_common_arguments(
        variant, modality, variants=VARIANTS, split=split, max_attempts=max_attempts, default_attempts=5,
        render_mode=render_mode,
    )  # fmt: skip
    check_episode_bound(max_attempts, points=1, max_episode_steps=GENERAL_POINTS_MAX_EPISODE_STEPS)
    if isinstance(target, bool) or not isinstance(target, int) or target < 1:
        raise ValueError(f"target={target!r} must be a positive int, e.g. 24")
    if len(image_size) != 2 or not all(isinstance(v, int) and 64 <= v <= 4096 for v in image_size):
        raise ValueError(f"image_size={image_size!r} must be (width, height) ints in [64, 4096], e.g. (1200, 1200)")
