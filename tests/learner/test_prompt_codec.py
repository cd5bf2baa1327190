"""Tests of learner.models.load_prompt_codec: the policy's prompt encoding, without its model.

For every source `load_policy` reads (built-in names, saved directories), the codec encodes text
and images to the same ids and stop ids as the loaded policy, and building it instantiates no
model (`PreTrainedModel.__init__` raises while it runs); a source it cannot read fails with
`load_policy`'s own error.
"""

from contextlib import contextmanager

import numpy as np
import pytest
import torch
from transformers import PreTrainedModel

from learner.models import PromptCodec, load_policy, load_prompt_codec, save_policy
from learner.prompt_encoding import encode_prompt

TEXT_TURN = [{"role": "user", "content": "What is the capital of France?"}]
IMAGE_TURN = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which cards?"}]}]


def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (96, 80, 3), dtype=np.uint8)  # (H, W, 3)


def _refuse_model(self, *args, **kwargs):
    raise AssertionError(f"a model was built: {type(self).__name__}")


@contextmanager
def building_no_model():
    """Make building any transformers model (random init, from_pretrained, GGUF conversion) raise."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PreTrainedModel, "__init__", _refuse_model)
        yield


def assert_same_encoding(codec: PromptCodec, policy) -> None:
    """The codec and the policy agree on names, stop ids, pad and every prompt's ids (and pixels)."""
    assert (codec.name, codec.is_vlm, codec.eos_token_ids) == (policy.name, policy.is_vlm, policy.eos_token_ids)
    assert codec.tokenizer.pad_token_id == policy.tokenizer.pad_token_id
    assert encode_prompt(codec, TEXT_TURN).input_ids == encode_prompt(policy, TEXT_TURN).input_ids
    if policy.is_vlm:
        ours, theirs = encode_prompt(codec, IMAGE_TURN, [_image(0)]), encode_prompt(policy, IMAGE_TURN, [_image(0)])
        assert ours.input_ids == theirs.input_ids
        assert ours.pixel_values.dtype == torch.float32
        assert torch.equal(ours.pixel_values, theirs.pixel_values.float())


@pytest.mark.parametrize("name", ["tiny", "tiny-vlm"])
def test_builtin_codec_encodes_like_the_policy_and_builds_no_model(name):
    policy = load_policy(name)
    with building_no_model():
        codec = load_prompt_codec(name)
    assert codec.processor is None if name == "tiny" else codec.processor is not None
    assert_same_encoding(codec, policy)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["smollm2-135m", "smollm2-135m-vlm"])
def test_smollm2_codec_encodes_like_the_policy_loaded_from_its_cache(name):
    assert_same_encoding(load_prompt_codec(name), load_policy(name))


@pytest.mark.parametrize("name", ["tiny", "tiny-vlm"])
def test_saved_directory_codec_encodes_like_the_reloaded_policy(name, tmp_path):
    directory = save_policy(load_policy(name), tmp_path / name)
    reloaded = load_policy(str(directory))
    with building_no_model():
        codec = load_prompt_codec(str(directory))
    assert_same_encoding(codec, reloaded)


def test_stop_ids_come_from_generation_config_json_else_config_json(tmp_path):
    policy = load_policy("tiny")
    policy.model.generation_config.eos_token_id = [2, 7]  # e.g. Llama 3: <|eot_id|> and <|eom_id|>
    directory = save_policy(policy, tmp_path / "two-stops")
    assert load_prompt_codec(str(directory)).eos_token_ids == load_policy(str(directory)).eos_token_ids == [2, 7]
    (directory / "generation_config.json").unlink()  # transformers then reads config.json's eos
    assert load_prompt_codec(str(directory)).eos_token_ids == load_policy(str(directory)).eos_token_ids == [2]


@pytest.mark.parametrize(
    "name", ["no-such-model", "/nonexistent/sftrl/model", "./relative/missing", "sftrl-test/no-such-model"]
)
def test_unknown_names_fail_with_load_policys_error(name, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a hub id not cached: the error says how to download it
    assert _codec_error(name) == _policy_error(name)


@pytest.mark.parametrize("saved", ["nothing", "weights only"])
def test_incomplete_directories_fail_with_load_policys_error(saved, tmp_path):
    if saved == "weights only":
        load_policy("tiny").model.save_pretrained(tmp_path)  # no tokenizer: the error names save_policy
    assert _codec_error(str(tmp_path)) == _policy_error(str(tmp_path))


def _codec_error(name: str) -> str:
    with pytest.raises(ValueError) as info:
        load_prompt_codec(name)
    return str(info.value)


def _policy_error(name: str) -> str:
    """load_policy's message (tests/learner/test_models.py checks that it names the fix)."""
    with pytest.raises(ValueError) as info:
        load_policy(name)
    return str(info.value)
