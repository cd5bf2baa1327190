"""Episodes -> learner `Sample`s: one sample per policy turn, with advantages (design.md, step 4).

Token in, token out: a sample's `prompt_ids`, `output_ids` and behaviour `logprobs` are the ones
the server returned for that turn, and its image is the picture that turn's request carried;
nothing is re-tokenized.

- GRPO (Shao et al., 2024, arXiv 2402.03300), per turn: each turn's own reward normalised over
  every turn of its group (the episodes played on the same seed); why per turn, and not per
  episode, is in `learner.advantages.turn_group_advantages`. Dr. GRPO (Liu et al., 2025, arXiv
  2503.20783) drops the std scaling: `scale_by_std=False`.
- PPO: the learner's value head scores every turn's prompt; GAE runs over the turns of each
  episode (`learner.advantages.gae_over_turns`), as RL4VLM treats one reply as one action.

Staleness (design.md, "Versions") = learner version minus the turn's behaviour version.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from cluster.rollout import Episode, Turn
from learner.advantages import gae_over_turns, turn_group_advantages
from learner.batch import Sample


def turn_sample(turn: Turn, *, advantage: float = 0.0) -> Sample:
    """The learner sample of one turn (its prompt is the whole conversation so far).

    It carries the turn's picture and the temperature the turn was sampled at (0 = greedy): the
    server's log-probs are under it, so the learner scores the turn at it too
    (`learner.batch.Sample.temperature`).
    """
    return Sample(
        prompt_ids=turn.prompt_ids,
        output_ids=turn.output_ids,
        logprobs=turn.logprobs,
        temperature=turn.temperature,
        advantage=advantage,
        images=[turn.image] if turn.image is not None else None,
    )


def grpo_samples(episodes: list[Episode], *, scale_by_std: bool = True) -> list[Sample]:
    """Samples whose advantage is the turn's own reward, normalised over its group's turns."""
    advantages = turn_group_advantages(
        [[t.reward for t in ep.turns] for ep in episodes], [ep.group for ep in episodes], scale_by_std=scale_by_std
    )
    return [
        turn_sample(turn, advantage=adv)
        for ep, turn_advantages in zip(episodes, advantages, strict=True)
        for turn, adv in zip(ep.turns, turn_advantages, strict=True)
    ]


def ppo_samples(
    episodes: list[Episode], values: Callable[[list[Sample]], list[float]], *, gamma: float, lam: float
) -> list[Sample]:
    """Samples with GAE advantages over turns; `values(samples)` is the learner's value head."""
    samples = [turn_sample(turn) for ep in episodes for turn in ep.turns]
    old_values = values(samples)
    if len(old_values) != len(samples):
        raise ValueError(f"values() returned {len(old_values)} values for {len(samples)} samples")
    start = 0
    for ep in episodes:
        end = start + len(ep.turns)
        ep_values = [float(v) for v in old_values[start:end]]
        gae = gae_over_turns([t.reward for t in ep.turns], ep_values, gamma=gamma, lam=lam)
        for sample, value, adv, ret in zip(samples[start:end], ep_values, gae.advantages, gae.returns, strict=True):
            sample.value = value
            sample.advantage = float(adv)
            sample.return_ = float(ret)
        start = end
    return samples


def rollout_stats(episodes: list[Episode], *, learner_version: int) -> dict[str, float]:
    """Namespaced rollout metrics for one collection (reward, success, length, staleness)."""
    if not episodes:
        return {"rollout/episodes": 0.0}
    turns = [t for ep in episodes for t in ep.turns]
    staleness = [learner_version - t.policy_version for t in turns] or [0]
    return {
        "rollout/episodes": float(len(episodes)),
        "rollout/reward_mean": float(np.mean([ep.total_reward for ep in episodes])),
        "rollout/success": float(np.mean([ep.success for ep in episodes])),
        "rollout/turns_mean": float(np.mean([len(ep.turns) for ep in episodes])),
        "rollout/tokens_generated": float(sum(len(t.output_ids) for t in turns)),
        "rollout/staleness_mean": float(np.mean(staleness)),
        "rollout/staleness_max": float(np.max(staleness)),
        "rollout/server_queue_s_mean": float(np.mean([t.queue_s for t in turns])) if turns else 0.0,
        "rollout/server_generate_s_mean": float(np.mean([t.generate_s for t in turns])) if turns else 0.0,
    }
