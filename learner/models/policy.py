"""The `LoadedPolicy` and `PromptCodec` records and the helpers every model builder shares: the cache, seeding."""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase


@dataclass
class LoadedPolicy:
    """A model ready to generate, with what turns messages into its input ids.

    `tokenizer` is always set (for VLMs it is `processor.tokenizer`); `processor` is set only for
    VLMs. The model is in eval mode on the requested device and dtype. Generation needs
    `eos_token_ids` (stop ids) and `pad_token_id` (left padding is the caller's job).
    """

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    processor: Any | None
    name: str
    is_vlm: bool

    @property
    def pad_token_id(self) -> int:
        """Id to pad batches with.

        The tokenizer's pad (for built-ins never an id the model should learn to emit), else the
        first eos id for tokenizers without one (e.g. Llama 3).
        """
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else self.eos_token_ids[0]

    @property
    def eos_token_ids(self) -> list[int]:
        """Ids that end generation: the generation config's, else the tokenizer's eos."""
        return stop_ids(self.model.generation_config, self.tokenizer)

    @property
    def pixel_dtype(self) -> torch.dtype:
        """The dtype `encode_prompt` gives pixel values: the model's."""
        return self.model.dtype


@dataclass
class PromptCodec:
    """What turns chat messages into a policy's prompt ids and back, without the policy's weights.

    The driver encodes SFT demonstrations exactly as the server and the learner do but must not hold
    the model (Llama-3.2-11B-Vision is 42 GB in fp32): `load_prompt_codec` builds this record from
    the sources `load_policy` reads, never instantiating a model. Its fields mean what a
    `LoadedPolicy`'s do (`tokenizer` always, `processor` only for VLMs; `eos_token_ids` from the
    generation config the model would get), so `encode_prompt` and the SFT data accept either.
    """

    tokenizer: PreTrainedTokenizerBase
    processor: Any | None
    name: str
    is_vlm: bool
    eos_token_ids: list[int]

    @classmethod
    def for_tokenizer(
        cls,
        name: str,
        tokenizer: PreTrainedTokenizerBase,
        processor: Any | None = None,
        *,
        generation_config: GenerationConfig | None = None,
    ) -> PromptCodec:
        """The codec of policy `name`: a VLM iff it has a `processor`; stop ids as `stop_ids` finds them."""
        return cls(tokenizer, processor, name, processor is not None, stop_ids(generation_config, tokenizer))

    @property
    def pixel_dtype(self) -> torch.dtype:
        """The dtype `encode_prompt` gives pixel values: the processor's float32 (no model to match).

        Callers that feed them to a model cast them to its dtype.
        """
        return torch.float32


def stop_ids(generation_config: GenerationConfig | None, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids that end generation: `generation_config.eos_token_id` (an id or a list), else the tokenizer's eos."""
    eos = generation_config.eos_token_id if generation_config is not None else None
    eos = tokenizer.eos_token_id if eos is None else eos
    return [i for i in (eos if isinstance(eos, (list, tuple)) else [eos]) if i is not None]


def cache_root() -> Path:
    """`$SFTRL_CACHE`, default `~/.cache/sftrl`: where converted models are kept."""
    return Path(os.environ.get("SFTRL_CACHE", "~/.cache/sftrl")).expanduser()


def build_once(target: Path, build: Callable[[Path], None]) -> Path:
    """Return directory `target`, creating it with `build(tmp_dir)` if it does not exist yet.

    Safe when several processes ask at once: a file lock next to `target` lets one build while the
    others wait and then find it; the build writes into a temporary sibling that is renamed into
    place, so `target` is never seen half-written, even after a crash mid-build.
    """
    if target.is_dir():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if target.is_dir():
            return target
        tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
        try:
            tmp.chmod(0o755)  # mkdtemp makes it private; the cache may be shared
            build(tmp)
            os.rename(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target


_SEEDED = threading.Lock()
"""torch's RNG is one per process: two threads seeding it at once would interleave their draws."""


def seeded_init(factory: Callable[[], PreTrainedModel], seed: int) -> PreTrainedModel:
    """Build a randomly initialised model from `seed`, leaving the global RNG untouched.

    One build at a time per process: engines starting in threads side by side (vLLM's fp32 and
    bf16, each saving `tiny` for its files) would otherwise build, and cache, other weights.
    """
    with _SEEDED, torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return factory()


def set_special_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Make config and generation config agree with the tokenizer: stop at eos, pad with pad."""
    for cfg in (model.config, model.generation_config):
        cfg.bos_token_id = tokenizer.bos_token_id
        cfg.eos_token_id = tokenizer.eos_token_id
        cfg.pad_token_id = tokenizer.pad_token_id


def place(model: PreTrainedModel, *, dtype: torch.dtype, device: str) -> PreTrainedModel:
    """Move `model` to `device` and `dtype`, in eval mode (callers that train call `.train()`)."""
    return model.to(device=device, dtype=dtype).eval()
