"""SFT samples from oracle turns: the prompt ids are the server's, the output ids end in eos."""

import pytest

from cluster.config import EnvConfig
from cluster.sft_phase import oracle_samples, sft_sample
from learner.models import load_policy
from learner.prompt_encoding import encode_prompt


@pytest.fixture(scope="module")
def tiny():
    return load_policy("tiny")


def test_sample_is_prompt_then_answer_through_eos(tiny):
    messages = [
        {"role": "user", "content": "cards: 3 3 8 8"},
        {"role": "assistant", "content": '{"formula": "8/(3-8/3)"}'},
    ]
    sample = sft_sample(tiny, messages)
    assert sample.prompt_ids == encode_prompt(tiny, messages[:-1]).input_ids
    assert sample.output_ids[-1] in tiny.eos_token_ids
    assert tiny.tokenizer.decode(sample.output_ids[:-1]) == '{"formula": "8/(3-8/3)"}'
    # Prompt + output is what the chat template writes for the whole conversation.
    full = tiny.tokenizer.apply_chat_template(messages, tokenize=False)
    assert full.startswith(tiny.tokenizer.decode(sample.prompt_ids + sample.output_ids))


def test_records_must_end_with_the_answer(tiny):
    with pytest.raises(ValueError, match="must end with the assistant's answer"):
        sft_sample(tiny, [{"role": "user", "content": "hi"}])


def test_oracle_samples_come_from_the_gp_oracle(tiny):
    samples = oracle_samples(EnvConfig(task="gp-l"), "tiny", n_samples=3, seed=0)
    assert len(samples) == 3
    answer = tiny.tokenizer.decode(samples[0].output_ids, skip_special_tokens=True)
    assert '"formula"' in answer
    assert samples[0].logprobs is None and samples[0].images is None


@pytest.mark.parametrize("split, dealt", [("held_out", "train"), ("none", "all")])
def test_oracle_samples_demonstrate_training_tasks_only(tiny, monkeypatch, split, dealt):
    made = []
    real_make = EnvConfig.make

    def recording_make(self, variant, split):
        made.append((variant, split))
        return real_make(self, variant, split)

    monkeypatch.setattr(EnvConfig, "make", recording_make)
    oracle_samples(EnvConfig(task="gp-l", split=split), "tiny", n_samples=2, seed=0)
    assert made == [("id", dealt)]
