"""Benchmark: RL iterations on CPU with smollm2-135m on GP-L (the demo's settings, no SFT), per engine.

Prints, per iteration: time per phase (rollout, learn, weight sync), the rollout's share of the
iteration, the share of rollout time the actors spent waiting on generation (goal >= 80%: envs and
orchestration cost little), episodes/s and generated tokens/s, for the transformers engine and for
vLLM. The first iteration includes warm-up (first batches, allocator growth).
Run: `make bench`, or `.venv/bin/python -m pytest tests/bench/bench_rl_iteration.py -s`.
"""

import pytest

from cluster.config import CONFIG_DIR, load_config
from cluster.train import build_session

ITERATIONS = 2
PHASES = ("time/rollout_s", "time/learn_s", "time/weight_sync_s")


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.integration
@pytest.mark.parametrize("engine", ["transformers", "vllm"])
def test_rl_iteration_phases_on_cpu(tmp_path, engine):
    overrides = ["run.sft_steps=0", f"run.iterations={ITERATIONS}", f"serving.engine={engine}"]
    config = load_config(CONFIG_DIR / "demo.yaml", overrides)
    session = build_session(config, tmp_path)
    try:
        rows = [session.trainer.iteration() for _ in range(ITERATIONS)]
    finally:
        session.close()
    print(
        f"\nRL iteration, {config.learner.model} on {config.env.task}, CPU, {engine} engine: "
        f"{config.rollout.episodes_per_iteration} episodes, {config.rollout.n_actors} actors x "
        f"{config.rollout.envs_per_actor} envs, max_new_tokens {config.rollout.sampling.max_new_tokens}"
    )
    keys = [
        "time/rollout_s",
        "time/learn_s",
        "time/weight_sync_s",
        "time/rollout_share",
        "rollout/generation_share",
        "rollout/server_queue_s_mean",
        "rollout/server_generate_s_mean",
        "perf/episodes_per_s",
        "perf/rollout_tokens_per_s",
        "rollout/tokens_generated",
        "rollout/samples",
    ]
    for row in rows:
        row["time/rollout_share"] = row["time/rollout_s"] / sum(row[k] for k in PHASES)
    print(f"{'metric':28s}" + "".join(f"{'iter ' + str(i + 1):>12s}" for i in range(len(rows))))
    for key in keys:
        print(f"{key:28s}" + "".join(f"{row[key]:12.3f}" for row in rows))
    assert all(row["rollout/episodes"] == config.rollout.episodes_per_iteration for row in rows)
