"""Training compute on the paper's axis (Chu et al. 2025, App. C.3): tokens and GFLOPs of a run.

    X_SFT = 6 N (D_init + D_SFT)        X_RL = 6 N (D_init + D_RL) + 2 N D_buffer

N is the policy's parameter count (the value head excluded), D the tokens the learner trained on
(prompt + output of every sample, once per PPO epoch), D_buffer the tokens the policy read and wrote
while generating training rollouts (prompt + output of every turn; evaluation is not counted), and
D_init the tokens trained before the run's starting weights (`run.prior_train_tokens`: a study's
SFT init). Every metrics row of a run carries these as `compute/*` (trainer.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cluster.rollout import Episode
    from learner.batch import Sample


def sample_tokens(samples: Iterable[Sample]) -> int:
    """Prompt + output tokens of learner samples (what one pass of the learner trains on)."""
    return sum(len(s.prompt_ids) + len(s.output_ids) for s in samples)


def rollout_tokens(episodes: Iterable[Episode]) -> tuple[int, int]:
    """(buffer tokens, generated tokens) of episodes: prompt + output, and output only, of every turn."""
    buffer = generated = 0
    for episode in episodes:
        for turn in episode.turns:
            buffer += len(turn.prompt_ids) + len(turn.output_ids)
            generated += len(turn.output_ids)
    return buffer, generated


def compute_metrics(*, n_parameters: int, train_tokens: int, buffer_tokens: int, generated_tokens: int) -> dict:
    """The `compute/*` columns: cumulative tokens (`train_tokens` includes the prior ones) and GFLOPs."""
    flops = 6 * n_parameters * train_tokens + 2 * n_parameters * buffer_tokens
    return {
        "compute/parameters": float(n_parameters),
        "compute/train_tokens": float(train_tokens),
        "compute/buffer_tokens": float(buffer_tokens),
        "compute/generated_tokens": float(generated_tokens),
        "compute/gflops": flops / 1e9,
    }
