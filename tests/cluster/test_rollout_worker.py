"""RolloutWorker: concurrent episodes, sequential revision, token-in/token-out records (no Ray)."""

import asyncio

import numpy as np
from cluster_fakes import FakeEnv, FakePolicy

from cluster.config import EnvConfig, SamplingConfig
from cluster.rollout import EpisodeRequest, RolloutWorker, encode_png_base64, json_safe


def _worker(policy, *, envs_per_actor=2, made=None):
    def make_env(variant):
        env = FakeEnv(variant)
        if made is not None:
            made.append(env)
        return env

    return RolloutWorker(EnvConfig(task="gp-l"), policy, envs_per_actor=envs_per_actor, make_env=make_env)


def test_episodes_record_every_turn_as_generated():
    policy = FakePolicy(version=3)
    requests = [EpisodeRequest(seed=s, group=s // 2, variant="id") for s in range(4)]
    batch = asyncio.run(_worker(policy).run_episodes(requests, SamplingConfig(max_new_tokens=5)))
    assert [ep.seed for ep in batch.episodes] == [0, 1, 2, 3]
    even, odd = batch.episodes[0], batch.episodes[1]
    assert even.success and len(even.turns) == 1 and even.turns[0].reward == 1.0
    # Sequential revision: the failed first answer's feedback is the next user turn.
    assert odd.success and [t.reward for t in odd.turns] == [-1.0, 1.0]
    assert [t.text for t in odd.turns] == ["0", "1"]
    assert odd.turns[1].prompt_ids == [len("guess (seed 1)"), 1, len("wrong, try again")]
    assert odd.turns[1].output_ids == [11, 2] and odd.turns[1].logprobs == [-0.5, -0.1]
    assert all(t.policy_version == 3 for ep in batch.episodes for t in ep.turns)
    assert odd.turns[0].generate_s == 0.25 and odd.turns[0].queue_s == 0.125
    assert odd.group == 0 and odd.variant == "id" and odd.total_reward == 0.0
    assert odd.final_info["attempt"] == 2
    # The env's evaluation counts survive json_safe (dicts of ints).
    assert even.final_info["eval_hits"] == {"card_accuracy": 1} and odd.final_info["eval_hits"] == {"card_accuracy": 0}
    assert batch.env_s >= 0 and batch.wall_s >= batch.env_s


class _NeverRightEnv(FakeEnv):
    """Every answer is wrong, so only the env's own truncation ends an episode."""

    max_attempts = 4

    def reset(self, *, seed: int):
        obs, info = super().reset(seed=seed)
        self._answer = "never"
        return obs, info


def test_episode_runs_until_the_env_terminates_or_truncates():
    worker = RolloutWorker(EnvConfig(task="gp-l"), FakePolicy(), envs_per_actor=1, make_env=_NeverRightEnv)
    batch = asyncio.run(worker.run_episodes([EpisodeRequest(0, 0, "id")], SamplingConfig()))
    (episode,) = batch.episodes
    assert [t.reward for t in episode.turns] == [-1.0] * 4 and not episode.success


def test_requests_carry_sampling_and_no_images_for_text():
    policy = FakePolicy()
    sampling = SamplingConfig(temperature=0.0, top_p=0.9, max_new_tokens=7)
    asyncio.run(_worker(policy).run_episodes([EpisodeRequest(0, 0, "id")], sampling))
    request = policy.requests[0]
    assert (request["temperature"], request["top_p"], request["max_new_tokens"]) == (0.0, 0.9, 7)
    assert request["images"] == []


def test_envs_are_reused_per_variant_up_to_k():
    made = []
    worker = _worker(FakePolicy(), envs_per_actor=2, made=made)
    requests = [EpisodeRequest(s, s, v) for v in ("id", "rule_ood") for s in range(5)]
    batch = asyncio.run(worker.run_episodes(requests, SamplingConfig()))
    assert len(batch.episodes) == 10
    assert sorted(env.variant for env in made) == ["id", "id", "rule_ood", "rule_ood"]
    assert [ep.variant for ep in batch.episodes] == ["id"] * 5 + ["rule_ood"] * 5


def test_apply_awaits_coroutines_for_the_actor_manager():
    worker = _worker(FakePolicy())
    assert asyncio.run(worker.apply(lambda w: w.ping())) == "pong"
    batch = asyncio.run(
        worker.apply(lambda w, r, s: w.run_episodes(r, s), [EpisodeRequest(0, 0, "id")], SamplingConfig())
    )
    assert len(batch.episodes) == 1


def test_png_encoding_round_trips():
    import base64
    import io

    from PIL import Image

    image = np.random.default_rng(0).integers(0, 255, (8, 6, 3), dtype=np.uint8)
    decoded = np.asarray(Image.open(io.BytesIO(base64.b64decode(encode_png_base64(image)))))
    assert np.array_equal(decoded, image)


def test_json_safe_keeps_plain_values_only():
    info = {"a": np.int64(3), "b": [1, "x"], "c": {"k": 1.5}, "d": np.zeros(3), "e": object(), "f": None}
    assert json_safe(info) == {"a": 3, "b": [1, "x"], "c": {"k": 1.5}, "f": None}
