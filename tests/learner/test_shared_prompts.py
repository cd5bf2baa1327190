"""Shared prompts (learner/shared_prompts.py): the layout by hand, then on the `tiny` model.

The same logits, values, gradients and optimizer steps as the plain layout.
"""

import pytest
import torch

from learner.batch import Sample, collate, micro_batches, padded_tokens
from learner.config import LearnerConfig
from learner.distributed import free_port, init_distributed
from learner.engine import LearnerEngine
from learner.export import gather_policy_state_dict
from learner.models import load_policy
from learner.shared_prompts import PrefixGroup, prefix_groups, share_prompts
from learner.value_head import PolicyWithValue, ValueHead

PAD = 0


def test_the_layout_runs_each_prompt_once_and_right_aligns_the_suffixes():
    samples = [Sample([5, 6, 7], [8, 9]), Sample([5, 6, 7], [10]), Sample([3, 4], [11, 12, 13])]
    shared = share_prompts(samples, pad_id=PAD)  # 2 x 2 + 3 x 3 = 13 tokens, against 3 x 5 = 15
    assert shared.prefix_ids.tolist() == [[5, 6], [PAD, 3]]
    assert shared.prefix_mask.tolist() == [[1, 1], [0, 1]]
    assert shared.prefix_positions.tolist() == [[0, 1], [0, 0]]
    assert shared.row_prefix.tolist() == [0, 0, 1]
    assert shared.suffix_ids.tolist() == [[PAD, 7, 8], [PAD, PAD, 7], [4, 11, 12]]
    assert shared.suffix_mask.tolist() == [[0, 1, 1], [0, 0, 1], [1, 1, 1]]
    assert shared.suffix_positions.tolist() == [[0, 2, 3], [0, 0, 2], [1, 2, 3]]
    assert shared.last_prompt_index.tolist() == [1, 2, 0]
    assert shared.attention_mask.tolist() == [[1, 1, 0, 1, 1], [1, 1, 0, 0, 1], [0, 1, 1, 1, 1]]
    assert padded_tokens(samples, share=True) == 13 and padded_tokens(samples, share=False) == 15


def test_rows_whose_prompts_start_alike_share_the_common_prefix():
    first = [1, 2, 3, 4, 5, 6]
    samples = [
        Sample(first, [7, 8]),
        Sample(first + [7, 8, 9], [10]),  # a second turn: the first turn's prompt, reply and feedback
        Sample(first[:4] + [20, 21], [22]),  # shares 4 tokens: 4 > 2 rows x (5 - 4) moved, it joins
        Sample([30, 31, 32], [33]),  # shares none: a group of its own
    ]
    assert prefix_groups([s.prompt_ids for s in samples]) == [PrefixGroup(4, [0, 1, 2]), PrefixGroup(2, [3])]
    shared = share_prompts(samples, pad_id=PAD)  # 2 x 4 + 4 x 5 = 28 tokens, against 4 x 10 = 40
    assert shared.prefix_ids.tolist() == [[1, 2, 3, 4], [PAD, PAD, 30, 31]]
    assert shared.row_prefix.tolist() == [0, 0, 0, 1]
    assert shared.suffix_ids.tolist() == [
        [PAD, PAD, 5, 6, 7],
        [5, 6, 7, 8, 9],
        [PAD, PAD, PAD, 20, 21],
        [PAD] * 4 + [32],
    ]
    assert shared.suffix_positions.tolist() == [[0, 0, 4, 5, 6], [4, 5, 6, 7, 8], [0, 0, 0, 4, 5], [0, 0, 0, 0, 2]]
    assert shared.last_prompt_index.tolist() == [3, 4, 4, 4]
    assert padded_tokens(samples, share=True) == 28
    # a row sharing too little with a large group starts its own: 3 < 2 rows x (5 - 3)
    assert len(prefix_groups([first, first, first[:3] + [20, 21]])) == 2


def test_the_plain_layout_is_kept_where_sharing_does_not_pay_or_cannot_run():
    assert share_prompts([Sample([1, 2, 3], [4]), Sample([5, 2, 3], [4])], pad_id=PAD) is None  # nothing in common
    assert share_prompts([Sample([1], [4]), Sample([1], [5])], pad_id=PAD) is None  # nothing before the last token
    images = [Sample([1, 2, 3], [4], images=[torch.zeros(1).numpy()]) for _ in range(2)]
    assert collate(images, pad_id=PAD, share=True).shared is None


def test_micro_batches_keep_a_prompts_rows_together_and_count_it_once():
    group_a = [Sample([1] * 40, [2] * n) for n in (3, 9, 5, 7)]
    group_b = [Sample([3] * 41, [2] * n) for n in (4, 8, 6, 2)]
    samples = [s for pair in zip(group_a, group_b, strict=True) for s in pair]  # interleaved
    plain = micro_batches(samples, max_tokens=200, share=False)
    shared = micro_batches(samples, max_tokens=200, share=True)
    assert plain == [[0, 7, 1, 4], [5, 6, 2, 3]]  # by length: 4 x 45 and 4 x 49 tokens
    assert shared == [[0, 4, 6, 2, 7, 1, 5, 3]]  # 2 x 40 + 8 x 9 = 152 tokens: one micro-batch
    assert padded_tokens([samples[i] for i in shared[0]], share=True) == 152


