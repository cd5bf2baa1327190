"""Losses on hand-computed values, and split invariance (OpenRLHF's rank-split test)."""

import math

import pytest
import torch

from learner.batch import Sample, collate
from learner.config import LearnerConfig
from learner.losses import (
    GlobalCounts,
    PolicyOutputs,
    aggregate,
    kl_k1,
    kl_k3,
    ppo_surrogate,
    rl_objective,
    sft_loss,
    token_entropy,
    token_logprobs,
    truncated_importance_weights,
    value_loss,
)


def test_token_logprobs_and_entropy_of_uniform_logits():
    logits = torch.zeros(1, 2, 4)  # (B, L, V) uniform over 4 ids
    ids = torch.tensor([[0, 3]])
    assert torch.allclose(token_logprobs(logits, ids), torch.full((1, 2), -math.log(4)))
    assert torch.allclose(token_entropy(logits), torch.full((1, 2), math.log(4)))


def test_sft_loss_counts_only_masked_tokens_over_the_global_count():
    logprobs = torch.tensor([[-1.0, -2.0, -7.0]])
    mask = torch.tensor([[True, True, False]])
    assert sft_loss(logprobs, mask, GlobalCounts(2, 1)).item() == pytest.approx(1.5)
    assert sft_loss(logprobs, mask, GlobalCounts(4, 2)).item() == pytest.approx(0.75)


def test_aggregations_token_mean_grpo_and_dr_grpo():
    per_token = torch.tensor([[1.0, 2.0, 3.0], [4.0, 9.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]]).bool()
    counts = GlobalCounts(n_tokens=4, n_seqs=2)
    assert aggregate(per_token, mask, counts).item() == pytest.approx(10 / 4)
    assert aggregate(per_token, mask, counts, mode="seq_mean_token_mean").item() == pytest.approx((2 + 4) / 2)
    assert aggregate(per_token, mask, counts, mode="seq_mean_token_sum_norm", norm_tokens=5).item() == pytest.approx(
        10 / (2 * 5)
    )


@pytest.mark.parametrize(
    "ratio, advantage, expected_loss, was_clipped",
    [
        (1.5, 1.0, -1.3, 1.0),  # clipped above at 1 + clip_high
        (1.5, -1.0, 1.5, 0.0),  # pessimistic branch: unclipped
        (0.5, 1.0, -0.5, 0.0),  # pessimistic branch: unclipped
        (0.5, -1.0, 0.9, 1.0),  # clipped below at 1 - clip_low
    ],
)
def test_ppo_surrogate_with_separate_low_and_high_clip(ratio, advantage, expected_loss, was_clipped):
    terms = ppo_surrogate(
        torch.tensor([[math.log(ratio)]]), torch.zeros(1, 1), torch.tensor([advantage]), clip_low=0.1, clip_high=0.3
    )
    assert terms.loss.item() == pytest.approx(expected_loss)
    assert terms.clipped.item() == was_clipped


def test_truncated_importance_weights_cap_and_detach():
    learner = torch.tensor([[math.log(3.0), math.log(0.5)]], requires_grad=True)
    weights = truncated_importance_weights(learner, torch.zeros(1, 2), cap=2.0)
    assert weights[0].tolist() == pytest.approx([2.0, 0.5])
    assert not weights.requires_grad
    assert truncated_importance_weights(learner, torch.zeros(1, 2), cap=None).tolist() == [[1.0, 1.0]]


def test_importance_weights_scale_the_surrogate():
    terms = ppo_surrogate(
        torch.zeros(1, 1),
        torch.zeros(1, 1),
        torch.tensor([2.0]),
        clip_low=0.2,
        clip_high=0.2,
        is_weights=torch.tensor([[0.25]]),
    )
    assert terms.loss.item() == pytest.approx(-0.5)


