"""`tiny-mllama` (Llama-3.2-Vision's architecture) from prompt encoding to the learner (issue 14, failure 1).

Prompt encoding carries the processor's whole output (pixel values, aspect ratios, the
cross-attention mask); the learner rebuilds exactly that from prompt ids and raw images, per sample;
`batch_image_inputs` pads rows so that a row scores the same alone or in a batch of rows with as many
images (micro-batches never mix image counts); a 1-rank ZeRO-3
learner (gloo, CPU, fp32) recomputes the server's log-probs of image prompts to 1e-4, and scoring
the same tokens without the images (or with another sample's images) breaks that parity.
"""

import numpy as np
import pytest
import torch

from learner.batch import Sample, collate, micro_batches
from learner.config import LearnerConfig
from learner.distributed import free_port, init_distributed
from learner.engine import LearnerEngine
from learner.models import load_policy, load_prompt_codec, save_policy
from learner.prompt_encoding import batch_image_inputs, encode_prompt, image_inputs_for_ids
from serving.generation import GenerationRequest, generate_batch

ONE_IMAGE = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Which card is this?"}]}]
TWO_IMAGES = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Compare"},
            {"type": "image"},
            {"type": "image"},
            {"type": "text", "text": "left or right?"},
        ],
    }
]
TEXT_ONLY = [{"role": "user", "content": "Cards: 3, 3, 8, 8. Make 24."}]


