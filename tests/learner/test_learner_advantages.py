"""GAE over turns, group normalisation (GRPO, Dr. GRPO) and whitening on hand-computed values."""

import math

import numpy as np
import pytest

from learner.advantages import Moments, gae_over_turns, group_normalised_advantages, turn_group_advantages, whitened
from learner.rl_stats import explained_variance


def test_gae_over_two_turns_with_paper_gamma_and_lambda():
    result = gae_over_turns([0.0, 1.0], [0.5, 0.2])
    # t=1: delta = 1 - 0.2 = 0.8; t=0: delta = 0.9 * 0.2 - 0.5 = -0.32, A = -0.32 + 0.855 * 0.8
    assert result.advantages == pytest.approx([0.364, 0.8])
    assert result.returns == pytest.approx([0.864, 1.0])


def test_gae_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="one value per reward"):
        gae_over_turns([1.0], [0.1, 0.2])


def test_group_normalised_advantages_grpo_and_dr_grpo():
    rewards, groups = [1.0, 0.0, 1.0, 1.0, 5.0], [0, 0, 1, 1, 2]
    assert group_normalised_advantages(rewards, groups) == pytest.approx([1.0, -1.0, 0.0, 0.0, 0.0], abs=1e-5)
    assert group_normalised_advantages(rewards, groups, scale_by_std=False) == pytest.approx([0.5, -0.5, 0.0, 0.0, 0.0])


def test_turn_group_advantages_credit_each_turn_with_its_own_reward():
    # One GP group (rewards +5 right, -1 wrong value, -3 illegal): right at once; wrong then right;
    # wrong twice (truncated). Episode totals (5, 4, -2) would credit the wrong first attempt of
    # the second episode with its later success; per-turn credit does not.
    turn_rewards, groups = [[5.0], [-1.0, 5.0], [-1.0, -3.0]], [0, 0, 0]
    advantages = turn_group_advantages(turn_rewards, groups)
    flat_rewards, flat_advantages = sum(turn_rewards, []), sum(advantages, [])
    assert [len(a) for a in advantages] == [1, 2, 2]
    assert all((adv > 0) == (reward > 0) for reward, adv in zip(flat_rewards, flat_advantages, strict=True))
    expected = (np.asarray(flat_rewards) - np.mean(flat_rewards)) / (np.std(flat_rewards) + 1e-6)
    assert flat_advantages == pytest.approx(expected.tolist())
    centred = turn_group_advantages(turn_rewards, groups, scale_by_std=False)
    assert sum(centred, []) == pytest.approx((np.asarray(flat_rewards) - np.mean(flat_rewards)).tolist())


def test_turn_group_advantages_normalise_within_each_group_only():
    # Group 1's turns all scored alike: nothing to prefer, 0. The graded-rewards caveat: in an
    # all-wrong group the less-wrong answer (-1) still gets a positive advantage.
    advantages = turn_group_advantages([[-1.0], [-3.0], [5.0, 5.0]], [0, 0, 1])
    assert advantages[0][0] > 0 > advantages[1][0] and advantages[2] == [0.0, 0.0]
    with pytest.raises(ValueError, match="one group id per episode"):
        turn_group_advantages([[1.0]], [0, 1])


def test_whitening_uses_the_moments_given_so_shards_share_the_batch_statistics():
    values = [1.0, 2.0, 3.0, 6.0]
    whole = Moments.of(values)
    assert (whole.mean, whole.variance) == pytest.approx((3.0, np.var(values, ddof=1)))
    expected = (np.asarray(values) - 3.0) / (np.std(values, ddof=1) + 1e-5)
    assert whitened(values, whole) == pytest.approx(expected.tolist())
    shards = [values[:1], values[1:]]
    summed = Moments(*np.sum([Moments.of(shard) for shard in shards], axis=0))  # what the all-reduce gives
    assert [v for shard in shards for v in whitened(shard, summed)] == pytest.approx(expected.tolist())
    assert whitened(shards[1], Moments.of(shards[1])) != pytest.approx(expected[1:].tolist())  # per shard differs


def test_explained_variance():
    returns = [1.0, 2.0, 3.0, 4.0]
    assert explained_variance(Moments.of(returns), Moments.of([0.0] * 4)) == 1.0
    assert explained_variance(Moments.of(returns), Moments.of([r - 2.5 for r in returns])) == pytest.approx(0.0)
    assert math.isnan(explained_variance(Moments.of([1.0, 1.0]), Moments.of([0.0, 0.0])))
