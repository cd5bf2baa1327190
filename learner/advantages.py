"""Advantage estimators: GAE over the turns of an episode (PPO), group normalisation (GRPO).

- `gae_over_turns`: one reply is one action (RL4VLM, as in the paper), so GAE (Schulman et al.,
  2016) runs over turns with the paper's gamma = 0.9, lambda = 0.95; the episode ends after its
  last turn (bootstrap value 0).
- `group_normalised_advantages`: GRPO (Shao et al., 2024) subtracts the mean reward of the group
  (episodes on the same seed) and divides by its std; Dr. GRPO (Liu et al., 2025) does not divide.
- `turn_group_advantages`: GRPO on multi-turn episodes (sequential revision): each turn is
  credited with its OWN reward, normalised over every turn of its group's episodes. Not the
  episode's total reward (a wrong first attempt in an episode that later succeeds would get a
  positive advantage, and longer episodes would weigh more), nor returns-to-go (the wrong attempt
  before a success would still be credited with the success). The caveat: the baseline is the
  group's, so under graded rewards a less-wrong answer (GP: -1, a legal formula of the wrong
  value) scores above a group of worse ones (-3, illegal formulas) - which is what the paper's
  graded rewards intend.
- `whitened`: the paper's PPO whitens advantages over the whole rollout before its epochs; the
  statistics come as `Moments`, which ranks all-reduce (`learner.rl_stats`) so the whole batch's
  mean and std are used on every rank.

Pure Python + numpy; no torch.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

STD_EPS = 1e-6
WHITEN_EPS = 1e-5  # pytorch-a2c-ppo-acktr's, which the paper's PPO (via RL4VLM) builds on


class GaeResult(NamedTuple):
    """Per-turn advantages and value targets (returns = advantages + values)."""

    advantages: list[float]
    returns: list[float]


def gae_over_turns(rewards: list[float], values: list[float], *, gamma: float = 0.9, lam: float = 0.95) -> GaeResult:
    """GAE of one episode: A_t = delta_t + gamma lam A_{t+1}, delta_t = r_t + gamma V_{t+1} - V_t.

    `values[t]` is the critic's value of turn t's prompt; the value after the last turn is 0
    (the episode terminated or was truncated at its turn limit).
    """
    if len(rewards) != len(values):
        raise ValueError(
            f"gae_over_turns needs one value per reward, got {len(values)} values for {len(rewards)} rewards"
        )
    advantages = [0.0] * len(rewards)
    running = 0.0
    for t in reversed(range(len(rewards))):
        next_value = values[t + 1] if t + 1 < len(values) else 0.0
        delta = rewards[t] + gamma * next_value - values[t]
        running = delta + gamma * lam * running
        advantages[t] = running
    return GaeResult(advantages, [a + v for a, v in zip(advantages, values, strict=True)])


def group_normalised_advantages(rewards: list[float], groups: list[int], *, scale_by_std: bool = True) -> list[float]:
    """(r - mean of its group) / (population std of the group + 1e-6); no division for Dr. GRPO.

    A group of one episode gets advantage 0 (nothing to compare it with).
    """
    if len(rewards) != len(groups):
        raise ValueError(f"one group id per reward needed, got {len(groups)} for {len(rewards)}")
    members: dict[int, list[int]] = defaultdict(list)
    for index, group in enumerate(groups):
        members[group].append(index)
    advantages = [0.0] * len(rewards)
    for indices in members.values():
        group_rewards = np.asarray([rewards[i] for i in indices], dtype=np.float64)
        centred = group_rewards - group_rewards.mean()
        if scale_by_std:
            centred = centred / (group_rewards.std() + STD_EPS)
        for i, value in zip(indices, centred, strict=True):
            advantages[i] = float(value)
    return advantages


def turn_group_advantages(
    turn_rewards: Sequence[Sequence[float]], groups: Sequence[int], *, scale_by_std: bool = True
) -> list[list[float]]:
    """Per-turn GRPO advantages: (r_t - mean) / (std + 1e-6) over all turns of the group's episodes.

    `turn_rewards[e]` are episode e's per-turn rewards, `groups[e]` its group; returns one
    advantage per turn, shaped like `turn_rewards`. Dr. GRPO (`scale_by_std=False`) only centres.
    A turn credits its own reward, not the episode's (see the module docstring for why); a group
    whose turns all scored alike (or that holds one turn) gets 0.
    """
    if len(turn_rewards) != len(groups):
        raise ValueError(f"one group id per episode needed, got {len(groups)} for {len(turn_rewards)} episodes")
    flat_rewards = [float(r) for rewards in turn_rewards for r in rewards]
    flat_groups = [group for rewards, group in zip(turn_rewards, groups, strict=True) for _ in rewards]
    flat = iter(group_normalised_advantages(flat_rewards, flat_groups, scale_by_std=scale_by_std))
    return [[next(flat) for _ in rewards] for rewards in turn_rewards]


class Moments(NamedTuple):
    """Count, sum and sum of squares of some values; summing them over ranks gives the whole batch's."""

    count: float
    total: float
    total_sq: float

    @classmethod
    def of(cls, values: list[float]) -> Moments:
        """The moments of `values`."""
        array = np.asarray(values, dtype=np.float64)
        return cls(float(array.size), float(array.sum()), float((array**2).sum()))

    @property
    def mean(self) -> float:
        """The mean (0 for no values)."""
        return self.total / self.count if self.count else 0.0

    @property
    def variance(self) -> float:
        """The unbiased (n - 1) variance (0 for fewer than two values)."""
        if self.count < 2:
            return 0.0
        return max(0.0, (self.total_sq - self.total**2 / self.count) / (self.count - 1))


def whitened(values: list[float], moments: Moments) -> list[float]:
    """(v - mean) / (std + 1e-5), with the mean and unbiased std of `moments` (the whole batch's)."""
    std = float(np.sqrt(moments.variance))
    return [(v - moments.mean) / (std + WHITEN_EPS) for v in values]
