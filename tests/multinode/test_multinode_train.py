"""tiny.yaml as a `ray job submit` on a cluster of three hosts (network namespaces; issue 14).

The hosts (conftest.HOSTS) are KubeRay's groups in small: a head with no CPUs, a host advertising
`learner`, and one advertising `rollout` and `policy`. tiny.yaml asks for no custom resource, so
the job gets the shipped GPU configs' placement as overrides (PLACEMENT): each learner rank, rollout
actor and Serve replica then lands on the host its resource names. The job is submitted from the
root namespace (outside the cluster) with `--working-dir`, and its run directory is on the
directory every host shares (the PVC).

1. The run completes; the state API shows where each role ran; the replicas on the rollout host
   served every version the learner host sent (every sync a broadcast between the hosts'
   addresses, none fell back; each version's file on the shared run directory,
   cluster/weight_files.py); checkpoints, the exported policy and the metrics are in the shared
   directory.
2. The rollout host's raylet is killed while the first RL collection is in flight: its rollout
   actors and the only replica die with it. If the run has not finished STALL_S after the node is
   dead (on Ray 2.60 it waits: the lost actors' calls neither fail nor return until Ray restarts
   the actors on a node with `rollout`), the host is started again, as KubeRay recreates a pod,
   and the run finishes; the episodes lost with the host are dropped and counted (cluster/fleet.py,
   `rollout/dropped_episodes`) and the replacement replica serves the newest weights.

    timeout 2400 .venv/bin/python -m pytest -m multinode -p no:cacheprovider -s tests/multinode
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from pathlib import Path

import pytest
from netns_cluster import NetnsCluster, tail

from cluster.metrics import read_metrics

pytestmark = [pytest.mark.multinode, pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(2400)]

ROOT = Path(__file__).resolve().parents[2]
TINY = "cluster/configs/tiny.yaml"
# What the shipped GPU configs request (README, "Kubernetes (KubeRay)"), on tiny.yaml's sizes.
PLACEMENT = [
    "run.learner_resources={CPU: 1, learner: 1}",
    "rollout.resources_per_actor={rollout: 1}",
    "serving.resources_per_replica={policy: 1}",
]
REPLICA = "ServeReplica:sftrl-policy:PolicyServer"  # Ray Serve's actor class name: app, deployment
JOB_TIMEOUT_S = 900.0
# Scenario 2: a longer first collection (more episodes, longer replies), so the kill lands in it; a
# short probe before the lost actors are replaced (the default waits 60 s).
EPISODES, GROUP_SIZE = 16, 2  # tiny.yaml's group_size
LOSS_OVERRIDES = [
    f"rollout.episodes_per_iteration={EPISODES}",
    "rollout.sampling.max_new_tokens=48",
    "rollout.probe_timeout_s=20",
]
STALL_S = 120.0
"""How long the run gets to finish without any host advertising `rollout`/`policy`."""


def train_entrypoint(run_dir: Path, *overrides: str) -> list[str]:
    """The job's command: tiny.yaml into `run_dir` (on the shared directory), placed by resources."""
    return ["python", "-m", "cluster.train", "--config", TINY, "--run-dir", str(run_dir), *PLACEMENT, *overrides]


def hosts_by_class(actors: list[dict]) -> dict[str, set[str]]:
    """Actor class -> the hosts its actors ran on."""
    hosts: dict[str, set[str]] = defaultdict(set)
    for actor in actors:
        hosts[actor["class_name"]].add(actor["host"])
    return dict(hosts)


def eval_turn_versions(run_dir: Path, version: int) -> set[int]:
    """The policy versions that served the turns of the evaluation at `version`."""
    files = sorted((run_dir / "eval" / f"v{version:05d}").glob("episodes_*.jsonl"))
    assert files, f"no evaluation episodes under {run_dir / 'eval'}"
    episodes = [json.loads(line) for path in files for line in path.read_text().splitlines()]
    return {turn["policy_version"] for episode in episodes for turn in episode["turns"]}


def finished(job, timeout_s: float):
    """The job's result, failing the test with its output if it did not end within `timeout_s`."""
    result = job.wait(timeout_s)
    assert result is not None, f"job {job.submission_id} still running after {timeout_s:g} s:\n{tail(job.output())}"
    return result


