"""Benchmark: V-IRL-L episodes/s through the rollout fleet, transformers engine vs vLLM (prefix cache on, off).

SmolLM2-135M on CPU, the demo's fleet (2 actors x 8 envs), 8 training episodes of V-IRL text
routes (up to 13 turns of ~510 prompt tokens, each turn re-sending the conversation so far), 64
new tokens per turn. One warm-up collect, then `ROUNDS` timed collects per case; prints the
median episodes/s and turns/s and the ratio to the transformers engine.

    .venv/bin/python -m pytest tests/bench/bench_virl_rollouts.py -s -p no:cacheprovider
"""

import statistics
import time

import pytest

from cluster.config import CONFIG_DIR, load_config
from cluster.train import build_session

ROUNDS = 2
CASES = {"transformers": ["serving.engine=transformers"], "vllm": ["serving.engine=vllm"]}
CASES["vllm, no prefix cache"] = ["serving.engine=vllm", "serving.vllm.prefix_caching=false"]
RATES: dict[str, tuple[float, float]] = {}


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.integration
@pytest.mark.parametrize("case", list(CASES))
def test_virl_episodes_per_second(tmp_path, case):
    config = load_config(CONFIG_DIR / "demo.yaml", ["env.task=virl-l", "run.sft_steps=0", *CASES[case]])
    session = build_session(config, tmp_path)
    try:
        trainer, sampling = session.trainer, config.rollout.sampling
        trainer.fleet.collect(trainer.training_requests(0), sampling)  # warm-up
        episodes, turns = [], []
        for round_ in range(ROUNDS):
            start = time.perf_counter()
            collected = trainer.fleet.collect(trainer.training_requests(round_ + 1), sampling)
            seconds = time.perf_counter() - start
            episodes.append(len(collected.episodes) / seconds)
            turns.append(sum(len(e.turns) for e in collected.episodes) / seconds)
    finally:
        session.close()
    RATES[case] = statistics.median(episodes), statistics.median(turns)
    base = RATES.get("transformers")
    ratio = f", {RATES[case][0] / base[0]:.2f}x the transformers engine" if base else ""
    print(f"\nV-IRL-L rollouts, {case}: {RATES[case][0]:.3f} episodes/s, {RATES[case][1]:.2f} turns/s{ratio}")
