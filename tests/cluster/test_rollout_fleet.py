"""RolloutFleet on real Ray actors: fan-out, whole groups per actor, crash -> dropped + replaced."""

import cluster_fakes
import pytest
import ray
from cluster_fakes import FakePolicy, crash_once_worker_cls, fake_env_worker_cls, hang_once_worker_cls

from cluster.config import EnvConfig, RolloutConfig, SamplingConfig
from cluster.fleet import RolloutFleet, split_by_group
from cluster.rollout import EpisodeRequest

# Ray workers cannot import the tests folder: ship the fakes by value.
ray.cloudpickle.register_pickle_by_value(cluster_fakes)


def _requests(n_groups, group_size=2):
    return [EpisodeRequest(seed=g, group=g, variant="id") for g in range(n_groups) for _ in range(group_size)]


def test_split_keeps_groups_whole_and_balanced():
    shares = split_by_group(_requests(5), 2)
    assert [len(s) for s in shares] == [6, 4]
    for share in shares:
        groups = [r.group for r in share]
        assert all(groups.count(g) == 2 for g in groups)
    assert split_by_group([], 3) == [[], [], []]


@pytest.fixture(scope="module")
def ray_cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _fleet(worker_cls, n_actors=2, probe_timeout_s=30.0, collect_timeout_s=1800.0):
    config = RolloutConfig(
        n_actors=n_actors,
        envs_per_actor=2,
        episodes_per_iteration=8,
        group_size=2,
        num_cpus_per_actor=0.1,
        probe_timeout_s=probe_timeout_s,
        collect_timeout_s=collect_timeout_s,
    )
    return RolloutFleet.launch(EnvConfig(task="gp-l"), FakePolicy(version=1), config, worker_cls=worker_cls)


@pytest.mark.integration
def test_fleet_collects_every_episode(ray_cluster):
    fleet = _fleet(fake_env_worker_cls())
    try:
        result = fleet.collect(_requests(4), SamplingConfig())
        assert sorted(ep.seed for ep in result.episodes) == [0, 0, 1, 1, 2, 2, 3, 3]
        assert (result.dropped, result.failed_actors, len(result.actor_wall_s)) == (0, 0, 2)
        assert all(ep.turns[0].policy_version == 1 for ep in result.episodes)
    finally:
        fleet.shutdown()


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_a_lost_share_is_dropped_and_counted_and_its_actor_serves_again(ray_cluster, tmp_path, fault):
    marker = tmp_path / f"{fault}-once"
    marker.write_text("")
    faulty = {"crash": crash_once_worker_cls, "hang": hang_once_worker_cls}[fault]
    # a crash fails the call at once; a hang (an actor on a lost node) is dropped at the deadline
    fleet = _fleet(faulty(str(marker), fake_env_worker_cls()), collect_timeout_s=20.0)
    try:
        result = fleet.collect(_requests(4), SamplingConfig())
        # One of two actors was lost mid-iteration: its two groups are dropped, the rest came back.
        assert (result.dropped, result.failed_actors, len(result.episodes)) == (4, 1, 4)
        assert fleet.num_healthy == 1
        again = fleet.collect(_requests(4), SamplingConfig())  # restarted (crash) or answering pings (hang)
        assert (again.dropped, len(again.episodes)) == (0, 8)
        assert fleet.num_healthy == 2
    finally:
        fleet.shutdown()


@pytest.mark.integration
def test_bugs_in_workers_are_raised_not_dropped(ray_cluster):
    class Broken(fake_env_worker_cls()):
        async def run_episodes(self, requests, sampling):
            raise KeyError("bug in env code")

    fleet = _fleet(Broken, n_actors=1)
    try:
        with pytest.raises(Exception, match="bug in env code"):
            fleet.collect(_requests(1), SamplingConfig())
    finally:
        fleet.shutdown()
