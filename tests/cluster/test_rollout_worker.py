"""RolloutWorker: concurrent episodes, sequential revision, token-in/token-out records (no Ray).

Each turn carries its own picture, sampling temperature and request seed.
"""

import asyncio
import base64
import io

import numpy as np
import pytest
from cluster_fakes import FakeEnv, FakePolicy
from PIL import Image
from pydantic import ValidationError

import cluster.rollout
from cluster.batch_builder import grpo_samples
from cluster.config import EnvConfig, SamplingConfig
from cluster.rollout import EpisodeRequest, RolloutWorker, encode_png_base64, json_safe, turn_seed


def _decoded(png_b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png_b64))))


def _worker(policy, *, envs_per_actor=2, made=None):
    def make_env(variant, split):
        env = FakeEnv(variant, split)
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


class _OffContractPolicy(FakePolicy):
    """Replies with a finish_reason the serving contract does not have."""

    async def reply(self, request: dict) -> dict:
        return {**(await super().reply(request)), "finish_reason": "eos"}


def test_a_reply_off_the_serving_contract_is_refused():
    with pytest.raises(ValidationError, match="finish_reason"):
        asyncio.run(_worker(_OffContractPolicy()).run_episodes([EpisodeRequest(0, 0, "id")], SamplingConfig()))


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
    batch = asyncio.run(_worker(policy).run_episodes([EpisodeRequest(0, 0, "id")], sampling))
    request = policy.requests[0]
    assert (request.temperature, request.top_p, request.max_new_tokens) == (0.0, 0.9, 7)
    assert request.images == [] and request.seed is None
    assert batch.episodes[0].turns[0].image is None


def test_turns_record_the_temperature_they_were_sampled_at():
    requests = [EpisodeRequest(1, 0, "id")]  # two turns
    sampled = asyncio.run(_worker(FakePolicy()).run_episodes(requests, SamplingConfig(temperature=0.3)))
    greedy = asyncio.run(_worker(FakePolicy()).run_episodes(requests, SamplingConfig(temperature=0.0)))
    assert [t.temperature for t in sampled.episodes[0].turns] == [0.3, 0.3]
    assert [t.temperature for t in greedy.episodes[0].turns] == [0.0, 0.0]
    assert [s.temperature for s in grpo_samples(sampled.episodes)] == [0.3, 0.3]


class _PictureEnv(FakeEnv):
    """Every answer is wrong; a new picture (a new array) every `steady_steps` steps.

    As V-IRL draws one at every rail point and keeps it between attempts at one point.
    """

    max_attempts = 4
    steady_steps = 1

    def reset(self, *, seed: int):
        obs, info = super().reset(seed=seed)
        self._answer = "never"
        self.shown = [np.full((4, 6, 3), 0, np.uint8)]
        return {**obs, "image": self.shown[-1]}, info

    def step(self, text: str):
        obs, *rest = super().step(text)
        if self._attempt % self.steady_steps == 0:
            self.shown.append(np.full((4, 6, 3), self._attempt, np.uint8))
        else:
            self.shown.append(self.shown[-1])  # the same array object: the picture did not change
        return ({**obs, "image": self.shown[-1]}, *rest)


def test_each_turn_sends_and_records_its_own_picture():
    made, policy = [], FakePolicy()
    worker = RolloutWorker(
        EnvConfig(task="gp-vl"),
        policy,
        envs_per_actor=1,
        make_env=lambda v, split: made.append(_PictureEnv(v, split)) or made[-1],
    )
    (episode,) = asyncio.run(worker.run_episodes([EpisodeRequest(0, 0, "id")], SamplingConfig())).episodes
    (env,) = made
    assert len(episode.turns) == len(policy.requests) == 4
    for t, (turn, request) in enumerate(zip(episode.turns, policy.requests, strict=True)):
        (sent,) = request.images
        assert np.array_equal(_decoded(sent), env.shown[t]) and (_decoded(sent) == t).all()
        assert turn.image is env.shown[t]
    samples = grpo_samples([episode])
    assert all(s.images[0] is env.shown[t] for t, s in enumerate(samples))


