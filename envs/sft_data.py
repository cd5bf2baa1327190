"""SFT data export: oracle demonstrations from any environment that has `oracle_action()`.

Episodes are seeded from `TRAIN_SEEDS` only. Seeds alone do not hold evaluation hands and routes
out (`envs.splits`): the export draws training hands and routes only when the env is built with
``split="train"``, as the driver builds it (``split="all"`` is the paper's no-split protocol; an
env built with ``split="eval"`` is refused, its tasks are held out). Every policy turn becomes one
chat record in the format Hugging Face `datasets` and TRL's SFT trainer read::

    {"messages": [...conversation so far, {"role": "assistant", "content": <oracle answer>}],
     "images": ["<jsonl stem>_images/000000.png"]}          # "images" only for image envs

Image paths are relative to the JSONL file's folder; one PNG per distinct picture. In image
records every message content is a list of parts (`[{"type": "text", "text": ...}]`, plus
`{"type": "image"}` in the first user turn, as the env gives it): TRL's vision SFT reads that
form, and Arrow-based readers (`datasets.load_dataset("json", ...)`) need one type per field.
From Python::

    env = gymnasium.make("sftrl/GeneralPoints-v0", variant="id", modality="image", split="train")
    write_sft_records(env, Path("data/gp_vl_sft.jsonl"), n_records=1000, seed=0)
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from envs.seeds import TRAIN_SEEDS


@dataclass(frozen=True)
class SftTurn:
    """One demonstration turn: the conversation with the oracle's answer appended."""

    messages: list[dict]
    image: np.ndarray | None  # (H, W, 3) uint8 for image envs
    seed: int
    episode: int


@dataclass(frozen=True)
class SftExport:
    """What `write_sft_records` wrote."""

    path: Path
    n_records: int
    n_episodes: int
    n_images: int


def training_seeds(seed: int, n: int) -> list[int]:
    """``n`` episode seeds drawn (with a generator seeded by ``seed``) from TRAIN_SEEDS."""
    rng = np.random.default_rng(seed)
    return [int(TRAIN_SEEDS[i]) for i in rng.integers(0, len(TRAIN_SEEDS), size=n)]


def iter_oracle_turns(env: gym.Env, seeds: list[int]) -> Iterator[SftTurn]:
    """Play one oracle episode per seed and yield each of its turns, in order.

    The env's `split` decides which hands or routes the episodes draw. TypeError (no oracle) and
    ValueError (split="eval") are raised at the call, before any episode.
    """
    oracle = env.unwrapped
    if not hasattr(oracle, "oracle_action"):
        raise TypeError(f"{type(oracle).__name__} has no oracle_action(); SFT export needs an oracle")
    if getattr(oracle, "split", "all") == "eval":
        raise ValueError(
            "the env was built with split='eval', whose hands and routes are held out for evaluation; "
            "build it with split='train' for SFT data (or split='all' for the paper's no-split protocol)"
        )
    return _oracle_turns(env, oracle, seeds)


def _oracle_turns(env: gym.Env, oracle: gym.Env, seeds: list[int]) -> Iterator[SftTurn]:
    """The turns `iter_oracle_turns` yields, played lazily (``oracle`` is ``env.unwrapped``)."""
    for episode, seed in enumerate(seeds):
        obs, _ = env.reset(seed=seed)
        done = False
        while not done:
            answer = oracle.oracle_action()
            messages = [*obs["messages"], {"role": "assistant", "content": answer}]
            yield SftTurn(messages, obs.get("image"), seed, episode)
            obs, _, terminated, truncated, _ = env.step(answer)
            done = terminated or truncated


def write_sft_records(env: gym.Env, path: Path, *, n_records: int, seed: int = 0) -> SftExport:
    """Write ``n_records`` JSONL chat records (and their PNGs for image envs) to ``path``."""
    if n_records < 1:
        raise ValueError(f"n_records={n_records} must be >= 1")
    from PIL import Image

    turns = iter_oracle_turns(env, training_seeds(seed, n_records))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    image_dir = path.with_name(f"{path.stem}_images")
    written, episodes, images = 0, set(), 0
    # A new PNG whenever the observation's picture object changes (once per GeneralPoints episode,
    # once per rail point in V-IRL, whose picture changes as the agent moves).
    last_image, last_path = None, ""
    with path.open("w", encoding="utf-8") as out:
        # Each episode has at least one turn, so n_records seeds always suffice.
        for turn in turns:
            record: dict = {"messages": turn.messages}
            if turn.image is not None:
                record["messages"] = [_as_parts(message) for message in turn.messages]
                if turn.image is not last_image:
                    image_dir.mkdir(exist_ok=True)
                    name = f"{images:06d}.png"
                    Image.fromarray(turn.image).save(image_dir / name, compress_level=1)
                    last_image, last_path = turn.image, f"{image_dir.name}/{name}"
                    images += 1
                record["images"] = [last_path]
            out.write(json.dumps(record, ensure_ascii=False) + "\n")
            episodes.add(turn.episode)
            written += 1
            if written == n_records:
                break
    return SftExport(path, written, len(episodes), images)


def _as_parts(message: dict) -> dict:
    """A message whose plain-string content is rewritten as a one-part list of text."""
    if isinstance(message["content"], str):
        return {"role": message["role"], "content": [{"type": "text", "text": message["content"]}]}
    return message