@pytest.fixture(scope="module")
def tiny_module():
    policy = load_policy("tiny")
    head = ValueHead(PolicyWithValue.hidden_size(policy.model), 16, seed=0)
    return PolicyWithValue(policy.model, head).eval(), policy.pad_token_id


def _groups() -> list[Sample]:
    """Two prompts of different lengths with four outputs each, and two rows continuing the first.

    One is its second turn, the other shares only its opening tokens.
    """
    generator = torch.Generator().manual_seed(0)

    def ids(n: int) -> list[int]:
        return torch.randint(5, 200, (n,), generator=generator).tolist()

    prompts = [ids(23), ids(17)]
    samples = [Sample(prompt, ids(n)) for prompt in prompts for n in (6, 2, 9, 4)]
    second_turn = prompts[0] + samples[0].output_ids + ids(5)
    return samples + [Sample(second_turn, ids(3)), Sample(prompts[0][:20] + ids(4), ids(5))]


def _outputs(module, batch):
    """Log-probs of the actions (0 on padding) and values, differentiable."""
    out = module(batch, values=True)
    logprobs = torch.log_softmax(out.logits.float(), dim=-1).gather(-1, batch.action_ids[..., None])[..., 0]
    return logprobs * batch.action_mask, out.values


def test_shared_prompts_give_the_plain_layouts_logits_values_and_gradients(tiny_module):
    module, pad_id = tiny_module
    samples = _groups()
    plain, shared = collate(samples, pad_id=pad_id), collate(samples, pad_id=pad_id, share=True)
    assert plain.shared is None and shared.shared is not None
    assert [len(g.rows) for g in prefix_groups([s.prompt_ids for s in samples])] == [6, 4]
    results = []
    for batch in (plain, shared):
        module.zero_grad()
        logprobs, values = _outputs(module, batch)
        (logprobs.sum() + values.sum()).backward()
        grads = {name: p.grad.clone() for name, p in module.named_parameters() if p.grad is not None}
        results.append((logprobs.detach(), values.detach(), grads))
    (lp_plain, v_plain, g_plain), (lp_shared, v_shared, g_shared) = results
    torch.testing.assert_close(lp_shared, lp_plain, rtol=0, atol=1e-5)
    torch.testing.assert_close(v_shared, v_plain, rtol=0, atol=1e-5)
    assert g_shared.keys() == g_plain.keys() and len(g_plain) > 10
    for name, grad in g_plain.items():  # the prompts' share of every gradient reaches them once per row
        torch.testing.assert_close(g_shared[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_a_wrong_cache_gather_is_caught(tiny_module):
    # the parity above must fail when a row continues the other group's prompt
    module, pad_id = tiny_module
    samples = _groups()
    plain, shared = collate(samples, pad_id=pad_id), collate(samples, pad_id=pad_id, share=True)
    shared.shared.row_prefix = 1 - shared.shared.row_prefix
    with torch.no_grad():
        assert (_outputs(module, shared)[0] - _outputs(module, plain)[0]).abs().max() > 1e-2


@pytest.mark.integration
def test_an_engines_grpo_steps_are_the_same_with_and_without_sharing():
    init_distributed(0, 1, master_port=free_port())
    samples = _groups()
    for index, sample in enumerate(samples):
        sample.advantage = (-1.0) ** index * (1 + index / 8)
        sample.logprobs = [-2.0] * len(sample.output_ids)
    configs = [LearnerConfig(model="tiny", algo="grpo", lr=1e-2, share_prompts=flag) for flag in (False, True)]
    engines = [LearnerEngine(config) for config in configs]
    assert [engine.shares_prompts for engine in engines] == [False, True]
    for _ in range(2):
        plain, shared = (engine.rl_step(samples) for engine in engines)
        for name in ("loss/policy", "optim/grad_norm", "rl/logprob_diff_max"):
            assert shared[name] == pytest.approx(plain[name], rel=1e-4, abs=1e-6), name
    state = gather_policy_state_dict(engines[0].module, rank=0)
    for name, tensor in gather_policy_state_dict(engines[1].module, rank=0).items():
        torch.testing.assert_close(tensor, state[name], rtol=0, atol=1e-5, msg=name)


def test_share_prompts_and_gradient_checkpointing_are_not_both_on():
    with pytest.raises(ValueError, match="gradient_checkpointing"):
        LearnerConfig(model="tiny", share_prompts=True, gradient_checkpointing=True)
    assert not LearnerConfig(model="tiny", gradient_checkpointing=True).shares_prompts(is_vlm=False)
    assert not LearnerConfig(model="tiny").shares_prompts(is_vlm=True)
    with pytest.raises(ValueError, match="vision-language"):
        LearnerConfig(model="tiny", share_prompts=True).shares_prompts(is_vlm=True)
