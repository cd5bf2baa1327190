"""End to end on real Ray, Serve and DeepSpeed with the tiny model.

One run of the paper's PPO at a sampling temperature (the learner recomputes the server's
log-probs) in which a rollout actor is killed mid-iteration (the run goes on, the loss is counted).
The run joins the module's Ray cluster, starts and removes its own Serve app, learner and fleet,
and leaves the cluster it joined running. tiny.yaml as it is (SFT, 2 RL iterations, evaluation) is
checked on the demo's run: tests/e2e/test_demo_run.py.
"""

import asyncio
import os

import pytest
import ray
from e2e_helpers import TINY
from ray import serve

from cluster.config import load_config
from cluster.metrics import read_metrics
from cluster.rollout import RolloutWorker
from cluster.train import build_session

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _run(run_dir, overrides=(), **session_kwargs):
    with build_session(load_config(TINY, list(overrides)), run_dir, **session_kwargs) as session:
        state, results = session.trainer.run(), session.trainer.evals[-1].results
    # The session joined the module's cluster: it removed its parts and left Ray and Serve running.
    assert ray.is_initialized() and "sftrl-policy" not in serve.status().applications
    return state, results


def test_killed_rollout_actor_does_not_stop_the_papers_ppo_run(ray_cluster, tmp_path):
    # Two behaviours in one run (each run starts its own Serve app, learner and fleet): a rollout
    # actor killed mid-iteration, and the paper's PPO at a sampling temperature.
    marker = tmp_path / "crash-once"
    marker.write_text("")

    class CrashOnce(RolloutWorker):  # defined here, so Ray ships it by value
        async def run_episodes(self, requests, sampling):
            try:
                os.unlink(marker)  # the first actor to get here dies a moment into its episodes
            except FileNotFoundError:
                return await super().run_episodes(requests, sampling)
            asyncio.ensure_future(super().run_episodes(requests, sampling))
            await asyncio.sleep(0.3)
            os._exit(1)

    # tiny.yaml's lr (1e-4, for a random model) overrides the preset's 1e-6, so 4 epochs move the
    # policy far enough for the 0.1 clip to bite; everything else is the paper's PPO. group_size=1:
    # each of the 2 actors gets 2 of the 4 episodes, so the crash drops 2.
    overrides = [
        "learner.algo=ppo",
        "learner.preset=paper_ppo",
        "rollout.sampling.temperature=0.7",
        "rollout.group_size=1",
        "run.sft_steps=0",
        "run.iterations=2",
    ]
    state, results = _run(tmp_path, overrides, worker_cls=CrashOnce)
    assert (state.iteration, state.policy_version) == (2, 2) and state.dropped_episodes == 2
    rl = [r for r in read_metrics(tmp_path) if r["phase"] == "rl"]
    assert [r["rollout/dropped_episodes"] for r in rl] == [2.0, 0.0]
    assert [r["rollout/failed_actors"] for r in rl] == [1.0, 0.0]
    assert [r["rollout/episodes"] for r in rl] == [2.0, 4.0]
    assert rl[-1]["rollout/dropped_total"] == 2.0
    # The crashed actor was brought back: evaluation ran on the full fleet, nothing dropped.
    assert all(r.dropped == 0 and r.episodes == 2 for r in results)
    # The learner divides by the rollout temperature, as the server did: the same log-probs.
    assert all(r["loss/value"] > 0 and "loss/policy" in r and r["rl/logprob_diff_max"] <= 1e-4 for r in rl)
    assert rl[-1]["rl/clip_fraction"] > 0  # the full iteration's 4 episodes
