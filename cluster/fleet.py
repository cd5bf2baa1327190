"""The rollout actor fleet: N `RolloutWorker` Ray actors kept healthy by RLlib's actor manager.

`FaultTolerantActorManager` (ray.rllib.utils.actor_manager) marks an actor unhealthy when a call
to it fails with a Ray error. Actors are created with `max_restarts`, so Ray brings a crashed one
back; before each collection the fleet pings the unhealthy ones (`probe_unhealthy_actors`) and
replaces those that do not answer within `probe_timeout_s` with fresh actors. A crashed actor's
unfinished episodes are dropped and counted (`CollectResult.dropped`); the iteration completes
with the rest. So are the episodes of an actor that has not answered within `collect_timeout_s`
(its node died and Ray waits to restart it on a node that may never come): it is marked
unhealthy, so the next collection probes or replaces it. An application error inside
`run_episodes` (a bug, not a crash) is re-raised.

    fleet = RolloutFleet.launch(env_config, policy_handle, rollout_config)
    result = fleet.collect(requests, sampling)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.rllib.utils.actor_manager import FaultTolerantActorManager

from cluster.config import EnvConfig, RolloutConfig, SamplingConfig
from cluster.rollout import Episode, EpisodeRequest, RolloutWorker


@dataclass
class CollectResult:
    """Episodes from the healthy actors; `dropped` episodes were lost with crashed actors."""

    episodes: list[Episode]
    dropped: int
    failed_actors: int
    actor_wall_s: list[float]
    env_s: float


class RolloutFleet:
    """Fans episode requests out over the actors and gathers the episodes back."""

    def __init__(
        self, make_actor: Callable[[], Any], n_actors: int, *, probe_timeout_s: float, collect_timeout_s: float
    ):
        self._make_actor = make_actor
        self._manager = FaultTolerantActorManager(
            [make_actor() for _ in range(n_actors)], max_remote_requests_in_flight_per_actor=1
        )
        self._probe_timeout_s = probe_timeout_s
        self._collect_timeout_s = collect_timeout_s

    @classmethod
    def launch(
        cls, env_config: EnvConfig, policy: Any, config: RolloutConfig, *, worker_cls: type = RolloutWorker
    ) -> RolloutFleet:
        """Start `config.n_actors` Ray actors of `worker_cls` that play against `policy`."""
        remote_cls = ray.remote(worker_cls).options(
            num_cpus=config.num_cpus_per_actor, max_restarts=-1, resources=config.resources_per_actor
        )

        def make_actor() -> Any:
            return remote_cls.remote(env_config, policy, envs_per_actor=config.envs_per_actor)

        return cls(
            make_actor,
            config.n_actors,
            probe_timeout_s=config.probe_timeout_s,
            collect_timeout_s=config.collect_timeout_s,
        )

    @property
    def num_healthy(self) -> int:
        """Actors the manager counts as healthy right now."""
        return self._manager.num_healthy_actors()

    def collect(self, requests: list[EpisodeRequest], sampling: SamplingConfig) -> CollectResult:
        """Play every request on the healthy actors; a crash drops that actor's share only."""
        self.restore()
        actor_ids = self._manager.healthy_actor_ids()
        if not actor_ids:
            raise RuntimeError("no healthy rollout actor is left and none could be replaced")
        shares = split_by_group(requests, len(actor_ids))
        results = self._manager.foreach_actor(
            "run_episodes",
            kwargs=[{"requests": share, "sampling": sampling} for share in shares],
            remote_actor_ids=actor_ids,
            timeout_seconds=self._collect_timeout_s,
        )
        share_of = dict(zip(actor_ids, shares, strict=True))
        episodes: list[Episode] = []
        walls: list[float] = []
        env_s, dropped, failed = 0.0, 0, 0
        answered = {result.actor_id for result in results}
        for actor_id in actor_ids:
            if actor_id not in answered:  # past the deadline: its share is lost, probe or replace it next time
                self._manager.set_actor_state(actor_id, healthy=False)
                dropped += len(share_of[actor_id])
                failed += 1
        for result in results:
            if result.ok:
                batch = result.get()
                episodes.extend(batch.episodes)
                walls.append(batch.wall_s)
                env_s += batch.env_s
                continue
            error = result.get()
            if not isinstance(error, RayActorError):
                raise error
            dropped += len(share_of[result.actor_id])
            failed += 1
        return CollectResult(episodes=episodes, dropped=dropped, failed_actors=failed, actor_wall_s=walls, env_s=env_s)

    def restore(self) -> None:
        """Bring back restarted actors; replace those that stay down past the probe timeout."""
        if self._manager.num_healthy_actors() == self._manager.num_actors():
            return
        self._manager.probe_unhealthy_actors(timeout_seconds=self._probe_timeout_s, mark_healthy=True)
        for actor_id in self._manager.actor_ids():
            if not self._manager.is_actor_healthy(actor_id):
                ray.kill(self._manager.remove_actor(actor_id), no_restart=True)
                self._manager.add_actors([self._make_actor()])

    def shutdown(self) -> None:
        """Kill every actor of the fleet."""
        self._manager.clear()


def split_by_group(requests: list[EpisodeRequest], n_shares: int) -> list[list[EpisodeRequest]]:
    """Deal whole groups round-robin to `n_shares` actors (a crash drops whole GRPO groups)."""
    groups: dict[int, list[EpisodeRequest]] = {}
    for request in requests:
        groups.setdefault(request.group, []).append(request)
    shares: list[list[EpisodeRequest]] = [[] for _ in range(n_shares)]
    for index, members in enumerate(groups.values()):
        shares[index % n_shares].extend(members)
    return shares
