"""Server generation on `tiny-mllama` (Llama-3.2-Vision's architecture; issue 14, failure 1).

A request's image inputs (pixel values, aspect ratios, cross-attention mask) travel from `prepare`
to `generate_batch`; greedy tokens equal transformers' own `generate` (which extends and slices the
cross-attention mask per decode step as ours does), alone and in a batch that mixes image counts;
the images change what is generated.
"""

import numpy as np
import pytest
import torch
from PIL import Image

from learner.models import load_policy
from learner.prompt_encoding import encode_prompt
from serving.config import ServingConfig
from serving.generation import GenerationRequest, generate_batch
from serving.images import to_data_url
from serving.prepare import PolicyLimits, prepare
from serving.schemas import GenerateRequest

NEW_TOKENS = 8


def _image(seed: int, shape=(40, 90, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def _turn(*items) -> list[dict]:
    content = [{"type": "image"} if item is None else {"type": "text", "text": item} for item in items]
    return [{"role": "user", "content": content}]


PROMPTS = [  # (messages, images): 1 image, 2 images, none, 1 image
    (_turn(None, "Which card is this?"), [_image(0)]),
    (_turn("Compare", None, None, "left or right?"), [_image(1, (90, 30, 3)), _image(2, (20, 20, 3))]),
    ([{"role": "user", "content": "Cards: 3, 3, 8, 8. Make 24."}], []),
    (_turn("Where now?", None), [_image(3, (100, 32, 3))]),
]


@pytest.fixture(scope="module")
def mllama():
    return load_policy("tiny-mllama")


def _greedy(policy, indices) -> list[GenerationRequest]:
    encoded = [encode_prompt(policy, *PROMPTS[i]) for i in indices]
    return [GenerationRequest(e.input_ids, NEW_TOKENS, temperature=0.0, image_inputs=e.image_inputs) for e in encoded]


def _hf_greedy(policy, request: GenerationRequest) -> list[int]:
    ids = torch.tensor([request.prompt_ids])  # (1, T)
    with torch.no_grad():
        out = policy.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            **(request.image_inputs or {}),
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
        )
    return out[0, ids.shape[1] :].tolist()


@pytest.mark.parametrize("index", range(len(PROMPTS)))
def test_greedy_tokens_equal_transformers_generate(mllama, index):
    request = _greedy(mllama, [index])[0]
    expected = _hf_greedy(mllama, request)
    assert generate_batch(mllama, [request])[0].output_ids[: len(expected)] == expected


def test_a_batch_mixing_image_counts_generates_what_each_request_does_alone(mllama):
    requests = _greedy(mllama, range(len(PROMPTS)))
    alone = [generate_batch(mllama, [r])[0] for r in requests]
    together = generate_batch(mllama, requests)
    for a, b in zip(alone, together, strict=True):
        assert a.output_ids == b.output_ids
        assert np.allclose(a.logprobs, b.logprobs, atol=1e-4)


def test_the_image_changes_the_tokens(mllama):
    request = _greedy(mllama, [0])[0]
    other = encode_prompt(mllama, PROMPTS[0][0], [_image(9, (64, 32, 3))])
    swapped = GenerationRequest(other.input_ids, NEW_TOKENS, temperature=0.0, image_inputs=other.image_inputs)
    ours, theirs = generate_batch(mllama, [request, swapped])
    assert ours.logprobs != theirs.logprobs


def test_prepare_carries_every_image_input(mllama):
    messages, images = PROMPTS[1]
    body = GenerateRequest(messages=messages, images=[to_data_url(Image.fromarray(im)) for im in images])
    prepared = prepare(mllama, PolicyLimits.of(mllama.model.config), body, config=ServingConfig())
    expected = encode_prompt(mllama, messages, images)
    assert prepared.prompt_ids == expected.input_ids
    assert prepared.image_inputs.keys() == expected.image_inputs.keys()
    assert all(torch.equal(prepared.image_inputs[k], v) for k, v in expected.image_inputs.items())
