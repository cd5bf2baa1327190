"""Property tests: `step` never raises on any text and always pays a reward from the table."""

import json

import gymnasium as gym
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs  # noqa: F401  (registers the ids)
from envs.general_points.verifier import RewardTable

REWARDS = RewardTable().possible_rewards()
_PIECES = ["3", "8", "24", "(", ")", "+", "-", "*", "/", "**", " ", "=", "x", ".", "0", "99999999999999999999"]


def _check_step(env, text):
    env.reset(options={"cards": ["3", "3", "8", "8"]})
    obs, reward, terminated, truncated, info = env.step(text)
    assert reward in REWARDS, (reward, text)
    assert sum(info["reward_breakdown"].values()) == reward
    assert terminated == info["success"] == (reward == 5.0)
    assert obs in env.observation_space
    assert info["feedback"].isascii()


@pytest.fixture(scope="module", params=["text", "image"])
def env(request):
    return gym.make("sftrl/GeneralPoints-v0", modality=request.param, image_size=(64, 64)).unwrapped


_SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_SETTINGS
@given(st.text())
def test_arbitrary_unicode_text(env, text):
    _check_step(env, text)


@_SETTINGS
@given(st.text(min_size=1, max_size=30), st.integers(100, 3000))
def test_very_long_text(env, chunk, repeat):
    _check_step(env, chunk * repeat)
    _check_step(env, json.dumps({"formula": chunk * repeat}))


@_SETTINGS
@given(st.lists(st.sampled_from(_PIECES), max_size=80))
def test_formula_like_token_soup(env, pieces):
    formula = "".join(pieces)
    _check_step(env, json.dumps({"cards": ["3", "3", "8", "8"], "formula": formula}))


@_SETTINGS
@given(st.integers(0, 3000), st.sampled_from(["8/(3-8/3)", "1", "3+3+8+8", ""]))
def test_deeply_nested_parentheses(env, depth, core):
    _check_step(env, json.dumps({"formula": "(" * depth + core + ")" * depth}))
    _check_step(env, "{" * depth + '"formula": "1"' + "}" * depth)
    _check_step(env, '{"formula": ' + "[" * depth + "]" * depth + "}")


@_SETTINGS
@given(st.integers(min_value=0, max_value=10**300), st.sampled_from(["+", "*", "/", "-"]))
def test_huge_numbers(env, number, op):
    _check_step(env, json.dumps({"formula": f"{number}{op}8/(3-8/3)"}))
    _check_step(env, json.dumps({"formula": f"3*8*{number}/{number}"}))


@_SETTINGS
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20),
       st.sampled_from(["formula", "cards", "number", "Formula"]))  # fmt: skip
def test_arbitrary_json_values_in_the_answer_fields(env, value, key):
    _check_step(env, json.dumps({key: value, "formula" if key != "formula" else "cards": value}))