def test_clipped_value_loss():
    values, old = torch.tensor([1.0, 0.6]), torch.tensor([0.5, 0.5])
    returns = torch.tensor([2.0, 0.6])
    # row 0: clipped value 0.7 -> 0.5 * max(1.0, 1.69); row 1: exact -> 0
    assert value_loss(values, old, returns, clip=0.2).tolist() == pytest.approx([0.845, 0.0])


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("token_mean", (0.845 + 0.5) / 4),  # 4 output tokens in the batch
        ("seq_mean_token_mean", (0.845 / 3 + 0.5 / 1) / 2),  # rows of 3 and 1 tokens
        ("seq_mean_token_sum_norm", (0.845 + 0.5) / (2 * 8)),
    ],
)
def test_value_loss_counts_like_one_token_of_its_row_in_every_aggregation(mode, expected):
    """Before issue 11 the value term was sum over rows / global rows whatever the policy's norm."""
    samples = [Sample([1], [5, 6, 7], logprobs=[0.0] * 3, return_=2.0, value=0.5), Sample([1], [5], return_=0.0)]
    batch = _batch(samples)
    zeros = torch.zeros(2, 3)
    out = PolicyOutputs(logprobs=zeros, old_logprobs=zeros, values=torch.tensor([1.0, 1.0]))
    config = LearnerConfig(algo="ppo", is_cap=None, value_clip=0.2, loss_aggregation=mode, norm_tokens=8)
    # row 0: clipped 0.7 -> 0.5 * max(1, 1.69) = 0.845; row 1: old 0 -> clipped 0.2 -> 0.5 * max(1, 0.04) = 0.5
    terms = rl_objective(out, batch, GlobalCounts(4, 2), config=config)
    assert terms.value.item() == pytest.approx(expected)


def test_kl_estimators():
    lp, ref = torch.tensor([[0.0]]), torch.tensor([[math.log(0.5)]])
    assert kl_k1(lp, ref).item() == pytest.approx(math.log(2))
    assert kl_k3(lp, ref).item() == pytest.approx(0.5 + math.log(2) - 1)


def _batch(samples, scale_counts=None, weight=1.0):
    return collate(samples, pad_id=0, pre_action_counts=scale_counts, pre_action_weight=weight)


def test_pre_action_tokens_get_half_the_gradient():
    """The paper's 0.5 on log-probs before the action key halves those tokens' gradients."""
    batch = _batch([Sample([1], [5, 6], logprobs=[0.0, 0.0], advantage=1.0)], [1], 0.5)
    logprobs = torch.zeros(1, 2, requires_grad=True)
    config = LearnerConfig(is_cap=None, pre_action_weight=0.5)
    out = PolicyOutputs(logprobs=logprobs, old_logprobs=logprobs.detach())
    rl_objective(out, batch, GlobalCounts(2, 1), config=config).total.backward()
    assert logprobs.grad[0].tolist() == pytest.approx([-0.5 / 2, -1.0 / 2])


def test_pre_action_weight_scales_the_gradient_not_the_ratio_nor_the_importance_weight():
    """Thought token (weight 0.5) and action token at ratio 1.1, behaviour 0.8x pi_old, A = 1.

    Ratio 1.1 (not 1.1 ** 0.5) is inside the clip 1.2; the importance weight is exp(log 1.25) = 1.25
    (not 1.25 ** 0.5); each token's loss -w * 1.25 * 1.1 * A / 2 tokens, its gradient the same.
    """
    batch = _batch([Sample([1], [5, 6], logprobs=[math.log(0.8)] * 2, advantage=1.0)], [1], 0.5)
    logprobs = torch.full((1, 2), math.log(1.1), requires_grad=True)
    config = LearnerConfig(pre_action_weight=0.5, is_cap=2.0, clip_low=0.2, clip_high=0.2)
    out = PolicyOutputs(logprobs=logprobs, old_logprobs=torch.zeros(1, 2))
    terms = rl_objective(out, batch, GlobalCounts(2, 1), config=config)
    terms.total.backward()
    assert terms.policy.item() == pytest.approx(-(0.5 + 1.0) * 1.25 * 1.1 / 2)
    assert logprobs.grad[0].tolist() == pytest.approx([-0.5 * 1.25 * 1.1 / 2, -1.0 * 1.25 * 1.1 / 2])
    assert terms.is_weight.item() == pytest.approx(1.25) and terms.clip_fraction.item() == 0.0
    assert terms.approx_kl.item() == pytest.approx(0.1 - math.log(1.1), rel=1e-5)  # k3: (r - 1) - log r per token