def _image(seed: int, shape=(40, 90, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


ROAD = [{"role": "user", "content": [{"type": "text", "text": "Where now?"}, {"type": "image"}]}]
# (messages, images): one wide image (3 tiles), two images of different shapes, no image, one tall image
PROMPTS = [
    (ONE_IMAGE, [_image(0)]),
    (TWO_IMAGES, [_image(1, (90, 30, 3)), _image(2, (20, 20, 3))]),
    (TEXT_ONLY, []),
    (ROAD, [_image(3, (100, 32, 3))]),
]


@pytest.fixture(scope="module")
def mllama():
    return load_policy("tiny-mllama")


def test_encode_prompt_keeps_every_mllama_input(mllama):
    encoded = encode_prompt(mllama, *PROMPTS[0])
    inputs = encoded.image_inputs
    assert set(inputs) == {"pixel_values", "aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask"}
    assert inputs["pixel_values"].shape == (1, 1, 4, 3, 32, 32)  # (1, N, tiles, 3, H, W)
    assert inputs["cross_attention_mask"].shape == (1, len(encoded.input_ids), 1, 4)  # (1, T, N, tiles)
    image_at = encoded.input_ids.index(mllama.processor.image_token_id)
    assert inputs["cross_attention_mask"][0, :image_at].sum() == 0  # text before the image does not see it
    assert inputs["cross_attention_mask"][0, -1, 0].tolist() == [1, 1, 1, 0]  # a 90x40 image fills 3 of 4 tiles


@pytest.mark.parametrize("index", [0, 1])
def test_learner_rebuilds_the_servers_image_inputs_from_ids(mllama, index):
    messages, images = PROMPTS[index]
    encoded = encode_prompt(mllama, messages, images)
    rebuilt = image_inputs_for_ids(mllama.processor, encoded.input_ids, images)
    assert rebuilt.keys() == encoded.image_inputs.keys()
    for name, value in rebuilt.items():
        assert torch.equal(value, encoded.image_inputs[name]), name


def test_codec_encodes_as_the_policy_does(mllama):
    codec = load_prompt_codec("tiny-mllama")
    ours, theirs = encode_prompt(codec, *PROMPTS[1]), encode_prompt(mllama, *PROMPTS[1])
    assert ours.input_ids == theirs.input_ids
    assert all(torch.equal(ours.image_inputs[k], theirs.image_inputs[k]) for k in theirs.image_inputs)


def test_save_policy_round_trip_keeps_encoding_and_logits(mllama, tmp_path):
    loaded = load_policy(str(save_policy(mllama, tmp_path)))
    ours, theirs = encode_prompt(mllama, *PROMPTS[0]), encode_prompt(loaded, *PROMPTS[0])
    assert ours.input_ids == theirs.input_ids
    ids = torch.tensor([ours.input_ids])  # (1, T)
    with torch.no_grad():
        expected = mllama.model(input_ids=ids, **ours.image_inputs).logits
        assert torch.allclose(loaded.model(input_ids=ids, **theirs.image_inputs).logits, expected, atol=1e-5)


def _logits(policy, samples: list[Sample]) -> list[torch.Tensor]:
    """Each sample's output logits (L_i, V) from one left-padded forward, image inputs as the learner builds them."""
    batch = collate(samples, pad_id=policy.pad_token_id)
    rows = [image_inputs_for_ids(policy.processor, s.prompt_ids, s.images) if s.images else None for s in samples]
    images = batch_image_inputs(rows, lengths=[len(s) for s in samples], width=batch.input_ids.shape[1]) or {}
    with torch.no_grad():
        logits = policy.model(
            input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids, **images
        ).logits  # (B, T, V)
    return [logits[row, -len(s.output_ids) - 1 : -1] for row, s in enumerate(samples)]


def _samples(policy, indices) -> list[Sample]:
    return [
        Sample(encode_prompt(policy, *PROMPTS[i]).input_ids, [28, 29, 30, 2][: 2 + n], images=PROMPTS[i][1] or None)
        for n, i in enumerate(indices)
    ]


def test_rows_with_as_many_images_score_the_same_alone_and_padded_together(mllama):
    samples = _samples(mllama, [0, 3])  # 3 and 4 tiles, different prompt lengths
    for sample, batched in zip(samples, _logits(mllama, samples), strict=True):
        assert torch.allclose(_logits(mllama, [sample])[0], batched, atol=1e-5)


@pytest.mark.parametrize("mate", [1, 2])
def test_a_batch_mate_with_other_image_counts_shifts_a_rows_logits(mllama, mate):
    """Why micro_batches and generate_batch never mix image counts (transformers' Mllama, text before an image)."""
    rows = _samples(mllama, [0, mate])
    together = _logits(mllama, rows)
    alone = [_logits(mllama, [row])[0] for row in rows]
    assert not all(torch.allclose(a, b, atol=1e-3) for a, b in zip(alone, together, strict=True))


def test_micro_batches_never_mix_image_counts(mllama):
    samples = _samples(mllama, [0, 1, 2, 3])
    groups = micro_batches(samples, max_tokens=10_000)
    assert sorted(sorted(g) for g in groups) == [[0, 3], [1], [2]]


def test_images_change_the_logits(mllama):
    sample = _samples(mllama, [0])[0]
    other = Sample(sample.prompt_ids, sample.output_ids, images=[_image(9, (64, 32, 3))])
    assert not torch.allclose(_logits(mllama, [sample])[0], _logits(mllama, [other])[0], atol=1e-3)


@pytest.fixture(scope="module")
def served(mllama):
    """The server's samples of PROMPTS at temperature 0.7, all in one call."""
    encoded = [encode_prompt(mllama, m, ims) for m, ims in PROMPTS]
    requests = [
        GenerationRequest(e.input_ids, 10, temperature=0.7, seed=i, image_inputs=e.image_inputs)
        for i, e in enumerate(encoded)
    ]
    results = generate_batch(mllama, requests)
    return [
        Sample(r.prompt_ids, out.output_ids, logprobs=out.logprobs, temperature=0.7, images=ims or None)
        for r, out, (_, ims) in zip(requests, results, PROMPTS, strict=True)
    ]


@pytest.fixture(scope="module")
def engine(mllama):
    init_distributed(0, 1, master_port=free_port())  # this process is the whole (1-rank) group
    # advantage 0 gives a zero gradient, so the weights stay the server's across rl_steps
    return LearnerEngine(LearnerConfig(model="tiny-mllama", algo="grpo", dtype="float32", lr=1e-9))


@pytest.mark.integration
def test_learner_logprobs_match_the_servers_on_image_prompts(served, engine):
    metrics = engine.rl_step(served)
    assert metrics["rl/logprob_diff_max"] <= 1e-4, metrics


@pytest.mark.integration
def test_parity_needs_each_samples_own_images(served, engine):
    without = [Sample(s.prompt_ids, s.output_ids, logprobs=s.logprobs, temperature=0.7) for s in served[:1]]
    assert engine.rl_step(without)["rl/logprob_diff_max"] > 1e-2
    swapped = [
        Sample(s.prompt_ids, s.output_ids, logprobs=s.logprobs, temperature=0.7, images=[_image(9, (64, 32, 3))])
        for s in served[:1]
    ]
    assert engine.rl_step(swapped)["rl/logprob_diff_max"] > 1e-2


@pytest.mark.integration
def test_mllama_sft_step_lowers_the_loss(mllama, engine):
    sft = LearnerEngine(LearnerConfig(model="tiny-mllama", algo="sft", lr=3e-3, dtype="float32"))
    answer = mllama.tokenizer('{"action": "left"}<|im_end|>', add_special_tokens=False)["input_ids"]
    samples = [Sample(encode_prompt(mllama, m, ims).input_ids, answer, images=ims) for m, ims in PROMPTS[:2]]
    losses = [sft.sft_step(samples)["loss/sft"] for _ in range(4)]
    assert losses[-1] < losses[0] - 0.5, losses


@pytest.mark.integration
def test_freeze_vision_trains_only_the_language_model_on_text(mllama, engine):
    from learner.freezing import vision_parameters
    from learner.partitions import local_partitions

    # ZeRO-3, as the 11B model trains on several ranks: frozen parameters get no partitioned optimizer state
    config = LearnerConfig(model="tiny-mllama", algo="sft", lr=3e-3, dtype="float32", freeze_vision=True, zero_stage=3)
    frozen = LearnerEngine(config)
    vision = {id(param) for param in vision_parameters(frozen.module.policy)}
    names = {name for name, param in frozen.module.policy.named_parameters() if id(param) in vision}
    assert frozen.n_frozen == sum(param.ds_numel for param in vision_parameters(frozen.module.policy)) > 0
    assert any(".vision_model." in name for name in names) and any("multi_modal_projector" in name for name in names)
    assert {int(name.split(".layers.")[1].split(".")[0]) for name in names if ".language_model.layers." in name} == set(
        frozen.module.policy.config.text_config.cross_attention_layers
    )
    optimized = {id(param) for group in frozen.engine.optimizer.fp16_groups for param in group}
    assert not optimized & vision, "frozen parameters got optimizer state"
    before = local_partitions(frozen.module.policy)
    answer = mllama.tokenizer('{"action": "left"}<|im_end|>', add_special_tokens=False)["input_ids"]
    text_only = [Sample(encode_prompt(mllama, [{"role": "user", "content": "Turn?"}]).input_ids, answer)] * 2
    frozen.sft_step(text_only)
    after = local_partitions(frozen.module.policy)
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed and not changed & names, "a frozen parameter moved, or nothing trained"
