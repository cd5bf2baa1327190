"""The GeneralPoints verifier: judge one answer text against a hand, with reward and feedback.

Parsing is lenient (`envs.answer_json.extract_answer` finds the JSON object), judging is strict.
Checks run in this order; the first failing group decides, except that number errors add up:

1. (VL only) wrong cards: the `cards` read, as a multiset, differ from the hand.
2. illegal formula: no answer object or no `formula` string, bad characters or grammar.
3. number misuse: a number on no card, a card number used too often, a card number not used
   (one penalty for each of these kinds that occurs).
4. value: equal to the target (success) or not (wrong value). The wrong-value feedback is the
   paper's hint, not the value reached: the longest beginning of the formula (whole tokens,
   whitespace removed) that is also the beginning of a known solution of the hand ("... is
   partially correct but the full formula does not match any solution"), or that no part of it
   matches any solution.

Feedback sentences contain only ASCII text we write (ranks, numbers) or quote from our solution
table (the hint's beginning, which is also a solution's: digits, + - * / and parentheses), never
the policy's own characters, so they stay inside the observation space's charset.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction

from envs.answer_json import extract_answer
from envs.general_points.cards import hand_values, multiset_difference, normalise_rank, solution_table
from envs.general_points.formula import FormulaError, formula_tokens, parse_formula, shorten_number
from envs.spaces import MAX_ANSWER_CHARS


@dataclass(frozen=True)
class RewardTable:
    """Reward per outcome; the defaults are the paper's values (Chu et al., 2025, Sec. 5)."""

    wrong_cards: float = -1.5
    illegal_formula: float = -3.0
    number_misuse: float = -2.0  # per kind of misuse, up to three kinds
    wrong_value: float = -1.0
    success: float = 5.0

    def possible_rewards(self) -> frozenset[float]:
        """Every reward a single answer can receive."""
        misuse = {self.number_misuse * kinds for kinds in (1, 2, 3)}
        return frozenset({self.wrong_cards, self.illegal_formula, self.wrong_value, self.success} | misuse)


CATEGORIES = ("wrong_cards", "illegal_formula", "number_misuse", "wrong_value", "success")


@dataclass(frozen=True)
class Verdict:
    """The judgement of one answer.

    ``breakdown`` maps every category in CATEGORIES to its share of ``reward`` (zeros included);
    ``answer`` holds the fields read from the answer object (``cards``, ``number``, ``formula``;
    None when absent); ``value`` is the formula's exact value as text, when it has one.
    """

    reward: float
    success: bool
    feedback: str
    breakdown: dict[str, float]
    answer: dict = field(default_factory=dict)
    value: str | None = None


def judge(
    text: str,
    ranks: tuple[str, ...],
    face_cards: tuple[int, int, int],
    *,
    target: int,
    check_cards: bool,
    rewards: RewardTable,
) -> Verdict:
    """Judge the answer ``text`` for the hand ``ranks``; never raises on a str."""
    obj = extract_answer(text, max_chars=MAX_ANSWER_CHARS)
    if obj is None:
        reason = (
            f"your answer is longer than {MAX_ANSWER_CHARS} characters"
            if len(text) > MAX_ANSWER_CHARS
            else ('your answer has no JSON object with a "formula" field.')
        )
        return _verdict(rewards, "illegal_formula", reason.rstrip(".") + ".")
    fields = {key.lower(): value for key, value in obj.items() if isinstance(key, str)}
    answer = {name: fields.get(name) for name in ("cards", "number", "formula")}
    if check_cards:
        misread = _card_errors(answer["cards"], ranks)
        if misread:
            return _verdict(rewards, "wrong_cards", misread, answer=answer)
    if not isinstance(answer["formula"], str):
        return _verdict(rewards, "illegal_formula", 'your answer has no "formula" string.', answer=answer)
    try:
        parsed = parse_formula(answer["formula"])
    except FormulaError as error:
        return _verdict(rewards, "illegal_formula", f"your formula is illegal: {error}.", answer=answer)
    values = hand_values(ranks, face_cards)
    misuse = _number_misuse(parsed.numbers, values)
    if misuse:
        feedback = "your formula " + "; it ".join(misuse) + "."
        return _verdict(rewards, "number_misuse", feedback, answer=answer, times=len(misuse))
    if parsed.value == target:
        return _verdict(rewards, "success", "", answer=answer, value=_fraction_text(parsed.value))
    hint = solution_hint(answer["formula"], solution_table(tuple(face_cards), target).solutions(ranks))
    if parsed.value is None:
        return _verdict(rewards, "wrong_value", f"your formula divides by zero, and {hint}.", answer=answer)
    feedback = f"your formula does not equal {target}: {hint}."
    return _verdict(rewards, "wrong_value", feedback, answer=answer, value=_fraction_text(parsed.value))


