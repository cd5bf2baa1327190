"""SFT on oracle demonstrations: envs' expert answers -> learner `Sample`s, token in, token out.

Each policy turn of an oracle episode (envs.sft_data) is one chat record whose last message is the
assistant's answer. Its prompt ids are `learner.prompt_encoding.encode_prompt` of the conversation
before the answer (exactly what the policy server would be given), and its output ids are the
chat template's assistant part up to and including the end-of-turn token (what the server would
have generated, eos included). So SFT and RL train on the same kind of ids, and the SFT and RL arms
of an experiment differ only in the update rule (design.md, "Data flow"). The driver holds only the
model's `PromptCodec` (tokenizer/processor), never its weights (42 GB in fp32 for an 11B model).
"""

from __future__ import annotations

from itertools import islice
from typing import Any

import numpy as np

from cluster.config import EnvConfig
from envs.sft_data import iter_oracle_turns, training_seeds
from learner.batch import Sample
from learner.models import LoadedPolicy, PromptCodec, load_prompt_codec
from learner.prompt_encoding import encode_prompt


def oracle_samples(env_config: EnvConfig, model: str, *, n_samples: int, seed: int) -> list[Sample]:
    """`n_samples` SFT samples: the oracle's turns on the task's `id` variant, training seeds and tasks only.

    The env deals env.split_for("train") tasks, as the RL rollouts do: held-out hands and routes
    never become demonstrations (every task under env.split=none, the paper's protocol).
    """
    env = env_config.make("id", env_config.split_for("train"))
    codec = load_prompt_codec(model)  # no weights: prompts encoded exactly as the server does
    # Every episode has at least one turn, so n_samples seeds always suffice.
    turns = islice(iter_oracle_turns(env, training_seeds(seed, n_samples)), n_samples)
    return [sft_sample(codec, t.messages, [t.image] if t.image is not None else None) for t in turns]


def sft_sample(
    codec: PromptCodec | LoadedPolicy, messages: list[dict[str, Any]], images: list[np.ndarray] | None = None
) -> Sample:
    """The sample of one chat record: prompt = messages[:-1], output = the assistant reply + eos."""
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError(
            "an SFT record must end with the assistant's answer; got "
            f"{messages[-1]['role'] if messages else 'no messages'!r} last"
        )
    prompt_ids = encode_prompt(codec, messages[:-1], images).input_ids
    return Sample(prompt_ids=prompt_ids, output_ids=assistant_ids(codec, messages), images=images or None)


def assistant_ids(codec: PromptCodec | LoadedPolicy, messages: list[dict[str, Any]]) -> list[int]:
    """Token ids of the last (assistant) message as the chat template writes it, through eos."""
    template = codec.tokenizer.apply_chat_template
    text_only = [_text_only(m) for m in messages]
    prompt_text = template(text_only[:-1], add_generation_prompt=True, tokenize=False)
    full_text = template(text_only, tokenize=False)
    if not full_text.startswith(prompt_text):
        raise ValueError(
            f"the chat template of {codec.name!r} does not extend the generation prompt "
            "with the answer; SFT needs a template where it does"
        )
    ids = codec.tokenizer(full_text[len(prompt_text) :], add_special_tokens=False)["input_ids"]
    eos = set(codec.eos_token_ids)
    end = next((i + 1 for i, token in enumerate(ids) if token in eos), len(ids))
    return ids[:end]


def _text_only(message: dict[str, Any]) -> dict[str, Any]:
    """The message with image items dropped (only the assistant part's text matters here)."""
    content = message["content"]
    if isinstance(content, str):
        return message
    text = "".join(item.get("text", "") for item in content if item.get("type") == "text")
    return {"role": message["role"], "content": text}