def test_a_picture_is_encoded_once_while_the_env_keeps_it(monkeypatch):
    encoded = []
    monkeypatch.setattr(cluster.rollout, "encode_png_base64", lambda image: encoded.append(image) or "cG5n")

    class SteadyPictureEnv(_PictureEnv):
        steady_steps = 2

    worker = RolloutWorker(EnvConfig(task="gp-vl"), FakePolicy(), envs_per_actor=1, make_env=SteadyPictureEnv)
    (episode,) = asyncio.run(worker.run_episodes([EpisodeRequest(0, 0, "id")], SamplingConfig())).episodes
    # Pictures per turn: A, A, B, B -> two encodings, and each turn keeps the array it was shown.
    assert [int(image[0, 0, 0]) for image in encoded] == [0, 2]
    assert [int(t.image[0, 0, 0]) for t in episode.turns] == [0, 0, 2, 2]


class _SampledPolicy(FakePolicy):
    """Answers "0" or "1" at random: from the request's seed when it has one, else fresh OS noise."""

    async def reply(self, request: dict) -> dict:
        reply = await super().reply(request)
        rng = np.random.default_rng(self.requests[-1].seed)
        return {**reply, "text": str(rng.integers(2)), "logprobs": (-rng.random(2)).tolist()}


def test_seeded_requests_replay_the_same_episodes():
    requests = [EpisodeRequest(seed=s, group=s // 2, variant="id", sampling_seed=1000 + s) for s in range(8)]
    sampling = SamplingConfig(temperature=0.7)

    def play(requests):
        return asyncio.run(_worker(_SampledPolicy(), envs_per_actor=3).run_episodes(requests, sampling)).episodes

    assert play(requests) == play(requests)
    unseeded = [EpisodeRequest(r.seed, r.group, r.variant) for r in requests]
    assert play(unseeded) != play(unseeded)  # the fake really samples: without seeds, replays differ


def test_each_turn_gets_its_own_stable_seed_and_greedy_none():
    policy = FakePolicy()
    worker = RolloutWorker(EnvConfig(task="gp-l"), policy, envs_per_actor=1, make_env=_NeverRightEnv)
    request = EpisodeRequest(0, 0, "id", sampling_seed=7)
    asyncio.run(worker.run_episodes([request], SamplingConfig(temperature=0.5)))
    seeds = [r.seed for r in policy.requests]
    assert seeds == [turn_seed(7, t) for t in range(4)] and len(set(seeds)) == 4
    assert all(0 <= seed < 2**63 for seed in seeds)
    # A stable mix (SeedSequence), not Python's salted hash: these values hold in every process.
    assert (turn_seed(0, 0), turn_seed(0, 1), turn_seed(1, 0)) == (
        6569863346532939966,
        5836529245451711556,
        7434755675892716031,
    )
    policy.requests.clear()
    asyncio.run(worker.run_episodes([request], SamplingConfig(temperature=0.0)))
    assert [r.seed for r in policy.requests] == [None] * 4


def test_a_negative_sampling_seed_is_refused():
    with pytest.raises(ValueError, match="sampling_seed=-1"):
        EpisodeRequest(0, 0, "id", sampling_seed=-1)


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
    image = np.random.default_rng(0).integers(0, 255, (8, 6, 3), dtype=np.uint8)
    assert np.array_equal(_decoded(encode_png_base64(image)), image)


def test_json_safe_keeps_plain_values_only():
    info = {"a": np.int64(3), "b": [1, "x"], "c": {"k": 1.5}, "d": np.zeros(3), "e": object(), "f": None}
    assert json_safe(info) == {"a": 3, "b": [1, "x"], "c": {"k": 1.5}, "f": None}
