"""V-IRL throughput: city generation, text steps/s with the oracle, pictures/s (prints figures).

Run: `make bench` or `.venv/bin/python -m pytest tests/bench/bench_virl.py -s`.
Rates are printed by wall clock and by process CPU time (the dev box is shared). Targets: text
steps with the oracle >= 5,000/s; pictures at the default size (2x2 views of 320 px) >= 50/s.
"""

import time

import gymnasium as gym
import numpy as np

import envs  # noqa: F401  (registers the ids)
from envs.virl import render
from envs.virl.city import generate_city
from envs.virl.route import synthetic_route
from envs.virl.styles import STYLES


def _rate(n, run, unit):
    """Items per second, by wall clock and by this process's CPU time."""
    wall, cpu = time.perf_counter(), time.process_time()
    count = run(n)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return f"{count / wall:,.0f} {unit}/s wall, {count / cpu:,.0f} {unit}/s CPU"


def test_city_generation_time():
    generate_city.cache_clear()
    start = time.perf_counter()
    cities = [generate_city(seed) for seed in range(100, 120)]
    elapsed = (time.perf_counter() - start) / len(cities)
    print(
        f"\ncity generation (8x8 intersections, ~{np.mean([len(c.places) for c in cities]):.0f} places): "
        f"{elapsed * 1e3:.2f} ms per city"
    )
    city = cities[0]
    start = time.perf_counter()
    for seed in range(200):
        synthetic_route(city, np.random.default_rng(seed), np.random.default_rng(seed))
    print(f"route planning + rail: {(time.perf_counter() - start) / 200 * 1e3:.3f} ms per route")


def _oracle_steps(env, n: int) -> int:
    """Take `n` oracle steps, resetting (seed 0, 1, ...) whenever an episode ends."""
    done, seed = True, 0
    for _ in range(n):
        if done:
            env.reset(seed=seed)
            seed += 1
        _, reward, terminated, truncated, _ = env.step(env.unwrapped.oracle_action())
        assert reward == 1.0
        done = terminated or truncated
    return n


def test_text_steps_with_oracle():
    for label, env in [
        ("unwrapped", gym.make("sftrl/VIRL-v0").unwrapped),
        ("gymnasium.make", gym.make("sftrl/VIRL-v0")),
    ]:
        _oracle_steps(env, 500)  # warm-up
        rate = _rate(10_000, lambda n, env=env: _oracle_steps(env, n), "steps")
        print(f"\ntext steps with the oracle answer, resets included ({label}): {rate}")


def test_pictures_per_second_default_size():
    city = generate_city(0)
    views = [
        p.view
        for seed in range(30)
        for p in synthetic_route(city, np.random.default_rng(seed), np.random.default_rng(seed)).points
    ]
    render._background.cache_clear()
    start = time.perf_counter()
    for style in STYLES.values():
        for kind in ("ahead", "crossing", "frontal"):
            for variant in range(4):
                render._background(style, kind, variant, render.DEFAULT_VIEW_PX)
    cold = (time.perf_counter() - start) / (len(STYLES) * 12)
    print(f"\nbackground view drawn cold: {cold * 1e3:.2f} ms each ({len(STYLES) * 12} per size, cached)")

    def pictures(n):
        for i in range(n):
            render.render_point(views[i % len(views)], STYLES["new_york_day"])
        return n

    print(f"pictures at the default size {render.picture_shape()}: {_rate(1000, pictures, 'pictures')}")
    env = gym.make("sftrl/VIRL-v0", modality="image").unwrapped
    rate = _rate(500, lambda n: _oracle_steps(env, n), "steps")
    print(f"image env steps with the oracle (one new picture per step): {rate}")
