"""Losses of the learner as pure functions of tensors: SFT, PPO / GRPO, value, entropy, KL.

Every loss is a SUM over this rank's tokens (or sequences) divided by a GLOBAL count
(`GlobalCounts`, summed over all ranks and micro-batches before the step). Summing the losses of
all micro-batches on all ranks therefore gives exactly the loss of the whole batch, so results do
not depend on how a batch is split (OpenRLHF's test; `tests/learner/test_learner_losses.py`).
DeepSpeed averages gradients over ranks, so the engine multiplies by the world size before
`backward`; these functions know nothing of ranks.

Shapes: B rows, L output positions (right-aligned, `mask` True on output tokens).

- SFT: token cross-entropy on assistant (output) tokens only.
- PPO clipped surrogate (Schulman et al., 2017) with separate low/high clips (DAPO's clip-higher,
  Yu et al., 2025), times truncated importance weights between the learner's and the behaviour
  policy's log-probs (TIS, Yao et al., 2025: the server's sampler differs from the learner).
- Pre-action weighting (the paper's thought_prob_coef 0.5, after RL4VLM, Zhai et al., 2024): the
  per-token surrogate terms of the reply's tokens before the last action key are multiplied by
  `Batch.token_weights`, so their gradient is weighted; ratios, importance weights, the KL and
  entropy terms and the metrics use the unweighted log-probs.
- Value loss normalisation: a row's value loss counts like ONE output token's term of that row,
  and is aggregated with the policy loss's `aggregation`: token_mean -> sum over rows / global
  tokens, seq_mean_token_mean -> sum over rows of (value loss / the row's tokens) / global rows,
  seq_mean_token_sum_norm -> sum over rows / (global rows * norm_tokens). The paper sums a reply's
  token log-probs into one action log-prob, so there one token's policy term and the reply's value
  term weigh the same; this rule keeps that balance whatever the aggregation (before it, the value
  term was a mean over rows against a mean over tokens, ~tokens-per-reply times heavier).
- GRPO / Dr. GRPO share the surrogate; they differ in advantages (`learner.advantages`) and in
  `aggregation` (Dr. GRPO: `seq_mean_token_sum_norm`, a constant length normaliser).
- KL to the frozen reference: k1 folded into the per-token advantage, or k3 as a loss term.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F

from learner.batch import Batch
from learner.config import LearnerConfig

Aggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"]


class GlobalCounts(NamedTuple):
    """Counts over the whole batch on all ranks (the denominators of every loss)."""

    n_tokens: int  # output tokens
    n_seqs: int  # samples


def token_logprobs(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """(B, L) log-probability of `ids` (B, L) under `logits` (B, L, V), computed in float32."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, L, V)
    return logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # (B, L)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(B, L) entropy of the next-token distribution at each position."""
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, L, V)
    return -(logp.exp() * logp).sum(-1)  # (B, L)


def aggregate(
    per_token: torch.Tensor,
    mask: torch.Tensor,
    counts: GlobalCounts,
    *,
    mode: Aggregation = "token_mean",
    norm_tokens: int = 1,
) -> torch.Tensor:
    """This rank's share of the batch mean of `per_token` (B, L) over the `mask`ed tokens.

    token_mean: sum / global tokens. seq_mean_token_mean (GRPO): each row's token mean, summed,
    / global rows. seq_mean_token_sum_norm (Dr. GRPO): sum / (global rows * norm_tokens).
    """
    masked = per_token * mask  # (B, L)
    if mode == "token_mean":
        return masked.sum() / counts.n_tokens
    if mode == "seq_mean_token_mean":
        return (masked.sum(1) / mask.sum(1).clamp(min=1)).sum() / counts.n_seqs
    if mode == "seq_mean_token_sum_norm":
        return masked.sum() / (counts.n_seqs * norm_tokens)
    raise ValueError(f"unknown aggregation {mode!r}: use token_mean, seq_mean_token_mean or seq_mean_token_sum_norm")


def sft_loss(logprobs: torch.Tensor, mask: torch.Tensor, counts: GlobalCounts) -> torch.Tensor:
    """Cross-entropy of the output tokens: -sum(log p) / global output tokens."""
    return aggregate(-logprobs, mask, counts)


def truncated_importance_weights(
    learner_logprobs: torch.Tensor, behaviour_logprobs: torch.Tensor, cap: float | None
) -> torch.Tensor:
    """(B, L) min(pi_learner / pi_behaviour, cap), detached; all ones when `cap` is None."""
    if cap is None:
        return torch.ones_like(learner_logprobs)
    ratio = torch.exp(learner_logprobs.detach() - behaviour_logprobs)  # (B, L)
    return ratio.clamp(max=cap)


class SurrogateTerms(NamedTuple):
    """Per-token PPO terms: the loss to aggregate and whether the ratio was clipped."""

    loss: torch.Tensor  # (B, L)
    clipped: torch.Tensor  # (B, L) float, 1 where the clipped branch was taken


