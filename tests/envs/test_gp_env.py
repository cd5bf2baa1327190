"""GeneralPoints as a Gymnasium env: API checks, seeding, variants, episodes, info."""

import itertools
from collections import Counter

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs  # noqa: F401  (registers the ids)
from envs.general_points.cards import FACE_ORDINAL, FACE_RANKS, RANKS, hand_values, solution_table
from envs.general_points.prompt import ANSWER_FORMAT

COMBOS = [("id", "text"), ("rule_ood", "text"), ("id", "image"), ("rule_ood", "image"), ("visual_ood", "image")]
INFO_KEYS = {
    "cards", "numbers", "target", "variant", "attempt", "success", "feedback", "reward_breakdown", "answer",
    "eval_hits", "eval_trials",
}  # fmt: skip


def make(variant="id", modality="text", **kwargs):
    return gym.make("sftrl/GeneralPoints-v0", variant=variant, modality=modality, **kwargs)


@pytest.mark.parametrize("variant, modality", COMBOS)
def test_check_env_passes(variant, modality):
    env = make(variant, modality, image_size=(400, 400), render_mode="rgb_array")
    check_env(env.unwrapped)


def test_check_env_passes_at_the_default_1200_canvas():
    env = make("id", "image")
    check_env(env.unwrapped, skip_render_check=True)
    assert env.observation_space["image"].shape == (1200, 1200, 3)


@pytest.mark.parametrize("variant, modality", COMBOS)
def test_same_seed_same_hand_image_and_episode(variant, modality):
    def play(seed):
        env = make(variant, modality, image_size=(300, 300))
        obs, info = env.reset(seed=seed)
        steps = [env.step(env.unwrapped.oracle_action() if i else "(1+2)*3")[1:] for i in range(2)]
        return obs, info, steps

    (obs_a, info_a, steps_a), (obs_b, info_b, steps_b) = play(7), play(7)
    assert obs_a["messages"] == obs_b["messages"] and info_a == info_b and steps_a == steps_b
    if modality == "image":
        assert np.array_equal(obs_a["image"], obs_b["image"])
    hands = {tuple(make(variant, modality, image_size=(300, 300)).reset(seed=s)[1]["cards"]) for s in range(20)}
    assert len(hands) > 10  # different seeds, different hands


def test_rule_ood_hands_hold_a_face_card_and_are_solvable_under_11_12_13():
    env = make("rule_ood")
    table = solution_table(FACE_ORDINAL, 24)
    for seed in range(300):
        _, info = env.reset(seed=seed)
        assert FACE_RANKS & set(info["cards"]), info["cards"]
        assert info["numbers"] == hand_values(info["cards"], FACE_ORDINAL)
        assert table.solutions(info["cards"])


def _face_count_shares(hands) -> dict[int, float]:
    counts = Counter(sum(rank in FACE_RANKS for rank in hand) for hand in hands)
    return {n: counts[n] / sum(counts.values()) for n in (1, 2, 3, 4)}


def test_rule_ood_deals_face_cards_as_the_papers_draw_three_free_ranks_plus_one_face_card():
    # The spec's process, enumerated exactly: three free ranks and one of J, Q, K (equally likely),
    # kept when solvable under 11/12/13. Rejecting free draws until a face card shows instead gives
    # 1 face card in 68% of hands (not 50%).
    table = solution_table(FACE_ORDINAL, 24)
    drawn = [(*free, face) for free in itertools.product(RANKS, repeat=3) for face in "JQK"]
    expected = _face_count_shares(hand for hand in drawn if table.is_solvable(hand))
    env = make("rule_ood")
    hands = [env.reset(seed=seed)[1]["cards"] for seed in range(2000)]
    observed = _face_count_shares(hands)
    chi_square = sum(2000 * (observed[n] - expected[n]) ** 2 / expected[n] for n in expected)
    assert chi_square < 16.27, (observed, expected)  # the 0.1% critical value for 3 degrees of freedom
    # The four cards are shuffled: a lone face card sits at each position about equally often.
    positions = Counter(
        [rank in FACE_RANKS for rank in hand].index(True) for hand in hands if len(FACE_RANKS & set(hand)) == 1
    )
    lone = sum(positions.values())
    assert all(0.2 < positions[i] / lone < 0.3 for i in range(4)), positions


def test_id_hands_are_solvable_and_numbers_use_ten_for_faces():
    env = make("id")
    for seed in range(200):
        _, info = env.reset(seed=seed)
        assert env.unwrapped.table.solutions(info["cards"])
        assert all(n == 10 for card, n in zip(info["cards"], info["numbers"], strict=True) if card in FACE_RANKS)


