"""Tests of learner.prompt_encoding: chat template, round trips, image token expansion."""

import numpy as np
import pytest
import torch

from learner.models import load_policy
from learner.prompt_encoding import encode_prompt

SYSTEM = {"role": "system", "content": "You play cards."}
USER = {"role": "user", "content": "Cards: 3, 4, 5, K. Reach 24."}


@pytest.fixture(scope="module")
def tiny():
    return load_policy("tiny")


def test_tokenizer_round_trips_text(tiny):
    text = "Hello, world! 24 = (3 + 5) * (K - 10) — ünïcode ok."
    ids = tiny.tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny.tokenizer.decode(ids) == text


def test_chat_template_is_smollm2s(tiny):
    assert tiny.tokenizer.chat_template and "<|im_start|>" in tiny.tokenizer.chat_template
    ids = encode_prompt(tiny, [SYSTEM, USER]).input_ids
    assert tiny.tokenizer.decode(ids) == (
        "<|im_start|>system\nYou play cards.<|im_end|>\n"
        "<|im_start|>user\nCards: 3, 4, 5, K. Reach 24.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_default_system_prompt_is_added_without_one(tiny):
    text = tiny.tokenizer.decode(encode_prompt(tiny, [USER]).input_ids)
    assert text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")


def test_special_tokens_are_single_ids(tiny):
    ids = encode_prompt(tiny, [SYSTEM, USER]).input_ids
    assert ids[0] == tiny.tokenizer.convert_tokens_to_ids("<|im_start|>")
    assert ids.count(tiny.tokenizer.eos_token_id) == 2
    assert encode_prompt(tiny, [SYSTEM, USER]).pixel_values is None


def test_text_policy_refuses_images(tiny):
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="text-only"):
        encode_prompt(tiny, [USER], [image])


def test_prompt_ids_feed_the_model(tiny):
    ids = torch.tensor([encode_prompt(tiny, [SYSTEM, USER]).input_ids])  # (1, T)
    out = tiny.model.generate(ids, max_new_tokens=4, do_sample=False)  # (1, T + 4)
    assert out.shape == (1, ids.shape[1] + 4)


IMAGE_TURN = {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which cards do you see?"}]}


@pytest.fixture(scope="module")
def tiny_vlm():
    return load_policy("tiny-vlm")


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (96, 160, 3), dtype=np.uint8)


def test_vlm_prompt_expands_the_image_token(tiny_vlm):
    encoded = encode_prompt(tiny_vlm, [SYSTEM, IMAGE_TURN], [_image(0)])
    image_id = tiny_vlm.model.config.image_token_index
    assert encoded.input_ids.count(image_id) == tiny_vlm.model.config.image_seq_length == 64
    assert encoded.pixel_values.shape == (1, 3, 128, 128)
    text = tiny_vlm.tokenizer.decode(encoded.input_ids).replace("<image>" * 64, "<IMG>")
    assert text == (
        "<|im_start|>system\nYou play cards.<|im_end|>\n"
        "<|im_start|>user\n<IMG>\nWhich cards do you see?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_vlm_forward_and_generate_use_the_image(tiny_vlm):
    def logits(image):
        encoded = encode_prompt(tiny_vlm, [IMAGE_TURN], [image])
        ids = torch.tensor([encoded.input_ids])  # (1, T)
        with torch.no_grad():
            return tiny_vlm.model(input_ids=ids, pixel_values=encoded.pixel_values).logits

    assert not torch.allclose(logits(_image(1)), logits(_image(2)))  # (1, T, V) each
    encoded = encode_prompt(tiny_vlm, [IMAGE_TURN], [_image(1)])
    ids = torch.tensor([encoded.input_ids])  # (1, T)
    out = tiny_vlm.model.generate(
        ids, pixel_values=encoded.pixel_values, max_new_tokens=3, do_sample=False
    )  # (1, T + 3)
    assert out.shape == (1, ids.shape[1] + 3)


def test_vlm_accepts_pil_and_arrays_alike(tiny_vlm):
    from PIL import Image

    array = _image(3)
    from_array = encode_prompt(tiny_vlm, [IMAGE_TURN], [array])
    from_pil = encode_prompt(tiny_vlm, [IMAGE_TURN], [Image.fromarray(array)])
    assert from_array.input_ids == from_pil.input_ids
    assert torch.equal(from_array.pixel_values, from_pil.pixel_values)


def test_vlm_text_only_prompt_matches_the_text_model(tiny, tiny_vlm):
    encoded = encode_prompt(tiny_vlm, [SYSTEM, USER])
    assert encoded.pixel_values is None
    assert encoded.input_ids == encode_prompt(tiny, [SYSTEM, USER]).input_ids


@pytest.mark.parametrize("n_images", [0, 2])
def test_vlm_refuses_a_wrong_number_of_images(tiny_vlm, n_images):
    with pytest.raises(ValueError, match="1 image items but"):
        encode_prompt(tiny_vlm, [IMAGE_TURN], [_image(i) for i in range(n_images)])


def test_pixel_values_follow_the_model_dtype():
    policy = load_policy("tiny-vlm", dtype=torch.bfloat16)
    assert encode_prompt(policy, [IMAGE_TURN], [_image(4)]).pixel_values.dtype == torch.bfloat16


def test_vlm_refuses_images_that_are_not_rgb_uint8(tiny_vlm):
    with pytest.raises(TypeError, match="uint8"):
        encode_prompt(tiny_vlm, [IMAGE_TURN], [np.zeros((32, 32, 3), np.float32)])
