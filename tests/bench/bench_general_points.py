"""GeneralPoints throughput: solution-table build, text episodes/s, image resets/s (prints figures).

Run: `make bench` or `.venv/bin/python -m pytest tests/bench/bench_general_points.py -s`.
Rates are printed by wall clock and by process CPU time (the dev box is shared, so wall-clock
figures drop under load). Targets on the 2-core dev box: text reset+step >= 5,000 episodes/s,
image reset (1200x1200) >= 100/s.
"""

import time

import gymnasium as gym

import envs  # noqa: F401  (registers the ids)
from envs.general_points import cards
from envs.general_points.cards import FACE_ORDINAL, FACE_TEN, solution_table


def _rate(n, run):
    """Items per second, by wall clock and by this process's CPU time (the box is shared)."""
    wall, cpu = time.perf_counter(), time.process_time()
    run(n)
    return f"{n / (time.perf_counter() - wall):,.0f}/s wall, {n / (time.process_time() - cpu):,.0f}/s CPU"


def test_solution_table_build_time():
    cards.solution_table.cache_clear()
    cards._expressions.cache_clear()
    timings = {}
    for face_cards in (FACE_TEN, FACE_ORDINAL):
        wall, cpu = time.perf_counter(), time.process_time()
        table = solution_table(face_cards, 24)
        timings[face_cards] = time.perf_counter() - wall
        cpu = time.process_time() - cpu
        n = sum(len(s) for s in table.by_values.values())
        print(f"\nsolution table J,Q,K={face_cards}: {timings[face_cards]:.3f} s wall, {cpu:.3f} s CPU "
              f"({len(table.solvable_ranks)}/1820 solvable, {n} solutions)")  # fmt: skip
    assert all(t > 0 for t in timings.values())


def test_text_reset_step_with_oracle_answer():
    for label, env in [("unwrapped", gym.make("sftrl/GeneralPoints-v0").unwrapped),
                       ("gymnasium.make", gym.make("sftrl/GeneralPoints-v0"))]:  # fmt: skip
        oracle = env.unwrapped

        def episodes(n, env=env, oracle=oracle):
            for seed in range(n):
                env.reset(seed=seed)
                _, reward, terminated, _, _ = env.step(oracle.oracle_action())
                assert reward == 5.0 and terminated

        episodes(200)  # warm-up (tables built)
        print(f"\ntext reset+step with the oracle answer ({label}): {_rate(5000, episodes)} (episodes)")


def test_image_reset_1200():
    env = gym.make("sftrl/GeneralPoints-v0", modality="image").unwrapped

    def resets(n):
        for seed in range(n):
            obs, _ = env.reset(seed=seed)
            assert obs["image"].shape == (1200, 1200, 3)

    resets(60)  # warm-up: every sprite of the black suits drawn once
    print(f"\nimage reset at 1200x1200: {_rate(1000, resets)} (resets)")
