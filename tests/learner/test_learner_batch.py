"""Collation from token ids, micro-batching by length, rank sharding, action-key position, temperature."""

import pytest

from learner.batch import Sample, collate, micro_batches, pre_action_token_count, shard_for_ranks


def test_collate_left_pads_and_right_aligns_outputs():
    batch = collate(
        [Sample([1, 2], [3, 4], logprobs=[-0.1, -0.2], advantage=2.0), Sample([5, 6, 7], [8])],
        pad_id=0,
        pre_action_counts=[1, 0],
        pre_action_weight=0.5,
    )
    assert batch.input_ids.tolist() == [[1, 2, 3, 4], [5, 6, 7, 8]]
    short = collate([Sample([1], [3]), Sample([5, 6], [7, 8])], pad_id=0)
    assert short.input_ids.tolist() == [[0, 0, 1, 3], [5, 6, 7, 8]]
    assert short.position_ids.tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]
    assert short.action_ids.tolist() == [[0, 3], [7, 8]]
    assert short.action_mask.tolist() == [[False, True], [True, True]]
    assert short.last_prompt_index.tolist() == [2, 1]
    assert batch.behaviour_logprobs.flatten().tolist() == pytest.approx([-0.1, -0.2, 0.0, 0.0])
    assert batch.token_weights.tolist() == [[0.5, 1.0], [1.0, 1.0]]
    assert batch.advantages.tolist() == [2.0, 0.0]
    assert batch.n_logits == 3


def test_sample_validates_lengths_and_temperature():
    with pytest.raises(ValueError, match="one per output id"):
        Sample([1], [2, 3], logprobs=[0.0])
    with pytest.raises(ValueError, match="non-empty"):
        Sample([1], [])
    with pytest.raises(ValueError, match="temperature=-0.5"):
        Sample([1], [2], temperature=-0.5)


def test_collate_carries_the_behaviour_temperature_and_scores_greedy_at_one():
    samples = [Sample([1], [2], temperature=0.2), Sample([1], [2], temperature=0.0), Sample([1], [2])]
    assert collate(samples, pad_id=0).temperatures.tolist() == pytest.approx([0.2, 1.0, 1.0])


def test_micro_batches_sort_by_length_under_a_token_budget():
    samples = [Sample([1] * n, [2]) for n in (9, 1, 5, 2, 1)]  # lengths 10, 2, 6, 3, 2
    groups = micro_batches(samples, max_tokens=9)
    assert groups == [[1, 4, 3], [2], [0]]
    assert sorted(i for g in groups for i in g) == list(range(5))


def test_shard_for_ranks_balances_counts_and_tokens():
    samples = [Sample([1] * n, [2]) for n in range(1, 8)]
    shards = shard_for_ranks(samples, 2)
    assert sorted(len(s) for s in shards) == [3, 4]
    loads = [sum(len(samples[i]) for i in shard) for shard in shards]
    assert abs(loads[0] - loads[1]) <= 7
    assert sorted(i for s in shards for i in s) == list(range(7))


class CharDecoder:
    """Each id is one character (id 0 = '{', ...): enough to check the offset search."""

    alphabet = '{"thought": "x", "formula": "1+2"}'

    def decode(self, ids):
        return "".join(self.alphabet[i] for i in ids)


def test_pre_action_token_count_finds_the_key():
    ids = list(range(len(CharDecoder.alphabet)))
    start = CharDecoder.alphabet.index('"formula"')
    assert pre_action_token_count(CharDecoder(), ids, ['"formula"', '"action"']) == start
    assert pre_action_token_count(CharDecoder(), ids, ['"nothing"']) == 0


class RepeatedKeyDecoder(CharDecoder):
    """A reply naming an action key twice, then the other key last."""

    alphabet = '{"action": "a", "thought": "b", "action": "c", "formula": "d"}'


def test_pre_action_token_count_ends_at_the_last_action_key():
    """The paper's rule: everything before the LAST action key is thought, whichever key it is."""
    ids = list(range(len(RepeatedKeyDecoder.alphabet)))
    text = RepeatedKeyDecoder.alphabet
    assert pre_action_token_count(RepeatedKeyDecoder(), ids, ['"action"']) == text.rindex('"action"')
    assert pre_action_token_count(RepeatedKeyDecoder(), ids, ['"formula"', '"action"']) == text.index('"formula"')


def test_pre_action_token_count_on_a_real_tokenizer():
    from learner.models import load_policy

    tokenizer = load_policy("tiny").tokenizer
    text = '{"thought": "I go left", "action": "turn_left"}'
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    count = pre_action_token_count(tokenizer, ids, ['"action"'])
    assert tokenizer.decode(ids[:count]) == '{"thought": "I go left",'
    assert '"action"' in tokenizer.decode(ids[count:])