@pytest.mark.parametrize("variant, suits", [("id", {"spades", "clubs"}), ("visual_ood", {"hearts", "diamonds"})])
def test_image_suits_follow_the_variant(variant, suits):
    env = make(variant, "image", image_size=(200, 200))
    seen = set()
    for seed in range(30):
        seen |= set(env.reset(seed=seed)[1]["suits"])
    assert seen == suits


def test_oracle_succeeds_on_every_variant():
    for variant, modality in COMBOS:
        env = make(variant, modality, image_size=(200, 200))
        for seed in range(25):
            env.reset(seed=seed)
            _, reward, terminated, truncated, info = env.step(env.unwrapped.oracle_action())
            assert (reward, terminated, truncated, info["success"]) == (5.0, True, False, True), (variant, info)


def test_options_cards_deal_that_hand_and_reject_bad_hands():
    env = make("id")
    _, info = env.reset(options={"cards": ["3", "3", "8", "8"]})
    assert info["cards"] == ["3", "3", "8", "8"]
    _, reward, terminated, _, _ = env.step('{"formula": "8/(3-8/3)"}')
    assert reward == 5.0 and terminated
    for bad in (["A", "A", "A", "A"], ["3", "3", "8"], ["3", "3", "8", "Z"], "3388"):
        with pytest.raises(ValueError):
            env.reset(options={"cards": bad})
    with pytest.raises(ValueError, match="face card"):
        make("rule_ood").reset(options={"cards": ["3", "3", "8", "8"]})
    with pytest.raises(ValueError, match="unknown reset options"):
        env.reset(options={"hand": ["3", "3", "8", "8"]})


def test_sequential_revision_then_truncation_after_the_last_attempt():
    env = make("id", max_attempts=3)
    obs, info = env.reset(options={"cards": ["3", "3", "8", "8"]})
    assert [m["role"] for m in obs["messages"]] == ["system", "user"] and info["attempt"] == 0
    for attempt in (1, 2, 3):
        obs, reward, terminated, truncated, info = env.step('{"formula": "3+3+8+8"}')
        assert reward == -1.0 and not terminated and truncated == (attempt == 3) and info["attempt"] == attempt
        assert obs["messages"][-2] == {"role": "assistant", "content": '{"formula": "3+3+8+8"}'}
        assert obs["messages"][-1]["content"] == (
            "You failed this trial because your formula does not equal 24: no part of it matches any solution. "
            "Try again with a new JSON answer."
        )
        assert obs in env.observation_space
    assert len(obs["messages"]) == 2 + 2 * 3
    with pytest.raises(RuntimeError, match="reset"):
        env.step("anything")


def test_success_terminates_after_a_revision():
    env = make("id")
    env.reset(options={"cards": ["3", "3", "8", "8"]})
    env.step("no idea")
    obs, reward, terminated, truncated, info = env.step('{"formula": "8/(3-8/3)"}')
    assert (reward, terminated, truncated, info["success"], info["attempt"]) == (5.0, True, False, True, 2)
    assert obs["messages"][-1]["role"] == "assistant" and info["feedback"] == ""


def test_image_stays_in_the_first_user_turn_only():
    env = make("id", "image", image_size=(200, 200))
    obs, _ = env.reset(seed=0)
    first = obs["messages"][1]["content"]
    assert first[0] == {"type": "image"} and "The image shows four playing cards" in first[1]["text"]
    assert "Q," not in first[1]["text"]
    obs, *_ = env.step("wrong")
    assert all(isinstance(m["content"], str) for m in obs["messages"][2:])
    assert obs["image"].shape == (200, 200, 3) and obs["image"].dtype == np.uint8


def test_text_prompt_lists_the_cards_and_the_face_rule():
    _, info = make("rule_ood").reset(seed=3)
    obs, _ = make("rule_ood").reset(seed=3)
    task = obs["messages"][1]["content"]
    assert ", ".join(info["cards"]) in task and "J counts as 11, Q as 12 and K as 13" in task
    assert "each count as 10" in make("id").reset(seed=3)[0]["messages"][1]["content"]


@pytest.mark.parametrize("variant, modality", COMBOS)
def test_the_answer_format_is_a_schema_without_values(variant, modality):
    # A worked example would state face-card values (K = 10 contradicts rule OOD's rule).
    task = make(variant, modality, image_size=(64, 64)).reset(seed=0)[0]["messages"][1]["content"]
    text = task if modality == "text" else task[1]["text"]
    rules, answer_format = text.split("\n")
    assert answer_format == ANSWER_FORMAT and not any(char.isdigit() for char in answer_format)
    assert all(f'"{key}"' in answer_format for key in ("cards", "number", "formula"))
    assert "24" in rules and "formula" in rules


def test_info_holds_the_contract_keys_at_reset_and_step():
    env = make("id", "image", image_size=(200, 200))
    _, info = env.reset(seed=1)
    assert INFO_KEYS <= info.keys() and info["variant"] == "id" and info["target"] == 24
    _, _, _, _, info = env.step('{"cards": ["A"], "formula": "1"}')
    assert INFO_KEYS <= info.keys() and info["reward_breakdown"]["wrong_cards"] == -1.5
    assert info["answer"]["cards"] == ["A"] and not info["success"]


