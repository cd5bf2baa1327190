"""Episodes -> learner samples: GRPO groups, PPO GAE over turns, staleness; token ids untouched."""

import numpy as np
import pytest

from cluster.batch_builder import grpo_samples, ppo_samples, rollout_stats, turn_sample
from cluster.rollout import Episode, Turn
from learner.advantages import gae_over_turns


def _turn(reward, version=0, out=(5, 6), *, temperature=1.0, image=None):
    return Turn(
        prompt_ids=[1, 2, 3],
        output_ids=list(out),
        logprobs=[-0.1] * len(out),
        reward=reward,
        policy_version=version,
        text="x",
        finish_reason="stop",
        temperature=temperature,
        image=image,
    )


def _episode(seed, group, rewards, *, version=0, temperature=1.0, images=None):
    images = images or [None] * len(rewards)
    return Episode(
        seed=seed,
        group=group,
        variant="id",
        success=rewards[-1] > 0,
        turns=[_turn(r, version, temperature=temperature, image=i) for r, i in zip(rewards, images, strict=True)],
    )


def test_grpo_credits_each_turn_with_its_own_reward_within_the_group():
    # Group 0 (GP rewards: +5 right, -1 wrong): right at once; wrong then right; wrong twice.
    # Crediting the episode total (5, 4, -2) gave the second episode's wrong first attempt a
    # positive advantage; per-turn credit makes every wrong attempt negative, every right one positive.
    episodes = [_episode(0, 0, [5.0]), _episode(0, 0, [-1.0, 5.0]), _episode(0, 0, [-1.0, -1.0])]
    episodes += [_episode(1, 1, [-3.0]), _episode(1, 1, [-3.0])]
    samples = grpo_samples(episodes)
    assert len(samples) == 7
    rewards = [t.reward for ep in episodes for t in ep.turns]
    assert all((s.advantage > 0) == (r > 0) for s, r in zip(samples[:5], rewards[:5], strict=True))
    group = np.asarray(rewards[:5])
    expected = (group - group.mean()) / (group.std() + 1e-6)
    assert [s.advantage for s in samples[:5]] == pytest.approx(expected.tolist())
    assert samples[5].advantage == samples[6].advantage == 0.0  # group 1: equal rewards
    assert samples[0].prompt_ids == [1, 2, 3] and samples[0].output_ids == [5, 6]
    assert samples[0].logprobs == [-0.1, -0.1] and samples[0].images is None


def test_turn_sample_carries_the_sampling_temperature_the_learner_scores_at():
    assert turn_sample(_episode(0, 0, [1.0], temperature=0.2).turns[0]).temperature == 0.2
    assert turn_sample(_episode(0, 0, [1.0], temperature=0.0).turns[0]).temperature == 0.0


def test_dr_grpo_does_not_scale_by_std():
    episodes = [_episode(0, 0, [4.0]), _episode(0, 0, [0.0])]
    assert [s.advantage for s in grpo_samples(episodes, scale_by_std=False)] == [2.0, -2.0]
    # Per turn: the mean is over the group's three turns (4, -1, 0 -> 1).
    episodes = [_episode(0, 0, [4.0]), _episode(0, 0, [-1.0, 0.0])]
    assert [s.advantage for s in grpo_samples(episodes, scale_by_std=False)] == [3.0, -2.0, -1.0]


def test_samples_are_scored_at_their_turns_sampling_temperature():
    episodes = [_episode(0, 0, [1.0, 2.0], temperature=0.2), _episode(0, 0, [0.0], temperature=0.0)]
    assert [s.temperature for s in grpo_samples(episodes)] == [0.2, 0.2, 0.0]
    ppo = ppo_samples(episodes, lambda samples: [0.0] * len(samples), gamma=0.9, lam=0.95)
    assert [s.temperature for s in ppo] == [0.2, 0.2, 0.0]


def test_ppo_runs_gae_over_each_episodes_turns_with_learner_values():
    episodes = [_episode(0, 0, [-1.0, -1.0, 5.0]), _episode(1, 1, [5.0])]
    seen = []

    def values(samples):
        seen.append(len(samples))
        return [0.1 * i for i in range(len(samples))]

    samples = ppo_samples(episodes, values, gamma=0.9, lam=0.95)
    assert seen == [4]
    expected = gae_over_turns([-1.0, -1.0, 5.0], [0.0, 0.1, 0.2], gamma=0.9, lam=0.95)
    assert [s.advantage for s in samples[:3]] == pytest.approx(expected.advantages)
    assert [s.return_ for s in samples[:3]] == pytest.approx(expected.returns)
    assert [s.value for s in samples] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    # The second episode starts its own GAE: one turn, bootstrap 0.
    assert samples[3].advantage == pytest.approx(5.0 - 0.3)


def test_ppo_rejects_a_value_count_mismatch():
    with pytest.raises(ValueError, match="returned 1 values for 2 samples"):
        ppo_samples([_episode(0, 0, [1.0, 1.0])], lambda s: [0.0], gamma=0.9, lam=0.95)


def test_vl_samples_carry_their_own_turns_picture():
    first, second, third = (np.full((4, 4, 3), value, np.uint8) for value in (0, 1, 2))
    episodes = [_episode(0, 0, [-1.0, 1.0], images=[first, second]), _episode(0, 0, [1.0], images=[third])]
    for samples in (grpo_samples(episodes), ppo_samples(episodes, lambda s: [0.0] * len(s), gamma=0.9, lam=0.95)):
        assert [len(sample.images) for sample in samples] == [1, 1, 1]
        assert all(sample.images[0] is image for sample, image in zip(samples, (first, second, third), strict=True))


def test_rollout_stats_report_staleness_and_success():
    episodes = [_episode(0, 0, [5.0], version=2), _episode(1, 1, [-1.0, -1.0], version=1)]
    stats = rollout_stats(episodes, learner_version=2)
    assert stats["rollout/success"] == 0.5
    assert stats["rollout/reward_mean"] == 1.5
    assert stats["rollout/turns_mean"] == 1.5
    assert stats["rollout/tokens_generated"] == 6
    assert stats["rollout/staleness_mean"] == pytest.approx(2 / 3)
    assert stats["rollout/staleness_max"] == 1
    assert stats["rollout/server_generate_s_mean"] == 0.0
    assert rollout_stats([], learner_version=0) == {"rollout/episodes": 0.0}
