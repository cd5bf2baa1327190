"""GAE over turns and group normalisation (GRPO, Dr. GRPO) on hand-computed values."""

import pytest

from learner.advantages import gae_over_turns, group_normalised_advantages


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