def ppo_surrogate(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    *,
    clip_low: float,
    clip_high: float,
    is_weights: torch.Tensor | None = None,
) -> SurrogateTerms:
    """-min(r A, clip(r, 1 - clip_low, 1 + clip_high) A) per token, r = pi / pi_old.

    `advantages` is (B, L) or (B,) (broadcast over tokens); `is_weights` (B, L) multiplies the
    result (truncated importance sampling).
    """
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)  # (B, 1)
    ratio = torch.exp(logprobs - old_logprobs)  # (B, L)
    unclipped = ratio * advantages  # (B, L)
    clipped = ratio.clamp(1 - clip_low, 1 + clip_high) * advantages  # (B, L)
    loss = -torch.minimum(unclipped, clipped)  # (B, L)
    if is_weights is not None:
        loss = loss * is_weights
    return SurrogateTerms(loss, (clipped < unclipped).float())


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, *, clip: float) -> torch.Tensor:
    """(B,) clipped value loss 0.5 * max((v - R)^2, (v_clip - R)^2) per row; (B,) in."""
    clipped = old_values + (values - old_values).clamp(-clip, clip)  # (B,)
    return 0.5 * torch.maximum((values - returns) ** 2, (clipped - returns) ** 2)  # (B,)


def as_one_token(per_row: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B, L) with each row's value on its last output position (outputs are right-aligned), 0 elsewhere."""
    per_token = torch.zeros(mask.shape, dtype=per_row.dtype, device=per_row.device)  # (B, L)
    per_token[:, -1] = per_row
    return per_token


def kl_k1(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """(B, L) k1 estimator log pi - log pi_ref (unbiased; used as a reward penalty)."""
    return logprobs - ref_logprobs


def kl_k3(logprobs: torch.Tensor, ref_logprobs: torch.Tensor) -> torch.Tensor:
    """(B, L) k3 estimator exp(ref - lp) - (ref - lp) - 1 (non-negative; used as a loss)."""
    log_ratio = ref_logprobs - logprobs  # (B, L)
    return torch.exp(log_ratio) - log_ratio - 1


@dataclass
class PolicyOutputs:
    """What the learner computed on one micro-batch, for `rl_objective`."""

    logprobs: torch.Tensor  # (B, L) with grad
    old_logprobs: torch.Tensor  # (B, L) pi_old, detached (= logprobs.detach() on a first pass)
    entropy: torch.Tensor | None = None  # (B, L) when the entropy bonus is on
    values: torch.Tensor | None = None  # (B,) value head, PPO
    ref_logprobs: torch.Tensor | None = None  # (B, L) frozen reference, when KL is on


class RLTerms(NamedTuple):
    """This rank's share of each term (summing over ranks and micro-batches gives the batch's)."""

    total: torch.Tensor
    policy: torch.Tensor
    value: torch.Tensor  # unweighted (total adds value_coef * value)
    entropy: torch.Tensor
    kl: torch.Tensor
    clip_fraction: torch.Tensor
    is_weight: torch.Tensor
    approx_kl: torch.Tensor  # k3 of KL(pi_old || pi), token mean


def rl_objective(out: PolicyOutputs, batch: Batch, counts: GlobalCounts, *, config: LearnerConfig) -> RLTerms:
    """PPO / GRPO loss of one micro-batch, read top to bottom like the algorithm.

    1. truncated importance weights of the learner's pi_old against the behaviour log-probs;
    2. per-token advantages, minus the k1 KL penalty when on; 3. clipped surrogate, its per-token
    terms weighted by `batch.token_weights` (paper's 0.5 before the action key); 4. value (counted
    as one token per row, see the module docstring), entropy and k3 KL terms.
    """
    mask = batch.action_mask
    logprobs, old_logprobs = out.logprobs, out.old_logprobs  # (B, L)
    is_weights = truncated_importance_weights(old_logprobs, batch.behaviour_logprobs, config.is_cap)  # (B, L)
    advantages = batch.advantages.unsqueeze(1).expand_as(logprobs)  # (B, L)
    zero = logprobs.new_zeros(())
    kl = zero
    if config.kl_mode != "none":
        assert out.ref_logprobs is not None, "kl_mode needs ref_logprobs"
        if config.kl_mode == "k1_reward":
            penalty = kl_k1(old_logprobs, out.ref_logprobs)  # (B, L), detached
            advantages = advantages - config.kl_coef * penalty
            kl = aggregate(penalty, mask, counts)
        else:
            kl = aggregate(kl_k3(logprobs, out.ref_logprobs), mask, counts)
    surrogate = ppo_surrogate(
        logprobs, old_logprobs, advantages, clip_low=config.clip_low, clip_high=config.clip_high, is_weights=is_weights
    )
    agg = dict(mode=config.loss_aggregation, norm_tokens=config.norm_tokens)
    policy = aggregate(surrogate.loss * batch.token_weights, mask, counts, **agg)
    value = zero
    if out.values is not None:
        per_row = value_loss(out.values, batch.old_values, batch.returns, clip=config.value_clip)  # (B,)
        value = aggregate(as_one_token(per_row, mask), mask, counts, **agg)
    entropy = aggregate(out.entropy, mask, counts) if out.entropy is not None else zero
    total = policy + config.value_coef * value - config.entropy_coef * entropy
    if config.kl_mode == "k3_loss":
        total = total + config.kl_coef * kl
    return RLTerms(
        total=total,
        policy=policy,
        value=value,
        entropy=entropy,
        kl=kl,
        clip_fraction=aggregate(surrogate.clipped, mask, counts),
        is_weight=aggregate(is_weights, mask, counts),
        approx_kl=aggregate(kl_k3(old_logprobs, logprobs.detach()), mask, counts),  # (r - 1) - log r
    )
