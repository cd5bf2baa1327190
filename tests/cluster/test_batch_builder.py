"""Episodes -> learner samples: GRPO groups, PPO GAE over turns, staleness; token ids untouched."""

import numpy as np
import pytest

from cluster.batch_builder import grpo_samples, ppo_samples, rollout_stats
from cluster.rollout import Episode, Turn
from learner.advantages import gae_over_turns


def _turn(reward, version=0, out=(5, 6)):
    return Turn(
        prompt_ids=[1, 2, 3],
        output_ids=list(out),
        logprobs=[-0.1] * len(out),
        reward=reward,
        policy_version=version,
        text="x",
        finish_reason="stop",
    )


def _episode(seed, group, rewards, *, version=0, image=None):
    return Episode(
        seed=seed,
        group=group,
        variant="id",
        success=rewards[-1] > 0,
        turns=[_turn(r, version) for r in rewards],
        image=image,
    )


def test_grpo_gives_every_turn_its_episodes_group_advantage():
    episodes = [_episode(0, 0, [5.0]), _episode(0, 0, [-1.0, 5.0]), _episode(1, 1, [-3.0]), _episode(1, 1, [-3.0])]
    samples = grpo_samples(episodes)
    assert len(samples) == 5
    # group 0: totals 5 and 4 -> +1, -1 after std scaling; group 1: equal totals -> 0.
    assert samples[0].advantage == pytest.approx(1.0, abs=1e-3)
    assert samples[1].advantage == samples[2].advantage == pytest.approx(-1.0, abs=1e-3)
    assert samples[3].advantage == samples[4].advantage == 0.0
    assert [s.group for s in samples] == [0, 0, 0, 1, 1]
    assert samples[0].prompt_ids == [1, 2, 3] and samples[0].output_ids == [5, 6]
    assert samples[0].logprobs == [-0.1, -0.1] and samples[0].images is None


def test_dr_grpo_does_not_scale_by_std():
    episodes = [_episode(0, 0, [4.0]), _episode(0, 0, [0.0])]
    assert [s.advantage for s in grpo_samples(episodes, scale_by_std=False)] == [2.0, -2.0]


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


def test_vl_samples_carry_the_episode_image():
    image = np.zeros((4, 4, 3), np.uint8)
    samples = grpo_samples([_episode(0, 0, [1.0], image=image), _episode(0, 0, [0.0], image=image)])
    assert samples[0].images[0] is image


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