def test_tiny_job_places_each_role_on_its_host_and_syncs_weights_across(cluster: NetnsCluster):
    run_dir = cluster.shared / "runs" / "placement"
    known = {a["actor_id"] for a in cluster.actor_records()}
    job = cluster.submit(train_entrypoint(run_dir), working_dir=ROOT, submission_id="smn-placement")
    result = finished(job, JOB_TIMEOUT_S)
    took = time.monotonic() - job.started
    assert result.returncode == 0, tail(result.output)
    assert "done: 2 SFT steps, 2 RL iterations, policy version 3" in result.output, tail(result.output)

    placed = hosts_by_class([a for a in cluster.actor_records() if a["actor_id"] not in known])
    metrics = read_metrics(run_dir)
    print(
        f"\nplacement job: {took:.0f} s; actors by host: { {k: sorted(v, key=str) for k, v in placed.items()} }; "
        f"phase times: {[(r['phase'], {k: round(v) for k, v in r.items() if k.startswith('time/')}) for r in metrics]}"
    )
    assert placed["JobSupervisor"] == {"head"}  # the driver runs on the head
    assert placed["LearnerRank"] == {"learner"}
    assert placed["RolloutWorker"] == {"rollout"}
    assert placed[REPLICA] == {"rollout"}

    # Weights crossed hosts: learner rank 0 (learner host) broadcast every version and wrote its file
    # on the shared directory; the replica (rollout host) generated every rollout turn with the version just
    # pushed (staleness 0 against the trainer's version) and the final evaluation with the last one.
    assert [r["phase"] for r in metrics] == ["sft", "sft", "rl", "rl", "eval"]
    rl = [r for r in metrics if r["phase"] == "rl"]
    assert [r["rollout/staleness_max"] for r in rl] == [0.0, 0.0]
    assert rl[-1]["sync/fallbacks_total"] == 0  # each sync streamed from the learner host to the rollout host
    assert eval_turn_versions(run_dir, 3) == {3}
    assert sorted(p.name for p in (run_dir / "weights").iterdir()) == ["v00002.safetensors", "v00003.safetensors"]

    # Checkpoints (written by the learner host), the exported policy and the metrics: all on the shared directory.
    latest = (run_dir / "checkpoints" / "latest").read_text().strip()
    state = json.loads((run_dir / "checkpoints" / latest / "trainer_state.json").read_text())
    assert (state["sft_step"], state["iteration"], state["policy_version"]) == (2, 2, 3)
    assert (run_dir / "policy" / "model.safetensors").is_file()
    assert (run_dir / "policy" / "config.json").is_file()
    assert (run_dir / "tensorboard").is_dir()


def test_losing_the_rollout_host_mid_iteration_drops_and_counts_its_episodes(cluster: NetnsCluster):
    run_dir = cluster.shared / "runs" / "node-lost"
    lost = cluster.wait_alive(["rollout"])["rollout"]["node_id"]
    known = {a["actor_id"] for a in cluster.actor_records()}
    job = cluster.submit(train_entrypoint(run_dir, *LOSS_OVERRIDES), working_dir=ROOT, submission_id="smn-node-lost")
    # The first RL collection is in flight once a rollout actor runs a task (FaultTolerantActorManager
    # calls `apply`); SFT and the first push come before it.
    cluster.state("wait-task", "RolloutWorker.apply", "600", timeout_s=600)
    killed_at = time.monotonic() - job.started
    cluster.kill_raylet("rollout")
    cluster.wait_host_down("rollout")
    dead_after_s = cluster.wait_node_dead(lost)

    result = job.wait(STALL_S)  # no host advertises rollout/policy now
    rows_while_down = [(r["phase"], r["iteration"]) for r in read_metrics(run_dir)]
    restarted = result is None
    if restarted:  # the run waits for a host: start it again, as KubeRay recreates the pod
        cluster.start_node("rollout")
        cluster.wait_alive(["rollout"])
        result = finished(job, JOB_TIMEOUT_S)
    took = time.monotonic() - job.started
    assert result.returncode == 0, tail(result.output)
    assert "done: 2 SFT steps, 2 RL iterations" in result.output, tail(result.output)

    rl = [r for r in read_metrics(run_dir) if r["phase"] == "rl"]
    dropped = [int(r["rollout/dropped_episodes"]) for r in rl]
    registry = sorted(
        hosts_by_class([a for a in cluster.actor_records() if a["actor_id"] not in known]).get("WeightRegistry", []),
        key=str,
    )  # None: an actor with no node recorded
    print(
        f"\nnode-lost job: {took:.0f} s; weight registry on {registry}; "
        f"raylet killed at {killed_at:.0f} s, node dead {dead_after_s:.0f} s later; "
        f"metric rows {STALL_S:g} s after that: {rows_while_down}; host restarted: {restarted}; dropped per "
        f"iteration {dropped}, failed actors {[int(r['rollout/failed_actors']) for r in rl]}; "
        f"rollout s {[round(r['time/rollout_s']) for r in rl]}"
    )
    # The collection in flight lost the share of each actor whose call died with the host (whole GRPO
    # groups), counted as dropped; what was still queued for an actor ran on its restarted incarnation.
    first = rl[0]
    assert first["rollout/failed_actors"] >= 1
    assert dropped[0] > 0
    assert dropped[0] % GROUP_SIZE == 0
    assert first["rollout/episodes"] + dropped[0] == EPISODES
    assert dropped[1:] == [0]
    assert rl[-1]["rollout/dropped_total"] == sum(dropped)
    learned = sum(r["rollout/samples"] > 0 for r in rl)
    assert f"policy version {1 + learned}," in result.output, tail(result.output)
    # Replicas that replaced the lost one started from the newest published weights (the
    # registry's): every collected turn ran on the trainer's version, the evaluation on the last one.
    collected = [r for r in rl if r["rollout/episodes"] > 0]  # a collection that lost all has no staleness
    assert [r["rollout/staleness_max"] for r in collected] == [0.0] * len(collected), (
        f"a replacement replica served older weights than the trainer's version (weight registry on {registry}: "
        "a registry lost with every replica is recreated empty, and no replica is left to republish)"
    )
    assert eval_turn_versions(run_dir, 1 + learned) == {1 + learned}
    if restarted:
        now = cluster.wait_alive(["rollout"])["rollout"]["node_id"]
        on_new = {a["class_name"] for a in cluster.actor_records() if a.get("node_id") == now}
        assert {"RolloutWorker", REPLICA} <= on_new, on_new
