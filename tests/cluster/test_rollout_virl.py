"""RolloutWorker on the real `sftrl/VIRL-v0` picture modality: each turn sends the env's current picture."""

import asyncio
import base64
import io

import numpy as np
from cluster_fakes import FakePolicy
from PIL import Image

from cluster.config import EnvConfig, SamplingConfig
from cluster.rollout import EpisodeRequest, RolloutWorker


class _RecordingPolicy(FakePolicy):
    """At every rail point answers wrong once, then right (the env's oracle).

    Per call it records the picture it was sent next to the picture the env showed at that moment.
    """

    def __init__(self, env):
        super().__init__()
        self.env = env
        self.seen: list[tuple[np.ndarray, np.ndarray]] = []

    async def reply(self, request: dict) -> dict:
        reply = await super().reply(request)
        (sent,) = self.requests[-1].images
        self.seen.append((np.asarray(Image.open(io.BytesIO(base64.b64decode(sent)))), self.env.render().copy()))
        right = len(self.seen) % 2 == 0
        return {**reply, "text": self.env.unwrapped.oracle_action() if right else "I am lost"}


def test_every_turn_sends_the_picture_of_the_env_at_that_step():
    env_config = EnvConfig(task="virl-vl", kwargs={"view_px": 64, "render_mode": "rgb_array"})
    env = env_config.make("id", "train")
    policy = _RecordingPolicy(env)
    worker = RolloutWorker(env_config, policy, envs_per_actor=1, make_env=lambda variant, split: env)
    (episode,) = asyncio.run(worker.run_episodes([EpisodeRequest(3, 0, "id")], SamplingConfig())).episodes
    assert episode.success and len(episode.turns) == len(policy.seen) >= 4
    for turn, (sent, shown) in zip(episode.turns, policy.seen, strict=True):
        assert np.array_equal(sent, shown) and np.array_equal(turn.image, shown)
    # The route has several rail points, so the pictures really change along the episode (points on
    # one straight may look alike, so not every point's picture is new).
    assert len({sent.tobytes() for sent, _ in policy.seen}) >= 2
