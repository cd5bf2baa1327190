"""Chat messages (+ images) -> prompt token ids, identical in serving and in the learner.

`encode_prompt(policy, messages, images)` applies the policy's chat template with
`add_generation_prompt=True`; for VLMs the processor also expands each `{"type": "image"}` item
into the model's image tokens and returns the model's image inputs (`ImageInputs`). The policy
server, the learner and the driver (which holds only a `PromptCodec`, no weights) call it, so a
prompt has the same ids everywhere. The learner, which gets ids and raw images (token in, token
out), rebuilds the same image inputs from them with `image_inputs_for_ids`; `batch_image_inputs`
stacks the rows of a left-padded batch (server and learner alike). Two layouts exist:

- LLaVA (image tokens in the prompt): `pixel_values` (N, 3, H, W), the images of every row in order;
- Mllama (cross-attention, Llama-3.2-Vision): per row `pixel_values` (1, N, tiles, 3, H, W),
  `aspect_ratio_ids` (1, N), `aspect_ratio_mask` (1, N, tiles) and `cross_attention_mask`
  (1, T, N, tiles): which text positions attend to which image's real (non-padding) tiles.

    .venv/bin/python -m learner.prompt_encoding tiny "What is 2+2?"   # prints ids and the text
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from transformers.models.mllama.processing_mllama import (
    convert_sparse_cross_attention_mask_to_dense,
    get_cross_attention_token_mask,
)

from learner.models import LoadedPolicy, PromptCodec

ImageInputs = dict[str, torch.Tensor]
"""A VLM's keyword inputs besides the ids (the module docstring gives both layouts)."""

CROSS_ATTENTION_MASK = "cross_attention_mask"


class EncodedPrompt(NamedTuple):
    """Prompt ids ready for generation; `image_inputs` (all the processor gave) only when images were given."""

    input_ids: list[int]
    image_inputs: ImageInputs | None

    @property
    def pixel_values(self) -> torch.Tensor | None:
        """The images' pixel values, (N, 3, H, W) for LLaVA, (1, N, tiles, 3, H, W) for Mllama."""
        return None if self.image_inputs is None else self.image_inputs["pixel_values"]


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
    inputs = {name: value for name, value in batch.items() if name not in ("input_ids", "attention_mask")}
    return EncodedPrompt(batch["input_ids"][0].tolist(), _cast_pixels(inputs, policy.pixel_dtype) if images else None)


def _cast_pixels(inputs: ImageInputs, dtype: torch.dtype) -> ImageInputs:
    """`inputs` with the floating tensors (pixel values) in `dtype`; ids and masks stay integer."""
    return {name: value.to(dtype) if value.is_floating_point() else value for name, value in inputs.items()}


def uses_cross_attention(processor: Any) -> bool:
    """Whether `processor` feeds a cross-attention VLM (Mllama layout of the module docstring)."""
    return CROSS_ATTENTION_MASK in processor.model_input_names


def image_inputs_for_ids(
    processor: Any,
    prompt_ids: Sequence[int],
    images: Sequence[Image.Image | np.ndarray],
    *,
    dtype: torch.dtype = torch.float32,
) -> ImageInputs:
    """The `image_inputs` that `encode_prompt` gave the prompt `prompt_ids` with `images`, from the ids alone.

    Each prompt's images go through the image processor as one sample (Mllama tiles and pads
    per sample); Mllama's `cross_attention_mask` comes from the image tokens' positions in
    `prompt_ids`, by the processor's own rule, so no text is re-tokenized. `processor` is the
    policy's; pixel values come in `dtype`.
    """
    pil_images = [_as_pil(image) for image in images]
    if not uses_cross_attention(processor):
        pixel_values = processor.image_processor(pil_images, return_tensors="pt")["pixel_values"]  # (N, 3, H, W)
        return {"pixel_values": pixel_values.to(dtype)}
    features = dict(processor.image_processor([pil_images], return_tensors="pt"))
    num_tiles = features.pop("num_tiles")  # [[tiles of each image]]
    token_mask = get_cross_attention_token_mask(list(prompt_ids), processor.image_token_id)
    cross = convert_sparse_cross_attention_mask_to_dense(
        [token_mask], num_tiles, max_num_tiles=processor.image_processor.max_image_tiles, length=len(prompt_ids)
    )  # (1, T, N, tiles)
    return _cast_pixels(features | {CROSS_ATTENTION_MASK: torch.from_numpy(cross)}, dtype)


def batch_image_inputs(rows: Sequence[ImageInputs | None], *, lengths: Sequence[int], width: int) -> ImageInputs | None:
    """The image inputs of a left-padded batch of `width` positions; row i holds `lengths[i]` real tokens.

    `rows[i]` are the image inputs of row i's prompt (None: no images). LLaVA: every row's pixel
    values, concatenated in row order. Mllama: each row padded to the batch's most images (zero
    pixels, aspect ratio id 0, masks 0: attended by nothing), and its `cross_attention_mask`
    extended past the prompt to `lengths[i]` by repeating the prompt's last position (tokens
    generated after the prompt see the images its last token sees, as transformers' generate
    extends it), then left-padded with zeros (pad positions attend to no image). None when no row
    has images.
    """
    present = [row for row in rows if row is not None]
    if not present:
        return None
    if CROSS_ATTENTION_MASK not in present[0]:
        return {"pixel_values": torch.cat([row["pixel_values"] for row in present])}  # (N, 3, H, W)
    n_images = max(row["pixel_values"].shape[1] for row in present)
    template = present[0]
    per_image = [name for name in template if name != CROSS_ATTENTION_MASK]  # (1, N, ...) each
    batch = {name: template[name].new_zeros((len(rows), n_images, *template[name].shape[2:])) for name in per_image}
    tiles = template[CROSS_ATTENTION_MASK].shape[3]
    batch[CROSS_ATTENTION_MASK] = template[CROSS_ATTENTION_MASK].new_zeros((len(rows), width, n_images, tiles))
    for index, (row, length) in enumerate(zip(rows, lengths, strict=True)):
        if row is None:
            continue
        n = row["pixel_values"].shape[1]
        for name in per_image:
            batch[name][index, :n] = row[name][0]
        cross = row[CROSS_ATTENTION_MASK][0]  # (S, n, tiles)
        cross = torch.cat([cross, cross[-1:].expand(length - cross.shape[0], -1, -1)])  # (length, n, tiles)
        batch[CROSS_ATTENTION_MASK][index, width - length :, :n] = cross
    return batch


if __name__ == "__main__":
    from learner.models import load_prompt_codec

    codec = load_prompt_codec(sys.argv[1] if len(sys.argv) > 1 else "tiny")
    encoded = encode_prompt(codec, [{"role": "user", "content": " ".join(sys.argv[2:]) or "Hi"}])
    print(encoded.input_ids)
    print(codec.tokenizer.decode(encoded.input_ids))
