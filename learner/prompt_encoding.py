"""Chat messages (+ images) -> prompt token ids, identical in serving and in the learner.

`encode_prompt(policy, messages, images)` applies the policy's chat template with
`add_generation_prompt=True`; for VLMs the processor also expands each `{"type": "image"}` item
into the model's image tokens and returns the pixel values. The policy server, the learner and the
driver (which holds only a `PromptCodec`, no weights) call it, so a prompt has the same ids everywhere.

    .venv/bin/python -m learner.prompt_encoding tiny "What is 2+2?"   # prints ids and the text
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image

from learner.models import LoadedPolicy, PromptCodec


class EncodedPrompt(NamedTuple):
    """Prompt ids ready for generation; `pixel_values` (N, 3, H, W) only when images were given."""

    input_ids: list[int]
    pixel_values: torch.Tensor | None


def _count_image_items(messages: Sequence[dict]) -> int:
    return sum(
        1
        for message in messages
        if not isinstance(message["content"], str)
        for item in message["content"]
        if item.get("type") == "image"
    )


def _as_pil(image: Image.Image | np.ndarray) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, np.ndarray) and image.shape[2:] == (3,) and image.dtype == np.uint8:
        return Image.fromarray(image)
    raise TypeError(
        f"image must be a PIL.Image or an (H, W, 3) uint8 array, got "
        f"{type(image).__name__} {getattr(image, 'shape', '')}"
    )


def encode_prompt(
    policy: LoadedPolicy | PromptCodec,
    messages: Sequence[dict[str, Any]],
    images: Sequence[Image.Image | np.ndarray] | None = None,
) -> EncodedPrompt:
    """Token ids of `messages` under the policy's chat template, ending in the assistant header.

    `messages` are HF chat messages; for VLMs a content may be a list of `{"type": "image"}` and
    `{"type": "text", "text": ...}` items, one image (PIL or (H, W, 3) uint8 array) per image item,
    in order. `pixel_values` come on the CPU in `policy.pixel_dtype`: a `LoadedPolicy`'s model
    dtype, a `PromptCodec`'s float32 (callers cast). Raises ValueError when the number of images
    does not match the image items, or images are given to a text-only policy.
    """
    images = list(images or [])
    n_items = _count_image_items(messages)
    if not policy.is_vlm:
        if images or n_items:
            raise ValueError(
                f"policy {policy.name!r} is text-only but got {len(images)} images and "
                f"{n_items} image items: use a VLM (e.g. tiny-vlm) or drop the images"
            )
        text = policy.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
        ids = policy.tokenizer(text, add_special_tokens=False)["input_ids"]
        return EncodedPrompt(list(ids), None)
    if len(images) != n_items:
        raise ValueError(
            f"messages hold {n_items} image items but {len(images)} images were given:"
            f" pass one image per {{'type': 'image'}} item"
        )
    text = policy.processor.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=False)
    batch = policy.processor(text=text, images=[_as_pil(im) for im in images] or None, return_tensors="pt")
    pixel_values = batch.get("pixel_values")  # (N, 3, H, W)
    if pixel_values is not None:
        pixel_values = pixel_values.to(policy.pixel_dtype)
    return EncodedPrompt(batch["input_ids"][0].tolist(), pixel_values)


if __name__ == "__main__":
    from learner.models import load_prompt_codec

    codec = load_prompt_codec(sys.argv[1] if len(sys.argv) > 1 else "tiny")
    encoded = encode_prompt(codec, [{"role": "user", "content": " ".join(sys.argv[2:]) or "Hi"}])
    print(encoded.input_ids)
    print(codec.tokenizer.decode(encoded.input_ids))