def solution_hint(formula: str, solutions: tuple[str, ...]) -> str:
    """The paper's hint for a wrong formula, as a clause: how much of its beginning begins a solution.

    The formula's tokens (whitespace removed) are compared with each solution's; the longest
    common beginning is quoted, which is safe because it is also text of a solution.
    """
    tokens = formula_tokens(formula)
    matched = max((_common_prefix(tokens, formula_tokens(solution)) for solution in solutions), default=0)
    if matched == 0:
        return "no part of it matches any solution"
    beginning = "".join(tokens[:matched])
    return f'its beginning "{beginning}" is partially correct but the full formula does not match any solution'


def _common_prefix(a: list[str], b: list[str]) -> int:
    """How many leading items ``a`` and ``b`` share."""
    count = 0
    for x, y in zip(a, b, strict=False):  # lengths differ in general; stop at the shorter
        if x != y:
            break
        count += 1
    return count


def _verdict(
    rewards: RewardTable, category: str, feedback: str, *, answer: dict | None = None,
    times: int = 1, value: str | None = None,
) -> Verdict:  # fmt: skip
    """Build the Verdict for one deciding category."""
    breakdown = dict.fromkeys(CATEGORIES, 0.0)
    breakdown[category] = getattr(rewards, category) * times
    return Verdict(
        reward=breakdown[category], success=category == "success", feedback=feedback,
        breakdown=breakdown, answer=answer or {}, value=value,
    )  # fmt: skip


def cards_match_hand(cards: object, ranks: tuple[str, ...]) -> bool:
    """Whether an answer's `cards` value names the hand ``ranks`` as a multiset (check 1's test).

    Card names are read as `normalise_rank` reads them ("K", "king", 13, ...); anything but a
    list of card names (None when the answer had no `cards`) does not match.
    """
    return not _card_errors(cards, ranks)


def _card_errors(cards: object, ranks: tuple[str, ...]) -> str:
    """Feedback naming what was misread, or "" when the cards read equal the hand as a multiset."""
    if not isinstance(cards, list):
        return 'your answer has no "cards" list naming the cards in the image.'
    read = [normalise_rank(card) for card in cards[: 4 * len(ranks)]]
    known = [rank for rank in read if rank is not None]
    extra, missing = multiset_difference(known, list(ranks))
    if not extra and not missing and len(known) == len(cards):
        return ""
    problems = []
    if len(cards) != len(ranks):
        problems.append(f"you listed {len(cards)} cards but the image shows {len(ranks)}")
    if len(known) < len(read) or len(cards) > len(read):
        problems.append("some entries are not card names (use A, 2-10, J, Q, K)")
    if extra:
        problems.append(f"you read {', '.join(extra)}, which do not match the cards in the image")
    if missing and not problems:
        problems.append(f"you missed {len(missing)} of the cards")
    return "the cards you recognised are wrong: " + "; ".join(problems) + "."


def _number_misuse(numbers: tuple[int, ...], values: list[int]) -> list[str]:
    """One clause per kind of misuse: a number on no card, used too often, not used."""
    used, available = Counter(numbers), Counter(values)
    foreign = sorted(number for number in used if number not in available)
    too_often = sorted(number for number in used if number in available and used[number] > available[number])
    unused = sorted(value for value in available if used[value] < available[value])
    clauses = []
    if foreign:
        clauses.append(f"uses {_listing(foreign)}, which no card shows")
    if too_often:
        clauses.append(f"uses {_listing(too_often)} more often than the cards allow")
    if unused:
        clauses.append(f"does not use {_listing(unused)} (each card must be used once)")
    return clauses


def _listing(numbers: list[int]) -> str:
    """Numbers as a short English list for feedback (at most five, long ones shortened)."""
    shown = [shorten_number(str(number)) for number in numbers[:5]]
    return ", ".join(shown) + (" and others" if len(numbers) > 5 else "")


def _fraction_text(value: Fraction) -> str:
    """An exact value as feedback text: "23", "8/3", shortened when huge."""
    text = str(value)
    return text if len(text) <= 40 else text[:40] + "..."
