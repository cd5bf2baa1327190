"""Benchmark: weight sync by file vs by broadcast, side by side in one Ray session.

SmolLM2-135M fp32 (the demo's config), 1 learner rank, 2 replicas of the chosen engine. The two
transports of `cluster/weight_sync.py` alternate (file, broadcast, file, ...; ROUNDS each), every
sync a new version to both replicas. Per transport: median sync time, and the largest rise of RSS
during a sync above its start, per role (the learner rank, the two Serve replicas together with
their subprocesses, the weight registry), sampled every 20 ms over the whole process tree.
Run: `.venv/bin/python -m pytest -s -p no:cacheprovider tests/bench/bench_weight_sync.py`.
"""

from __future__ import annotations

import os
import statistics
import time

import psutil
import pytest
from process_tree import SUBPROCESSES, TreeSampler

from cluster.config import CONFIG_DIR, WeightSyncConfig, load_config
from cluster.train import build_session
from cluster.weight_files import prune_weight_files, weights_path
from cluster.weight_sync import sync_weights

ROUNDS = 4
ROLES = ("learner rank", "Serve replica", "weight registry")
"""Roles of process_tree; a role's figure includes its subprocesses' (vLLM's engine core and worker)."""


def _rise(samples, start: float, end: float) -> dict[str, float]:
    """Per role: the highest RSS (GB) in [start, end] minus the last reading before start."""
    window = [i for i, t in enumerate(samples.times) if start <= t <= end]
    before = max((i for i, t in enumerate(samples.times) if t < start), default=window[0])

    def rss(i: int, role: str) -> float:
        return sum(v for name, v in samples.rss_by_role[i].items() if name in (role, role + SUBPROCESSES))

    return {role: (max(rss(i, role) for i in window) - rss(before, role)) / 1e9 for role in ROLES}


@pytest.mark.slow
@pytest.mark.timeout(3600)
@pytest.mark.integration
@pytest.mark.parametrize("engine", ["transformers", "vllm"])
def test_weight_sync_file_vs_broadcast(tmp_path, engine):
    overrides = ["run.sft_steps=0", "run.iterations=1", f"serving.engine={engine}", "serving.num_replicas=2"]
    config = load_config(CONFIG_DIR / "demo.yaml", overrides)
    session = build_session(config, tmp_path)
    sampler = TreeSampler(psutil.Process(os.getpid()), side="sftrl", interval_s=0.02)
    sampler.start()
    times: dict[str, list[float]] = {"file": [], "broadcast": []}
    windows: dict[str, list[tuple[float, float]]] = {"file": [], "broadcast": []}
    try:
        learner, policy = session.trainer.learner, session.trainer.policy
        version = session.trainer.state.policy_version
        for _ in range(ROUNDS):
            for transport in ("file", "broadcast"):
                version += 1
                time.sleep(0.5)  # a reading before the sync
                start = time.time()
                synced = sync_weights(
                    learner,
                    policy,
                    path=weights_path(tmp_path, version),
                    version=version,
                    config=WeightSyncConfig(transport=transport),
                )
                end = time.time()
                assert synced.used == transport
                times[transport].append(end - start)
                windows[transport].append((start, end))
                prune_weight_files(tmp_path)
        time.sleep(0.2)
        reports = policy.handle.broadcast("info").results()
        assert [r["version"] for r in reports] == [version, version]
    finally:
        samples = sampler.stop()
        session.close()
    print(f"\nweight sync, {config.learner.model} fp32, 1 learner rank, 2 {engine} replicas, {ROUNDS} syncs each:")
    header = "  ".join(f"{role + ' GB':>18}" for role in ROLES)
    print(f"{'transport':<10} {'median s':>9} {'min s':>7} {'max s':>7}  {header}")
    medians = {}
    for transport, seconds in times.items():
        rises = [_rise(samples, *window) for window in windows[transport]]
        peak = {role: max(r[role] for r in rises) for role in ROLES}
        medians[transport] = statistics.median(seconds)
        print(
            f"{transport:<10} {medians[transport]:>9.2f} {min(seconds):>7.2f} {max(seconds):>7.2f}  "
            + "  ".join(f"{peak[role]:>18.2f}" for role in ROLES)
        )
    print(f"broadcast / file sync time: {medians['broadcast'] / medians['file']:.2f}x")
