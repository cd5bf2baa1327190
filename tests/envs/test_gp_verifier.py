"""The verifier's reward table, check order and feedback, case by case."""

import json

import pytest

from envs.general_points.cards import FACE_ORDINAL, FACE_TEN
from envs.general_points.verifier import RewardTable, cards_match_hand, judge
from envs.spaces import MAX_ANSWER_CHARS

HAND = ("3", "3", "8", "8")
REWARDS = RewardTable()


def _judge(text, ranks=HAND, *, face_cards=FACE_TEN, check_cards=False, rewards=REWARDS):
    return judge(text, ranks, face_cards, target=24, check_cards=check_cards, rewards=rewards)


def _answer(formula, cards=HAND, numbers=(3, 3, 8, 8)):
    return json.dumps({"cards": list(cards), "number": list(numbers), "formula": formula})


def test_3_3_8_8_by_8_over_3_minus_8_thirds_scores_plus_5():
    verdict = _judge(_answer("8/(3-8/3)"))
    assert verdict.reward == 5.0 and verdict.success and verdict.feedback == ""
    assert verdict.breakdown["success"] == 5.0 and sum(verdict.breakdown.values()) == 5.0


@pytest.mark.parametrize(
    "text",
    [
        "```json\n{'formula': '8/(3-8/3)',}\n```",
        'My answer: {"cards": ["3","3","8","8"], "number": [3,3,8,8], "formula": "8 / (3 - 8/3) = 24"} ok?',
        '{"Formula": "8/(3-8/3)"}',
    ],
)
def test_lenient_wrapping_still_succeeds(text):
    assert _judge(text).reward == 5.0


@pytest.mark.parametrize(
    "text",
    ["no json at all", '{"cards": ["3"]}', '{"formula": 24}', '{"formula": "8/(3-8/3"}', '{"formula": "3x8"}',
     '{"formula": "(3+3)**8"}', '{"formula": "-3+3+8+8"}', '{"formula": "3.0*8"}', '{"formula": "8(3)"}'],
)  # fmt: skip
def test_illegal_answers_score_minus_3(text):
    verdict = _judge(text)
    assert verdict.reward == -3.0 and not verdict.success
    assert verdict.breakdown["illegal_formula"] == -3.0 and verdict.feedback


def test_answers_over_the_bound_are_illegal_without_parsing(monkeypatch):
    import envs.answer_json as answer_json

    calls = []
    monkeypatch.setattr(answer_json.json, "loads", lambda *a, **k: calls.append(1))
    verdict = _judge(_answer("8/(3-8/3)") + " " * MAX_ANSWER_CHARS)
    assert verdict.reward == -3.0 and "longer than" in verdict.feedback and calls == []


@pytest.mark.parametrize(
    "formula, kinds, clue",
    [
        ("8/(3-8/3)+24-24", 1, "no card"),  # a number on no card
        ("8*3", 1, "does not use"),  # cards not used
        ("8*3*8/8/3*3", 1, "more often"),  # 8 and 3 too often
        ("(3+3)*4", 2, "4"),  # 4 is on no card, 8 not used
        ("8/(3-8/2)", 2, "2"),  # 2 is on no card, one 3 not used
        ("3*3*3-3+9", 3, "9"),  # 9 on no card, 3 too often, 8 not used
    ],
)
def test_number_misuse_costs_2_per_kind(formula, kinds, clue):
    verdict = _judge(_answer(formula))
    assert verdict.reward == -2.0 * kinds, verdict.feedback
    assert verdict.breakdown["number_misuse"] == -2.0 * kinds and clue in verdict.feedback


def test_all_three_misuse_kinds_at_once():
    verdict = _judge(_answer("3*3*3*8+1"))  # 1 on no card, 3 too often, one 8 not used
    assert verdict.reward == -6.0
    assert "no card" in verdict.feedback and "more often" in verdict.feedback and "does not use" in verdict.feedback


def test_wrong_value_scores_minus_1_and_says_no_part_matches_a_solution_not_the_value():
    verdict = _judge(_answer("3+3+8+8"))  # the only solution is 8/(3-8/3)
    assert verdict.reward == -1.0 and verdict.breakdown["wrong_value"] == -1.0
    assert verdict.feedback == "your formula does not equal 24: no part of it matches any solution."
    assert verdict.value == "22"  # the value is kept for logging, not told


@pytest.mark.parametrize(
    "formula, beginning",
    [
        ("8/(3-8)*3", "8/(3-8"),  # the paper's hint: the longest beginning that begins a solution
        ("8 / ( 3 - 8 ) * 3", "8/(3-8"),  # whitespace is removed before comparing
        ("8/3*8/3", "8/"),  # whole tokens: "8/3" does not begin 8/(3-8/3)
        ("8/(3-3/8)", "8/(3-"),
    ],
)
def test_wrong_value_feedback_quotes_the_longest_beginning_of_a_solution(formula, beginning):
    verdict = _judge(_answer(formula))
    assert verdict.reward == -1.0
    assert verdict.feedback == (
        f'your formula does not equal 24: its beginning "{beginning}" is partially correct '
        "but the full formula does not match any solution."
    )