@pytest.mark.parametrize(
    "kwargs",
    [{"variant": "visual_ood", "modality": "text"}, {"variant": "hard"}, {"modality": "audio"}, {"target": 0},
     {"max_attempts": 0}, {"image_size": (10, 10)}, {"render_mode": "ansi"}, {"split": "test"}],
)  # fmt: skip
@pytest.mark.filterwarnings("ignore:.*render_mode")
def test_bad_arguments_raise_value_error(kwargs):
    with pytest.raises(ValueError):
        make(**kwargs)


@pytest.mark.parametrize("modality", ["text", "image"])
def test_observation_space_samples_are_members_and_seedable(modality):
    space = make("id", modality, image_size=(64, 64)).observation_space
    space.seed(3)
    first = space.sample()
    space.seed(3)
    again = space.sample()
    assert first in space and first["messages"] == again["messages"]
    assert dict(first, messages=[{"role": "tool", "content": "x"}]) not in space
    assert dict(first, messages=[{"role": "user", "content": "caf\u00e9"}]) not in space  # outside the charset


def test_custom_target():
    env = make("id", target=10)
    _, info = env.reset(seed=0)
    assert info["target"] == 10
    assert env.step(env.unwrapped.oracle_action())[1] == 5.0


def test_max_attempts_stays_within_the_registered_episode_bound():
    bound = gym.spec("sftrl/GeneralPoints-v0").max_episode_steps
    assert bound == envs.GENERAL_POINTS_MAX_EPISODE_STEPS
    env = make("id", max_attempts=bound)
    env.reset(options={"cards": ["3", "3", "8", "8"]})
    for _ in range(bound):
        _, _, terminated, truncated, info = env.step('{"formula": "3+3+8+8"}')
    assert truncated and not terminated and info["attempt"] == bound
    with pytest.raises(ValueError, match=f"max_episode_steps={bound}; use max_attempts <= {bound}"):
        make(max_attempts=bound + 1)


@pytest.mark.parametrize("modality", ["text", "image"])
def test_card_accuracy_counts_the_first_answer_as_the_verifier_reads_cards(modality):
    env = make("id", modality, image_size=(200, 200))
    _, info = env.reset(options={"cards": ["K", "10", "A", "4"]})
    assert (info["eval_hits"]["card_accuracy"], info["eval_trials"]["card_accuracy"]) == (0, 0)
    _, _, _, _, info = env.step('{"cards": ["4", "King", "ace", 10], "formula": "1"}')
    assert (info["eval_hits"]["card_accuracy"], info["eval_trials"]["card_accuracy"]) == (1, 1)
    _, _, _, _, info = env.step('{"cards": ["Q", "10", "A", "4"], "formula": "1"}')
    assert (info["eval_hits"]["card_accuracy"], info["eval_trials"]["card_accuracy"]) == (1, 1)  # first answer
    for wrong in ('{"cards": ["Q", "10", "A", "4"]}', "no json", '{"formula": "1"}'):
        env.reset(options={"cards": ["K", "10", "A", "4"]})
        _, _, _, _, info = env.step(wrong)
        assert (info["eval_hits"]["card_accuracy"], info["eval_trials"]["card_accuracy"]) == (0, 1), wrong


@pytest.mark.parametrize(
    ("variant", "answer", "legal"),
    [
        ("id", None, True),  # the oracle's solution
        ("id", '{"formula": "10+3+8+6"}', True),  # 27: wrong value, legal
        ("id", '{"formula": "10+8+6"}', False),  # a number missing
        ("id", '{"formula": "10+3+8+"}', False),  # not a formula
        ("rule_ood", '{"formula": "13+3+8+6"}', True),  # K is 13 under rule_ood: 30, wrong value, legal
        ("rule_ood", '{"formula": "10+3+8+6"}', False),  # K written as 10: a misuse of the rule
    ],
)
def test_legal_formula_counts_the_first_answers_use_of_the_numbers(variant, answer, legal):
    env = make(variant)
    _, info = env.reset(options={"cards": ["K", "3", "8", "6"]})
    assert (info["eval_hits"]["legal_formula"], info["eval_trials"]["legal_formula"]) == (0, 0)
    _, _, _, _, info = env.step(answer or env.unwrapped.oracle_action())
    assert (info["eval_hits"]["legal_formula"], info["eval_trials"]["legal_formula"]) == (int(legal), 1)
    if not info["success"]:
        _, _, _, _, info = env.step('{"formula": "1"}')  # only the first answer counts
        assert info["eval_hits"]["legal_formula"] == int(legal)
