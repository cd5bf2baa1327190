"""`tiny-mllama`: a seeded, randomly initialised Llama-3.2-Vision (Mllama) of toy size, offline.

The same architecture as Llama-3.2-11B-Vision (`MllamaForConditionalGeneration`: a tiled vision
encoder with local and global layers, a projector, a text model whose cross-attention layers read
the image states), shrunk to 32x32 tiles of 8x8 patches, up to `MAX_TILES` tiles per image, and a
4-layer text model of width 64 with cross-attention in layers 1 and 3. The tokenizer is SmolLM2's
plus the `<|image|>` token; the chat template renders `{"type": "image"}` items as `<|image|>`.
Unlike LLaVA, the prompt keeps ONE token per image: text attends to the image through
`cross_attention_mask` (which text positions see which image's tiles), which the processor builds
from the ids. Its tanh gates start open (`open_gates`), so a random `tiny-mllama` does look at its
images. Built in memory in well under a second; nothing is downloaded.
"""

from __future__ import annotations

import torch
from transformers import (
    MllamaConfig,
    MllamaForConditionalGeneration,
    MllamaImageProcessorPil,
    MllamaProcessor,
    PreTrainedTokenizerBase,
)

from learner.models.policy import LoadedPolicy, PromptCodec, place, seeded_init, set_special_ids
from learner.models.smollm2 import CONTEXT_TOKENS, TINY_SEED, smollm2_tokenizer
from learner.models.vlm import CHAT_TEMPLATE, IMAGE_TOKEN

MLLAMA_IMAGE_TOKEN = "<|image|>"
TILE_SIZE = 32
MAX_TILES = 4  # Mllama's default aspect ratios (1x1 ... 4x1) need exactly 4
MLLAMA_SEED = TINY_SEED + 2
MLLAMA_CHAT_TEMPLATE = CHAT_TEMPLATE.replace(IMAGE_TOKEN, MLLAMA_IMAGE_TOKEN)


def make_mllama_processor(tokenizer: PreTrainedTokenizerBase) -> MllamaProcessor:
    """MllamaProcessor over `tokenizer` (which gains `<|image|>`) and a PIL Mllama image processor (no torchvision)."""
    tokenizer.add_special_tokens({"additional_special_tokens": [MLLAMA_IMAGE_TOKEN]})
    tokenizer.chat_template = MLLAMA_CHAT_TEMPLATE
    image_processor = MllamaImageProcessorPil(size={"height": TILE_SIZE, "width": TILE_SIZE}, max_image_tiles=MAX_TILES)
    return MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=MLLAMA_CHAT_TEMPLATE)


def tiny_mllama_config(tokenizer: PreTrainedTokenizerBase) -> MllamaConfig:
    """The `tiny-mllama` shape: 2+1 vision layers of width 32, 4 text layers of width 64 (2 cross-attention)."""
    vision = {
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_global_layers": 1,
        "attention_heads": 4,
        "intermediate_layers_indices": [0, 1],
        "vision_output_dim": 32 * 3,  # the last hidden state + the 2 intermediate layers, concatenated
        "image_size": TILE_SIZE,
        "patch_size": 8,
        "max_num_tiles": MAX_TILES,
    }
    text = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 4,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "cross_attention_layers": [1, 3],
        "max_position_embeddings": CONTEXT_TOKENS,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }
    return MllamaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(MLLAMA_IMAGE_TOKEN),
    )


def open_gates(model: MllamaForConditionalGeneration) -> MllamaForConditionalGeneration:
    """Set Mllama's tanh gates (cross-attention, tile and position embeddings) to 1, in place.

    Mllama initialises them at 0 (tanh 0 = 0), as a pretrained text model gains vision: a random
    model would then ignore its images entirely, and no test could tell images from none.
    """
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "gate" in name.rsplit(".", 1)[-1] and param.numel() == 1:
                param.fill_(1.0)
    return model


def load_tiny_mllama(*, dtype: torch.dtype, device: str) -> LoadedPolicy:
    """`tiny-mllama`: the same weights on every call (seed `MLLAMA_SEED`), SmolLM2's tokenizer + `<|image|>`."""
    processor = make_mllama_processor(smollm2_tokenizer())
    config = tiny_mllama_config(processor.tokenizer)
    model = open_gates(seeded_init(lambda: MllamaForConditionalGeneration(config), MLLAMA_SEED))
    set_special_ids(model, processor.tokenizer)
    return LoadedPolicy(place(model, dtype=dtype, device=device), processor.tokenizer, processor, "tiny-mllama", True)


def mllama_codec(name: str) -> PromptCodec:
    """The prompt codec of `tiny-mllama`: its processor, no weights (it stops at SmolLM2's eos)."""
    processor = make_mllama_processor(smollm2_tokenizer())
    return PromptCodec.for_tokenizer(name, processor.tokenizer, processor)