def test_the_hint_compares_against_every_solution_of_the_hand():
    hand = ("K", "4", "A", "2")  # 10, 4, 1, 2 in-distribution: many solutions
    verdict = _judge(_answer("(4-1)*(10+2)"), hand)
    assert '"(4-1)*(10"' in verdict.feedback  # begins (4-1)*(10-2), not (4-1)*(10+2)


@pytest.mark.parametrize(
    "formula, clause",
    [
        ("1+4+6+10", "no part of it matches any solution"),  # "1" is a token of its own, not the start of 10
        ("10*(4-1)+6", 'its beginning "10*(4-1)" is partially correct'),
    ],
)
def test_the_hint_matches_whole_tokens(formula, clause):
    hand = ("A", "4", "6", "K")  # 1, 4, 6, 10: the only solution is 10*(4-1)-6
    verdict = _judge(_answer(formula, hand, (1, 4, 6, 10)), hand)
    assert verdict.reward == -1.0 and clause in verdict.feedback


def test_the_quoted_beginning_is_solution_text_only():
    for formula in ("8/(3-8)*3", "8 /(3 -8 )*3 = 24", "(8/(3-8))*3"):
        verdict = _judge(json.dumps({"formula": formula}))
        quoted = verdict.feedback.split('"')[1] if '"' in verdict.feedback else ""
        assert set(quoted) <= set("0123456789+-*/()") and verdict.feedback.isascii(), verdict.feedback


def test_division_by_zero_is_a_wrong_formula_not_a_crash():
    verdict = _judge(_answer("(8-8)/(3-3)"))
    assert verdict.reward == -1.0
    assert verdict.feedback == "your formula divides by zero, and no part of it matches any solution."


def test_vl_wrong_cards_score_minus_1_5_before_the_formula_is_judged():
    verdict = _judge(_answer("garbage", cards=["3", "3", "8", "K"]), check_cards=True)
    assert verdict.reward == -1.5 and "K" in verdict.feedback
    assert verdict.breakdown["wrong_cards"] == -1.5


@pytest.mark.parametrize("cards", [["3", "3", "8"], ["3", "3", "8", "8", "8"], ["3", "3", "8", "hat"], "3388", None])
def test_vl_card_count_and_names_are_checked(cards):
    text = json.dumps({"cards": cards, "formula": "8/(3-8/3)"})
    assert _judge(text, check_cards=True).reward == -1.5


def test_vl_cards_may_be_numbers_in_any_order_and_case():
    text = json.dumps({"cards": [8, "3", "8", 3], "formula": "8/(3-8/3)"})
    assert _judge(text, check_cards=True).reward == 5.0
    text = json.dumps({"cards": ["k", "Q", "10", "2"], "formula": "(13-12+10)*2+2"})
    assert _judge(text, ("K", "Q", "10", "2"), face_cards=FACE_ORDINAL, check_cards=True).reward == -2.0


@pytest.mark.parametrize(
    "cards", [["K", "10", "A", "10"], ["10", "King", "ace", 10], [13, "10", "1", "10"], ["Q", "10", "A", "10"],
              ["K", "10", "A"], ["K", "10", "A", "10", "10"], ["K", "10", "A", "hat"], "K10A10", None],
)  # fmt: skip
def test_cards_match_hand_is_the_verifiers_card_check(cards):
    hand = ("K", "10", "A", "10")
    wrong_cards = _judge(json.dumps({"cards": cards, "formula": "1"}), hand, check_cards=True).reward == -1.5
    assert cards_match_hand(cards, hand) is not wrong_cards
    assert cards_match_hand(cards, hand) == (cards in (["K", "10", "A", "10"], ["10", "King", "ace", 10],
                                                      [13, "10", "1", "10"]))  # fmt: skip


def test_text_modality_does_not_judge_cards():
    text = json.dumps({"cards": ["A", "A", "A", "A"], "formula": "8/(3-8/3)"})
    assert _judge(text, check_cards=False).reward == 5.0


def test_rule_ood_face_values():
    hand = ("K", "Q", "J", "A")  # 13, 12, 11, 1
    assert _judge(json.dumps({"formula": "(13-11)*12*1"}), hand, face_cards=FACE_ORDINAL).reward == 5.0
    assert _judge(json.dumps({"formula": "(10-10)+10+10+4"}), hand, face_cards=FACE_ORDINAL).reward < 0


def test_reward_table_is_configurable():
    table = RewardTable(success=1.0, illegal_formula=-0.5, number_misuse=-0.25)
    assert _judge(_answer("8/(3-8/3)"), rewards=table).reward == 1.0
    assert _judge("nothing", rewards=table).reward == -0.5
    assert _judge(_answer("(3+3)*4"), rewards=table).reward == -0.5  # two kinds


def test_feedback_is_ascii_even_when_the_answer_is_not():
    for text in ['{"formula": "3×8×1"}', '{"cards": ["♠", "Ж"], "formula": "1"}', "日本語"]:
        for check_cards in (False, True):
            assert _judge(text, check_cards=check_cards).feedback.isascii()