def test_flipped_advantage_flips_the_gradient():
    batch = _batch([Sample([1], [5], logprobs=[0.0], advantage=-1.0)])
    logprobs = torch.zeros(1, 1, requires_grad=True)
    out = PolicyOutputs(logprobs=logprobs, old_logprobs=logprobs.detach())
    rl_objective(out, batch, GlobalCounts(1, 1), config=LearnerConfig()).total.backward()
    assert logprobs.grad.item() == pytest.approx(1.0)  # descent lowers a bad token's log-prob


def test_k1_penalty_lowers_the_advantage_and_k3_adds_a_loss():
    batch = _batch([Sample([1], [5], logprobs=[0.0], advantage=1.0)])
    logprobs = torch.zeros(1, 1, requires_grad=True)
    ref = torch.tensor([[math.log(0.5)]])
    out = PolicyOutputs(logprobs=logprobs, old_logprobs=logprobs.detach(), ref_logprobs=ref)
    k1 = rl_objective(out, batch, GlobalCounts(1, 1), config=LearnerConfig(kl_mode="k1_reward", kl_coef=0.5))
    assert k1.policy.item() == pytest.approx(-(1.0 - 0.5 * math.log(2)))
    k3 = rl_objective(out, batch, GlobalCounts(1, 1), config=LearnerConfig(kl_mode="k3_loss", kl_coef=0.5))
    assert k3.total.item() == pytest.approx(-1.0 + 0.5 * (0.5 + math.log(2) - 1))


def _random_samples(n, generator):
    samples = []
    for _ in range(n):
        n_prompt, n_out = torch.randint(1, 5, (2,), generator=generator).tolist()
        samples.append(
            Sample(
                list(range(1, n_prompt + 1)),
                list(range(3, 3 + n_out)),
                logprobs=(-torch.rand(n_out, generator=generator)).tolist(),
                advantage=torch.randn(1, generator=generator).item(),
                return_=1.0,
                value=0.3,
            )
        )
    return samples


@pytest.mark.parametrize("mode", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_loss_is_the_same_whether_the_batch_is_split_or_not(mode):
    generator = torch.Generator().manual_seed(0)
    samples = _random_samples(6, generator)
    learner_lp = {id(s): -torch.rand(len(s.output_ids), generator=generator) for s in samples}
    values = {id(s): torch.rand((), generator=generator) for s in samples}
    config = LearnerConfig(
        algo="ppo", loss_aggregation=mode, norm_tokens=7, entropy_coef=0.1, clip_low=0.1, clip_high=0.3
    )
    counts = GlobalCounts(sum(len(s.output_ids) for s in samples), len(samples))

    def loss_of(part):
        batch = _batch(part)
        width = batch.action_ids.shape[1]
        lp = torch.zeros(len(part), width)
        for row, s in enumerate(part):
            lp[row, width - len(s.output_ids) :] = learner_lp[id(s)]
        out = PolicyOutputs(
            logprobs=lp, old_logprobs=lp - 0.1, entropy=-lp, values=torch.stack([values[id(s)] for s in part])
        )
        return rl_objective(out, batch, counts, config=config).total

    whole = loss_of(samples)
    split = loss_of(samples[:2]) + loss_of(samples[2:5]) + loss_of(samples[5:])
    assert split.item() == pytest.approx(whole.item(), rel=1e-6)
    assert whole.item() != pytest.approx(loss_of(samples[:2]).item())  # the test can fail
