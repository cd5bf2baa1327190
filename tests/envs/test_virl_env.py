"""The V-IRL Gymnasium environment: oracle, rewards, attempts, variants, spaces (envs.virl.env)."""

import json

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st

import envs  # noqa: F401  (registers sftrl/VIRL-v0)
from envs.seeds import EVAL_SEEDS, TRAIN_SEEDS
from envs.virl.env import VirlEnv
from envs.virl.route import INTERSECTION

COMBOS = [("id", "text"), ("rule_ood", "text"), ("id", "image"), ("rule_ood", "image"), ("visual_ood", "image")]
INFO_KEYS = {
    "expected_action",
    "observation_text",
    "instruction_index",
    "point_index",
    "n_points",
    "attempt",
    "success",
    "correct_actions",
    "actions",
    "feedback",
    "variant",
    "city",
    "eval_hits",
    "eval_trials",
}


def _make(variant="id", modality="text", **kwargs) -> VirlEnv:
    return gymnasium.make("sftrl/VIRL-v0", variant=variant, modality=modality, **kwargs)


def _answer(action: str, observation: str = "No landmarks nearby") -> str:
    return json.dumps({"current observation": observation, "current instruction": "", "action": action})


@pytest.mark.parametrize("variant, modality", COMBOS)
def test_check_env_passes(variant, modality):
    check_env(_make(variant, modality).unwrapped)


@pytest.mark.parametrize("variant, modality", COMBOS)
def test_oracle_completes_every_route(variant, modality):
    env = _make(variant, modality)
    seeds = [TRAIN_SEEDS[i] for i in range(0, 60, 5)] + [EVAL_SEEDS[i] for i in range(0, 60, 5)]
    for seed in seeds:
        obs, info = env.reset(seed=seed)
        assert env.observation_space.contains(obs)
        done, steps, total = False, 0, 0.0
        while not done:
            obs, reward, terminated, truncated, info = env.step(env.unwrapped.oracle_action())
            done, steps, total = terminated or truncated, steps + 1, total + reward
        assert info["success"] and terminated and not truncated
        assert steps == info["n_points"] == info["actions"] == info["correct_actions"] == total
        assert info["eval_hits"] == info["eval_trials"] == {"step_accuracy": steps}


def test_info_keys_are_exactly_the_spec():
    env = _make()
    _, info = env.reset(seed=1)
    assert set(info) == INFO_KEYS
    _, _, _, _, info = env.step("nonsense")
    assert set(info) == INFO_KEYS
    assert info["variant"] == "id" and info["city"] and info["attempt"] == 1 and info["feedback"]


def test_same_seed_same_episode_and_picture():
    a, b = _make("id", "image"), _make("id", "image")
    obs_a, info_a = a.reset(seed=7)
    obs_b, info_b = b.reset(seed=7)
    assert obs_a["messages"] == obs_b["messages"] and info_a == info_b
    assert np.array_equal(obs_a["image"], obs_b["image"])
    obs_c, _ = a.reset(seed=8)
    assert obs_c["messages"] != obs_a["messages"]


def test_rule_ood_changes_only_action_space_and_turn_actions():
    for seed in range(10):
        env_id, env_rule = _make("id"), _make("rule_ood")
        obs_id, info_id = env_id.reset(seed=seed)
        obs_rule, info_rule = env_rule.reset(seed=seed)
        route_id, route_rule = env_id.unwrapped._route, env_rule.unwrapped._route
        assert route_id.instructions == route_rule.instructions
        assert [p.observation_text for p in route_id.points] == [p.observation_text for p in route_rule.points]
        text_id, text_rule = obs_id["messages"][1]["content"], obs_rule["messages"][1]["content"]
        before_id, _, after_id = text_id.partition("[Action space]")
        before_rule, _, after_rule = text_rule.partition("[Action space]")
        assert before_id == before_rule
        assert after_id.split("[Observations")[1] == after_rule.split("[Observations")[1]
        assert "slightly left" in after_rule and "northeast" not in after_rule.split("[Observations")[0]
        for i, point in enumerate(route_id.points):
            expected_id, expected_rule = route_id.expected_action(i, "id"), route_rule.expected_action(i, "rule_ood")
            if point.kind in ("start", "turn"):
                assert expected_rule == point.relative_action != expected_id
            else:
                assert expected_rule == expected_id


def test_wrong_answers_cost_and_feedback_becomes_next_user_turn():
    env = _make()
    obs, info = env.reset(seed=3)
    wrong = "forward()" if info["expected_action"] != "forward()" else "stop()"
    obs, reward, terminated, truncated, info = env.step(_answer(wrong, observation=info["observation_text"]))
    assert reward == -1.0 and not terminated and not truncated and info["attempt"] == 1
    assert [m["role"] for m in obs["messages"]] == ["system", "user", "assistant", "user"]
    assert obs["messages"][-1]["content"].startswith("You failed this trial because")
    obs, reward, terminated, truncated, info = env.step(_answer(wrong, observation=info["observation_text"]))
    assert reward == -1.0 and truncated and not terminated and not info["success"]
    # Step accuracy counts the call that ends a truncated route (design.md, evaluation).
    assert (info["eval_hits"], info["eval_trials"]) == ({"step_accuracy": 0}, {"step_accuracy": 2})
    with pytest.raises(RuntimeError, match="reset"):
        env.step("forward()")


