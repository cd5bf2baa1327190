"""LLaVA-style VLMs composed in transformers: `tiny-vlm` and `smollm2-135m-vlm`.

A seeded, randomly initialised CLIP vision tower (128x128 images, 16x16 patches: 64 image tokens
per image) and LLaVA's MLP projector feed a text model: `tiny`, or SmolLM2-135M-Instruct. The
tokenizer gains one `<image>` token (its embedding starts at the mean of the others) and a chat
template that renders `{"type": "image"}` content items as `<image>`; the LlavaProcessor expands
each into the 64 image tokens. `smollm2-135m-vlm` is built once into `$SFTRL_CACHE`; `tiny-vlm`
is rebuilt in memory (well under a second).
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch
from transformers import (
    AutoTokenizer,
    CLIPImageProcessorPil,
    CLIPVisionConfig,
    LlamaForCausalLM,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    PreTrainedTokenizerBase,
)

from learner.models.policy import LoadedPolicy, PromptCodec, build_once, cache_root, place, seeded_init, set_special_ids
from learner.models.smollm2 import TINY_SEED, load_tiny, smollm2_dir, smollm2_tokenizer

IMAGE_TOKEN = "<image>"
IMAGE_SIZE = 128
PATCH_SIZE = 16
VISION_SEED = TINY_SEED + 1
# SmolLM2's template, with list contents: image items render as the image token, text items as text.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' }}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "\\n' }}"
    "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %}"
    "{{ '<|im_end|>\\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def vision_config() -> CLIPVisionConfig:
    """A small CLIP ViT: 2 layers of width 64 over (IMAGE_SIZE / PATCH_SIZE)^2 = 64 patches."""
    return CLIPVisionConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=4,
    )


def make_processor(tokenizer: PreTrainedTokenizerBase) -> LlavaProcessor:
    """LlavaProcessor over `tokenizer` (which gains the image token) and a CLIP image processor."""
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    tokenizer.chat_template = CHAT_TEMPLATE
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": IMAGE_SIZE}, crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}
    )
    # "default" feature selection drops the CLS token: 1 additional token from the tower.
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
        image_token=IMAGE_TOKEN,
    )


class ComposedVLM(NamedTuple):
    """A freshly composed LLaVA model (float32, CPU) and its processor."""

    model: LlavaForConditionalGeneration
    processor: LlavaProcessor


def compose(text_model: LlamaForCausalLM, tokenizer: PreTrainedTokenizerBase) -> ComposedVLM:
    """A LLaVA model around `text_model` (weights copied) and its processor.

    The vision tower and projector are random from `VISION_SEED`; the text weights are exactly
    `text_model`'s (which must tie its input and output embeddings, as SmolLM2 does), plus one
    embedding row for the image token: the mean of the others (the model replaces image-token
    embeddings by image features anyway).
    """
    assert text_model.config.tie_word_embeddings, "compose extends the tied embedding only"
    processor = make_processor(tokenizer)
    text_config = text_model.config.to_dict() | {"vocab_size": len(processor.tokenizer)}
    config = LlavaConfig(
        vision_config=vision_config(),
        text_config=text_config,
        image_token_index=processor.tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=(IMAGE_SIZE // PATCH_SIZE) ** 2,
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        tie_word_embeddings=True,
    )
    model = seeded_init(lambda: LlavaForConditionalGeneration(config), VISION_SEED)
    state = text_model.model.state_dict()
    embed = state["embed_tokens.weight"]  # (V, D)
    state["embed_tokens.weight"] = torch.cat([embed, embed.mean(0, keepdim=True)])  # (V + 1, D)
    model.model.language_model.load_state_dict(state)  # lm_head is tied to embed_tokens
    set_special_ids(model, processor.tokenizer)
    return ComposedVLM(model, processor)


def load_tiny_vlm(*, dtype: torch.dtype, device: str) -> LoadedPolicy:
    """`tiny-vlm`: `tiny` plus the vision tower, identical on every call."""
    tiny = load_tiny(dtype=torch.float32, device="cpu")
    model, processor = compose(tiny.model, tiny.tokenizer)
    return LoadedPolicy(place(model, dtype=dtype, device=device), processor.tokenizer, processor, "tiny-vlm", True)


def vlm_codec(name: str) -> PromptCodec:
    """The prompt codec of `tiny-vlm` and `smollm2-135m-vlm` (`name`): their processor, no weights.

    Both compose `make_processor` over SmolLM2's tokenizer and stop at its eos (`compose`), so the
    codec builds neither the vision tower nor `smollm2-135m-vlm`'s directory.
    """
    processor = make_processor(smollm2_tokenizer())
    return PromptCodec.for_tokenizer(name, processor.tokenizer, processor)


def _build_smollm2_vlm(out: Path) -> None:
    source = smollm2_dir()
    text_model = LlamaForCausalLM.from_pretrained(source, local_files_only=True)
    composed = compose(text_model, AutoTokenizer.from_pretrained(source, local_files_only=True))
    composed.model.save_pretrained(out)
    composed.processor.save_pretrained(out)


def smollm2_vlm_dir() -> Path:
    """The `smollm2-135m-vlm` directory (model + processor), composed on first use."""
    return build_once(cache_root() / "smollm2-135m-vlm", _build_smollm2_vlm)