def test_correct_answer_moves_on_with_fresh_conversation_and_history():
    env = _make()
    obs, info = env.reset(seed=4)
    first_observation = info["observation_text"]
    obs, reward, _, _, info = env.step(_answer(f"  TURN_DIRECTION( {info['expected_action'][15:-1].title()} ) "))
    assert reward == 1.0 and info["point_index"] == 1 and info["attempt"] == 0
    assert [m["role"] for m in obs["messages"]] == ["system", "user"]
    history = obs["messages"][1]["content"].split("[Observations and actions so far]\n")[1]
    assert history.startswith(f"O_1: {first_observation}\nA_1: turn_direction(")
    assert f"O_2: {info['observation_text']}\nA_2:" in history


def test_wrong_intersection_claim_costs_more():
    env = _make()
    _, info = env.reset(seed=5)
    assert INTERSECTION in info["observation_text"]  # the start of this route is an intersection
    _, reward, _, _, _ = env.step(_answer("stop()", observation="No landmarks nearby"))
    assert reward == -1.5
    _, info = env.reset(seed=5)
    claim = "Chase Bank is on your left; You observe an intersection"
    _, reward, _, _, _ = env.step(_answer("stop()", observation=claim))
    assert reward == -1.0
    while info["expected_action"] != "forward()":  # walk to an intermediate point
        _, _, _, _, info = env.step(env.unwrapped.oracle_action())
    _, reward, _, _, _ = env.step(_answer("stop()", observation="You observe an intersection"))
    assert reward == -1.5


def _current_observation(obs) -> str:
    """The current "O_n: ..." line of the observation's history."""
    content = obs["messages"][1]["content"]
    text = content if isinstance(content, str) else content[1]["text"]
    history = text.split("[Observations and actions so far]\n")[1].split("\n\n")[0]
    return history.split("\n")[-2]


def test_vl_current_observation_keeps_the_intersection_cue_next_to_the_picture():
    env = _make("id", "image", view_px=64)
    obs, info = env.reset(seed=5)
    assert INTERSECTION in info["observation_text"]  # the start of this route is an intersection
    assert _current_observation(obs) == "O_1: the four street views in the picture; You observe an intersection"
    seen = set()
    done = False
    while not done:
        point = env.unwrapped._route.points[info["point_index"]]
        line = _current_observation(obs)
        assert line.endswith(INTERSECTION) == point.view.is_intersection, (line, point.kind)
        seen.add(point.view.is_intersection)
        obs, _, terminated, truncated, info = env.step(env.unwrapped.oracle_action())
        done = terminated or truncated
    assert seen == {True, False}  # the route has both kinds of point
    text_obs, text_info = _make("id", "text").reset(seed=5)
    assert _current_observation(text_obs) == f"O_1: {text_info['observation_text']}"


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(
        st.text(max_size=300),
        st.binary(max_size=300).map(lambda b: b.decode("latin-1")),
        st.just("{" * 5000),
        st.just("x" * 100_000),
        st.just('{"action": 5}'),
        st.just('{"act": "forward()"}'),
        st.just("[1, 2]"),
        st.just('{"action": null, "current observation": []}'),
    )
)
def test_bad_answers_get_wrong_action_rewards_never_exceptions(text):
    env = _make()
    env.reset(seed=2)
    obs, reward, terminated, _, info = env.step(text)
    assert reward in (-1.0, -1.5) and not terminated and not info["success"]
    assert env.observation_space.contains(obs)


def test_constructor_rejects_bad_arguments():
    with pytest.raises(ValueError, match="visual_ood"):
        VirlEnv("visual_ood", "text")
    with pytest.raises(ValueError, match="variant"):
        VirlEnv("ood")
    with pytest.raises(ValueError, match="max_attempts"):
        VirlEnv(max_attempts=0)
    with pytest.raises(ValueError, match="max_episode_steps=256; use max_attempts <= 8"):
        VirlEnv(max_attempts=9)
    with pytest.raises(ValueError, match="options"):
        VirlEnv().reset(seed=0, options={"route": 1})


def test_visual_ood_uses_other_cities_and_styles_with_few_routes_each():
    env = _make("visual_ood", "image", ood_cities=3, routes_per_ood_city=2)
    cities, routes = set(), set()
    for seed in range(40):
        _, info = env.reset(seed=seed)
        cities.add(info["city"])
        routes.add((info["city"], env.unwrapped._route.instructions[1:]))  # [0] depends on the heading
    _, train_info = _make().reset(seed=0)
    assert len(cities) == 3 and train_info["city"] not in cities
    assert len(routes) <= 6
    assert {env.unwrapped._style.name} <= {"desert_dusk", "neon_night", "nordic_winter"}


def test_render_returns_the_current_picture():
    env = _make("id", "text", render_mode="rgb_array")
    env.reset(seed=0)
    picture = env.render()
    assert picture.dtype == np.uint8 and picture.shape == (702, 644, 3)
